"""`tuneforge eval`: score a run (tuned and base side by side) or a model; thin, it calls services."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_errors import guarded


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def register(app: typer.Typer) -> None:
    @app.command("eval")
    @guarded
    def eval_cmd(
        target: Annotated[str, typer.Argument(help="A run directory or name, or a model (alias, folder, hub id).", show_default=False)],
        data: Annotated[Optional[list[str]], typer.Option("--data", help="Data file to score loss and generations on (repeatable).")] = None,
        mode: Annotated[Optional[list[str]], typer.Option("--mode", help="loss, generate, bench (comma-separated; default: loss,generate on --data, plus bench with --tasks).")] = None,
        tasks: Annotated[Optional[list[str]], typer.Option("--tasks", help="Benchmarks for bench: mmlu, ceval, cmmlu (offline from --bench-dir) or any lm-eval task.")] = None,
        num_fewshot: Annotated[int, typer.Option("--num-fewshot", help="Worked examples before each benchmark question (0 or 5).")] = 0,
        bench_dir: Annotated[Optional[Path], typer.Option("--bench-dir", help="Folder with mmlu/ ceval/ cmmlu/ in their standard layouts (default $TUNEFORGE_BENCH_DIR).")] = None,
        max_samples: Annotated[Optional[int], typer.Option("--max-samples", help="At most this many rows per file / questions per subject.")] = None,
        max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest generated reply.")] = 128,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per forward pass / generate call.")] = 16,
        base: Annotated[bool, typer.Option("--base/--no-base", help="Also score the base model on the same items.")] = True,
        out: Annotated[Optional[Path], typer.Option("--out", help="Folder for results.json and predictions (default runs/<name>/eval/<timestamp>/).")] = None,
        runs_dir: Annotated[str, typer.Option("--runs-dir", help="Where run names are looked up.")] = "runs",
    ) -> None:
        """Evaluate a run: loss/perplexity, generation metrics (BLEU, ROUGE, exact match), benchmarks; base vs tuned."""
        from rich.console import Console

        from . import services

        # no --mode: loss and generate on the data, and bench when --tasks names benchmarks
        modes = _split(mode) or [*(["loss", "generate"] if data or not tasks else []), *(["bench"] if tasks else [])]
        spec = services.eval_spec(modes=modes, tasks=_split(tasks), num_fewshot=num_fewshot,
                                  bench_dir=str(bench_dir) if bench_dir else None, max_samples=max_samples,
                                  max_new_tokens=max_new_tokens, batch_size=batch_size, base=base)
        doc = services.evaluate(target, spec, data=data or [], out=out, runs_dir=runs_dir,
                                say=lambda line: typer.echo(line, err=True))
        import sys

        Console(highlight=False, width=None if sys.stdout.isatty() else 120).print(services.eval_table(doc))
        typer.echo(f"results: {doc['dir']}/results.json")
