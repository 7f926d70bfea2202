"""The `tuneforge` command. Thin: parse, call one service (runner.services), print.

Exit codes: 0 ok, 1 runtime failure (a bug or the machine), 2 user mistake (recipe, data, path,
flag), 130/143 interrupted; every command maps them through cli_errors.guarded. Heavy libraries (torch, transformers) are imported inside commands,
so `tuneforge --help` starts instantly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_errors import guarded

# One or two examples per main command, shown under its --help (the root's under `tuneforge --help`).
EXAMPLES = {
    None: ["tuneforge new   (the wizard: a recipe, then a run)",
           "tuneforge train recipes/quickstart.yaml && tuneforge chat runs/quickstart"],
    "new": ["tuneforge new", "tuneforge new --edit my-run.yaml"],
    "train": ["tuneforge train recipe.yaml train.max_steps=50", "tuneforge train recipe.yaml --detach"],
    "validate": ["tuneforge validate recipe.yaml", "tuneforge validate recipe.yaml data.max_length=512 --no-estimate"],
    "chat": ["tuneforge chat runs/quickstart", 'echo "Who are you?" | tuneforge chat quickstart --plain'],
    "export": ["tuneforge export runs/quickstart --out exported/", "tuneforge export quickstart --out merged/ --merge"],
    "resume": ["tuneforge resume runs/quickstart", "tuneforge resume quickstart --detach"],
    "runs": ["tuneforge runs", "tuneforge runs --json"],
    "watch": ["tuneforge watch runs/quickstart", "tuneforge watch quickstart --progress plain | tee progress.txt"],
    "logs": ["tuneforge logs runs/quickstart -f"],
    "stop": ["tuneforge stop runs/quickstart"],
    "checkpoint": ["tuneforge checkpoint runs/quickstart"],
    "plot": ["tuneforge plot runs/quickstart"],
    "doctor": ["tuneforge doctor"],
}


def _examples(name: str | None) -> str:
    return "[b]Examples[/b]\n\n" + "\n\n".join(f"  {line}" for line in EXAMPLES[name])


app = typer.Typer(
    name="tuneforge",
    help="Terminal-first fine-tuning of LLMs: recipes in, trained weights and a chat out. "
    "Without a command: the interactive app (on a terminal).",
    epilog=_examples(None),
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
recipe_app = typer.Typer(help="Recipe tools: JSON Schema and field reference.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
from .cli_data import data_app  # noqa: E402 - light: typer only

app.add_typer(data_app, name="data")


@app.callback(invoke_without_command=True)
@guarded
def _main(ctx: typer.Context, debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    # --debug stays in the root context's params, where cli_errors.guarded reads it.
    if debug:  # library warnings silenced for users (runner/__init__.py) are shown again
        import logging

        for name in ("bitsandbytes", "kernels"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    if ctx.invoked_subcommand is None:  # bare `tuneforge`: the app (or a hint and exit 2 without a TTY)
        from .cli_tui import open_app

        open_app()


@app.command()
@guarded
def new(edit: Annotated[Optional[Path], typer.Option("--edit", help="Open an existing recipe in the wizard.")] = None) -> None:
    """Create a recipe with the wizard (model, method, data, hyperparameters), then run it."""
    from .cli_tui import open_app

    open_app("new", edit)


RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
OverridesArg = Annotated[Optional[list[str]], typer.Argument(help="Overrides like train.batch_size=4 (YAML-typed values).", show_default=False)]


@app.command()
@guarded
def train(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    progress: Annotated[str, typer.Option(help="auto (rich on a terminal, plain otherwise), rich or plain.")] = "auto",
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background (new tmux session, else setsid) and return at once.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the recipe's run (runs_dir/name) from its latest checkpoint.")] = False,
    plain_every: Annotated[float, typer.Option(help="Plain mode: at most one progress line every N seconds (train.log gets every step).")] = 5.0,
    run_dir: Annotated[Optional[Path], typer.Option(hidden=True, help="Use this existing run directory (set by --detach).")] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", help="Processes (GPUs) on this machine; >1 launches through accelerate (distributed.nproc).")] = None,
    nnodes: Annotated[Optional[int], typer.Option("--nnodes", help="Machines taking part (distributed.nnodes).")] = None,
    node_rank: Annotated[Optional[int], typer.Option("--node-rank", help="This machine's index, 0..nnodes-1.")] = None,
    master_addr: Annotated[Optional[str], typer.Option("--master-addr", help="Address of node 0.")] = None,
    master_port: Annotated[Optional[int], typer.Option("--master-port", help="Rendezvous port on node 0.")] = None,
) -> None:
    """Train a recipe; writes runs/<name>/ with metrics, status, log, checkpoints and weights."""
    from . import services
    from .errors import TuneforgeError

    services.check_progress(progress)
    how = "detached" if detach else "foreground"
    flags = {"nproc": nproc, "nnodes": nnodes, "node_rank": node_rank, "master_addr": master_addr, "master_port": master_port}
    dist = [f"distributed.{k}={v}" for k, v in flags.items() if v is not None]  # recorded in the run's recipe
    rec = services.load_recipe(recipe, [*(overrides or []), *dist])
    if resume:
        if run_dir is None and not rec.name:
            raise TuneforgeError("train --resume needs to know which run to continue, but the recipe has no name",
                                 "use: tuneforge resume RUN   (or give the recipe a name:)")
        target = run_dir or Path(rec.output.runs_dir) / rec.name
        handle = services.resume(Path(target), how, progress, plain_every)
    elif run_dir is not None:  # the child a launcher started on a run directory it made
        handle = services.train_in(rec, run_dir, progress, plain_every)
    else:
        handle = services.launch(rec, how, progress, plain_every)
    if handle.launcher != "foreground":
        typer.echo(handle.instructions())
        return
    if run_dir is not None and "LOCAL_RANK" in os.environ:
        return  # a rank of a distributed run: the process that launched it says "Done"
    typer.echo(f"\nDone. Weights: {handle.weights}")
    typer.echo(f"Chat with it:  {services.command_name()} chat {handle.path}")


@app.command()
@guarded
def validate(
    recipe: RecipeArg, overrides: OverridesArg = None,
    estimate: Annotated[bool, typer.Option("--estimate/--no-estimate", help="Also estimate memory and time on this machine.")] = True,
) -> None:
    """Print the resolved recipe (exit 0) or every problem in it (exit 2), then the memory/time estimate."""
    from . import services
    from .recipe import recipe_to_yaml

    rec = services.load_recipe(recipe, overrides or [])
    typer.echo(recipe_to_yaml(rec), nl=False)
    if estimate:  # as YAML comments, so the output stays a valid recipe
        lines = [part for line in ["estimate for this machine:", *services.describe_estimate(rec)] for part in str(line).splitlines()]
        typer.echo("".join(f"# {line}\n" for line in lines), nl=False)


@recipe_app.command("schema")
@guarded
def recipe_schema() -> None:
    """Print the recipe's JSON Schema (for editors and validation elsewhere)."""
    from .recipe import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
