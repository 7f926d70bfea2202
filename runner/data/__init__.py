"""Data: read files → convert rows to `Example`s → validate → tokenize with exact masks.

`prepare(recipe.data, tokenizer, template)` is the one entry point the trainer uses. Bad rows are
never dropped silently: every one lands in the `DataReport` with its file, row number and reason.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .formats import CONVERTERS, RowError, detect_format
from .schema import Example
from .template import ChatTokenizer, Tokenized

__all__ = ["DataReport", "Prepared", "load_examples", "prepare", "read_rows"]


@dataclass
class DataReport:
    rows: int = 0
    used: int = 0
    truncated: int = 0
    bad: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> ["file row N"]

    @property
    def bad_count(self) -> int:
        return sum(len(v) for v in self.bad.values())

    def add_bad(self, reason: str, where: str) -> None:
        self.bad[reason].append(where)

    def summary(self, first: int = 5) -> str:
        lines = [f"{self.rows} rows read, {self.used} used, {self.bad_count} bad, {self.truncated} truncated"]
        for reason, where in sorted(self.bad.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(where[:first]) + (" ..." if len(where) > first else "")
            lines.append(f"  {len(where)} x {reason}: {shown}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "used": self.used, "truncated": self.truncated,
                "bad": {k: {"count": len(v), "first": v[:10]} for k, v in self.bad.items()}}


@dataclass
class Prepared:
    train: list[Tokenized]
    eval: list[Tokenized]
    report: DataReport


def read_rows(path: str) -> list[Any]:
    """Rows of a .json (a list of objects) or .jsonl file, with line/column on syntax errors."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file '{path}' does not exist", "check data.train[].path (relative paths start at the recipe's folder)")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{p.name} line {n} is not valid JSON: {exc.msg} (column {exc.colno})", "fix or remove that line") from None
        return rows
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p.name} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", "fix the file (a .json file holds one list of rows; use .jsonl for one row per line)") from None
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))
        if not isinstance(data, list):
            raise DataError(f"{p.name} must hold a list of rows, not a {type(data).__name__}", "wrap the rows in [ ... ] or use .jsonl")
        return data
    raise DataError(f"data file '{path}' has an unsupported type '{p.suffix}'", "use .json or .jsonl")


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


def load_examples(spec, report: DataReport) -> list[Example]:
    """Read one dataset spec into Examples, recording every bad row in the report."""
    rows = read_rows(spec.path)
    if spec.max_samples:
        rows = rows[: spec.max_samples]
    name = Path(spec.path).name
    fmt = spec.format
    if fmt == "auto":
        fmt = next((f for f in map(detect_format, rows[:5]) if f), None)
        if fmt is None:
            raise DataError(
                f"cannot tell the format of {name}: its rows have keys {sorted(rows[0])[:8] if rows and isinstance(rows[0], dict) else '?'}",
                "set format: alpaca | sharegpt | openai | text in the dataset entry",
            )
    convert = CONVERTERS[fmt]
    out = []
    for n, row in enumerate(rows):
        report.rows += 1
        where = f"{name} row {n}"
        if not isinstance(row, dict):
            report.add_bad(f"row is a {type(row).__name__}, not an object", where)
            continue
        try:
            ex = convert(_substitute(row, spec.placeholders) if spec.placeholders else row)
        except RowError as exc:
            report.add_bad(str(exc), where)
            continue
        ex.source = where
        out.append(ex)
    return out


def _tokenize_all(examples: list[Example], chat: ChatTokenizer, report: DataReport) -> list[Tokenized]:
    out = []
    for ex in examples:
        try:
            t = chat(ex)
        except RowError as exc:
            report.add_bad(str(exc), ex.source)
            continue
        report.truncated += t.truncated
        out.append(t)
    return out


def prepare(data_spec, tokenizer, template: str, seed: int) -> Prepared:
    """Turn the recipe's data section into tokenized train/eval examples plus a report."""
    report = DataReport()
    chat = ChatTokenizer(tokenizer, template, data_spec.max_length, data_spec.train_on_prompt)
    train_ex = [ex for spec in data_spec.train for ex in load_examples(spec, report)]
    eval_ex = [ex for spec in data_spec.eval for ex in load_examples(spec, report)]
    train = _tokenize_all(train_ex, chat, report)
    evals = _tokenize_all(eval_ex, chat, report)
    if data_spec.eval_split and not evals:
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_eval = max(1, round(len(train) * data_spec.eval_split))
        held = set(order[:n_eval])
        evals = [t for i, t in enumerate(train) if i in held]
        train = [t for i, t in enumerate(train) if i not in held]
    report.used = len(train) + len(evals)
    bad_fraction = report.bad_count / max(report.rows, 1)
    if not train:
        raise DataError(f"no usable training rows:\n{report.summary()}", "fix the rows listed above")
    if bad_fraction > 0.05:
        raise DataError(
            f"{report.bad_count} of {report.rows} rows ({bad_fraction:.0%}) are bad:\n{report.summary()}",
            "fix the rows listed above (up to 5% bad rows are skipped with a warning)",
        )
    return Prepared(train, evals, report)
