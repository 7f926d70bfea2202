"""Start a run that outlives the terminal: in a new tmux session when tmux is installed (attach to
see the live display), otherwise as a setsid background process whose output goes to
runs/<name>/console.log. Either way the run directory (and so the run's name) exists before the
child starts, and the child is `tuneforge train runs/<name>/recipe.yaml --run-dir runs/<name>`.
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
class Launched:
    run: rundir.RunDir
    method: str  # "tmux" or "setsid"
    pid: int | None
    session: str | None = None
    console_log: Path | None = None

    def instructions(self) -> str:
        path = self.run.path
        lines = [f"started run '{self.run.name}' in the background ({self._where()})",
                 f"  run dir:  {path}",
                 f"  log:      {self.run.log}" + (f"  (console: {self.console_log})" if self.console_log else ""),
                 f"  watch:    tuneforge watch {path}"]
        if self.session:
            lines.append(f"  attach:   tmux attach -t {self.session}   (detach again: ctrl-b d)")
        lines += [f"  logs:     tuneforge logs {path} -f",
                  f"  stop:     tuneforge stop {path}   (saves a checkpoint; resume: tuneforge resume {path})"]
        return "\n".join(lines)

    def _where(self) -> str:
        return f"tmux session '{self.session}'" if self.session else f"pid {self.pid}, setsid"


def child_command(run: rundir.RunDir, resume: bool, progress: str, plain_every: float = 5.0) -> list[str]:
    cmd = [sys.executable, "-m", "tuneforge.runner.cli", "train", str(run.recipe), "--run-dir", str(run.path),
           "--progress", progress, "--plain-every", str(plain_every)]
    return cmd + (["--resume"] if resume else [])


def _tmux_session_name(run: rundir.RunDir) -> str:
    base = "tf-" + re.sub(r"[^A-Za-z0-9_-]", "-", run.name)
    name, n = base, 2
    while subprocess.run(["tmux", "has-session", "-t", f"={name}"], capture_output=True).returncode == 0:
        name, n = f"{base}-{n}", n + 1
    return name


def _start_tmux(run: rundir.RunDir, cmd: list[str], env: dict[str, str]) -> Launched:
    session = _tmux_session_name(run)
    # A running tmux server gives new sessions *its* environment, not ours: pass ours explicitly
    # (virtualenv, CUDA_VISIBLE_DEVICES, HF_HOME, ...), so the run behaves as if started here.
    env_args = [f"{k}={v}" for k, v in env.items() if k not in _DROP_ENV and "=" not in k]
    proc = subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-c", str(Path.cwd()), "-P", "-F", "#{pane_pid}",
         "env", *env_args, *cmd],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise TuneforgeError(f"tmux could not start a session: {proc.stderr.strip() or proc.stdout.strip()}",
                             "check `tmux ls` works here, or uninstall/hide tmux to use a background process")
    pid = int(proc.stdout.strip()) if proc.stdout.strip().isdigit() else None
    return Launched(run, "tmux", pid, session=session)


def _start_setsid(run: rundir.RunDir, cmd: list[str], env: dict[str, str]) -> Launched:
    console = run.path / "console.log"
    with open(console, "ab") as out, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, cwd=Path.cwd(), env=env)
    return Launched(run, "setsid", proc.pid, console_log=console)


def launch(run: rundir.RunDir, resume: bool = False, progress: str = "auto", plain_every: float = 5.0) -> Launched:
    """Start `run` (whose recipe.yaml is written) in the background and return at once."""
    use_tmux = shutil.which("tmux") is not None
    # In tmux the pane is a terminal (rich display on attach); the setsid child logs plain lines.
    cmd = child_command(run, resume, progress if use_tmux else "plain", plain_every)
    env = threads.child_env(os.environ)  # the thread policy holds in the child before its torch loads
    run.update_status(state="starting", host=socket.gethostname(), started_at=rundir.now_iso(),
                      started_ts=time.time(), ended_at=None, error=None, pid=None)
    try:
        launched = _start_tmux(run, cmd, env) if use_tmux else _start_setsid(run, cmd, env)
    except BaseException as exc:
        run.update_status(state="failed", ended_at=rundir.now_iso(), error=f"could not start in the background: {exc}")
        raise
    # The child writes its own status within seconds; until then its pid lets `runs` spot a crash.
    status = run.read_status()
    if status.get("state") == "starting" and launched.pid:
        run.update_status(pid=launched.pid, launcher=launched.method, tmux_session=launched.session)
    return launched


def new_run(recipe) -> rundir.RunDir:
    """Create the run directory and write the resolved recipe, so the name is fixed before launch."""
    from .recipe import recipe_to_yaml

    run = rundir.create(recipe.output.runs_dir, recipe.name, recipe.output.overwrite)
    run = rundir.RunDir(run.path.resolve())
    saved = recipe.model_copy(deep=True)
    saved.name = run.name
    run.recipe.write_text(recipe_to_yaml(saved), encoding="utf-8")
    return run
