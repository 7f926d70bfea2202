"""Commands for runs started elsewhere or earlier: resume, runs, watch, logs, stop, checkpoint, plot.
`register(app)` adds them to the main Typer app. Each calls runner.services; only `resume` imports
torch, and only when it trains in this process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_errors import guarded

RunArg = Annotated[str, typer.Argument(help="A run directory, or a run name under --runs-dir.", show_default=False)]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Folder that holds run directories.")]
ProgressOpt = Annotated[str, typer.Option(help="auto (rich on a terminal, plain otherwise), rich or plain.")]


def register(app: typer.Typer) -> None:
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
        from . import services

        handle = services.resume(run, "detached" if detach else "foreground", progress, plain_every, runs_dir)
        if handle.launcher != "foreground":
            typer.echo(handle.instructions())
            return
        typer.echo(f"\nDone. Weights: {handle.weights}")

    @app.command("runs")
    @guarded
    def runs_cmd(
        runs_dir: RunsDirOpt = Path("runs"),
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run.")] = False,
    ) -> None:
        """List runs: name, state (running/finished/failed/stopped/dead), step, loss, elapsed, start time."""
        import json

        from .services import eval_headline, list_runs

        rows = list_runs(runs_dir)
        for r in rows:
            r["eval"] = eval_headline(r["path"])  # the latest `tuneforge eval` scores ('' when none)
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
        from . import services

        state = services.watch(run, progress, interval, runs_dir)
        raise typer.Exit(0 if state in ("finished", "stopped") else 1)

    @app.command()
    @guarded
    def logs(
        run: RunArg,
        runs_dir: RunsDirOpt = Path("runs"),
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends.")] = False,
    ) -> None:
        """Print the run's train.log (plain text, one line per event and log step)."""
        from . import services

        services.logs(run, follow, runs_dir)

    @app.command()
    @guarded
    def stop(
        run: RunArg,
        runs_dir: RunsDirOpt = Path("runs"),
        wait: Annotated[bool, typer.Option(help="Wait until the run has saved its checkpoint and stopped.")] = True,
        timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 900,
    ) -> None:
        """Stop a run gracefully: it saves a resumable checkpoint after the current step, then exits."""
        from . import services

        out = services.stop(run, wait, timeout, runs_dir, say=typer.echo)
        if out.message:
            typer.echo(out.message)
        raise typer.Exit(0 if out.ok else 1)

    @app.command()
    @guarded
    def checkpoint(
        run: RunArg,
        runs_dir: RunsDirOpt = Path("runs"),
        wait: Annotated[bool, typer.Option(help="Wait until the checkpoint is written.")] = True,
        timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 900,
    ) -> None:
        """Save a checkpoint now (after the current step), without stopping the run."""
        from . import services

        out = services.checkpoint(run, wait, timeout, runs_dir, say=typer.echo)
        if out.message:
            typer.echo(out.message)
        raise typer.Exit(0 if out.ok else 1)

    @app.command()
    @guarded
    def plot(
        run: RunArg,
        runs_dir: RunsDirOpt = Path("runs"),
        out: Annotated[Optional[Path], typer.Option(help="Where to write the PNG (default: RUN/loss.png).")] = None,
    ) -> None:
        """Draw the loss curve (train raw + smoothed, eval) as a PNG, also while the run is going."""
        from .plot import plot_run
        from .services import open_run

        typer.echo(f"wrote {plot_run(open_run(run, runs_dir).run, out)}")


def runs_table(rows: list[dict]):
    """`tuneforge runs` as a rich table."""
    from rich.table import Table

    from .progress import fmt_duration

    table = Table(box=None, pad_edge=False, header_style="bold")
    evals = any(r.get("eval") for r in rows)
    for col in ("name", "state", "step", "loss", "elapsed", "started", *(["eval"] if evals else [])):
        table.add_column(col, no_wrap=col not in ("name", "eval"), overflow="fold")
    colors = {"running": "green", "finished": "cyan", "failed": "red", "dead": "red", "stopped": "yellow"}
    for r in rows:
        started = (r["started_at"] or "")[:16].replace("T", " ")
        loss = f"{r['loss']:.4f}" if isinstance(r["loss"], (int, float)) else "-"
        color = colors.get(r["state"], "white")
        table.add_row(r["name"], f"[{color}]{r['state']}[/]", f"{r['step'] or 0}/{r['total_steps'] or '?'}", loss,
                      fmt_duration(r["elapsed_s"]) if r["elapsed_s"] is not None else "-", started,
                      *([r.get("eval") or "-"] if evals else []))
    return table
