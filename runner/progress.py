"""Progress output: a rich live panel on a terminal, one plain line per log step otherwise.

Both read the same metric records the runner writes to metrics.jsonl, so `tuneforge watch` can
reuse them on a run started elsewhere.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any, TextIO

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    vals = [v for v in values if v == v][-width:]  # drop NaN, keep the latest
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1)))] for v in vals)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    return str(timedelta(seconds=int(max(seconds, 0))))


def plain_line(rec: dict[str, Any]) -> str:
    """`step 120/3000 | loss 1.234 | lr 2.0e-05 | 812 tok/s | eta 0:12:03` — no \\r, no escapes."""
    parts = [f"step {rec.get('step')}/{rec.get('total_steps')}"]
    if rec.get("loss") is not None:
        parts.append(f"loss {rec['loss']:.4f}")
    if rec.get("eval_loss") is not None:
        parts.append(f"eval_loss {rec['eval_loss']:.4f}")
    if rec.get("lr") is not None:
        parts.append(f"lr {rec['lr']:.1e}")
    if rec.get("tokens_per_s") is not None:
        parts.append(f"{rec['tokens_per_s']:.0f} tok/s")
    if rec.get("eta_s") is not None:
        parts.append(f"eta {fmt_duration(rec['eta_s'])}")
    return " | ".join(parts)


class PlainProgress:
    """For nohup, pipes and CI: one line per log step, flushed, nothing else."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def start(self, title: str, total_steps: int) -> None:
        print(f"{title}: {total_steps} steps", file=self.stream, flush=True)

    def update(self, rec: dict[str, Any]) -> None:
        print(plain_line(rec), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def stop(self) -> None:
        pass


class RichProgress:
    """A live panel: bar with ETA, loss/eval loss/lr/tok/s, a loss sparkline. Redraws <= 4/s."""

    def __init__(self):
        from rich.console import Console

        self.console = Console()
        self.live = None
        self.losses: list[float] = []
        self.last: dict[str, Any] = {}
        self.title = ""
        self.total = 0

    def start(self, title: str, total_steps: int) -> None:
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.title, self.total = title, total_steps
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("eta"), TimeRemainingColumn(), console=self.console)
        self.task = self.bar.add_task("train", total=total_steps)
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def _render(self):
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table

        r = self.last
        grid = Table.grid(padding=(0, 2))
        grid.add_row(
            f"loss [bold]{r['loss']:.4f}[/]" if r.get("loss") is not None else "loss -",
            f"eval [bold]{r['eval_loss']:.4f}[/]" if r.get("eval_loss") is not None else "eval -",
            f"lr {r['lr']:.1e}" if r.get("lr") is not None else "lr -",
            f"{r['tokens_per_s']:.0f} tok/s" if r.get("tokens_per_s") is not None else "tok/s -",
        )
        spark = sparkline(self.losses, width=max(10, min(self.console.width - 12, 60)))
        return Panel(Group(self.bar, grid, f"[cyan]{spark}[/]"), title=self.title, width=min(self.console.width, 100))

    def update(self, rec: dict[str, Any]) -> None:
        if rec.get("loss") is not None:
            self.losses.append(rec["loss"])
        self.last = {**self.last, **{k: v for k, v in rec.items() if v is not None}}
        self.bar.update(self.task, completed=rec.get("step", 0), total=rec.get("total_steps") or self.total)
        if self.live:
            self.live.update(self._render())

    def message(self, text: str) -> None:
        self.console.print(text)

    def stop(self) -> None:
        if self.live:
            self.live.update(self._render())
            self.live.stop()
            self.live = None


def make_progress(mode: str = "auto"):
    """'auto': rich on a terminal, plain otherwise; 'rich' or 'plain' to force."""
    if mode == "plain" or (mode == "auto" and not sys.stdout.isatty()):
        return PlainProgress()
    return RichProgress()
