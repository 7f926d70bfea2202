"""One run, live: progress, loss sparkline, lr, tokens/s, ETA and the log tail.

Reads only the run directory (status.json, metrics.jsonl, train.log), so it works the same for a
run started here, in tmux, or by hand. Stop sends SIGINT to the pid in status.json (the runner
saves its state and marks the run 'stopped'). There is no 'checkpoint now' key: the runner on this
branch has no control-file mechanism for it yet.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Log, ProgressBar, Sparkline, Static

from tuneforge.runner.progress import fmt_duration
from tuneforge.runner.rundir import RunDir, effective_state

from ..launch import Launched, find_started_run
from .dialogs import Confirm


class MonitorScreen(Screen):
    BINDINGS = [
        Binding("s", "stop", "Stop run"),
        Binding("k", "checkpoint", "Checkpoint now"),
        Binding("c", "chat", "Chat"),
        Binding("escape", "back", "Back"),
    ]
    DEFAULT_CSS = """
    MonitorScreen #title { height: 1; background: $panel; padding: 0 1; text-style: bold; }
    MonitorScreen ProgressBar { padding: 0 1; height: 1; }
    MonitorScreen #stats { padding: 0 1; height: auto; }
    MonitorScreen Sparkline { height: 3; margin: 0 1; }
    MonitorScreen #loss-label { padding: 0 1; color: $text-muted; }
    MonitorScreen Log { height: 1fr; border: round $primary; }
    """

    def __init__(self, run: RunDir | None = None, launched: Launched | None = None, runs_dir: Path | None = None) -> None:
        super().__init__()
        self.run, self.launched, self.runs_dir = run, launched, runs_dir or Path("runs")
        self.losses: list[float] = []
        self.last: dict = {}
        self._metrics_pos = 0
        self._log_pos = 0
        self._launch_pos = 0
        self.state = "starting"

    def compose(self) -> ComposeResult:
        yield Static("", id="title")
        yield ProgressBar(total=None, show_eta=False, id="progress")
        yield Static("", id="stats")
        yield Static("loss", id="loss-label")
        yield Sparkline([], id="loss")
        yield Log(id="log", max_lines=2000)
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(1.0, self.poll)

    # -- reading the files -------------------------------------------------------------------
    def poll(self) -> None:
        if self.run is None and self.launched is not None:
            self.run = find_started_run(self.runs_dir, self.launched.name, self.launched.started)
            if self.run is None:
                self._waiting()
                return
        if self.run is None:
            return
        st = self.run.read_status()
        self.state = effective_state(st) if st else "starting"
        self._read_metrics()
        self._read_log()
        self._show(st)

    def _waiting(self) -> None:
        name = self.launched.name
        where = f" in tmux session {self.launched.tmux_session}" if self.launched.tmux_session else ""
        self.query_one("#title", Static).update(f"{name}: starting{where}…")
        log = self.launched.log
        if log and log.is_file():
            self._launch_pos = self._append_from(log, self._launch_pos)
        if self.launched.pid and not _pid_alive(self.launched.pid):
            self.state = "failed"
            self.query_one("#stats", Static).update(Text("the run exited before it started — see the log below", style="bold red"))

    def _append_from(self, path: Path, pos: int) -> int:
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
        except OSError:
            return pos
        if data:
            cut = data.rfind(b"\n") + 1  # only whole lines
            if cut:
                self.query_one(Log).write(data[:cut].decode("utf-8", errors="replace"))
                return pos + cut
        return pos

    def _read_metrics(self) -> None:
        import json

        try:
            with open(self.run.metrics, "rb") as f:
                f.seek(self._metrics_pos)
                data = f.read()
        except OSError:
            return
        cut = data.rfind(b"\n") + 1
        self._metrics_pos += cut
        for line in data[:cut].decode("utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("loss") is not None:
                self.losses.append(float(rec["loss"]))
            self.last.update({k: v for k, v in rec.items() if v is not None})

    def _read_log(self) -> None:
        self._log_pos = self._append_from(self.run.log, self._log_pos)

    def _show(self, st: dict) -> None:
        step, total = int(st.get("step") or self.last.get("step") or 0), st.get("total_steps") or self.last.get("total_steps")
        self.query_one("#title", Static).update(f"{self.run.name} · {self.state} · {self.run.path}")
        bar = self.query_one(ProgressBar)
        if total:
            bar.update(total=total, progress=step)
        rec = self.last
        started = st.get("started_ts")
        if self.state == "running" and started:
            elapsed = time.time() - started
        else:
            elapsed = (st.get("final_metrics") or {}).get("elapsed_s") or rec.get("elapsed_s")
        eta = rec.get("eta_s") if self.state == "running" else 0
        t = Text()
        t.append(f"{self.state}", style={"running": "bold cyan", "finished": "bold green", "stopped": "yellow"}.get(self.state, "bold red"))
        t.append(f"  step {step}/{total or '?'}")
        if rec.get("loss") is not None:
            t.append(f"  loss {rec['loss']:.4f}")
        if rec.get("eval_loss") is not None:
            t.append(f"  eval {rec['eval_loss']:.4f}")
        t.append("\n")
        if rec.get("lr") is not None:
            t.append(f"lr {rec['lr']:.2e}  ")
        if rec.get("tokens_per_s") is not None:
            t.append(f"{rec['tokens_per_s']:.0f} tok/s  ")
        t.append(f"elapsed {fmt_duration(elapsed)}  ETA {fmt_duration(eta) if eta is not None else '?'}")
        if st.get("error"):
            t.append(f"\nerror: {st['error']}", style="bold red")
        self.query_one("#stats", Static).update(t)
        if self.losses:
            self.query_one(Sparkline).data = self.losses[-200:]
            self.query_one("#loss-label", Static).update(
                f"loss  first {self.losses[0]:.4f}  last {self.losses[-1]:.4f}  min {min(self.losses):.4f}")

    # -- keys --------------------------------------------------------------------------------
    def action_stop(self) -> None:
        st = self.run.read_status() if self.run else {}
        pid = st.get("pid")
        if effective_state(st) != "running" or not isinstance(pid, int):
            self.notify("this run is not running", severity="warning")
            return
        if st.get("host") != socket.gethostname():
            self.notify(f"the run is on host {st.get('host')}; stop it there", severity="error")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                try:
                    os.kill(pid, signal.SIGINT)
                    self.notify(f"sent SIGINT to {pid}: the run stops after the current step")
                except ProcessLookupError:
                    self.notify("the process is already gone", severity="warning")

        self.app.push_screen(Confirm(f"Stop run {self.run.name} (pid {pid})?"), answered)

    def action_checkpoint(self) -> None:
        """Ask the run to save a checkpoint after its current step (the same file `tuneforge checkpoint` drops)."""
        from tuneforge.runner import control

        st = self.run.read_status() if self.run else {}
        if effective_state(st) != "running":
            self.notify("this run is not running", severity="warning")
            return
        control.request(self.run, control.CHECKPOINT)
        self.notify(f"asked {self.run.name} to save a checkpoint after the current step")

    def action_chat(self) -> None:
        if self.run is None or self.run.weights is None:
            self.notify("no weights yet: chat is available when the run has finished", severity="warning")
            return
        with self.app.suspend():
            subprocess.run([sys.executable, "-m", "tuneforge.runner.cli", "chat", str(self.run.path)])

    def action_back(self) -> None:
        self.app.pop_screen()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a finished child is a zombie until reaped: reap it without blocking
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