@guarded
def doctor() -> None:
    """Check Python, torch/CUDA, bf16, library versions, the model cache and the embedded model."""
    from rich.console import Console
    from rich.table import Table

    from .doctor import run_checks

    checks = run_checks()
    table = Table(show_header=False, box=None, pad_edge=False)
    for c in checks:
        table.add_row(f"[bold]{c.name}[/]", c.value + (f"\n[red]problem:[/] {c.problem}\n[green]fix:[/] {c.fix}" if c.problem else ""))
    Console(highlight=False).print(table)
    problems = [c for c in checks if c.problem]
    typer.echo(f"\n{len(problems)} problem(s) found." if problems else "\nNo problems found.")
    raise typer.Exit(1 if problems else 0)


from .cli_chat import register as _register_chat  # noqa: E402 - chat and export commands

_register_chat(app)


from .cli_runs import register as _register_runs  # noqa: E402 - resume, runs, watch, logs, stop, checkpoint, plot

_register_runs(app)
# Commands that live in their own modules (imported here, each light until it runs).
from .cli_eval import register as _register_eval  # noqa: E402 - tuneforge eval
from .cli_score import register as _register_score  # noqa: E402 - tuneforge score (stage rm runs)
from .cli_serve import serve as _serve  # noqa: E402 - tuneforge serve (runner/serve/)

_register_score(app)
_register_eval(app)
app.command()(guarded(_serve))


def _finish_help() -> None:
    """Examples under each main command's --help, and boolean flags shown as flags: Typer 0.29
    prints '--merge <bool>', which reads as if the flag took a value."""
    from typer.core import TyperOption

    for info in app.registered_commands:
        name = info.name or (info.callback.__name__ if info.callback else None)
        if name in EXAMPLES and not info.epilog:
            info.epilog = _examples(name)
    shown = TyperOption.display_type_rich
    if not getattr(shown, "flags_as_flags", False):
        def display_type_rich(self, ctx):
            return None if self.is_flag else shown(self, ctx)

        display_type_rich.flags_as_flags = True
        TyperOption.display_type_rich = display_type_rich


_finish_help()


def main() -> None:
    from . import threads

    threads.apply()  # before anything imports torch: OpenMP reads its settings once, when torch loads it
    app()


if __name__ == "__main__":
    main()
