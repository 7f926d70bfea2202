"""Data: sources → rows → `Example`s (one schema) → validation → tokens with exact masks → cache.

`tokenize_for(recipe.data, tokenizer, template, ...)` is the one path from rows to token ids: the
trainer, `tuneforge data`, the estimator and the wizard's preview all call it (a `sample` of rows
for the last three), so each sees exactly the tokens and masks training uses. Bad rows are never
dropped silently: every one lands in the `DataReport` with its file, row number and reason, and
`on_bad_rows` decides whether they stop the run. Rows of a kind the stage does not train on are bad
rows too (a whole dataset of them is a DataError with the fix), and unfilled `{{...}}` placeholders
are a warning in the report and the log.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError
from .formats import BAD_MARGIN, Mapping, RowError, convert, detect_layout
from .lint import media_problem, placeholders_in, unfilled_placeholders
from .report import DataReport
from .schema import Example
from .sources import file_source, open_source
from .stage_rows import concatenate_blocks as _concatenate
from .stage_rows import keep_kinds, stage_options, unpair_rows
from .template import ChatTokenizer, Dropped, Tokenized

__all__ = ["DataReport", "Example", "Prepared", "Tokenized", "apply_policy", "chat_tokenizer", "load_examples", "mix",
           "prepare", "read_rows", "stage_options", "tokenize", "tokenize_for", "tokenizer_for", "unfilled_placeholders"]

log = logging.getLogger("tuneforge")
BATCH = 256


@dataclass
class Prepared:
    train: list[Tokenized]
    eval: list[Tokenized]
    report: DataReport
    kind: str = "conversation"
    cache_hit: bool = False
    warnings: list[str] = field(default_factory=list)
    total: int = -1  # training examples in all (more than len(train) when a sample was tokenized)
    outcomes: list[tuple[Example, Tokenized | RowError]] = field(default_factory=list)  # sample: each row's result
    chat: ChatTokenizer | None = None  # sample: the tokenizer used, for faces that render the text
    cache_key: str | None = None  # the data cache's key (None with data.cache off or a sample): files kept
    # beside the tokens (precomputed reference log-probs) use it, so they are never stale either

    def __post_init__(self) -> None:
        if self.total < 0:
            self.total = len(self.train)


def _substitute(value: Any, placeholders: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, repl in placeholders.items():
            value = value.replace("{{" + key + "}}", repl)
        return value
    if isinstance(value, list):
        return [_substitute(v, placeholders) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, placeholders) for k, v in value.items()}
    return value


def read_rows(path: str) -> list[Any]:
    """The raw rows of one data file or folder (any supported type), for tools that show them."""
    return [row for _, row in file_source(path).rows()]


def _margin(row: Any, col: str) -> float:
    value = row.get(col) if isinstance(row, dict) else None
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)  # numbers, and numbers written as text (csv)
    except (TypeError, ValueError):
        raise RowError(BAD_MARGIN, f"'{col}' is {value!r}") from None


def load_examples(spec, report: DataReport, source=None, ignore_media: bool = False,
                  margin_column: str | None = None) -> list[Example]:
    """Read one dataset entry into Examples, recording every bad row (and unfilled placeholder) in the report."""
    src = source or open_source(spec)
    rows = []
    for where, row in src.rows():
        if spec.max_samples and len(rows) >= spec.max_samples:
            break
        rows.append((where, row))
    if not rows:
        raise DataError(f"{src.label} holds no rows", "add rows to it, or remove it from the recipe")
    layout = src.layout
    if layout == "auto":
        layout = next((f for f in (detect_layout(r, src.columns) for _, r in rows[:20]) if f), None)
        if layout is None:
            first = rows[0][1]
            what = (f"its rows have keys {sorted(map(str, first))[:8]}" if isinstance(first, dict)
                    else f"its rows are {type(first).__name__}s, not objects ({rows[0][0]})")
            raise DataError(f"cannot tell the format of {src.label}: {what}",
                            "set format: alpaca | sharegpt | openai | text (and columns: if the names differ)")
    mapping = Mapping(layout, src.kind, src.columns, src.tags)
    out = []
    report.sources[src.label] = len(rows)
    for where, row in rows:
        report.rows += 1
        loc = f"{src.label} {where}"
        filled = _substitute(row, spec.placeholders) if spec.placeholders else row
        try:
            ex = convert(filled, mapping)
            names = placeholders_in(filled)
            if names:
                report.add_placeholders(names, loc)
            problem = None if ignore_media else media_problem(filled, ex, mapping.columns)
            if problem is not None:
                raise problem
            if margin_column and ex.kind == "preference":
                ex.margin = _margin(filled, margin_column)
        except RowError as exc:
            report.add_bad(exc.reason, loc, exc.detail)
            continue
        except RecursionError:
            report.add_bad("nested too deeply", loc, "lists/objects nested hundreds deep")
            continue
        ex.source = loc
        out.append(ex)
    return out


def mix(parts: list[list[Example]], weights: list[float], how: str, seed: int) -> list[Example]:
    """'concat': all rows in order. 'interleave': rows drawn by weight until the first dataset
    runs out, so the mixture has the shares asked for (seeded, reproducible)."""
    if how == "concat" or len(parts) == 1:
        return [ex for p in parts for ex in p]
    rng = random.Random(seed)
    total_w = sum(weights)
    probs = [w / total_w for w in weights]
    n = min(len(p) / pr for p, pr in zip(parts, probs) if pr > 0)
    takes = [min(len(p), int(round(n * pr))) for p, pr in zip(parts, probs)]
    pools = []
    for p, k in zip(parts, takes):
        idx = list(range(len(p)))
        rng.shuffle(idx)
        pools.append([p[i] for i in sorted(idx[:k])])
    order = [i for i, k in enumerate(takes) for _ in range(k)]
    rng.shuffle(order)
    iters = [iter(p) for p in pools]
    return [next(iters[i]) for i in order]


def _record(ex: Example, res: Tokenized | RowError, report: DataReport) -> Tokenized | None:
    if isinstance(res, Dropped):
        report.add_dropped(ex.source)
    elif isinstance(res, RowError):
        report.add_bad(res.reason, ex.source, res.detail)
    else:
        if res.truncated:
            report.add_truncated(ex.source, res.cut or "cut to max_length")
        return res
    return None


def tokenize(examples: list[Example], chat: ChatTokenizer, report: DataReport) -> list[Tokenized]:
    """Examples → Tokenized in batches; failures go to the report (bad, or dropped as too long)."""
    out = []
    for b in range(0, len(examples), BATCH):
        batch = examples[b:b + BATCH]
        out += [t for t in (_record(ex, res, report) for ex, res in zip(batch, chat.encode_many(batch))) if t]
    return out


def chat_tokenizer(data_spec, tokenizer, template: str) -> ChatTokenizer:
    """The ChatTokenizer for the recipe's data settings (every option passed, in one place)."""
    return ChatTokenizer(tokenizer, template, data_spec.max_length, data_spec.train_on_prompt,
                         data_spec.last_turn_only, data_spec.truncation)


