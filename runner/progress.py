"""Progress output: a rich live panel on a terminal, one plain line per log step otherwise.

Both read the same metric records the runner writes to metrics.jsonl, so `tuneforge watch` can
reuse them on a run started elsewhere. Beside the loss they show the stage's own figures (DPO's
margin and accuracy, KTO's kl, ...: stage_figures.py).
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from typing import Any, TextIO

from . import stage_figures

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)][-width:]  # drop NaN/inf, keep the latest
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1)))] for v in vals)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    return str(timedelta(seconds=int(max(seconds, 0))))


def fmt_mb(mb: float | None) -> str:
    if mb is None:
        return "?"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def plain_line(rec: dict[str, Any], stage: str | None = None) -> str:
    """`step 120/3000 | loss 1.234 | lr 2.0e-05 | 812 tok/s | eta 0:12:03` — no \\r, no escapes. A
    stage with figures of its own adds its headline ones after the loss (`| margin +0.412 | acc 75%`);
    stage None: the stage the record's keys show."""
    parts = [f"step {rec.get('step')}/{rec.get('total_steps')}"]
    if rec.get("loss") is not None:
        parts.append(f"loss {rec['loss']:.4f}")
    if rec.get("eval_loss") is not None:
        parts.append(f"eval_loss {rec['eval_loss']:.4f}")
    parts += stage_figures.describe(rec, stage, headline=True)
    if rec.get("lr") is not None:
        parts.append(f"lr {rec['lr']:.1e}")
    if rec.get("tokens_per_s") is not None:
        parts.append(f"{rec['tokens_per_s']:.0f} tok/s")
    if rec.get("eta_s") is not None:
        parts.append(f"eta {fmt_duration(rec['eta_s'])}")
    return " | ".join(parts)


class PlainProgress:
    """For nohup, pipes and CI: one line per log step, at most one every `min_interval` seconds
    (eval results and the last step always print), flushed, no \r and no escape codes."""

    def __init__(self, stream: TextIO | None = None, min_interval: float = 0.0, stage: str | None = None):
        self.stream = stream or sys.stdout
        self.min_interval = min_interval
        self.stage = stage
        self.last_print = float("-inf")

    def start(self, title: str, total_steps: int) -> None:
        print(f"{title}: {total_steps} steps", file=self.stream, flush=True)

    def update(self, rec: dict[str, Any]) -> None:
        now = time.monotonic()
        last_step = rec.get("step") is not None and rec.get("step") == rec.get("total_steps")
        if now - self.last_print < self.min_interval and rec.get("eval_loss") is None and not last_step:
            return
        self.last_print = now
        print(plain_line(rec, self.stage), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def stop(self) -> None:
        pass


class RichProgress:
    """A live panel: bar with ETA, loss/eval loss/lr/tok/s, the stage's figures, a loss sparkline
    and one of the stage's first figure (DPO's margin). Redraws <= 4/s."""

    def __init__(self, console=None, stage: str | None = None):
        from rich.console import Console

        self.console = console or Console()
        self.live = None
        self.stage = stage  # None: the stage the records' keys show
        self.losses: list[float] = []
        self.figure: list[float] = []  # the stage's first figure, for its sparkline
        self.last: dict[str, Any] = {}
        self.title = ""
        self.total = 0

    def start(self, title: str, total_steps: int) -> None:
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.title, self.total = title, total_steps
        # ETA comes from the run's own records (also right when `watch` replays a run's history).
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=None), MofNCompleteColumn(),
                            TextColumn("eta {task.fields[eta]}"), console=self.console, expand=True)
        self.task = self.bar.add_task("train", total=total_steps, eta="?")
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
        grid.add_row(
            f"mem {fmt_mb(r.get('rss_mb'))}",
            f"epoch {r['epoch']:.2f}" if r.get("epoch") is not None else "",
            f"elapsed {fmt_duration(r.get('elapsed_s'))}",
            f"gpu {fmt_mb(r.get('gpu_mb'))}" if r.get("gpu_mb") is not None else "",
        )
        width = min(self.console.width, 100)
        spark = sparkline(self.losses, width=max(10, width - 12))
        rows = [self.bar, grid]
        figs = stage_figures.describe(r, self._stage())
        if figs:
            rows.append("  ".join(figs))
        rows.append(f"loss [cyan]{spark}[/]")
        first = stage_figures.figures(self._stage())[:1]
        if first and self.figure:
            label = first[0].label
            rows.append(f"{label} [magenta]{sparkline(self.figure, width=max(10, width - 8 - len(label)))}[/]")
        return Panel(Group(*rows), title=self.title, width=width)

    def _stage(self) -> str:
        return self.stage or stage_figures.guess_stage(self.last)

    def clear(self) -> None:
        """Forget the curves (a resumed run rewrote its metrics)."""
        self.losses.clear()
        self.figure.clear()

    def update(self, rec: dict[str, Any]) -> None:
        if rec.get("loss") is not None:
            self.losses.append(rec["loss"])
        first = stage_figures.figures(self.stage or stage_figures.guess_stage(rec))[:1]
        if first and isinstance(rec.get(first[0].key), (int, float)):
            self.figure.append(rec[first[0].key])
        self.last = {**self.last, **{k: v for k, v in rec.items() if v is not None}}
        self.bar.update(self.task, completed=rec.get("step", 0), total=rec.get("total_steps") or self.total,
                        eta=fmt_duration(rec.get("eta_s")) if rec.get("eta_s") is not None else "?")
        if self.live:
            self.live.update(self._render())

    def message(self, text: str) -> None:
        self.console.print(text)

    def stop(self) -> None:
        if self.live:
            self.live.update(self._render())
            self.live.stop()
            self.live = None


def make_progress(mode: str = "auto", plain_interval: float = 0.0, stage: str | None = None):
    """'auto': rich on a terminal, plain otherwise; 'rich' or 'plain' to force. Plain lines come at
    most every `plain_interval` seconds (`--plain-every`). stage: whose figures to show (None: the
    stage the records' keys show)."""
    if mode == "plain" or (mode == "auto" and not sys.stdout.isatty()):
        return PlainProgress(min_interval=plain_interval, stage=stage)
    return RichProgress(stage=stage)
