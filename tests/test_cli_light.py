"""`tuneforge --help` must start instantly: no torch or transformers import."""

import subprocess
import sys


def test_help_does_not_import_torch():
    code = (
        "import sys; sys.argv=['tuneforge','--help']\n"
        "from tuneforge.runner.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','transformers','peft','trl','datasets') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "train" in out.stdout and "validate" in out.stdout


def test_console_script_is_installed():
    from pathlib import Path

    script = Path(sys.executable).parent / "tuneforge"  # the venv's bin, whether or not it is on PATH
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Usage: tuneforge" in out.stdout
