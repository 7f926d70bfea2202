"""One run, live: progress, loss sparkline, lr, tokens/s, ETA and the log tail.

Everything comes from the run's RunHandle (tuneforge.runner.services): the one the app got back
when it launched the run, or one opened from the runs table. It works the same for a run started
here, detached, or by hand elsewhere. `s` asks the run to stop (it saves a checkpoint first; the
same control file `tuneforge stop` drops), `r` resumes a stopped, failed or dead run from its last
checkpoint (detached, as `tuneforge resume --detach`), `k` asks for a checkpoint now, `c` opens the
chat screen on the run's weights. Elapsed time is services' one clock (the runs table's and `tuneforge
runs`'); log lines wrap at the panel's edge.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, RichLog, Sparkline, Static

from tuneforge.runner import services
from tuneforge.runner.progress import fmt_duration
from tuneforge.runner.services import RunHandle, stage_figures

from .dialogs import Confirm


class MonitorScreen(Screen):
    BINDINGS = [
        Binding("s", "stop", "Stop run"),
        Binding("r", "resume", "Resume"),
        Binding("k", "checkpoint", "Checkpoint now"),
        Binding("c", "chat", "Chat"),
        Binding("e", "eval", "Eval"),
        Binding("escape", "back", "Back"),
    ]
    DEFAULT_CSS = """
    MonitorScreen #title { height: 1; background: $panel; padding: 0 1; text-style: bold; }
    MonitorScreen ProgressBar { padding: 0 1; height: 1; }
    MonitorScreen #stats { padding: 0 1; height: auto; }
    MonitorScreen Sparkline { height: 3; margin: 0 1; }
    MonitorScreen #loss-label { padding: 0 1; color: $text-muted; }
    MonitorScreen RichLog { height: 1fr; border: round $primary; }
    MonitorScreen #eval-line { padding: 0 1; height: auto; }
    """

    def __init__(self, handle: RunHandle) -> None:
        super().__init__()
        self.handle = handle
        self.losses: list[float] = []
        self.last: dict = {}
        self.state = "starting"
        self._console_shown = False
        self.lines: list[str] = []  # the log panel's text, unwrapped

    def compose(self) -> ComposeResult:
        yield Static("", id="title")
        yield ProgressBar(total=None, show_eta=False, id="progress")
        yield Static("", id="stats")
        yield Static("loss", id="loss-label")
        yield Sparkline([], id="loss")
        yield Static("", id="eval-line")  # the run's latest eval (screens/eval.py)
        yield RichLog(id="log", max_lines=2000, wrap=True, markup=False, highlight=False)
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(1.0, self.poll)

    # -- reading the run ---------------------------------------------------------------------
    def poll(self) -> None:
        st = self.handle.status()
        self.state = self.handle.state()
        records = self.handle.new_metrics()
        if self.handle.metrics_restarted:  # a resumed run rewrote its metrics
            self.losses.clear()
            self.last = {}
        for rec in records:
            if rec.get("loss") is not None:
                self.losses.append(float(rec["loss"]))
            self.last.update({k: v for k, v in rec.items() if v is not None})
        text = self.handle.new_log()
        if text:
            self.log_lines(text)
        if self.state in ("failed", "dead") and not self._console_shown:
            self._console_shown = True  # a child that died early says why on its console only
            console = self.handle.console_text()
            if console.strip():
                self.log_lines(f"--- console output ---\n{console}")
        self._show(st)

    def _show_eval(self) -> None:
        from tuneforge.runner.services import eval_headline

        line = eval_headline(self.handle.path)
        self.query_one("#eval-line", Static).update(f"eval: {line}" if line else "")

    def action_eval(self) -> None:
        if self.handle.weights is None:
            self.notify("no weights yet: eval is available when the run has finished", severity="warning")
            return
        from .eval import EvalScreen

        self.app.push_screen(EvalScreen(self.handle.path))

    def log_lines(self, text: str) -> None:
        self.lines.extend(text.rstrip("\n").split("\n"))
        self.query_one(RichLog).write(Text(text.rstrip("\n")))

    def _show(self, st: dict) -> None:
        self._show_eval()
        step, total = int(st.get("step") or self.last.get("step") or 0), st.get("total_steps") or self.last.get("total_steps")
        self.query_one("#title", Static).update(f"{self.handle.name} · {self.state} · {self.handle.path}")
        bar = self.query_one(ProgressBar)
        if total:
            bar.update(total=total, progress=step)
        rec = self.last
        elapsed = self.handle.summary().get("elapsed_s")  # the runs table's clock, and `tuneforge runs'`
        eta = rec.get("eta_s") if self.state == "running" else None
        t = Text()
        t.append(f"{self.state}", style={"running": "bold cyan", "finished": "bold green", "stopped": "yellow"}.get(self.state, "bold red"))
        t.append(f"  step {step}/{total or '?'}")
        if rec.get("loss") is not None:
            t.append(f"  loss {rec['loss']:.4f}")
        if rec.get("eval_loss") is not None:
            t.append(f"  eval {rec['eval_loss']:.4f}")
        figures = stage_figures(self.handle, rec)  # the stage's own (DPO's margin, accuracy, ...)
        if figures:
            t.append("\n" + "  ".join(figures))
        t.append("\n")
        if rec.get("lr") is not None:
            t.append(f"lr {rec['lr']:.2e}  ")
        if rec.get("tokens_per_s") is not None:
            t.append(f"{rec['tokens_per_s']:.0f} tok/s  ")
        t.append(f"elapsed {fmt_duration(elapsed)}  ETA {eta_text(self.state, eta)}")
        if st.get("error"):
            t.append(f"\nerror: {st['error']}", style="bold red")
        self.query_one("#stats", Static).update(t)
        if self.losses:
            self.query_one(Sparkline).data = self.losses[-200:]
            self.query_one("#loss-label", Static).update(
                f"loss  first {self.losses[0]:.4f}  last {self.losses[-1]:.4f}  min {min(self.losses):.4f}")

    # -- keys --------------------------------------------------------------------------------
    def action_stop(self) -> None:
        if not self._can_ask():
            return

        def answered(yes: bool | None) -> None:
            if yes:
                if self.handle.stop():
                    self.notify(f"asked {self.handle.name} to save a checkpoint and stop after the current step")
                else:
                    self.notify("the run has already ended", severity="warning")

        self.app.push_screen(Confirm(f"Stop run {self.handle.name}? (it saves a checkpoint first)"), answered)

    def action_resume(self) -> None:
        """Continue the run from its last checkpoint in a detached process; the curve keeps its
        points up to that checkpoint (the resumed run keeps them in metrics.jsonl)."""
        state = self.handle.state()
        if state in ("starting", "running"):
            self.notify("the run is still running: stop it first (s)", severity="warning")
            return
        try:
            handle = services.resume(self.handle, "detached")
        except Exception as exc:  # noqa: BLE001 - e.g. finished, or no checkpoint: say why
            self.notify(getattr(exc, "message", str(exc)), severity="error", timeout=8)
            return
        self.handle = handle
        self.losses.clear()
        self.last = {}
        self._console_shown = False
        self.log_lines(f"--- resumed from the last checkpoint ({handle.where()}) ---")
        self.poll()

    def action_checkpoint(self) -> None:
        """Ask the run to save a checkpoint after its current step (as `tuneforge checkpoint` does)."""
        if self._can_ask() and self.handle.checkpoint():
            self.notify(f"asked {self.handle.name} to save a checkpoint after the current step")

    def _can_ask(self) -> bool:
        state = self.handle.state()
        if state == "starting":
            self.notify("the run is still starting: ask again once it runs", severity="warning")
        elif state != "running":
            self.notify("this run is not running", severity="warning")
        return state == "running"

    def action_chat(self) -> None:
        if self.handle.weights is None:
            self.notify("no weights yet: chat is available when the run has finished", severity="warning")
            return
        from ..chat_screen import ChatScreen

        self.app.push_screen(ChatScreen(str(self.handle.path), closable=True))

    def action_back(self) -> None:
        self.app.pop_screen()


def eta_text(state: str, eta: float | None) -> str:
    """'—' once a run has ended (stopped, dead, failed, finished): nothing is left to wait for."""
    if state != "running":
        return "—"
    return fmt_duration(eta) if eta is not None else "?"
