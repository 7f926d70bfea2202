"""The run directory: the file interface between the runner and everything that watches it.

runs/<name>/
  recipe.yaml     the resolved recipe (absolute paths, every field) — replays as is
  metrics.jsonl   one JSON object per log step
  status.json     state, pid, host, step, times, final metrics, error
  train.log       plain-text log of the run
  data_report.json  what the data layer read, used, truncated and rejected (with row numbers)
  checkpoints/    trainer checkpoints
  adapter/ | model/  final weights with tokenizer and chat template
Monitors, `tuneforge runs`/`watch` and the TUI only read these files.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import TuneforgeError

STATES = ("starting", "running", "finished", "failed", "stopped")


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    recipe = property(lambda self: self.path / "recipe.yaml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    status = property(lambda self: self.path / "status.json")
    log = property(lambda self: self.path / "train.log")
    data_report = property(lambda self: self.path / "data_report.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    adapter = property(lambda self: self.path / "adapter")
    model = property(lambda self: self.path / "model")

    @property
    def weights(self) -> Path | None:
        """The final weights folder (adapter/ for LoRA, model/ for full), if the run wrote one."""
        for p in (self.adapter, self.model):
            if p.is_dir():
                return p
        return None

    # --- status ---------------------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def update_status(self, **fields: Any) -> dict[str, Any]:
        status = self.read_status()
        status.update(fields)
        write_json_atomic(self.status, status)
        return status

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        out = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line being written right now
        return out


def free_name(root: Path, base: str) -> str:
    """`base`, or the first of `base-2`, `base-3`, ... not taken under root (what create picks)."""
    if not (root / base).exists():
        return base
    n = 2
    while (root / f"{base}-{n}").exists():
        n += 1
    return f"{base}-{n}"


def create(runs_dir: str | Path, name: str | None, overwrite: bool = False) -> RunDir:
    """Make a new run directory. An existing run is never overwritten unless asked: a fresh
    name (`name-2`, `name-3`, ...) is chosen instead, so replaying a recipe never loses a run."""
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = name or datetime.now().strftime("run-%Y%m%d-%H%M%S")
    path = root / base
    if path.exists():
        if overwrite:
            status = RunDir(path).read_status()
            if status.get("state") == "running" and _pid_alive(status.get("pid")):
                raise TuneforgeError(
                    f"run '{base}' is still running (pid {status.get('pid')}), so it cannot be overwritten",
                    f"stop it first (tuneforge stop {path}) or choose another name",
                )
            import shutil

            shutil.rmtree(path)
        else:
            path = root / free_name(root, base)
    path.mkdir(parents=True)
    (path / "checkpoints").mkdir()
    return RunDir(path)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def initial_status(total_steps: int | None = None) -> dict[str, Any]:
    return {
        "state": "running", "pid": os.getpid(), "host": socket.gethostname(), "step": 0,
        "total_steps": total_steps, "started_at": now_iso(), "started_ts": time.time(), "ended_at": None,
        "final_metrics": None, "error": None,
    }


def find_run(ref: str | Path, runs_dir: str | Path = "runs") -> RunDir:
    """A run by path or by name under runs_dir."""
    for candidate in (Path(ref), Path(runs_dir) / str(ref)):
        if (candidate / "recipe.yaml").is_file() or (candidate / "status.json").is_file():
            return RunDir(candidate)
    raise TuneforgeError(f"no run called '{ref}' (looked for {ref} and {Path(runs_dir) / str(ref)})",
                         "list runs with: tuneforge runs")


def effective_state(status: dict[str, Any]) -> str:
    """The state, with 'dead' for a run marked running whose process is gone (on this host)."""
    state = status.get("state", "unknown")
    if state == "starting" and status.get("pid") is None:  # launched in the background, child not up yet
        started = status.get("started_ts")
        late = isinstance(started, (int, float)) and time.time() - started > 300
        return "dead" if late and status.get("host") == socket.gethostname() else state
    if state in ("running", "starting") and status.get("host") == socket.gethostname() and not _same_process_alive(status):
        return "dead"
    return state


def _same_process_alive(status: dict[str, Any]) -> bool:
    """The run's pid is alive, is not a zombie, and is not a newer process that reused the pid."""
    pid = status.get("pid")
    if not _pid_alive(pid):
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = status.get("started_ts")
        return not (isinstance(started, (int, float)) and proc.create_time() > started + 60)
    except Exception:  # noqa: BLE001 - psutil missing or the process just went: trust kill(0)
        return _pid_alive(pid)
