"""CLI manners (issue 19 item 7): flags look like flags, every main command shows examples, a typo
of a run name is caught before the hub is tried, printed commands work as printed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

MAIN = ["train", "validate", "chat", "export", "resume", "runs", "watch", "stop", "new"]


def test_boolean_flags_show_no_value_and_every_main_command_has_examples(run_cli):
    root = run_cli("--help", timeout=60)
    assert root.returncode == 0 and "<bool>" not in root.stdout, root.stdout
    assert "Examples" in root.stdout and "tuneforge new" in root.stdout
    for cmd in MAIN:
        out = run_cli(cmd, "--help", timeout=60, env={"COLUMNS": "80"})
        assert out.returncode == 0, out.stderr
        assert "<bool>" not in out.stdout, f"{cmd}: {out.stdout}"
        assert "Examples" in out.stdout and f"tuneforge {cmd}" in out.stdout, f"{cmd}: {out.stdout}"
    export = run_cli("export", "--help", timeout=60, env={"COLUMNS": "80"}).stdout
    merge = next(ln for ln in export.splitlines() if "--merge" in ln and "Merge the LoRA" in ln)
    assert "<" not in merge  # a flag, not an option taking a value


def test_a_typo_of_a_run_name_says_did_you_mean(tmp_path, run_cli):
    (tmp_path / "runs" / "uxrun").mkdir(parents=True)
    (tmp_path / "runs" / "uxrun" / "recipe.yaml").write_text("name: uxrun\n")
    out = run_cli("chat", "uxrn", "--plain", input="hi\n", timeout=120, env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no run named 'uxrn' — did you mean 'uxrun'?" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("on_path", [True, False])
def test_printed_commands_work_as_printed(tmp_path, on_path):
    """`tuneforge` when this install's script is on PATH, else the script's own path."""
    import subprocess

    venv_bin = Path(sys.executable).parent
    path = f"{venv_bin}:/usr/bin:/bin" if on_path else "/usr/bin:/bin"
    code = "from tuneforge.runner import services; print(services.train_command('r.yaml'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                         env={**os.environ, "PATH": path})
    printed = out.stdout.strip()
    assert printed == "tuneforge train r.yaml" if on_path else printed == f"{venv_bin / 'tuneforge'} train r.yaml", printed
    prog = printed.split()[0]
    ran = subprocess.run([prog, "--help"], capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": path})
    assert ran.returncode == 0, ran.stderr


def test_bitsandbytes_kernel_lookup_noise_never_reaches_the_user(tmp_path):
    """Importing tuneforge then peft/bitsandbytes (what export --merge and training do) on this CPU,
    offline: bitsandbytes' 'Failed to load CPU gemm_4bit_forward ... pip install kernels' and
    kernels' 'Skipping publisher trust check ...' used to reach stderr."""
    import subprocess

    code = "import tuneforge.runner.cli\nimport peft\nimport bitsandbytes\nprint('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip() == "ok", out.stderr
    assert "kernels" not in out.stderr and "gemm_4bit" not in out.stderr, out.stderr
