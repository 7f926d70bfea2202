"""The `tuneforge` command. Thin: parse, call one function, map errors to exit codes.

Exit codes: 0 ok, 1 runtime failure (a bug or the machine), 2 user mistake (recipe, data, path,
flag), 130/143 interrupted. Heavy libraries (torch, transformers) are imported inside commands,
so `tuneforge --help` starts instantly.
"""

from __future__ import annotations

import json
import sys
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

_state = {"debug": False}


def _fail(exc: BaseException) -> None:
    """Print an error the tuneforge way and exit; tracebacks only with --debug."""
    from rich.console import Console

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if isinstance(exc, TuneforgeError):
        err.print(f"[bold red]error:[/] {exc.message}", markup=True)
        if exc.fix:
            err.print(f"[bold]fix:[/] {exc.fix}", markup=True)
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
) -> None:
    """Train a recipe; writes runs/<name>/ with metrics, status, log, checkpoints and weights."""
    from .recipe import load_recipe

    if progress not in {"auto", "rich", "plain"}:
        _fail(TuneforgeError(f"--progress '{progress}' is not one of auto, rich, plain", "use --progress plain"))
    try:
        rec = load_recipe(recipe, overrides or [])
        from .train import train as run_training

        run = run_training(rec, progress_mode=progress).run
    except KeyboardInterrupt:
        raise typer.Exit(130)
    except Exception as exc:  # noqa: BLE001 - mapped to exit codes in one place
        _fail(exc)
        return
    typer.echo(f"\nDone. Weights: {run.weights}")
    typer.echo(f"Chat with it:  tuneforge chat {run.path}")


@app.command()
def validate(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """Print the resolved recipe (exit 0) or every problem in it (exit 2)."""
    from .recipe import load_recipe, recipe_to_yaml

    try:
        rec = load_recipe(recipe, overrides or [])
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
        return
    typer.echo(recipe_to_yaml(rec), nl=False)


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


@app.command()
def chat(
    target: Annotated[str, typer.Argument(help="A run directory, a run name, or a model (alias, folder, .gguf, hub id).")],
    adapter: Annotated[Optional[str], typer.Option(help="A LoRA adapter folder to load on top of the model.")] = None,
    plain: Annotated[bool, typer.Option("--plain", help="Line-by-line REPL on stdin/stdout (automatic when not a terminal).")] = False,
    system: Annotated[Optional[str], typer.Option(help="System prompt.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest reply in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 = greedy (reproducible).")] = 0.0,
) -> None:
    """Talk to a trained run or a model. With --plain (or no terminal): one prompt per line on stdin."""
    from . import chat as chat_mod
    from .rundir import find_run

    try:
        ref = target
        if not Path(target).exists():
            try:
                ref = str(find_run(target).path)
            except TuneforgeError:
                ref = target
        engine = chat_mod.load(ref, adapter=adapter)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
        return
    engine.sampling = chat_mod.Sampling(temperature=temperature, max_new_tokens=max_new_tokens)
    interactive = sys.stdin.isatty() and not plain
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    if interactive:
        typer.echo(f"Chatting with {engine.name}. Empty line or ctrl+d to quit.")
    while True:
        try:
            line = input("you> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            break
        if not line.strip():
            if interactive:
                break
            continue
        history.append({"role": "user", "content": line})
        if interactive:
            sys.stdout.write("bot> ")
        parts = []
        for piece in engine.stream(history):
            parts.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": "".join(parts)})


def main() -> None:
    app()


if __name__ == "__main__":
    main()
