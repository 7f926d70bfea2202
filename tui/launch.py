"""Starting runs from the app: always as a separate process (never training in the TUI).

Run now   `python -m tuneforge.runner.cli train RECIPE --progress plain`, console output to
          <runs_dir>/.launch/<name>.log (the run itself writes <run>/train.log)
Detached  the same command in a new tmux session `tuneforge-<name>` that outlives the app and
          the SSH connection; attach with `tmux attach -t tuneforge-<name>`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.runner.rundir import RunDir

# Environment a detached run needs even when a tmux server with an older environment is running.
_PASS_ENV_PREFIXES = ("TUNEFORGE_", "HF_", "TRANSFORMERS_", "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "VIRTUAL_ENV", "PATH")


def train_argv(recipe_path: Path, progress: str | None = "plain") -> list[str]:
    argv = [sys.executable, "-m", "tuneforge.runner.cli", "train", str(recipe_path)]
    return argv + (["--progress", progress] if progress else [])


def display_command(recipe_path: Path) -> str:
    return f"tuneforge train {shlex.quote(str(recipe_path))}"


@dataclass
class Launched:
    name: str
    pid: int | None
    started: float
    log: Path | None = None
    tmux_session: str | None = None


def run_now(recipe_path: Path, runs_dir: Path, name: str) -> Launched:
    """Start training as a child process in its own session (Ctrl-C in the app does not reach it)."""
    logs = runs_dir / ".launch"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    started = time.time()
    with open(log, "wb") as out:
        proc = subprocess.Popen(train_argv(recipe_path), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=Path.cwd())
    return Launched(name, proc.pid, started, log=log)


def tmux_available() -> bool:
    return shutil.which("tmux") is not None


def run_detached(recipe_path: Path, name: str) -> Launched:
    """Start training in a detached tmux session named tuneforge-<name> (a fresh suffix if taken)."""
    if not tmux_available():
        from tuneforge.runner.errors import TuneforgeError

        raise TuneforgeError("tmux is not installed, so a detached run cannot be started",
                             "install tmux (apt-get install tmux) or use Run now")
    session = f"tuneforge-{name}".replace(".", "-").replace(":", "-")
    n = 2
    base = session
    while subprocess.run(["tmux", "has-session", "-t", f"={session}"], capture_output=True).returncode == 0:
        session, n = f"{base}-{n}", n + 1
    env_args: list[str] = []
    for key, value in os.environ.items():
        if key.startswith(_PASS_ENV_PREFIXES):
            env_args += ["-e", f"{key}={value}"]
    command = shlex.join(train_argv(recipe_path, progress=None))
    started = time.time()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-c", str(Path.cwd()), *env_args, command],
                   check=True, capture_output=True)
    return Launched(name, None, started, tmux_session=session)


def find_started_run(runs_dir: Path, name: str, since: float) -> RunDir | None:
    """The run directory a launch created: named <name> or <name>-N, started after `since`."""
    if not runs_dir.is_dir():
        return None
    best = None
    for p in runs_dir.iterdir():
        if not p.is_dir() or not (p.name == name or p.name.startswith(name + "-")):
            continue
        st = RunDir(p).read_status()
        ts = st.get("started_ts") or 0
        if ts >= since - 2 and (best is None or ts > best[0]):
            best = (ts, RunDir(p))
    return best[1] if best else None
