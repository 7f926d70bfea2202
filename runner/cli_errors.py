"""The one error path of the `tuneforge` command: every command is wrapped by `@guarded`.

  TuneforgeError (a user mistake)      "error: message" + "fix: ...", exit 2 (its exit_code)
  KeyboardInterrupt / RunStopped       its exit_code: 130 ctrl-c, 143 SIGTERM or `tuneforge stop`
  anything else (a bug, the machine)   "tuneforge failed: Type: message" + a hint, exit 1
`tuneforge --debug ...` adds the traceback; the flag lives in the root Click context (no global).
Low in the stack on purpose: cli.py and its command modules import this, never each other for it.
"""

from __future__ import annotations

import functools
import sys
import traceback

import typer

from .errors import TuneforgeError

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer on the click package
    from click import ClickException, get_current_context


def debug_on() -> bool:
    """--debug, as parsed on the root command of the running Click context."""
    ctx = get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("debug"))


def report(exc: BaseException, debug: bool = False) -> int:
    """Print `exc` the tuneforge way on stderr and return the exit code it maps to."""
    from rich.console import Console
    from rich.markup import escape

    if isinstance(exc, KeyboardInterrupt):
        code = getattr(exc, "exit_code", 130)
        code = code if isinstance(code, int) else 130
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        return code
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if isinstance(exc, TuneforgeError):  # messages quote user text: '[...]' in it is not markup
        err.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True)
        if exc.fix:
            err.print(f"[bold]fix:[/] {escape(exc.fix)}", markup=True)
        code = exc.exit_code
    else:
        err.print(f"[bold red]tuneforge failed:[/] {escape(type(exc).__name__ + ': ' + str(exc))}", markup=True)
        if not debug:
            err.print("run again with --debug for the full traceback", markup=False)
        code = 1
    if debug:
        sys.stderr.flush()
        traceback.print_exception(exc, file=sys.stderr)
    return code


def guarded(fn):
    """Map whatever a command raises to a message and an exit code (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, ClickException, SystemExit):
            raise  # they already carry their exit code
        except BaseException as exc:  # noqa: BLE001 - the one place exceptions become exit codes
            raise typer.Exit(report(exc, debug_on())) from None

    return wrapper
