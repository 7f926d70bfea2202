"""The runner's service layer: the only way a face (the `tuneforge` CLI, the TUI) starts or inspects work.

  load_recipe / estimate / describe_estimate      resolve and check a recipe, memory and time here
  launch(recipe, how) -> RunHandle                foreground (train in this process), detached (tmux
                                                  when installed, else setsid) or background (setsid,
                                                  console output in <run>/console.log)
  open_run / list_runs                            a run by path or name; one summary row per run
  resume / stop / checkpoint                      act on a run (stop and checkpoint drop control files)
  stage_figures / score                           a run's stage figures; a reward model's scores
  eval_* / evaluate / launch_eval                 tuneforge eval (runner/eval/), in this process or started
  serve / remote_chat                             tuneforge serve (runner/serve/); chat with a server
The run directory (and so the run's name) exists before `launch` returns, so a face always holds the
exact run it started. Processes are started only by runner.launcher; run files are read only here and
in the modules below (rundir, watch, control). torch is imported only to train here or to measure
this machine for an estimate. The module is longer than most (~550 lines) because it is the whole
list of what a face may ask for; the functions past the run lifecycle are thin doors into their
packages, kept here so faces import one module and nothing else of the runner.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import control, rundir
from .errors import TuneforgeError
from .recipe import Recipe, recipe_to_yaml
from .recipe import load_recipe as _load_recipe
from .watch import ACTIVE, TextTail

HOWS = ("foreground", "detached", "background")
PROGRESS_MODES = ("auto", "rich", "plain")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """The resolved, validated recipe (TuneforgeError naming every problem otherwise)."""
    return _load_recipe(Path(path), list(overrides))


def estimate(recipe: Recipe):
    """Peak memory and time per epoch here (runner.estimate.Estimate). Data that cannot be read yet
    (the wizard before a dataset is chosen) counts as rows of max_length, with no time figure."""
    from . import estimate as est

    try:
        return est.estimate(recipe)
    except TuneforgeError:
        return est.estimate(recipe, lengths=[recipe.data.max_length], n_examples=0)


def describe_estimate(recipe: Recipe) -> list[str]:
    """Estimate lines for `tuneforge validate`; never fails (an estimate is advice, not a gate)."""
    from .estimate import describe

    return describe(recipe)


def train_command(recipe_path: str | Path, distributed: dict[str, Any] | None = None) -> str:
    """The command that trains a recipe file by hand (the wizard shows it); with the recipe's
    distributed block, how it launches (accelerate launch, processes, strategy)."""
    import shlex

    cmd = f"{command_name()} train {shlex.quote(str(recipe_path))}"
    d = distributed or {}
    n = int(d.get("nproc") or 1) * int(d.get("nnodes") or 1)
    if n > 1 or d.get("strategy", "ddp") != "ddp":
        cmd += (f"   (accelerate launch: {n} process{'es' if n > 1 else ''}, {d.get('strategy', 'ddp')}; "
                "the run writes accelerate_config.yaml and launch.sh)")
    return cmd


def visible_gpus() -> list[str]:
    """The GPUs training here could use (names; empty without NVIDIA GPUs). Cheap: no torch."""
    from .distributed import visible_gpus as gpus

    return gpus()


def command_name() -> str:
    """How to type `tuneforge` here so a printed command works as printed: `tuneforge` when that is
    this installation's console script on PATH, else its path (e.g. .venv/bin/tuneforge), else
    `python -m tuneforge.runner.cli`."""
    import shutil
    import sys

    script = Path(sys.executable).parent / "tuneforge"
    found = shutil.which("tuneforge")
    if found and (not script.exists() or Path(found).resolve() == script.resolve()):
        return "tuneforge"
    if script.exists():
        try:
            return str(script.absolute().relative_to(Path.cwd()))
        except ValueError:
            return str(script)
    return f"{Path(sys.executable).name} -m tuneforge.runner.cli"


def check_progress(progress: str) -> None:
    if progress not in PROGRESS_MODES:
        raise TuneforgeError(f"--progress '{progress}' is not one of {', '.join(PROGRESS_MODES)}", "use --progress plain")


# ------------------------------------------------------------------------------------------
# A run


@dataclass
class RunHandle:
    """One run directory and, when this process started it, how: launcher, pid, tmux session."""

    run: rundir.RunDir
    launcher: str | None = None  # "foreground", "tmux", "setsid" (None: opened, not started here)
    pid: int | None = None
    tmux_session: str | None = None
    console_log: Path | None = None
    _process: Any = field(default=None, repr=False)  # our setsid child, reaped when its state is read
    _metrics: Any = field(default=None, repr=False)
    _log: Any = field(default=None, repr=False)

    name = property(lambda self: self.run.name)
    path = property(lambda self: self.run.path)
    weights = property(lambda self: self.run.weights)

    def status(self) -> dict[str, Any]:
        return self.run.read_status()

    def state(self) -> str:
        """starting, running, finished, failed, stopped, or dead (gone without a word)."""
        if self._process is not None:
            self._process.poll()  # reap our own child, so a crash reads 'dead', not a zombie 'running'
        return rundir.effective_state(self.status())

    def new_metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl records written since the last call (all of them on the first call)."""
        from .watch import JsonlTail

        if self._metrics is None:
            self._metrics = JsonlTail(self.run.metrics)
        return self._metrics.read_new()

    @property
    def metrics_restarted(self) -> bool:
        """The last new_metrics() found the file rewritten (a resumed run): forget what was read."""
        return bool(self._metrics and self._metrics.restarted)

    def new_log(self, final: bool = False) -> str:
        """train.log text written since the last call (whole lines unless final)."""
        if self._log is None:
            self._log = TextTail(self.run.log)
        return self._log.read_new(final)

    def console_text(self, limit: int = 4000) -> str:
        """The end of console.log (a background child's own output: crashes before train.log)."""
        path = self.console_log or self.run.path / "console.log"
        try:
            return path.read_text(encoding="utf-8", errors="replace")[-limit:]
        except OSError:
            return ""

    def summary(self) -> dict[str, Any]:
        from .watch import summary

        return summary(self.run)

    def ending(self) -> str:
        """What happened to a run that has ended, with the next command to type."""
        from .watch import ending_line

        return ending_line(self.run)

    def stop(self) -> bool:
        """Ask the run to save a checkpoint and stop (a control file, plus SIGTERM when local).
        False when it is not running (a starting run clears requests as it comes up: ask again then)."""
        if self.state() != "running":
            return False
        control.request_stop(self.run)
        return True

    def checkpoint(self) -> bool:
        """Ask the run to save a checkpoint after its current step. False when it is not running."""
        if self.state() != "running":
            return False
        control.request(self.run, control.CHECKPOINT)
        return True

    def where(self) -> str:
        if self.tmux_session:
            return f"tmux session '{self.tmux_session}'"
        return f"pid {self.pid}, setsid" if self.launcher == "setsid" else (self.launcher or "elsewhere")

    def instructions(self) -> str:
        """How to follow, attach to and stop a run started in the background."""
        path, tf = self.run.path, command_name()
        console = f"  (console: {self.console_log})" if self.console_log else ""
        lines = [f"started run '{self.name}' in the background ({self.where()})",
                 f"  run dir:  {path}",
                 f"  log:      {self.run.log}{console}",
                 f"  watch:    {tf} watch {path}"]
        if self.tmux_session:
            lines.append(f"  attach:   tmux attach -t {self.tmux_session}   (detach again: ctrl-b d)")
        lines += [f"  logs:     {tf} logs {path} -f",
                  f"  stop:     {tf} stop {path}   (saves a checkpoint; resume: {tf} resume {path})"]
        return "\n".join(lines)


