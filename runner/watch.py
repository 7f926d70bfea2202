"""Following a run from any terminal, read-only: `watch` (live view from metrics.jsonl and
status.json, with the run's stage figures), `logs` (train.log, optionally followed) and `runs` (one row per run directory).
Nothing here imports torch, so these commands start instantly.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from . import rundir, stage_figures
from .progress import PlainProgress, RichProgress, plain_line

ACTIVE = ("starting", "running")


class JsonlTail:
    """New complete lines of a growing JSONL file (a half-written last line waits for the next read)."""

    def __init__(self, path: Path):
        self.path, self.pos = path, 0
        self.restarted = False  # the file shrank (a resumed run rewrote it): re-read from the top

    def read_new(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        self.restarted = size < self.pos
        if self.restarted:
            self.pos = 0
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.pos += end
        out = []
        for line in data[:end].decode("utf-8", "replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out


class TextTail:
    """New text of a growing file: whole lines only unless `final` (the writer may be mid-line)."""

    def __init__(self, path: Path):
        self.path, self.pos = path, 0

    def read_new(self, final: bool = False) -> str:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return ""
        if not final:
            data = data[: data.rfind(b"\n") + 1]
        self.pos += len(data)
        return data.decode("utf-8", "replace")


def _ts(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def summary(run: rundir.RunDir) -> dict[str, Any]:
    """One run as a row: name, stage, state (with 'dead'), step/total, last loss, elapsed, start time."""
    status = run.read_status()
    state = rundir.effective_state(status)
    recs = tail_records(run.metrics)
    last_loss = next((rec["loss"] for rec in reversed(recs) if rec.get("loss") is not None), None)
    start = status.get("started_ts")
    end = _ts(status.get("ended_at")) if state not in ACTIVE else None
    elapsed = ((end or time.time()) - start) if isinstance(start, (int, float)) and state != "dead" else None
    if state == "dead":  # the process is gone: elapsed until its last record
        elapsed = recs[-1].get("elapsed_s") if recs else None
    return {"name": run.name, "path": str(run.path), "stage": stage_figures.run_stage(run.path), "state": state,
            "step": status.get("step"),
            "total_steps": status.get("total_steps"), "loss": last_loss, "elapsed_s": elapsed,
            "started_at": status.get("started_at"), "started_ts": start, "error": status.get("error"),
            "last_checkpoint": status.get("last_checkpoint")}


def tail_records(path: Path, nbytes: int = 65536) -> list[dict[str, Any]]:
    """The last records of a metrics file without reading a long run's whole history."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > nbytes:
        lines = lines[1:]  # the first line is probably cut
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def list_runs(runs_dir: str | Path) -> list[dict[str, Any]]:
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    rows = [summary(rundir.RunDir(p)) for p in root.iterdir()
            if p.is_dir() and ((p / "status.json").is_file() or (p / "recipe.yaml").is_file())]
    return sorted(rows, key=lambda r: r.get("started_ts") or 0, reverse=True)


def step_text(step, total) -> str:
    """'step 3/40'; a run that has not counted its steps yet reads 'step 0/?', never 'None'."""
    return f"step {step or 0}/{total if total else '?'}"


def ending_line(run: rundir.RunDir) -> str:
    """What happened to a run that is no longer active, with the next command to type."""
    s = summary(run)
    status = run.read_status()
    state, step = s["state"], step_text(s["step"], s["total_steps"])
    if state == "finished":
        fm = status.get("final_metrics") or {}
        extra = "".join(f", {k.replace('_', ' ')} {fm[k]}" for k in ("train_loss", "eval_loss") if fm.get(k) is not None)
        extra += "".join(f", {part}" for part in _last_figures(run))
        return f"run {run.name} finished ({step}{extra}); weights: {status.get('weights')}"
    resume = f"; resume with: tuneforge resume {run.path}" if s["last_checkpoint"] else ""
    if state == "stopped":
        return f"run {run.name} stopped at {step} ({status.get('stop_reason') or 'interrupted'}){resume}"
    if state == "dead":
        return (f"run {run.name} is dead: its process (pid {status.get('pid')}) is gone without a word, "
                f"last seen at {step}{resume}")
    return f"run {run.name} {state} at {step}: {s['error'] or 'see ' + str(run.log)}{resume}"


def _last_figures(run: rundir.RunDir) -> list[str]:
    """The stage's headline figures at the end: the last eval's when there was one, else the last step's."""
    stage = stage_figures.run_stage(run.path)
    for rec in reversed(tail_records(run.metrics)):
        parts = stage_figures.describe(rec, stage, headline=True)
        if parts:
            return parts
    return []


def watch(run: rundir.RunDir, mode: str = "auto", interval: float = 1.0, out: TextIO | None = None) -> str:
    """Show a run's progress until it ends; returns its final state."""
    out = out or sys.stdout
    rich = mode == "rich" or (mode == "auto" and out.isatty())
    status = run.read_status()
    stage = stage_figures.run_stage(run.path)  # its figures (DPO's margin, ...) beside the loss
    progress = RichProgress(stage=stage) if rich else PlainProgress(out, stage=stage)
    title = f"tuneforge watch · {run.name}" + (f" · {stage}" if stage not in (None, "sft") else "")
    if rich:
        progress.start(title, status.get("total_steps") or 0)
    else:
        print(f"{title} ({rundir.effective_state(status)}, {step_text(status.get('step'), status.get('total_steps'))})",
              file=out, flush=True)
    tail = JsonlTail(run.metrics)
    try:
        while True:
            records = tail.read_new()
            if tail.restarted and rich:
                progress.clear()
            for rec in records:
                progress.update(rec)
            state = rundir.effective_state(run.read_status())
            if state not in ACTIVE:
                for rec in tail.read_new():  # the last lines written before the end
                    progress.update(rec)
                break
            time.sleep(interval)
    finally:
        progress.stop()
    print(ending_line(run), file=out, flush=True)
    return state


def logs(run: rundir.RunDir, follow: bool = False, interval: float = 0.5, out: TextIO | None = None) -> None:
    """Print train.log; with follow, keep printing new lines until the run ends."""
    out = out or sys.stdout
    tail = TextTail(run.log)

    def pump(final: bool = False) -> None:
        text = tail.read_new(final=final or not follow)
        if text:
            out.write(text)
            out.flush()

    pump()
    while follow and rundir.effective_state(run.read_status()) in ACTIVE:
        time.sleep(interval)
        pump()
    if follow:
        pump(final=True)


__all__ = ["JsonlTail", "TextTail", "ending_line", "list_runs", "logs", "plain_line", "summary", "watch"]
