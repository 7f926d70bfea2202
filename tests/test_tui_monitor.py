"""The runs table and the monitor, fed by a real run's files (a tiny model trained for 3 steps);
Run now and Run detached from the wizard (real child processes, launched through the service layer,
the monitor on exactly the run launched); Stop and Checkpoint as control files the trainer reads."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import require_tools, shared
from tui_helpers import drive_wizard, screen_text, sync, wait_for, wait_screen

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    from tuneforge.runner.recipe import recipe_from_dict
    from tuneforge.runner.train import train

    root = tmp_path_factory.mktemp("monitor")
    recipe = recipe_from_dict({
        "name": "tiny", "method": "lora", "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train": [{"path": str(shared("alpaca_en_demo.json")), "max_samples": 12}], "max_length": 64},
        "train": {"max_steps": 3, "batch_size": 2, "logging_steps": 1, "learning_rate": 1e-3},
        "output": {"runs_dir": str(root / "runs")}, "device": "cpu",
    })
    return train(recipe, progress_mode="plain").run


@sync
async def test_runs_table_and_monitor_show_a_real_finished_run(finished_run):
    from tuneforge.tui.app import TuneforgeApp

    losses = [r["loss"] for r in map(json.loads, finished_run.metrics.read_text().splitlines()) if r.get("loss") is not None]
    assert len(losses) == 3
    app = TuneforgeApp(runs_dir=finished_run.path.parent)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "RunsScreen")
        table = app.screen.query_one("DataTable")
        row = [str(c) for c in table.get_row_at(0)]
        assert row[:3] == ["tiny", "finished", "3/3"]
        assert row[3] == f"{losses[-1]:.4f}"
        await pilot.press("enter")
        await wait_screen(pilot, "MonitorScreen")
        await wait_for(pilot, lambda: app.screen.losses == losses, 10, "losses read")
        text = screen_text(app)
        assert "finished" in text and "step 3/3" in text and f"loss {losses[-1]:.4f}" in text
        assert "lr " in text and "tok/s" in text
        assert list(app.screen.query_one("Sparkline").data) == losses
        assert app.screen.query_one("ProgressBar").percentage == 1.0
        log_text = "\n".join(app.screen.lines)
        assert "finished in" in log_text and "step 3/3" in log_text
        await pilot.press("c")  # chat with the run's weights, inside the app (no second process)
        await wait_screen(pilot, "ChatScreen")
        await wait_for(pilot, lambda: app.screen.engine is not None or app.screen.load_error is not None, 120, "the model")
        assert app.screen.engine is not None and app.screen.ref == str(finished_run.path)
        await pilot.press("escape")  # idle: back to the monitor
        await wait_screen(pilot, "MonitorScreen")
        await pilot.press("escape")
        await wait_screen(pilot, "RunsScreen")


@sync
async def test_dead_runs_are_shown_dead_and_stop_asks_through_the_control_file(finished_run, tmp_path):
    from tuneforge.runner.rundir import RunDir
    from tuneforge.tui.app import TuneforgeApp

    runs = tmp_path / "runs"
    runs.mkdir()
    # A run whose process is gone: 'running' in status.json, no such pid.
    dead = RunDir(runs / "ghost")
    dead.path.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead.update_status(state="running", pid=gone.pid, host=socket.gethostname(), step=1, total_steps=9,
                       started_at="2026-01-01T00:00:00", started_ts=time.time() - 60)
    # A live process standing in for a trainer: it records the SIGTERM a local stop adds to the file.
    live = RunDir(runs / "live")
    live.path.mkdir()
    marker = tmp_path / "got-sigterm"
    proc = subprocess.Popen([sys.executable, "-c",
                             "import signal, sys, time, pathlib\n"
                             f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(marker)!r}).write_text('yes'), sys.exit(0)))\n"
                             "print('ready', flush=True)\n"
                             "time.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    live.update_status(state="running", pid=proc.pid, host=socket.gethostname(), step=2, total_steps=9,
                       started_at="2026-01-01T00:01:00", started_ts=time.time())
    try:
        app = TuneforgeApp(runs_dir=runs)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_screen(pilot, "RunsScreen")
            table = app.screen.query_one("DataTable")
            states = {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[1]) for i in range(table.row_count)}
            assert states == {"ghost": "dead", "live": "running"}
            app.open_monitor(live.path)
            await wait_screen(pilot, "MonitorScreen")
            await pilot.press("k")  # checkpoint now: the request file the trainer polls after each step
            await wait_for(pilot, lambda: (live.path / "control" / "checkpoint").is_file(), 10, "checkpoint request")
            await pilot.press("s")
            await wait_screen(pilot, "Confirm")
            await pilot.press("y")
            await wait_screen(pilot, "MonitorScreen")
            assert (live.path / "control" / "stop").is_file()  # what `tuneforge stop` drops, from any host
            await pilot.press("escape")
            await wait_screen(pilot, "RunsScreen")
            app.open_monitor(dead.path)
            await wait_screen(pilot, "MonitorScreen")
            await pilot.press("s")  # a dead run is not asked anything
            await pilot.pause()
            assert type(app.screen).__name__ == "MonitorScreen" and not (dead.path / "control").exists()
        assert proc.wait(timeout=20) == 0
        assert marker.read_text() == "yes"
    finally:
        if proc.poll() is None:
            proc.kill()


async def launch_from_wizard(pilot, app, model_dir, name, max_steps, max_samples, finish):
    """Fill the wizard (alpaca demo data, the tiny model), finish with `finish` (ctrl+r: run now, ctrl+t:
    detached) and return the monitor it opens with the run handle it holds."""
    await drive_wizard(pilot, str(shared("alpaca_en_demo.json")), model=str(model_dir), max_steps=max_steps,
                       max_samples=max_samples, name=name, finish=finish)
    await wait_screen(pilot, "MonitorScreen")
    return app.screen, app.screen.handle


@sync
async def test_run_now_opens_exactly_the_run_it_launched_beside_a_same_named_run(tiny_model_dir, tmp_path, monkeypatch):
    """An earlier run 'now' that started a moment ago used to fool the monitor's start-time guess;
    the app now holds the RunHandle services.launch returned, its directory made before it returned."""
    from tuneforge.runner.rundir import RunDir
    from tuneforge.tui.app import TuneforgeApp

    monkeypatch.chdir(tmp_path)
    earlier = RunDir(tmp_path / "runs" / "now")
    earlier.path.mkdir(parents=True)
    earlier.update_status(state="finished", host=socket.gethostname(), step=5, total_steps=5,
                          started_at="2026-01-01T00:00:00", started_ts=time.time())
    before = earlier.status.read_text()
    app = TuneforgeApp(start="new")
    async with app.run_test(size=(80, 24)) as pilot:
        monitor, handle = await launch_from_wizard(pilot, app, tiny_model_dir, "now", "2", "8", "ctrl+r")
        assert handle.path == (tmp_path / "runs" / "now-2").resolve()  # known at once, no guess
        assert (handle.path / "recipe.yaml").is_file() and handle.launcher == "setsid"
        assert handle.pid not in (None, os.getpid())
        assert "now-2" in screen_text(app)
        await wait_for(pilot, lambda: monitor.state in ("finished", "failed", "dead"), 240, "the run to end")
        assert monitor.state == "finished", "\n".join(monitor.lines)
        assert "step 2/2" in screen_text(app)
    assert (tmp_path / "now.yaml").is_file()
    assert (handle.path / "adapter").is_dir() and (handle.path / "console.log").is_file()
    assert not (tmp_path / "runs" / ".launch").exists()
    assert earlier.status.read_text() == before and not (earlier.path / "adapter").exists()


@sync
async def test_run_detached_then_stop_and_resume_from_the_monitor(tiny_model_dir, tmp_path, monkeypatch):
    """The detached launch (tmux here), a real trainer stopped by the monitor's `s` (one line, no
    traceback; ETA '—'), then resumed with `r`: the curve keeps its points from step 1."""
    require_tools("tmux")
    from tuneforge.tui.app import TuneforgeApp

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMUX_TMPDIR", str(tmp_path))  # a private tmux server for this test
    app = TuneforgeApp(start="new")
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            monitor, handle = await launch_from_wizard(pilot, app, tiny_model_dir, "far", "400", "64", "ctrl+t")
            assert handle.path == (tmp_path / "runs" / "far").resolve()
            assert handle.launcher == "tmux" and handle.tmux_session == "tf-far"
            await wait_for(pilot, lambda: monitor.state == "running" and (monitor.last.get("step") or 0) >= 1, 180,
                           "the run to take a step")
            await pilot.press("s")
            await wait_screen(pilot, "Confirm")
            await pilot.press("y")
            await wait_screen(pilot, "MonitorScreen")
            await wait_for(pilot, lambda: monitor.state in ("stopped", "failed", "dead", "finished"), 180, "the stop")
            assert monitor.state == "stopped", "\n".join(monitor.lines)
            await wait_for(pilot, lambda: any("run stopped" in ln for ln in monitor.lines), 10, "the stop's log line")
            assert not any("Traceback" in ln or "RunStopped" in ln for ln in monitor.lines), monitor.lines
            await pilot.pause(1.2)
            assert "ETA —" in str(monitor.query_one("#stats").render())
            status = json.loads((handle.path / "status.json").read_text())
            assert status["last_checkpoint"] and Path(status["last_checkpoint"]).is_dir()
            kept = [r["loss"] for r in map(json.loads, (handle.path / "metrics.jsonl").read_text().splitlines())
                    if r.get("loss") is not None and r["step"] <= status["step"]]
            await pilot.press("r")
            await wait_for(pilot, lambda: monitor.handle is not handle and monitor.state == "running"
                           and (monitor.last.get("step") or 0) > status["step"], 180, "the resumed run's next step")
            assert monitor.losses[:len(kept)] == kept  # the curve from step 1, not only after the resume
            await pilot.press("s")
            await wait_screen(pilot, "Confirm")
            await pilot.press("y")
            await wait_screen(pilot, "MonitorScreen")
            await wait_for(pilot, lambda: monitor.state in ("stopped", "failed", "dead", "finished"), 180, "the 2nd stop")
            assert monitor.state == "stopped", "\n".join(monitor.lines)
    finally:
        subprocess.run(["tmux", "kill-server"], capture_output=True)


@sync
async def test_runs_table_offers_resume_and_says_why_a_run_cannot_resume(finished_run):
    """`r` on the runs table resumes the selected run (the monitor test resumes a real one); a
    finished run says so instead of starting anything."""
    from tuneforge.tui.app import TuneforgeApp

    app = TuneforgeApp(runs_dir=finished_run.path.parent)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "RunsScreen")
        assert app.screen.active_bindings["r"].binding.description == "Resume"
        await pilot.press("r")
        await wait_for(pilot, lambda: any("already finished" in str(n.message) for n in app._notifications), 10,
                       "the notice")
        assert type(app.screen).__name__ == "RunsScreen"