def open_run(ref: str | Path, runs_dir: str | Path = "runs") -> RunHandle:
    """A run by path or by name under runs_dir (TuneforgeError when there is none)."""
    run = rundir.find_run(ref, runs_dir)
    st = run.read_status()
    return RunHandle(run, st.get("launcher"), st.get("pid"), st.get("tmux_session"))


def list_runs(runs_dir: str | Path = "runs") -> list[dict[str, Any]]:
    """One summary row per run, newest first (what `tuneforge runs` prints)."""
    from .watch import list_runs as rows

    return rows(runs_dir)


def watch(ref: RunHandle | str | Path, progress: str = "auto", interval: float = 1.0,
          runs_dir: str | Path = "runs") -> str:
    """Show a run's progress on stdout until it ends (`tuneforge watch`); returns its final state."""
    from .watch import watch as show

    check_progress(progress)
    return show(_handle(ref, runs_dir).run, progress, interval)


def logs(ref: RunHandle | str | Path, follow: bool = False, runs_dir: str | Path = "runs") -> None:
    """Print a run's train.log on stdout; with follow, until the run ends (`tuneforge logs`)."""
    from .watch import logs as show

    show(_handle(ref, runs_dir).run, follow)


def _handle(ref: RunHandle | str | Path, runs_dir: str | Path) -> RunHandle:
    return ref if isinstance(ref, RunHandle) else open_run(ref, runs_dir)


# ------------------------------------------------------------------------------------------
# Starting runs