def apply_policy(report: DataReport, data_spec) -> list[str]:
    """Stop or warn on bad rows as `on_bad_rows` says; returns the warnings given."""
    if not report.bad_count:
        return []
    frac = report.bad_count / max(report.rows, 1)
    policy = data_spec.on_bad_rows
    if policy == "error" or (policy == "auto" and frac > data_spec.max_bad_fraction):
        limit = "on_bad_rows: error" if policy == "error" else f"more than max_bad_fraction {data_spec.max_bad_fraction:.0%}"
        raise DataError(f"{report.bad_count} of {report.rows} rows ({frac:.1%}) are bad ({limit}):\n{report.summary()}",
                        "fix the rows listed above, or set data.on_bad_rows: skip to leave them out")
    if policy in {"warn", "auto"}:
        msg = f"{report.bad_count} bad row(s) left out:\n{report.summary()}"
        log.warning(msg)
        return [msg]
    return []


def tokenizer_for(model: str, chat_template: str = "auto", revision: str | None = None,
                  trust_remote_code: bool = False):
    """(tokenizer, template text, template name) for a model name and the recipe's chat_template."""
    from .. import model as model_mod
    from .template import resolve_chat_template

    model_mod.quiet_hf()
    tok = model_mod.load_tokenizer(model_mod.resolve(model), revision, trust_remote_code)
    template, name = resolve_chat_template(tok, chat_template)
    return (tok, template, name)


