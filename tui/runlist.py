"""The runs table's rows: services.list_runs summaries (the ones `tuneforge runs` prints), shaped
as table cells."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneforge.runner import services
from tuneforge.runner.progress import fmt_duration


@dataclass
class RunRow:
    path: Path
    name: str
    state: str
    step: int
    total: int | None
    loss: float | None
    elapsed_s: float | None
    started_at: str

    def cells(self) -> tuple[str, ...]:
        total = "?" if self.total is None else str(self.total)
        loss = "" if self.loss is None else f"{self.loss:.4f}"
        started = self.started_at.replace("T", " ")[:16]
        return (self.name, self.state, f"{self.step}/{total}", loss, fmt_duration(self.elapsed_s), started)


def _row(s: dict) -> RunRow:
    return RunRow(Path(s["path"]), s["name"], s["state"] or "unknown", int(s.get("step") or 0),
                  s.get("total_steps"), s.get("loss"), s.get("elapsed_s"), str(s.get("started_at") or ""))


def list_runs(runs_dir: Path) -> list[RunRow]:
    """Every run under runs_dir, newest first."""
    return [_row(s) for s in services.list_runs(runs_dir)]