def new_run(recipe: Recipe, absolute: bool = True) -> rundir.RunDir:
    """Create the run directory and write the resolved recipe, so the name is fixed before launch.
    absolute: the path another process gets (a foreground run keeps runs/<name> as the user wrote it)."""
    run = rundir.create(recipe.output.runs_dir, recipe.name, recipe.output.overwrite)
    run = rundir.RunDir(run.path.resolve()) if absolute else run
    saved = recipe.model_copy(deep=True)
    saved.name = run.name
    run.recipe.write_text(recipe_to_yaml(saved), encoding="utf-8")
    return run


def launch(recipe: Recipe, how: str = "foreground", progress: str = "auto", plain_every: float = 5.0) -> RunHandle:
    """Start a run of `recipe`. foreground trains here and returns when it ends (raising what training
    raised); detached and background return at once, the run directory already made."""
    _check_how(how)
    check_progress(progress)
    from . import distributed

    if distributed.wants_launch(recipe) and recipe.distributed.node_rank > 0:
        run = distributed.joined_run(recipe)  # a later node trains into node 0's run directory
    else:
        run = new_run(recipe, absolute=how != "foreground" or distributed.wants_launch(recipe))
    if how == "foreground" and distributed.wants_launch(recipe):
        return _supervise_here(run, recipe, resume=False)
    if how == "foreground":
        return _train_here(recipe, run, progress, plain_every)
    return _start(run, how, resume=False, progress=progress, plain_every=plain_every)


def resume(ref: RunHandle | str | Path, how: str = "foreground", progress: str = "auto", plain_every: float = 5.0,
           runs_dir: str | Path = "runs") -> RunHandle:
    """Continue a stopped, failed or dead run from its latest complete checkpoint."""
    from . import checkpoints

    _check_how(how)
    check_progress(progress)
    handle = _handle(ref, runs_dir)
    run = rundir.RunDir(handle.path.resolve())
    if not run.recipe.is_file():
        raise TuneforgeError(f"'{run.path}' is not a run directory (no recipe.yaml)", "list runs with: tuneforge runs")
    from . import distributed

    status = run.read_status()
    state = rundir.effective_state(status)
    if state in ACTIVE and status.get("pid") != os.getpid() and not distributed.in_rank():  # (a detached child is itself 'starting'; ranks: their supervisor checked)
        raise TuneforgeError(f"run '{run.name}' is still {state}", f"watch it (tuneforge watch {run.path}) or stop it first")
    if state == "finished":
        raise TuneforgeError(f"run '{run.name}' already finished", f"train a new run: tuneforge train {run.recipe} output.overwrite=false")
    ckpt = checkpoints.latest_checkpoint(run.checkpoints)
    if ckpt is None:
        raise TuneforgeError(f"run '{run.name}' has no complete checkpoint to resume from",
                             f"start it again: tuneforge train {run.recipe}  (train.save_steps sets how often checkpoints are saved)")
    if how != "foreground":
        started = _start(run, how, resume=True, progress=progress, plain_every=plain_every)
        started._log = handle._log  # a monitor following the run goes on where it was in train.log
        return started
    recipe = load_recipe(run.recipe)
    if distributed.wants_launch(recipe):
        return _supervise_here(run, recipe, resume=True)
    return _train_here(recipe, run, progress, plain_every, resume_from=ckpt)


def train_in(recipe: Recipe, run_path: Path, progress: str = "auto", plain_every: float = 5.0) -> RunHandle:
    """Train in this process on a run directory a launcher made (the child side of detached/background;
    its resuming side is resume(run_path))."""
    check_progress(progress)
    return _train_here(recipe, rundir.RunDir(Path(run_path)), progress, plain_every)


def _check_how(how: str) -> None:
    if how not in HOWS:
        raise TuneforgeError(f"'{how}' is not a way to launch a run", f"use one of: {', '.join(HOWS)}")


def _train_here(recipe: Recipe, run: rundir.RunDir, progress: str, plain_every: float,
                resume_from: Path | None = None) -> RunHandle:
    from .train import train

    train(recipe, progress_mode=progress, run_dir=run.path, resume_from=resume_from, plain_every=plain_every)
    return RunHandle(run, "foreground", os.getpid())


def _supervise_here(run: rundir.RunDir, recipe: Recipe, resume: bool) -> RunHandle:
    """A distributed run in the foreground: accelerate launch runs the ranks, we wait (runner.distributed)."""
    from . import distributed
    from .lifecycle import RunStopped

    code = distributed.supervise(run, recipe, resume)
    status = run.read_status()
    if status.get("state") == "stopped":
        raise RunStopped(status.get("stop_reason") or "stopped", status.get("exit_code") or code or 143)
    if code != 0 or status.get("state") != "finished":
        raise RuntimeError(f"distributed run {run.name} {status.get('state', 'failed')}: {status.get('error') or f'exit code {code}'}")
    return RunHandle(run, "foreground", os.getpid())


