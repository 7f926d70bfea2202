"""`train --detach` through a real tmux: the launching shell dies (as when SSH drops) and the run
still finishes; `watch` from another terminal follows it to the end."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest
from runs_helpers import status, write_recipe

from conftest import require_tools, shared


@pytest.fixture(autouse=True)
def _tmux():
    require_tools("tmux")


CLI = [sys.executable, "-m", "tuneforge.runner.cli"]


def _read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    out, deadline = "", time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536).decode()
            if not chunk:
                break
            out += chunk
    assert marker in out, out
    return out


def test_detach_in_tmux_survives_the_launching_shell(tiny_model_dir, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model_dir, shared("alpaca_en_demo.json"), "detached", max_steps=8, save_steps=4)
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    env["TMUX_TMPDIR"] = str(tmp_path)  # a private tmux server for this test
    cmd = " ".join([*CLI, "train", str(recipe), "--detach"])
    # The "SSH session": a shell that launches the run, then would sit there until the link drops.
    shell = subprocess.Popen(["bash", "-c", f"{cmd}; echo LAUNCHED; sleep 600"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    run_dir = tmp_path / "runs" / "detached"
    try:
        started = time.monotonic()
        out = _read_until(shell, "LAUNCHED", timeout=120)
        assert time.monotonic() - started < 60, "--detach returns at once, without waiting for training"
        assert "started run 'detached'" in out and "tmux session 'tf-detached'" in out
        for needle in (f"tuneforge watch {run_dir}", "tmux attach -t tf-detached", f"tuneforge stop {run_dir}",
                       f"log:      {run_dir / 'train.log'}"):
            assert needle in out, (needle, out)
        # The link drops: the whole session's process group gets SIGHUP, then SIGKILL.
        os.killpg(shell.pid, signal.SIGHUP)
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(timeout=30)
        sessions = subprocess.run(["tmux", "ls", "-F", "#{session_name}"], env=env, capture_output=True, text=True)
        assert "tf-detached" in sessions.stdout.split(), sessions
        # Another terminal (here a pipe, so plain lines) watches the run until it ends.
        res = subprocess.run([*CLI, "watch", "detached", "--interval", "0.3"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=400)
        log = (run_dir / "train.log").read_text() if (run_dir / "train.log").exists() else "(no train.log)"
        assert res.returncode == 0, (res.stdout, res.stderr, log[-3000:])
        assert not re.search(r"\r|\x1b", res.stdout)
        assert "step 8/8 | loss" in res.stdout and "run detached finished (step 8/8" in res.stdout
        st = status(run_dir)
        assert st["state"] == "finished" and st["launcher"] == "tmux" and st["tmux_session"] == "tf-detached"
        assert (run_dir / "adapter").is_dir() and (run_dir / "loss.png").is_file()
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
        subprocess.run(["tmux", "kill-server"], env=env, capture_output=True)
