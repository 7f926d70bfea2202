"""Requests to a running run, as files in its run directory.

`tuneforge stop` and `tuneforge checkpoint` drop a file in runs/<name>/control/; the running
trainer looks for it after every optimizer step and removes it once acted on. Files work from any
terminal and any host that sees the run directory; a local stop also sends SIGTERM, which the run
handles the same way (checkpoint, then stop).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from . import rundir

STOP, CHECKPOINT = "stop", "checkpoint"


def control_dir(run: rundir.RunDir) -> Path:
    return run.path / "control"


def request(run: rundir.RunDir, kind: str) -> Path:
    folder = control_dir(run)
    folder.mkdir(exist_ok=True)
    path = folder / kind
    rundir.write_json_atomic(path, {"requested_at": time.time(), "by_pid": os.getpid(), "host": socket.gethostname()})
    return path


def take(run: rundir.RunDir, kind: str) -> bool:
    """True once per request: the request file is removed when taken."""
    try:
        (control_dir(run) / kind).unlink()
        return True
    except FileNotFoundError:
        return False


def clear(run: rundir.RunDir) -> None:
    for kind in (STOP, CHECKPOINT):
        take(run, kind)


def request_stop(run: rundir.RunDir) -> bool:
    """Ask the run to checkpoint and stop. Returns True when a local process was also signalled."""
    request(run, STOP)
    status = run.read_status()
    pid = status.get("pid")
    if status.get("host") == socket.gethostname() and rundir.effective_state(status) == "running" and isinstance(pid, int):
        try:
            os.kill(pid, signal.SIGTERM)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    return False