def _start(run: rundir.RunDir, how: str, *, resume: bool, progress: str, plain_every: float) -> RunHandle:
    from . import launcher

    tmux = how == "detached" and launcher.tmux_available()
    from . import distributed

    command = distributed.supervisor_command(run, resume) if distributed.run_is_launched(run) else None
    s = launcher.start(run, tmux=tmux, resume=resume, progress=progress, plain_every=plain_every, command=command)
    return RunHandle(run, s.method, s.pid, s.session, s.console_log, _process=s.process)


# ------------------------------------------------------------------------------------------
# Acting on a running run


def _wait(until: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        time.sleep(interval)
    return until()


@dataclass
class Outcome:
    """What stop/checkpoint did: ok (the request was met), and a line for the user."""

    ok: bool
    message: str


def _say_nothing(text: str) -> None:
    pass


def stop(ref: RunHandle | str | Path, wait: bool = True, timeout: float = 900, runs_dir: str | Path = "runs",
         say: Callable[[str], None] = _say_nothing) -> Outcome:
    """Ask a run to save a checkpoint and stop; with wait, until it has."""
    h = _handle(ref, runs_dir)
    state = h.state()
    if state not in ACTIVE:
        return Outcome(state in ("stopped", "finished", "failed"),
                       h.ending() if state != "unknown" else f"run {h.name} is not running")
    if state == "starting":  # the child is still importing: let it come up, then ask
        _wait(lambda: h.state() != "starting", 120)
    control.request_stop(h.run)
    say(f"asked run {h.name} to save a checkpoint and stop")
    if not wait:
        return Outcome(True, "")
    if not _wait(lambda: h.state() not in ACTIVE, timeout):
        return Outcome(False, f"run {h.name} is still running after {timeout:.0f}s (a long step or eval?); "
                              f"it stops after the current step: tuneforge watch {h.path}")
    return Outcome(True, h.ending())


def checkpoint(ref: RunHandle | str | Path, wait: bool = True, timeout: float = 900, runs_dir: str | Path = "runs",
               say: Callable[[str], None] = _say_nothing) -> Outcome:
    """Ask a running run to save a checkpoint now, without stopping it; with wait, until it is written."""
    h = _handle(ref, runs_dir)
    state = h.state()
    if state not in ACTIVE:
        raise TuneforgeError(f"run '{h.name}' is {state}, not running", "checkpoints can only be requested from a running run")
    if state == "starting":  # the child clears requests as it comes up: ask once it runs
        _wait(lambda: h.state() != "starting", 120)
    status = h.status()
    before = status.get("step") or 0
    control.request(h.run, control.CHECKPOINT)
    say(f"asked run {h.name} to save a checkpoint after step {before}")
    if not wait:
        return Outcome(True, "")

    def saved() -> bool:
        return (h.status().get("last_checkpoint_step") or -1) > before or h.state() not in ACTIVE

    if not _wait(saved, timeout):
        return Outcome(False, f"no checkpoint after {timeout:.0f}s; the request stays until the next step ends")
    s = h.status()
    if (s.get("last_checkpoint_step") or -1) > before:
        return Outcome(True, f"checkpoint saved: {s.get('last_checkpoint')}")
    return Outcome(False, f"run ended before the checkpoint ({h.state()})")


def run_name_for(name: str, runs_dir: str | Path = "runs", overwrite: bool = False) -> str:
    """The name a new run called `name` gets: itself, or `name-2`, ... when taken (unless overwrite)."""
    return name if overwrite else rundir.free_name(Path(runs_dir), name)


def close_run_name(ref: str, runs_dir: str | Path = "runs") -> str | None:
    """A run name under runs_dir that `ref` looks like a typo of (None when `ref` is a path, a run,
    a model reference with a '/', or like no run): 'uxrn' -> 'uxrun'."""
    import difflib

    from .model import EMBEDDED_ALIAS

    if "/" in ref or ref == EMBEDDED_ALIAS or Path(ref).exists() or (Path(runs_dir) / ref).exists():
        return None
    root = Path(runs_dir)
    names = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    found = difflib.get_close_matches(ref, names, n=1, cutoff=0.75)
    return found[0] if found else None


def check_run_ref(ref: str, runs_dir: str | Path = "runs") -> None:
    """Refuse a near miss of a run name before it is tried as a model on the hub."""
    close = close_run_name(ref, runs_dir)
    if close is not None:
        raise TuneforgeError(f"no run named '{ref}' — did you mean '{close}'?",
                             f"{command_name()} runs   lists the runs in {runs_dir}")


# ------------------------------------------------------------------------------------------
# A run's stage figures and a reward model's scores (stage_figures.py, score.py)


def stage_figures(ref: RunHandle | str | Path, rec: dict[str, Any], headline: bool = False,
                  runs_dir: str | Path = "runs") -> list[str]:
    """The run's stage figures in a metrics record ('margin +0.412', 'acc 75%', 'eval margin ...'):
    what the monitor shows beside the loss (nothing for sft and pt)."""
    from .stage_figures import describe, run_stage

    return describe(rec, run_stage(_handle(ref, runs_dir).path), headline=headline)


def score(ref: RunHandle | str | Path, data: str | Path, limit: int | None = None, runs_dir: str | Path = "runs"):
    """A reward-model run's scores for the pairs in `data` (runner.score.ScoreReport: per row chosen,
    rejected, margin; pairwise accuracy). TuneforgeError for a run that is not stage rm or a file
    without pairs."""
    from .score import score as run_score

    return run_score(_handle(ref, runs_dir).run, data, limit)


# ------------------------------------------------------------------------------------------
# Evaluation (runner/eval): `tuneforge eval`, the TUI's eval screen, `runs`' eval column


def eval_spec(**options: Any):
    """An EvalSpec from command-line/app options (None = default; TuneforgeError naming each bad option)."""
    from .eval.spec import build

    return build(**options)


def evaluate(target: str, spec, data: list[str] | None = None, out: str | Path | None = None,
             runs_dir: str | Path = "runs", say: Callable[[str], None] = print) -> dict[str, Any]:
    """Score a run (tuned and base) or a model; writes <out>/results.json; returns it with 'dir'."""
    from .eval import session

    p = session.plan(target, spec, data, out, str(runs_dir))
    doc = session.run(p, say)
    doc["dir"] = str(p.out)
    return doc


def eval_table(doc: dict[str, Any]):
    """The rich table of an eval's results (tuned, base, difference, interval)."""
    from .eval.table import table

    return table(doc)


def latest_eval(ref: RunHandle | str | Path, runs_dir: str | Path = "runs") -> dict[str, Any] | None:
    """The newest eval results of a run (None when it was never evaluated)."""
    from .eval.results import latest

    return latest(_handle(ref, runs_dir).path)


def eval_headline(run_path: str | Path) -> str:
    """One line for run lists: the latest eval's first scores and differences ('' when none)."""
    from .eval.results import headline_for

    return headline_for(Path(run_path))


def launch_eval(ref: RunHandle | str | Path, spec, data: list[str] | None = None, runs_dir: str | Path = "runs") -> Path:
    """Start `tuneforge eval RUN` for `spec` in the background (the app's eval screen); returns its log file.
    Missing data or weights are reported here, before a process starts."""
    from . import launcher
    from .eval.session import run_eval_data
    from .eval.spec import to_args

    handle = _handle(ref, runs_dir)
    data = list(data or [])
    missing = [d for d in data if not d.startswith("hf:") and not Path(d).exists()]
    if missing:
        raise TuneforgeError(f"eval data '{missing[0]}' does not exist", "give a data file with reference answers")
    if {"loss", "generate"} & set(spec.modes) and not (data or spec.data or run_eval_data(handle.path)):
        raise TuneforgeError("loss and generate need a data file, and this run has no eval data",
                             "give a data file with reference answers (json/jsonl/csv/parquet), or use mode bench")
    if handle.weights is None:
        raise TuneforgeError(f"run '{handle.name}' has no final weights yet", "evaluate it when it has finished")
    return launcher.start_eval(handle.run, to_args(spec, data))


def eval_console(ref: RunHandle | str | Path, limit: int = 4000, runs_dir: str | Path = "runs") -> str:
    """The end of a background eval's output (runs/<name>/eval/console.log), '' when none."""
    path = _handle(ref, runs_dir).path / "eval" / "console.log"
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return ""

def serve(targets: list[str], options, runs_dir: str = "runs", say=print) -> None:
    """Serve runs or models over an OpenAI-compatible API until SIGINT/SIGTERM (runner/serve/)."""
    from .serve import run

    run(targets, options, runs_dir, say)


def remote_chat(url: str, model: str | None = None, api_key: str | None = None):
    """A chat engine for an OpenAI-compatible server, with the local engine's interface (chat --url)."""
    from .serve.client import RemoteChat

    return RemoteChat.connect(url, model, api_key)