def tokenize_for(data_spec, tokenizer, template: str, seed: int = 42, stage: str | None = "sft",
                 sample: int | None = None, *, unpair: bool = False, concatenate: bool = False,
                 margin_column: str | None = None) -> Prepared:
    """The one path from rows to token ids. sample=None: every row, cached, bad-row policy applied
    (training, `tuneforge data stats/check`). sample=n: the first n training examples in training
    order (shuffled by the seed when data.shuffle is on), no cache or policy; `total` counts them
    all and `outcomes` holds each sampled row's result (the estimator, previews).
    unpair (kto.unpair): each pair becomes a desirable and an undesirable feedback row.
    concatenate (pt.concatenate): text rows are joined, EOS after each, and cut into max_length blocks.
    margin_column (rm.margin_column): each pair's `margin` is read from that column."""
    if sample is None:
        return prepare(data_spec, tokenizer, template, seed, stage, unpair=unpair, concatenate=concatenate,
                       margin_column=margin_column)
    report = DataReport()
    train_ex, _, kind = _examples(data_spec, report, seed, stage, [open_source(s) for s in data_spec.train],
                                  [open_source(s) for s in data_spec.eval], unpair, margin_column)
    chat = chat_tokenizer(data_spec, tokenizer, template)
    picked = train_ex[:sample]
    outcomes = list(zip(picked, chat.encode_many(picked)))
    if not concatenate:
        train = [t for t in (_record(ex, res, report) for ex, res in outcomes) if t]
        report.used = len(train)
        return Prepared(train, [], report, kind=kind, total=len(train_ex), outcomes=outcomes, chat=chat)
    # pt.concatenate: the sampled documents become blocks; the total is estimated from their length
    train = [t for t in (_record(ex, res, report) for ex, res in outcomes if ex.kind != "text") if t]
    docs = [ex for ex in picked if ex.kind == "text"]
    blocks = _concatenate(docs, chat, report) if docs else []
    report.used = len(train) + len(docs)
    n_text = sum(1 for ex in train_ex if ex.kind == "text")
    per_doc = sum(len(t.input_ids) for t in blocks) / max(len(docs), 1)
    total = len(train_ex) - n_text + (math.ceil(per_doc * n_text / chat.max_length) if docs else 0)
    return Prepared(train + blocks, [], report, kind=kind, total=total, outcomes=outcomes, chat=chat)


