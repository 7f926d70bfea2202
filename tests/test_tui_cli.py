"""`tuneforge` / `tuneforge new` open the app on a terminal, refuse politely without one, and the
first screens start without importing torch."""

from __future__ import annotations

import subprocess
import sys


def test_no_terminal_prints_a_hint_and_exits_2(run_cli, tmp_path):
    for args in ([], ["new"]):
        out = run_cli(*args, input="")
        assert out.returncode == 2, out
        assert "needs a terminal" in out.stderr and "tuneforge train" in out.stderr


def test_edit_of_a_missing_recipe_is_a_user_error(tmp_path):
    code = (
        "import sys, os\n"
        "sys.stdin.isatty = lambda: True; sys.stdout.isatty = lambda: True\n"  # pretend: the check comes first
        "sys.argv = ['tuneforge', 'new', '--edit', 'missing.yaml']\n"
        "from tuneforge.runner.cli import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 2
    assert "missing.yaml" in out.stderr and "does not exist" in out.stderr


def test_first_screens_do_not_import_torch(tmp_path):
    code = (
        "import asyncio, sys\n"
        "from tuneforge.tui.app import TuneforgeApp\n"
        "async def main(start, screen):\n"
        "    app = TuneforgeApp(start=start)\n"
        "    async with app.run_test(size=(80, 24)) as pilot:\n"
        "        for _ in range(600):\n"  # poll (60 s at most) until the first screen is up
        "            if type(app.screen).__name__ == screen: break\n"
        "            await pilot.pause(0.1)\n"
        "        await pilot.pause()\n"  # its mount handlers have run and started their workers
        "        await app.workers.wait_for_complete()\n"
        "        await pilot.pause()\n"  # and what the workers posted has been handled
        "        print('SCREEN', type(app.screen).__name__)\n"
        "asyncio.run(main('runs', 'RunsScreen')); asyncio.run(main('new', 'ModelStep'))\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "SCREEN RunsScreen" in out.stdout and "SCREEN ModelStep" in out.stdout, out.stdout + out.stderr
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_edit_of_a_broken_recipe_is_a_user_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    code = (
        "import sys\n"
        "sys.stdin.isatty = lambda: True; sys.stdout.isatty = lambda: True\n"
        "sys.argv = ['tuneforge', 'new', '--edit', 'bad.yaml']\n"
        "from tuneforge.runner.cli import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and "not valid YAML" in out.stderr and "Traceback" not in out.stderr
