"""Progress output, run listing and dead-run detection — no training, no torch (fast)."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time

from tuneforge.runner import rundir
from tuneforge.runner.progress import PlainProgress, RichProgress, plain_line
from tuneforge.runner.watch import JsonlTail, list_runs, watch

ESC = re.compile(r"\x1b|\r")


def _rec(step: int, total: int = 3000, **kw) -> dict:
    base = {"step": step, "total_steps": total, "loss": 1.2344, "lr": 2e-5, "tokens_per_s": 812.3, "eta_s": 723,
            "elapsed_s": 65.0, "epoch": 0.25, "rss_mb": 1536.0}
    return {**base, **kw}


def test_plain_line_format():
    assert plain_line(_rec(120)) == "step 120/3000 | loss 1.2344 | lr 2.0e-05 | 812 tok/s | eta 0:12:03"
    assert plain_line({"step": 5, "total_steps": 10, "eval_loss": 0.5}) == "step 5/10 | eval_loss 0.5000"


def test_plain_progress_rate_limit_keeps_evals_and_last_step():
    out = io.StringIO()
    p = PlainProgress(out, min_interval=3600)
    p.start("t", 10)
    for s in range(1, 11):
        p.update(_rec(s, 10))
    p.update({"step": 10, "total_steps": 10, "eval_loss": 0.4})
    lines = out.getvalue().splitlines()
    # the first step prints, the rate limit swallows 2..9, the last step and the eval always print
    assert [ln.split(" |")[0] for ln in lines[1:]] == ["step 1/10", "step 10/10", "step 10/10"]
    assert "eval_loss 0.4000" in lines[-1]
    assert not ESC.search(out.getvalue())


def test_rich_panel_fits_80_columns_and_shows_everything():
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None, legacy_windows=False)
    p = RichProgress(console=console)
    p.start("tuneforge · my-run", 3000)
    for s, loss in enumerate([2.0, 1.8, 1.7, 1.5, 1.52, 1.3], 1):
        p.update(_rec(s * 20, loss=loss))
    p.update(_rec(120, loss=None, eval_loss=1.41, tokens_per_s=None))
    p.stop()
    final = console.export_text() if console.record else buf.getvalue()
    # the last frame drawn is the final state; check it line by line
    frame = final.split("\x1b[?25l")[-1] if "\x1b" in final else final
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", frame)
    last_panel = text[text.rfind("╭"):]
    lines = [ln for ln in last_panel.splitlines() if ln.strip()]
    assert lines and all(len(ln) <= 80 for ln in lines), lines
    body = "\n".join(lines)
    for needle in ("120/3000", "eta 0:12:03", "loss 1.3000", "eval 1.4100", "lr 2.0e-05", "mem 1.5 GB", "elapsed 0:01:05"):
        assert needle in body, (needle, body)
    assert re.search(r"loss [▁▂▃▄▅▆▇█]{6}", body), body  # the live sparkline of the six losses


def test_jsonl_tail_waits_for_whole_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = JsonlTail(path)
    assert tail.read_new() == []
    path.write_text('{"step": 1}\n{"step": 2', encoding="utf-8")
    assert tail.read_new() == [{"step": 1}]
    with open(path, "a", encoding="utf-8") as f:
        f.write('}\n')
    assert tail.read_new() == [{"step": 2}]
    path.write_text('{"step": 1}\n', encoding="utf-8")  # a resumed run rewrote the file shorter
    assert tail.read_new() == [{"step": 1}] and tail.restarted


def _fake_run(root, name, state, pid, step=3, total=10, started_ts=None):
    run = rundir.create(root, name)
    run.recipe.write_text("name: x\n", encoding="utf-8")
    run.update_status(state=state, pid=pid, host=socket.gethostname(), step=step, total_steps=total,
                      started_at=rundir.now_iso(), started_ts=started_ts or time.time(), ended_at=None)
    for s in range(1, step + 1):
        run.append_metrics({"step": s, "total_steps": total, "loss": 2.0 / s, "elapsed_s": s * 1.5})
    return run


def test_dead_run_detection(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid is free
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # exited but not reaped yet: a zombie still answers kill(0)
        if open(f"/proc/{zombie.pid}/stat").read().split(") ")[1].startswith("Z"):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the child never became a zombie")
    try:
        _fake_run(tmp_path, "alive", "running", os.getpid())
        _fake_run(tmp_path, "gone", "running", gone.pid)
        _fake_run(tmp_path, "zombie", "running", zombie.pid)
        _fake_run(tmp_path, "done", "finished", gone.pid, step=10)
        states = {r["name"]: r["state"] for r in list_runs(tmp_path)}
    finally:
        zombie.wait()
    assert states == {"alive": "running", "gone": "dead", "zombie": "dead", "done": "finished"}


def test_pid_reuse_counts_as_dead(tmp_path):
    # The status names a live pid, but that process was created a day after the run started:
    # the run's own process died and the system handed its pid to someone else.
    young = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run = _fake_run(tmp_path, "old", "running", young.pid, started_ts=time.time() - 86400)
        assert rundir.effective_state(run.read_status()) == "dead"
    finally:
        young.kill()
        young.wait()


def test_watch_plain_on_a_dead_run_exits_with_resume_hint(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = _fake_run(tmp_path, "r", "running", gone.pid, step=4)
    run.update_status(last_checkpoint=str(run.checkpoints / "checkpoint-4"))
    out = io.StringIO()
    assert watch(run, "plain", interval=0.05, out=out) == "dead"
    text = out.getvalue()
    assert not ESC.search(text)
    assert [ln.split(" |")[0] for ln in text.splitlines() if ln.startswith("step ")] == [f"step {s}/10" for s in range(1, 5)]
    assert "is dead" in text and f"tuneforge resume {run.path}" in text


def test_runs_command_lists_states(tmp_path, run_cli):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _fake_run(tmp_path / "runs", "crashed", "running", gone.pid, step=3)
    _fake_run(tmp_path / "runs", "ok", "finished", gone.pid, step=10)
    res = run_cli("runs", "--runs-dir", "runs", timeout=60)
    assert res.returncode == 0, res.stderr
    rows = {ln.split()[0]: ln.split()[1:4] for ln in res.stdout.splitlines()[1:] if ln.strip()}
    assert rows["crashed"] == ["dead", "3/10", "0.6667"] and rows["ok"] == ["finished", "10/10", "0.2000"]
    res = run_cli("runs", "--runs-dir", "runs", "--json", timeout=60)
    assert {json.loads(ln)["name"]: json.loads(ln)["state"] for ln in res.stdout.splitlines()} == {"crashed": "dead", "ok": "finished"}


def test_watch_on_a_terminal_draws_the_panel(tmp_path):
    """`tuneforge watch` on a real pseudo-terminal: the rich panel, then the ending line."""
    import pty

    run = _fake_run(tmp_path, "tty-run", "finished", os.getpid(), step=4, total=4)
    run.update_status(ended_at=rundir.now_iso(), final_metrics={"train_loss": 0.9}, weights="w")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge.runner.cli", "watch", str(run.path)],
                            stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "80", "LINES": "24"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    assert proc.returncode == 0, text
    assert "tuneforge watch · tty-run" in text and "4/4" in text and "loss 0.5000" in text
    assert "run tty-run finished (step 4/4, train loss 0.9)" in text


def test_piped_watch_on_a_run_that_never_counted_its_steps_prints_no_none(tmp_path, run_cli):
    """A run stopped before its first step has no step or total in status.json yet."""
    run = rundir.RunDir(tmp_path / "runs" / "early")
    run.path.mkdir(parents=True)
    run.update_status(state="stopped", host=socket.gethostname(), pid=os.getpid(), started_ts=time.time(),
                      started_at=rundir.now_iso(), ended_at=rundir.now_iso(), stop_reason="stopped by SIGINT")
    res = run_cli("watch", str(run.path), timeout=60)
    assert "None" not in res.stdout, res.stdout
    assert "step 0/?" in res.stdout
