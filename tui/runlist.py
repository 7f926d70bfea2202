"""The runs table's rows, read from run directories (the same files `tuneforge runs` reads)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.runner.progress import fmt_duration
from tuneforge.runner.rundir import RunDir, effective_state


@dataclass
class RunRow:
    run: RunDir
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


def tail_records(path: Path, max_bytes: int = 65536) -> list[dict[str, Any]]:
    """The last metric records of a metrics.jsonl without reading a long file whole (the runner's reader)."""
    from tuneforge.runner.watch import tail_records as runner_tail

    return runner_tail(path, max_bytes)


def last_loss(records: list[dict[str, Any]]) -> float | None:
    for rec in reversed(records):
        if rec.get("loss") is not None:
            return rec["loss"]
    return None


def read_row(run: RunDir) -> RunRow:
    st = run.read_status()
    state = effective_state(st) if st else "unknown"
    started_ts = st.get("started_ts")
    if started_ts is None:
        elapsed = None
    elif state == "running":
        elapsed = time.time() - started_ts
    else:
        elapsed = (st.get("final_metrics") or {}).get("elapsed_s")
        if elapsed is None:
            recs = tail_records(run.metrics)
            elapsed = recs[-1].get("elapsed_s") if recs else None
    recs = tail_records(run.metrics, 16384)
    return RunRow(run, run.name, state, int(st.get("step") or 0), st.get("total_steps"), last_loss(recs),
                  elapsed, str(st.get("started_at") or ""))


def list_runs(runs_dir: Path) -> list[RunRow]:
    """Every run under runs_dir, newest first."""
    if not runs_dir.is_dir():
        return []
    rows = []
    for p in runs_dir.iterdir():
        if p.is_dir() and ((p / "status.json").is_file() or (p / "recipe.yaml").is_file()):
            rows.append(read_row(RunDir(p)))
    rows.sort(key=lambda r: r.started_at, reverse=True)
    return rows
