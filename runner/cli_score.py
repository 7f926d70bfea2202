"""`tuneforge score RUN --data FILE`: a reward-model run's scores for preference pairs.

Thin: parse, call runner.services.score, print. `register(app)` adds it to the main Typer app;
torch loads only when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_errors import guarded


def register(app: typer.Typer) -> None:
    @app.command()
    @guarded
    def score(
        run: Annotated[str, typer.Argument(help="A reward-model run (stage rm): its directory, or its name under --runs-dir.", show_default=False)],
        data: Annotated[Path, typer.Option("--data", help="Preference pairs to score (any format `tuneforge data` reads).", show_default=False)],
        limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Score only the first N rows.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object: per-row scores, accuracy, skipped rows.")] = False,
        runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Folder that holds run directories.")] = Path("runs"),
    ) -> None:
        """Score chosen and rejected replies with a reward model: per-row scores, margin, pairwise accuracy.

        Example: tuneforge score runs/my-rm --data pairs.jsonl --limit 50
        """
        from . import services

        report = services.score(run, data, limit, runs_dir)
        if as_json:
            typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
            return
        for line in report.lines():
            typer.echo(line)
