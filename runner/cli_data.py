"""`tuneforge data preview | stats | check`: see what the model will be trained on before training.

DATASET is a recipe (.yaml: its data section, model, template and batch size are used), a data
file or folder, 'hf:owner/name', or a registry entry name with --registry. Heavy imports stay
inside the commands so `tuneforge --help` stays instant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .cli_errors import guarded

data_app = typer.Typer(help="Look at training data: preview masks, length stats, validation report.",
                       no_args_is_help=True)

DatasetArg = Annotated[str, typer.Argument(help="A recipe (.yaml), a data file or folder, hf:owner/name, or a registry entry (with --registry).", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model whose tokenizer and chat template to use (default: the recipe's, else smollm2-135m).")]
TemplateOpt = Annotated[Optional[str], typer.Option("--template", help="Chat template: auto, chatml, llama3, alpaca, plain or a .jinja file.")]
MaxLenOpt = Annotated[Optional[int], typer.Option("--max-length", help="Cut-off length in tokens (default: the recipe's, else 1024).")]
RegistryOpt = Annotated[Optional[str], typer.Option("--registry", help="A LLaMA-Factory dataset_info.json (or its folder): DATASET is then an entry name.")]
FormatOpt = Annotated[str, typer.Option("--format", help="Row layout for a data file: auto, alpaca, sharegpt, openai, text.")]
StageOpt = Annotated[Optional[str], typer.Option("--stage", help="Validate for this training stage: pt, sft, rm, dpo, kto, orpo, simpo (default: the recipe's, else sft).", show_default=False)]
UnpairOpt = Annotated[bool, typer.Option("--unpair", help="Stage kto: split each chosen/rejected pair into a desirable and an undesirable row (kto.unpair).")]


@dataclass
class Target:
    data: Any  # DataSpec
    model: str
    template: str
    seed: int
    stage: str | None
    batch_size: int
    revision: str | None = None
    trust_remote_code: bool = False
    unpair: bool = False  # kto.unpair
    concatenate: bool = False  # pt.concatenate
    recipe: bool = False  # the settings came from a recipe (else from this command's options)
    margin_column: str | None = None  # rm.margin_column


def _target(dataset: str, model: str | None, template: str | None, max_length: int | None,
            registry: str | None = None, fmt: str = "auto", stage: str | None = None, unpair: bool = False) -> Target:
    from pydantic import ValidationError

    from .errors import DataError, RecipeError
    from .recipe import DataSpec, DatasetSpec, load_recipe
    from .recipe_io import format_errors
    from .recipe_stages import STAGES

    if stage is not None and stage not in STAGES:
        raise DataError(f"--stage '{stage}' is not a stage", f"use one of {', '.join(STAGES)}")
    p = Path(dataset)
    if p.suffix in {".yaml", ".yml"} and not registry:
        rec = load_recipe(p, [f"data.max_length={max_length}"] if max_length else [])
        stage = stage or rec.stage
        return Target(rec.data, model or rec.model.name_or_path, template or rec.model.chat_template, rec.seed,
                      stage, rec.train.batch_size, rec.model.revision, rec.model.trust_remote_code,
                      unpair=unpair or (stage == "kto" and rec.kto.unpair),
                      concatenate=stage == "pt" and rec.pt.concatenate, recipe=True,
                      margin_column=rec.rm.margin_column if stage == "rm" else None)
    if not registry and not dataset.startswith("hf:") and not os.path.exists(dataset):  # never raises
        raise DataError(f"'{dataset}' is not a recipe, data file or folder",
                        "pass a .yaml recipe, a data file (.json, .jsonl, .csv, .parquet, .txt) or use --registry")
    try:  # the options are recipe fields: checked by the schema, refused with its messages
        if registry:
            spec = DatasetSpec(dataset=dataset, registry=str(Path(registry).resolve()), format=fmt)
        else:
            spec = DatasetSpec(path=dataset if dataset.startswith("hf:") else str(p.resolve()), format=fmt)
        data = DataSpec(train=[spec], max_length=max_length or 1024, shuffle=False)
    except ValidationError as err:
        raise RecipeError(format_errors(err, DataSpec if "DataSpec" in err.title else DatasetSpec), "command line") from None
    stage = stage or "sft"
    return Target(data, model or "smollm2-135m", template or "auto", 42, stage, 8, unpair=unpair and stage == "kto",
                  concatenate=stage == "pt")  # pt.concatenate's default


def _tokenizer(t: Target):
    from .data import tokenizer_for

    return tokenizer_for(t.model, t.template, t.revision, t.trust_remote_code)


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


# ------------------------------------------------------------------------------------------
# preview


def _segments(tok, ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """(text, trained) runs; prefix decoding keeps multi-byte characters whole at run borders."""
    runs, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != -100) != (labels[start] != -100):
            runs.append((start, i, labels[start] != -100))
            start = i
    out, done = [], ""
    for a, b, trained in runs:
        upto = tok.decode(ids[:b])
        out.append((upto[len(done):], trained))
        done = upto
    return out


def _show(console, tok, ids, labels, markers: bool) -> None:
    from rich.text import Text

    text = Text()
    for piece, trained in _segments(tok, ids, labels):
        if markers:
            text.append(f"[[{piece}]]" if trained else piece)
        else:
            text.append(piece, style="bold green" if trained else "dim")
    console.print(text, soft_wrap=markers)


@data_app.command()
@guarded
def preview(
    dataset: DatasetArg,
    model: ModelOpt = None,
    n: Annotated[int, typer.Option("-n", help="How many rows to show.")] = 3,
    template: TemplateOpt = None,
    max_length: MaxLenOpt = None,
    registry: RegistryOpt = None,
    fmt: FormatOpt = "auto",
    plain: Annotated[bool, typer.Option("--plain", help="Mark trained text with [[...]] instead of colour (automatic when not a terminal).")] = False,
) -> None:
    """Show rows as the model sees them, trained tokens highlighted ([[...]] when not a terminal)."""
    from .data import tokenize_for
    from .data.template import Dropped

    t = _target(dataset, model, template, max_length, registry, fmt)
    tok, tpl, tpl_name = _tokenizer(t)
    console = _console()
    markers = plain or not console.is_terminal
    first = [s.model_copy(update={"max_samples": min(s.max_samples or n, n)}) for s in t.data.train]
    data = t.data.model_copy(update={"train": first, "eval": [], "eval_split": 0.0, "shuffle": False, "max_samples": n})
    prep = tokenize_for(data, tok, tpl, t.seed, stage=None, sample=n)
    report = prep.report
    legend = "[[...]] = trained" if markers else "[bold green]green[/] = trained, [dim]dim[/] = not trained"
    console.print(f"template: {tpl_name} · model: {t.model} · {legend}", markup=not markers, soft_wrap=True)
    for ex, res in prep.outcomes:
        if isinstance(res, Dropped):
            console.rule(f"{ex.source}: dropped (longer than max_length {t.data.max_length})")
            continue
        if isinstance(res, Exception):
            console.rule(f"{ex.source}: bad row — {res}")
            continue
        extra = " · truncated" if res.truncated else ""
        console.rule(f"{ex.source} · {len(res.input_ids)} tokens, {res.n_trained} trained{extra}")
        if res.rejected_ids is not None:
            console.print("chosen:", style="bold")
        _show(console, tok, res.input_ids, res.labels, markers)
        if res.rejected_ids is not None:
            console.print("rejected:", style="bold")
            _show(console, tok, res.rejected_ids, res.rejected_labels, markers)
    inline = {ex.source for ex, res in prep.outcomes if isinstance(res, Exception)}
    for reason, total in report.bad_totals.items():
        for where, detail in report.bad[reason]:
            if where not in inline:
                console.rule(f"{where}: bad row — {reason}" + (f" ({detail})" if detail else ""))
    if report.placeholders:
        console.print(report.placeholder_warning(), style="yellow", soft_wrap=True)


# ------------------------------------------------------------------------------------------
# stats and check


def _prepare(t: Target):
    import re

    from .data import tokenize_for
    from .errors import DataError

    tok, tpl, tpl_name = _tokenizer(t)
    data = t.data.model_copy(update={"on_bad_rows": "skip"})
    try:
        return tok, tpl_name, tokenize_for(data, tok, tpl, t.seed, stage=t.stage, unpair=t.unpair,
                                             concatenate=t.concatenate, margin_column=t.margin_column)
    except DataError as exc:
        if t.recipe or not exc.fix:
            raise
        # a data file checked from the command line: the recipe's fix as this command's options
        fix = re.sub(r"\bstage: (\w+)", r"--stage \1", exc.fix.replace("set kto.unpair: true", "add --unpair").replace("kto.unpair: true", "--unpair"))
        raise DataError(exc.message, fix) from None


def _cuts(r) -> str:
    """'99 (90 prompt cut from the left, 9 reply cut ...)': truncations by rule."""
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(r.cut_totals.items(), key=lambda kv: -kv[1]))
    return f"{r.truncated} ({parts})" if parts else str(r.truncated)


@data_app.command()
@guarded
def stats(
    dataset: DatasetArg,
    model: ModelOpt = None,
    template: TemplateOpt = None,
    max_length: MaxLenOpt = None,
    registry: RegistryOpt = None,
    fmt: FormatOpt = "auto",
    stage: StageOpt = None,
    unpair: UnpairOpt = False,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size for the padding figure (default: the recipe's, else 8).")] = None,
) -> None:
    """Rows, token-length percentiles and histogram, bad rows, padding waste at the batch size."""

    from rich.table import Table

    from .data.stats import histogram, length_stats, padding_waste

    t = _target(dataset, model, template, max_length, registry, fmt, stage, unpair)
    tok, tpl_name, prep = _prepare(t)
    rows = prep.train + prep.eval
    lengths = [len(r.input_ids) for r in rows]
    trained = [r.n_trained for r in rows]
    s = length_stats(lengths, trained)
    bs = batch_size or t.batch_size
    console = _console()
    r = prep.report
    summary = Table(title=f"{dataset} · stage: {t.stage} · template: {tpl_name}", show_header=False)
    summary.add_column(justify="left")
    summary.add_column(justify="right")
    lines = [("rows read", r.rows), ("rows used", f"{r.used} ({len(prep.train)} train, {len(prep.eval)} eval)"),
             ("bad rows", r.bad_count), ("truncated", _cuts(r)), ("dropped (too long)", r.dropped_long)]
    if r.documents:
        lines.append(("documents → blocks (pt.concatenate)", f"{r.documents} → {r.blocks}"))
    if prep.kind == "preference":
        lines.append(("length = prompt + chosen; prompt p50", str(sorted(x.prompt_len or 0 for x in rows)[len(rows) // 2])))
    lines += [("tokens", f"{s.tokens:,}"), ("trained tokens", f"{s.trained:,} ({s.trained / max(s.tokens, 1):.0%})"),
              ("length p50 / p90 / p95 / p99 / max", f"{s.p50} / {s.p90} / {s.p95} / {s.p99} / {s.max}"),
              (f"padding waste at batch size {bs}", f"{padding_waste([len(x.input_ids) for x in prep.train], bs):.1%}"),
              ("max_length", t.data.max_length)]
    for k, v in lines:
        summary.add_row(k, str(v))
    console.print(summary)

    hist = Table(title="token lengths", show_header=True)
    hist.add_column("tokens", justify="right")
    hist.add_column("rows", justify="right")
    hist.add_column("", justify="left")
    buckets = histogram(lengths)
    top = max((c for _, _, c in buckets), default=1) or 1
    for lo, hi, c in buckets:
        hist.add_row(f"{lo}–{hi}", str(c), "█" * max(0 if c == 0 else 1, round(30 * c / top)))
    console.print(hist)

    longest = Table(title="longest rows", show_header=True)
    longest.add_column("row", no_wrap=True, max_width=36, overflow="ellipsis")
    longest.add_column("tokens", justify="right", min_width=6)
    longest.add_column("reply starts", no_wrap=True, max_width=40, overflow="ellipsis")
    for x in sorted(rows, key=lambda x: -len(x.input_ids))[:5]:
        reply = tok.decode([i for i in x.labels if i != -100][:48]).replace("\n", " ")
        longest.add_row(x.source, str(len(x.input_ids)), reply)
    console.print(longest)
    if r.placeholders:
        console.print(r.placeholder_warning(), style="yellow", soft_wrap=True)
    if r.bad_count:
        console.print(f"{r.bad_count} bad row(s); see: tuneforge data check {dataset}", style="yellow")


def _reasons_table(title: str, counts: dict[str, int], first: dict[str, list[str]]):
    from rich.table import Table

    table = Table(title=title, show_header=True, title_justify="left")
    table.add_column("reason")
    table.add_column("rows", justify="right")
    table.add_column("first rows")
    for reason, total in sorted(counts.items(), key=lambda kv: -kv[1]):
        table.add_row(reason, str(total), "\n".join(first[reason][:5]))
    return table


@data_app.command()
@guarded
def check(
    dataset: DatasetArg,
    model: ModelOpt = None,
    template: TemplateOpt = None,
    max_length: MaxLenOpt = None,
    registry: RegistryOpt = None,
    fmt: FormatOpt = "auto",
    stage: StageOpt = None,
    unpair: UnpairOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 on any bad row, even when training would leave it out.")] = False,
) -> None:
    """Validate every row for the stage; print counts per reason and the first rows of each.
    Exit 0 when training would use the data (bad rows it leaves out are listed), 2 when not."""

    from .data import apply_policy
    from .errors import TuneforgeError

    t = _target(dataset, model, template, max_length, registry, fmt, stage, unpair)
    _, tpl_name, prep = _prepare(t)
    r = prep.report
    console = _console()
    console.print(f"{r.rows} rows read, {r.used} usable, {r.bad_count} bad, {r.truncated} truncated, "
                  f"{r.dropped_long} dropped as too long (stage: {t.stage}, max_length {t.data.max_length}, "
                  f"template: {tpl_name})", soft_wrap=True)
    if r.cut_totals:
        console.print(_reasons_table("truncated (still used)", r.cut_totals, r.cut))
    from .data.template import PROMPT_CUT, REPLY_CUT

    if r.cut_totals.get(PROMPT_CUT) or r.cut_totals.get(REPLY_CUT):
        replies = r.cut_totals.get(REPLY_CUT, 0)
        console.print(f"{r.cut_totals.get(PROMPT_CUT, 0)} prompts cut from the left to fit max_length {t.data.max_length}, "
                      "replies kept whole" + (f"; {replies} rows with a reply too long to fit whole, cut at its end "
                                              "beside the prompt's last tokens" if replies else ""), soft_wrap=True)
    if r.unpaired:
        console.print(f"{r.unpaired} pairs split into {2 * r.unpaired} feedback rows (kto.unpair)")
    if r.documents:
        console.print(f"{r.documents} documents joined and cut into {r.blocks} blocks of {t.data.max_length} tokens (pt.concatenate)")
    if r.placeholders:
        console.print(r.placeholder_warning(), style="bold yellow", soft_wrap=True)
    if r.bad_count:
        first = {k: [f"{w}: {d}" if d else w for w, d in v] for k, v in r.bad.items()}
        console.print(_reasons_table("bad rows (left out)", r.bad_totals, first))
        try:
            apply_policy(r, t.data)
        except TuneforgeError:
            console.print(f"{r.bad_count} bad row(s): training would stop (on_bad_rows: {t.data.on_bad_rows}, "
                          f"max_bad_fraction {t.data.max_bad_fraction:.0%})", style="bold red", soft_wrap=True)
            raise typer.Exit(2) from None
        console.print(f"{r.bad_count} bad row(s): training would leave them out (on_bad_rows: {t.data.on_bad_rows})",
                      style="bold yellow", soft_wrap=True)
        if strict:
            raise typer.Exit(2)
        console.print(f"usable for stage {t.stage}: {r.used} rows", style="bold green")
        return
    console.print("all rows are valid" + (" (see the placeholder warning above)" if r.placeholders else ""),
                  style="bold green")
