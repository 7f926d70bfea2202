"""The one place that starts training processes (services.launch calls it; nothing else spawns).

A child is `python -m tuneforge.runner.cli train RUN/recipe.yaml --run-dir RUN ...` on a run
directory that already exists, started one of two ways:
  tmux    a new detached session `tf-<run>` (attach to see the live panel); survives SSH drops
  setsid  a new session with no terminal; console output goes to RUN/console.log
Two seams for the process-wide policy (threads, environment): `child_env()` builds every child's
environment and `_spawn_*` are the only spawning functions.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import rundir, threads
from .errors import TuneforgeError

# Terminal-specific variables that must not leak from the launching shell into the tmux pane.
_DROP_ENV = {"TMUX", "TMUX_PANE", "TERM", "TERMCAP", "COLUMNS", "LINES", "SHLVL", "_", "OLDPWD", "PWD"}


@dataclass
class Started:
    method: str  # "tmux" or "setsid"
    pid: int | None
    session: str | None = None
    console_log: Path | None = None
    process: subprocess.Popen | None = None  # setsid: reaped by whoever holds it


def tmux_available() -> bool:
    return shutil.which("tmux") is not None


def child_env() -> dict[str, str]:
    """The environment of every training child: ours, minus the launching terminal's own variables.
    The CPU thread policy (runner.threads) is applied here, once, for every launcher."""
    env = threads.child_env(os.environ)  # the thread policy holds in the child before its torch loads
    return {k: v for k, v in env.items() if k not in _DROP_ENV and "=" not in k}


def child_command(run: rundir.RunDir, resume: bool, progress: str, plain_every: float) -> list[str]:
    cmd = [sys.executable, "-m", "tuneforge.runner.cli", "train", str(run.recipe), "--run-dir", str(run.path),
           "--progress", progress, "--plain-every", str(plain_every)]
    return cmd + (["--resume"] if resume else [])


def session_name(run: rundir.RunDir) -> str:
    """`tf-<run>`, with a fresh suffix when a session of that name exists."""
    base = "tf-" + re.sub(r"[^A-Za-z0-9_-]", "-", run.name)
    name, n = base, 2
    while subprocess.run(["tmux", "has-session", "-t", f"={name}"], capture_output=True).returncode == 0:
        name, n = f"{base}-{n}", n + 1
    return name


def _spawn_tmux(run: rundir.RunDir, cmd: list[str]) -> Started:
    session = session_name(run)
    # A running tmux server gives new sessions *its* environment, not ours: pass ours explicitly
    # (virtualenv, CUDA_VISIBLE_DEVICES, HF_HOME, ...), so the run behaves as if started here.
    env_args = [f"{k}={v}" for k, v in child_env().items()]
    proc = subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-c", str(Path.cwd()), "-P", "-F", "#{pane_pid}",
         "env", *env_args, *cmd],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise TuneforgeError(f"tmux could not start a session: {proc.stderr.strip() or proc.stdout.strip()}",
                             "check `tmux ls` works here, or uninstall/hide tmux to use a background process")
    pid = int(proc.stdout.strip()) if proc.stdout.strip().isdigit() else None
    return Started("tmux", pid, session=session)


def _spawn_setsid(run: rundir.RunDir, cmd: list[str]) -> Started:
    console = run.path / "console.log"
    with open(console, "ab") as out, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=out, stderr=subprocess.STDOUT, env=child_env(),
                                start_new_session=True, close_fds=True, cwd=Path.cwd())
    return Started("setsid", proc.pid, console_log=console, process=proc)


def run_and_wait(cmd: list[str]) -> int:
    """Run `cmd` in the foreground (our terminal, our process group: Ctrl-C reaches it) and wait.
    distributed.supervise uses it for `accelerate launch`."""
    return subprocess.run(cmd, env=child_env(), cwd=Path.cwd()).returncode


def start(run: rundir.RunDir, *, tmux: bool, resume: bool = False, progress: str = "auto",
          plain_every: float = 5.0, command: list[str] | None = None) -> Started:
    """Start training on `run` (its recipe.yaml is written) in another process and return at once.
    command: run this instead of `tuneforge train` (a distributed run's supervisor)."""
    # In tmux the pane is a terminal (rich display on attach); a setsid child logs plain lines.
    cmd = command or child_command(run, resume, progress if tmux else "plain", plain_every)
    run.update_status(state="starting", host=socket.gethostname(), started_at=rundir.now_iso(),
                      started_ts=time.time(), ended_at=None, error=None, pid=None)
    try:
        started = _spawn_tmux(run, cmd) if tmux else _spawn_setsid(run, cmd)
    except BaseException as exc:
        run.update_status(state="failed", ended_at=rundir.now_iso(), error=f"could not start in the background: {exc}")
        raise
    # The child writes its own status within seconds; until then its pid lets `runs` spot a crash.
    if run.read_status().get("state") == "starting" and started.pid:
        run.update_status(pid=started.pid, launcher=started.method, tmux_session=started.session)
    return started


def start_eval(run: rundir.RunDir, args: list[str]) -> Path:
    """`tuneforge eval RUN ARGS` in a new session (setsid), output in RUN/eval/console.log; returns that log."""
    log = run.path / "eval" / "console.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tuneforge.runner.cli", "eval", str(run.path), *args]
    with open(log, "ab") as out, open(os.devnull, "rb") as devnull:
        subprocess.Popen(cmd, stdin=devnull, stdout=out, stderr=subprocess.STDOUT, env=child_env(),
                         start_new_session=True, close_fds=True, cwd=Path.cwd())
    return log