def _examples(data_spec, report: DataReport, seed: int, stage: str | None, train_src, eval_src, unpair: bool = False,
              margin_column: str | None = None):
    """(train, eval, kind): every dataset read, checked against the stage, mixed, shuffled, capped,
    split and (kto.unpair) unpaired as the recipe says."""
    media = getattr(data_spec, "ignore_media", False)
    parts = [keep_kinds(load_examples(spec, report, src, media, margin_column), src.label, stage, report, unpair)
             for spec, src in zip(data_spec.train, train_src)]
    train_ex = mix(parts, [s.weight for s in data_spec.train], data_spec.mix, seed)
    if data_spec.shuffle:
        random.Random(seed).shuffle(train_ex)
    if data_spec.max_samples:
        train_ex = train_ex[: data_spec.max_samples]
    eval_ex = [ex for spec, src in zip(data_spec.eval, eval_src)
               for ex in keep_kinds(load_examples(spec, report, src, media, margin_column), src.label, stage, report, unpair)]
    if data_spec.eval_split and not eval_ex and train_ex:
        order = list(range(len(train_ex)))
        random.Random(seed + 1).shuffle(order)
        held = set(order[: max(1, round(len(train_ex) * data_spec.eval_split))])
        eval_ex = [ex for i, ex in enumerate(train_ex) if i in held]
        train_ex = [ex for i, ex in enumerate(train_ex) if i not in held]
    if unpair:  # after the split: a pair's two halves stay on the same side
        train_ex, eval_ex = unpair_rows(train_ex, report), unpair_rows(eval_ex, report)
    kinds = {ex.kind for ex in train_ex + eval_ex}
    kind = "conversation" if "conversation" in kinds else (sorted(kinds)[0] if kinds else "conversation")
    return train_ex, eval_ex, kind


def data_warnings(report: DataReport, data_spec) -> list[str]:
    """The bad-row policy's warnings (or its DataError) and unfilled placeholders, logged."""
    warnings = apply_policy(report, data_spec)
    if report.placeholders:
        msg = report.placeholder_warning()
        log.warning(msg)
        warnings.append(msg)
    return warnings


def _tokenize_split(examples: list[Example], chat: ChatTokenizer, report: DataReport,
                    concatenate: bool) -> tuple[list[Tokenized], int]:
    """(tokenized rows, rows used): with concatenate, text rows become blocks and count as documents."""
    if not concatenate:
        rows = tokenize(examples, chat, report)
        return rows, len(rows)
    docs = [ex for ex in examples if ex.kind == "text"]
    rows = tokenize([ex for ex in examples if ex.kind != "text"], chat, report)
    return rows + (_concatenate(docs, chat, report) if docs else []), len(rows) + len(docs)


def prepare(data_spec, tokenizer, template: str, seed: int, stage: str | None = "sft", *,
            unpair: bool = False, concatenate: bool = False, margin_column: str | None = None) -> Prepared:
    """Every row of the recipe's data section as tokenized train/eval rows plus a report (cached);
    what `tokenize_for` does without a sample. `stage` says which row kinds are allowed (None: any)."""
    from . import cache

    train_src = [open_source(s) for s in data_spec.train]
    eval_src = [open_source(s) for s in data_spec.eval]
    key = None
    if data_spec.cache:
        key = cache.cache_key({
            "train": [src.fingerprint for src in train_src], "eval": [src.fingerprint for src in eval_src],
            "spec": data_spec.model_dump(mode="json", exclude={"cache"}), "seed": seed, "stage": stage,
            "tokenizer": cache.tokenizer_fingerprint(tokenizer), "template": template,
            "unpair": unpair, "concatenate": concatenate, "margin_column": margin_column,
        })
        cached = cache.load(key)
        if cached is not None:
            train, evals, report, kind = cached
            hit = Prepared(train, evals, report, kind=kind, cache_hit=True, cache_key=key)
            hit.warnings = data_warnings(hit.report, data_spec)
            return hit

    report = DataReport()
    train_ex, eval_ex, kind = _examples(data_spec, report, seed, stage, train_src, eval_src, unpair, margin_column)
    chat = chat_tokenizer(data_spec, tokenizer, template)
    train, used_train = _tokenize_split(train_ex, chat, report, concatenate)
    evals, used_eval = _tokenize_split(eval_ex, chat, report, concatenate)
    report.used = used_train + used_eval
    if not train:
        raise DataError(f"no usable training rows:\n{report.summary()}", "fix the rows listed above")
    prepared = Prepared(train, evals, report, kind=kind, cache_key=key)
    prepared.warnings = data_warnings(report, data_spec)
    if key is not None:
        cache.save(key, prepared)
    return prepared
