"""Commands for headless runs: train (with --detach/--resume), resume, runs, watch, logs, stop,
checkpoint, plot. `register(app, fail)` adds them to the main Typer app; `fail` is the CLI's one
error printer. Only `train`/`resume` import torch, and only when they actually train.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import TuneforgeError

RunArg = Annotated[str, typer.Argument(help="A run directory, or a run name under --runs-dir.", show_default=False)]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Folder that holds run directories.")]
ProgressOpt = Annotated[str, typer.Option(help="auto (rich on a terminal, plain otherwise), rich or plain.")]


def _check_progress(progress: str) -> None:
    if progress not in {"auto", "rich", "plain"}:
        raise TuneforgeError(f"--progress '{progress}' is not one of auto, rich, plain", "use --progress plain")


def run_train(recipe_path: Path, overrides: list[str], progress: str, detach: bool, resume: bool,
              run_dir: Path | None, plain_every: float) -> None:
    """The body of `tuneforge train`; raises on errors (the CLI maps them to exit codes)."""
    from . import detach as detach_mod
    from .recipe import load_recipe
    from .rundir import RunDir

    _check_progress(progress)
    os.environ["TUNEFORGE_PLAIN_EVERY"] = str(plain_every)
    rec = load_recipe(recipe_path, overrides)
    if resume:
        run = RunDir(Path(run_dir)) if run_dir else None
        if run is None:
            if not rec.name:
                raise TuneforgeError("train --resume needs to know which run to continue, but the recipe has no name",
                                     "use: tuneforge resume RUN   (or give the recipe a name:)")
            run = RunDir(Path(rec.output.runs_dir) / rec.name)
        _resume(run, progress, detach, plain_every)
        return
    if detach:
        launched = detach_mod.launch(detach_mod.new_run(rec), progress=progress, plain_every=plain_every)
        typer.echo(launched.instructions())
        return
    from .train import train as run_training

    run = run_training(rec, progress_mode=progress, run_dir=run_dir).run
    typer.echo(f"\nDone. Weights: {run.weights}")
    typer.echo(f"Chat with it:  tuneforge chat {run.path}")


def _resume(run, progress: str, detach: bool, plain_every: float = 5.0) -> None:
    from . import checkpoints, rundir
    from . import detach as detach_mod
    from .recipe import load_recipe

    if not run.recipe.is_file():
        raise TuneforgeError(f"'{run.path}' is not a run directory (no recipe.yaml)", "list runs with: tuneforge runs")
    status = run.read_status()
    state = rundir.effective_state(status)
    if state in ("running", "starting") and status.get("pid") != os.getpid():  # (a detached child is itself 'starting')
        raise TuneforgeError(f"run '{run.name}' is still {state}", f"watch it (tuneforge watch {run.path}) or stop it first")
    if state == "finished":
        raise TuneforgeError(f"run '{run.name}' already finished", f"train a new run: tuneforge train {run.recipe} output.overwrite=false")
    ckpt = checkpoints.latest_checkpoint(run.checkpoints)
    if ckpt is None:
        raise TuneforgeError(f"run '{run.name}' has no complete checkpoint to resume from",
                             f"start it again: tuneforge train {run.recipe}  (train.save_steps sets how often checkpoints are saved)")
    if detach:
        launched = detach_mod.launch(rundir.RunDir(run.path.resolve()), resume=True, progress=progress,
                                     plain_every=plain_every)
        typer.echo(launched.instructions())
        return
    from .train import train as run_training

    recipe = load_recipe(run.recipe)
    run = run_training(recipe, progress_mode=progress, run_dir=run.path, resume_from=ckpt).run
    typer.echo(f"\nDone. Weights: {run.weights}")


def _wait(run, until, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        time.sleep(interval)
    return until()


def register(app: typer.Typer, fail) -> None:
    def guarded(fn):
        """Map exceptions to the CLI's exit codes (TuneforgeError: message + fix, exit 2)."""
        import functools

        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except typer.Exit:
                raise
            except KeyboardInterrupt as exc:
                raise typer.Exit(getattr(exc, "exit_code", 130)) from None
            except Exception as exc:  # noqa: BLE001 - mapped in one place
                fail(exc)

        return wrapper

    @app.command()
    @guarded
    def resume(
        run: RunArg,
        runs_dir: RunsDirOpt = Path("runs"),
        progress: ProgressOpt = "auto",
        detach: Annotated[bool, typer.Option("--detach", help="Continue in the background (tmux or setsid) and return.")] = False,
        plain_every: Annotated[float, typer.Option(help="Plain mode: at most one progress line every N seconds.")] = 5.0,
    ) -> None:
        """Continue a stopped, failed or dead run from its latest complete checkpoint (same data order, RNG, optimizer)."""
        from .rundir import find_run

        _check_progress(progress)
        os.environ["TUNEFORGE_PLAIN_EVERY"] = str(plain_every)
        _resume(find_run(run, runs_dir), progress, detach, plain_every)

    @app.command("runs")
    @guarded
    def runs_cmd(
        runs_dir: RunsDirOpt = Path("runs"),
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run.")] = False,
    ) -> None:
        """List runs: name, state (running/finished/failed/stopped/dead), step, loss, elapsed, start time."""
        import json

        from .watch import list_runs, runs_table

        rows = list_runs(runs_dir)
        if as_json:
            for r in rows:
                typer.echo(json.dumps(r, ensure_ascii=False))
            return
        if not rows:
            typer.echo(f"no runs in {runs_dir}/")
            return
        from rich.console import Console

        Console(highlight=False, width=None if sys.stdout.isatty() else 100).print(runs_table(rows))

    @app.command()
    @guarded
    def watch(
        run: RunArg,
        runs_dir: RunsDirOpt = Path("runs"),
        progress: ProgressOpt = "auto",
        interval: Annotated[float, typer.Option(help="Seconds between looks at the run's files.")] = 1.0,
    ) -> None:
        """Live view of a run from any terminal (plain lines when not a terminal); exits when the run ends."""
        from .rundir import find_run
        from .watch import watch as watch_run

        _check_progress(progress)
        state = watch_run(find_run(run, runs_dir), progress, interval)
        raise typer.Exit(0 if state in ("finished", "stopped") else 1)

    @app.command()
    @guarded
    def logs(
        run: RunArg,
        runs_dir: RunsDirOpt = Path("runs"),
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends.")] = False,
    ) -> None:
        """Print the run's train.log (plain text, one line per event and log step)."""
        from .rundir import find_run
        from .watch import logs as show_logs

        show_logs(find_run(run, runs_dir), follow)

    @app.command()
    @guarded
    def stop(
        run: RunArg,
        runs_dir: RunsDirOpt = Path("runs"),
        wait: Annotated[bool, typer.Option(help="Wait until the run has saved its checkpoint and stopped.")] = True,
        timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 900,
    ) -> None:
        """Stop a run gracefully: it saves a resumable checkpoint after the current step, then exits."""
        from . import control, rundir
        from .watch import ending_line

        r = rundir.find_run(run, runs_dir)
        state = rundir.effective_state(r.read_status())
        if state not in ("running", "starting"):
            typer.echo(ending_line(r) if state != "unknown" else f"run {r.name} is not running")
            raise typer.Exit(0 if state in ("stopped", "finished", "failed") else 1)
        if state == "starting":  # the child is still importing: let it come up, then ask
            _wait(r, lambda: rundir.effective_state(r.read_status()) != "starting", 120)
        control.request_stop(r)
        typer.echo(f"asked run {r.name} to save a checkpoint and stop")
        if not wait:
            return
        if not _wait(r, lambda: rundir.effective_state(r.read_status()) not in ("running", "starting"), timeout):
            typer.echo(f"run {r.name} is still running after {timeout:.0f}s (a long step or eval?); "
                       f"it stops after the current step: tuneforge watch {r.path}")
            raise typer.Exit(1)
        typer.echo(ending_line(r))

    @app.command()
    @guarded
    def checkpoint(
        run: RunArg,
        runs_dir: RunsDirOpt = Path("runs"),
        wait: Annotated[bool, typer.Option(help="Wait until the checkpoint is written.")] = True,
        timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 900,
    ) -> None:
        """Save a checkpoint now (after the current step), without stopping the run."""
        from . import control, rundir

        r = rundir.find_run(run, runs_dir)
        status = r.read_status()
        state = rundir.effective_state(status)
        if state not in ("running", "starting"):
            raise TuneforgeError(f"run '{r.name}' is {state}, not running", "checkpoints can only be requested from a running run")
        before = status.get("step") or 0
        control.request(r, control.CHECKPOINT)
        typer.echo(f"asked run {r.name} to save a checkpoint after step {before}")
        if not wait:
            return

        def saved() -> bool:
            s = r.read_status()
            return (s.get("last_checkpoint_step") or -1) > before or rundir.effective_state(s) not in ("running", "starting")

        if not _wait(r, saved, timeout):
            typer.echo(f"no checkpoint after {timeout:.0f}s; the request stays until the next step ends")
            raise typer.Exit(1)
        s = r.read_status()
        if (s.get("last_checkpoint_step") or -1) > before:
            typer.echo(f"checkpoint saved: {s.get('last_checkpoint')}")
        else:
            typer.echo(f"run ended before the checkpoint ({rundir.effective_state(s)})")
            raise typer.Exit(1)

    @app.command()
    @guarded
    def plot(
        run: RunArg,
        runs_dir: RunsDirOpt = Path("runs"),
        out: Annotated[Optional[Path], typer.Option(help="Where to write the PNG (default: RUN/loss.png).")] = None,
    ) -> None:
        """Draw the loss curve (train raw + smoothed, eval) as a PNG, also while the run is going."""
        from .plot import plot_run
        from .rundir import find_run

        typer.echo(f"wrote {plot_run(find_run(run, runs_dir), out)}")
