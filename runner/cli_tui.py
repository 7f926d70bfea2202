"""`tuneforge` (no arguments) and `tuneforge new`: open the Textual app on a terminal.

Without a terminal (pipes, cron, CI) the app would hang waiting for keys, so these commands
print what to run instead and exit 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import typer

HINT = ("tuneforge: the interactive app needs a terminal (stdin and stdout are not a TTY).\n"
        "Headless: tuneforge train RECIPE.yaml   ·   tuneforge validate RECIPE.yaml   ·   tuneforge --help")


def open_app(start: str = "runs", edit: Path | None = None) -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        typer.echo(HINT, err=True)
        raise typer.Exit(2)
    if edit is not None and not edit.is_file():
        from .errors import TuneforgeError

        raise TuneforgeError(f"recipe file '{edit}' does not exist", "check the path, or run: tuneforge new")
    if edit is not None:
        from tuneforge.tui.draft import draft_from_file

        draft_from_file(edit)  # a broken file is reported here (exit 2), not inside the app
    from tuneforge.tui.app import TuneforgeApp

    with _draw_on_terminal():
        TuneforgeApp(start=start, edit=edit).run()


@contextlib.contextmanager
def _draw_on_terminal():
    """Textual draws on stderr: with stderr sent to a file (`tuneforge new 2>err.log`) the screen
    stayed blank. While the app runs, stderr is the terminal stdout is on; restored afterwards."""
    if sys.stderr.isatty():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(1, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)

