"""Real `tuneforge` processes on the tiny model: the plain log, watch/logs/runs/plot, kill -9 then
resume (equal to a straight run), graceful stop, SIGINT, SIGHUP and 'checkpoint now'.

fp32 on CPU: the resumed run's losses equal the straight run's (we check 1e-5; they are bit-equal).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from runs_helpers import losses, status, wait_for, write_recipe

from conftest import shared
from tuneforge.runner import checkpoints

CLI = [sys.executable, "-m", "tuneforge.runner.cli"]
ESCAPES = re.compile(r"\r|\x1b")
PLAIN_STEP = re.compile(r"^step \d+/\d+ \| loss \d+\.\d{4} \| lr \d\.\de[-+]\d\d \| \d+ tok/s \| eta \d+:\d\d:\d\d$")


@pytest.fixture(scope="module")
def work(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lifecycle")
    data = shared("alpaca_en_demo.json")
    return {"dir": folder, "recipe": lambda name, **kw: write_recipe(folder, tiny_model_dir, data, name, **kw)}


def cli(*args, cwd: Path, timeout: float = 300, env: dict | None = None):
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def start(recipe: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "train", str(recipe), "--progress", "plain", "--plain-every", "0"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def straight(work):
    """One uninterrupted run; the reference for every resume below."""
    res = cli("train", str(work["recipe"]("straight")), cwd=work["dir"])
    assert res.returncode == 0, res.stderr
    return work["dir"] / "runs" / "straight", res


def test_plain_log_has_one_clean_line_per_step(straight):
    run_dir, res = straight
    for text in (res.stdout, res.stderr, (run_dir / "train.log").read_text()):
        assert not ESCAPES.search(text), repr(text[:500])
    # stdout: at most one line per 5 s (the default --plain-every), first and last always;
    # train.log: every log step, for grep
    steps = [ln for ln in res.stdout.splitlines() if ln.startswith("step ")]
    assert steps[0].startswith("step 1/12 ") and steps[-1].startswith("step 12/12 ")
    assert all(PLAIN_STEP.match(ln) for ln in steps), steps
    logged = [ln.split(" INFO ", 1)[1] for ln in (run_dir / "train.log").read_text().splitlines() if " INFO step " in ln]
    assert len(logged) == 12 and all(PLAIN_STEP.match(ln) for ln in logged), logged
    assert res.stderr.strip() == "", "HF/datasets/tqdm chatter must be silenced"
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_watch_logs_runs_and_plot_on_a_finished_run(straight, work):
    run_dir, _ = straight
    res = cli("watch", "straight", cwd=work["dir"], timeout=60)
    assert res.returncode == 0 and not ESCAPES.search(res.stdout)
    assert sum(1 for ln in res.stdout.splitlines() if PLAIN_STEP.match(ln)) == 12
    assert "run straight finished (step 12/12, train loss" in res.stdout
    res = cli("logs", str(run_dir), cwd=work["dir"], timeout=60)
    assert res.returncode == 0 and "step 12/12 | loss" in res.stdout and "finished in" in res.stdout
    res = cli("runs", cwd=work["dir"], timeout=60)
    assert re.search(r"^straight\s+finished\s+12/12\s+\d+\.\d{4}\s+0:00:\d\d\s+\d{4}-\d\d-\d\d \d\d:\d\d$", res.stdout, re.M), res.stdout
    (run_dir / "loss.png").unlink()
    res = cli("plot", "straight", cwd=work["dir"], timeout=120)
    assert res.returncode == 0 and (run_dir / "loss.png").stat().st_size > 10_000


def _assert_same_losses(run_dir: Path, reference: Path) -> None:
    got, want = losses(run_dir), losses(reference)
    assert sorted(got) == sorted(want) == list(range(1, 13))
    for step in want:
        assert abs(got[step] - want[step]) <= 1e-5, (step, got[step], want[step])


def test_kill_9_then_detached_resume_equals_straight_run(straight, work):
    """kill -9 after step 7 (checkpoints at 2, 4, 6): 'runs' says dead; resume (in the background,
    here without tmux so through setsid) continues from checkpoint-6 and matches the straight run."""
    folder = work["dir"]
    proc = start(work["recipe"]("killed"), folder)
    run_dir = folder / "runs" / "killed"
    wait_for(lambda: (status(run_dir).get("step") or 0) >= 7, interval=0.02, what="step 7")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    res = cli("runs", "--json", cwd=folder, timeout=60)
    assert {json.loads(ln)["name"]: json.loads(ln)["state"] for ln in res.stdout.splitlines()}["killed"] == "dead"
    latest = checkpoints.latest_checkpoint(run_dir / "checkpoints")
    assert checkpoints.step_of(latest) >= 6
    no_tmux = {"PATH": os.path.dirname(sys.executable) + ":/usr/local/bin/none"}
    res = cli("resume", "killed", "--detach", cwd=folder, timeout=60, env=no_tmux)
    assert res.returncode == 0, res.stderr
    assert "setsid" in res.stdout and "tuneforge watch" in res.stdout and "console.log" in res.stdout
    from tuneforge.runner.rundir import effective_state

    wait_for(lambda: effective_state(status(run_dir)) in ("finished", "failed", "dead"), timeout=300, interval=0.5,
             what="resumed run")
    assert status(run_dir)["state"] == "finished", (run_dir / "console.log").read_text()[-2000:]
    assert status(run_dir)["resumed_from"] == str(latest)
    assert not ESCAPES.search((run_dir / "console.log").read_text())
    _assert_same_losses(run_dir, straight[0])


def test_stop_saves_a_resumable_checkpoint(straight, work):
    """`tuneforge stop` between checkpoints (save_steps 5): the run saves where it is, exits 143,
    is marked stopped, and `resume` continues to the same losses as the straight run."""
    folder = work["dir"]
    proc = start(work["recipe"]("stopped", save_steps=5), folder)
    run_dir = folder / "runs" / "stopped"
    wait_for(lambda: (status(run_dir).get("step") or 0) >= 1, interval=0.02, what="step 1")
    res = cli("stop", "stopped", cwd=folder, timeout=120)
    assert res.returncode == 0, res.stderr
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    st = status(run_dir)
    assert st["state"] == "stopped" and st["exit_code"] == 143
    stop_step = checkpoints.step_of(st["last_checkpoint"])
    assert 1 <= stop_step < 12 and stop_step == st["step"], "saved at the step where it stopped"
    assert f"stopped at step {stop_step}/12" in res.stdout and "tuneforge resume" in res.stdout
    assert "resumable checkpoint" in out
    res = cli("resume", str(run_dir), "--progress", "plain", cwd=folder)
    assert res.returncode == 0, res.stderr
    _assert_same_losses(run_dir, straight[0])


def test_sighup_ignored_checkpoint_now_then_sigint(work):
    """SIGHUP is logged and ignored; `tuneforge checkpoint` saves between save steps without
    stopping; SIGINT then saves, marks the run stopped and exits 130."""
    folder = work["dir"]
    proc = start(work["recipe"]("signals", max_steps=400, save_steps=1000), folder)  # long: it is interrupted
    run_dir = folder / "runs" / "signals"
    wait_for(lambda: (status(run_dir).get("step") or 0) >= 1, what="step 1")
    follower = subprocess.Popen([*CLI, "logs", "signals", "-f"], cwd=folder, stdout=subprocess.PIPE, text=True)
    proc.send_signal(signal.SIGHUP)
    res = cli("checkpoint", "signals", cwd=folder, timeout=120)
    assert res.returncode == 0, res.stderr
    saved = status(run_dir)["last_checkpoint_step"]
    assert res.stdout.strip().endswith(f"checkpoint-{saved}") and proc.poll() is None
    assert (run_dir / "checkpoints" / f"checkpoint-{saved}" / "trainer_state.json").is_file()
    wait_for(lambda: (status(run_dir).get("step") or 0) > saved, what="a step after the checkpoint")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    st = status(run_dir)
    assert st["state"] == "stopped" and st["last_checkpoint_step"] > saved and st["step"] < 400
    log = (run_dir / "train.log").read_text()
    assert "SIGHUP" in log and "ignored" in log and "SIGINT" in log
    followed, _ = follower.communicate(timeout=60)  # `logs -f` ends by itself when the run ends
    assert follower.returncode == 0 and followed == log


def test_foreground_run_survives_its_terminal_going_away(work):
    """A run in the foreground on a terminal (rich display) whose SSH link drops: the terminal
    disappears (writes fail with EIO) and SIGHUP arrives. The run finishes anyway."""
    import pty

    folder = work["dir"]
    master, slave = pty.openpty()
    proc = subprocess.Popen([*CLI, "train", str(work["recipe"]("hangup", max_steps=6, save_steps=None))], cwd=folder,
                            stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "80"})
    os.close(slave)
    run_dir = folder / "runs" / "hangup"
    drawn = b""
    while b"tuneforge \xc2\xb7 hangup" not in drawn:  # the rich panel is up
        drawn += os.read(master, 65536)
    wait_for(lambda: (status(run_dir).get("step") or 0) >= 1, what="step 1")
    os.close(master)  # the terminal is gone...
    proc.send_signal(signal.SIGHUP)  # ...and the kernel's hangup arrives
    assert proc.wait(timeout=300) == 0
    st = status(run_dir)
    assert st["state"] == "finished" and st["step"] == 6 and (run_dir / "adapter").is_dir()
    assert "SIGHUP" in (run_dir / "train.log").read_text()
