"""The `tuneforge` command. Thin: parse, call one function, map errors to exit codes.

Exit codes: 0 ok, 1 runtime failure (a bug or the machine), 2 user mistake (recipe, data, path,
flag), 130/143 interrupted. Heavy libraries (torch, transformers) are imported inside commands,
so `tuneforge --help` starts instantly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import TuneforgeError

app = typer.Typer(
    name="tuneforge",
    help="Terminal-first fine-tuning of LLMs: recipes in, trained weights and a chat out. "
    "Without a command: the interactive app (on a terminal).",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
recipe_app = typer.Typer(help="Recipe tools: JSON Schema and field reference.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
from .cli_data import data_app  # noqa: E402 - light: typer only

app.add_typer(data_app, name="data")

_state = {"debug": False}


def _fail(exc: BaseException) -> None:
    """Print an error the tuneforge way and exit; tracebacks only with --debug."""
    from rich.console import Console

    from rich.markup import escape

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if isinstance(exc, TuneforgeError):  # messages quote user text: '[...]' in it is not markup
        err.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True)
        if exc.fix:
            err.print(f"[bold]fix:[/] {escape(exc.fix)}", markup=True)
        code = exc.exit_code
    else:
        err.print(f"[bold red]tuneforge failed:[/] {type(exc).__name__}: {exc}", markup=True)
        err.print("run again with --debug for the full traceback", markup=False)
        code = 1
    if _state["debug"]:
        raise exc
    raise typer.Exit(code)


@app.callback(invoke_without_command=True)
def _main(ctx: typer.Context, debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug
    if ctx.invoked_subcommand is None:  # bare `tuneforge`: the app (or a hint and exit 2 without a TTY)
        from .cli_tui import open_app

        _guard(open_app)


def _guard(fn, *args) -> None:
    try:
        fn(*args)
    except TuneforgeError as exc:
        _fail(exc)


@app.command()
def new(edit: Annotated[Optional[Path], typer.Option("--edit", help="Open an existing recipe in the wizard.")] = None) -> None:
    """Create a recipe with the wizard (model, method, data, hyperparameters), then run it."""
    from .cli_tui import open_app

    _guard(open_app, "new", edit)


RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
OverridesArg = Annotated[Optional[list[str]], typer.Argument(help="Overrides like train.batch_size=4 (YAML-typed values).", show_default=False)]


@app.command()
def train(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    progress: Annotated[str, typer.Option(help="auto (rich on a terminal, plain otherwise), rich or plain.")] = "auto",
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background (new tmux session, else setsid) and return at once.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the recipe's run (runs_dir/name) from its latest checkpoint.")] = False,
    plain_every: Annotated[float, typer.Option(help="Plain mode: at most one progress line every N seconds (train.log gets every step).")] = 5.0,
    run_dir: Annotated[Optional[Path], typer.Option(hidden=True, help="Use this existing run directory (set by --detach).")] = None,
) -> None:
    """Train a recipe; writes runs/<name>/ with metrics, status, log, checkpoints and weights."""
    from .cli_runs import run_train

    try:
        run_train(recipe, overrides or [], progress, detach, resume, run_dir, plain_every)
    except KeyboardInterrupt as exc:  # 130 for ctrl-c, 143 for SIGTERM / tuneforge stop
        raise typer.Exit(getattr(exc, "exit_code", 130))
    except Exception as exc:  # noqa: BLE001 - mapped to exit codes in one place
        _fail(exc)


@app.command()
def validate(
    recipe: RecipeArg, overrides: OverridesArg = None,
    estimate: Annotated[bool, typer.Option("--estimate/--no-estimate", help="Also estimate memory and time on this machine.")] = True,
) -> None:
    """Print the resolved recipe (exit 0) or every problem in it (exit 2), then the memory/time estimate."""
    from .recipe import load_recipe, recipe_to_yaml

    try:
        rec = load_recipe(recipe, overrides or [])
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
        return
    typer.echo(recipe_to_yaml(rec), nl=False)
    if estimate:  # as YAML comments, so the output stays a valid recipe
        from .estimate import describe

        lines = [part for line in ["estimate for this machine:", *describe(rec)] for part in str(line).splitlines()]
        typer.echo("".join(f"# {line}\n" for line in lines), nl=False)


@recipe_app.command("schema")
def recipe_schema() -> None:
    """Print the recipe's JSON Schema (for editors and validation elsewhere)."""
    from .recipe import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
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

_register_runs(app, _fail)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
