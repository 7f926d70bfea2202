"""Eval data: rows read through the data layer (any format training reads) into scorable items.

An item is one row with its source and, when the row has one, a prompt (the conversation before the
last reply) and a reference answer (that reply: the last assistant turn, or the chosen reply of a
preference pair). Loss uses the row as training would; generation needs the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import DataReport, load_examples
from ..data.schema import Example
from ..errors import DataError, TuneforgeError


@dataclass
class Item:
    example: Example
    source: str
    prompt: list[dict] | None  # chat messages before the reply (None: plain text, no reference)
    reference: str | None


def _split(ex: Example) -> tuple[list[dict] | None, str | None]:
    if ex.kind == "preference" and ex.chosen is not None:
        return ex.openai_messages(), ex.chosen.content
    if ex.kind in ("conversation", "feedback"):
        msgs = ex.openai_messages()
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            return None, None
        return msgs[:last], msgs[last].get("content") or ""
    return None, None


def read_items(paths: list[str], max_samples: int | None = None) -> dict[str, list[Item]]:
    """{file: items} for each data file; bad rows are left out (counted in the report) as training does."""
    from ..recipe import DatasetSpec

    if not paths:
        raise TuneforgeError("nothing to evaluate on: no data file given",
                             "pass --data FILE (a json/jsonl/csv/parquet file with conversations or alpaca rows)")
    out: dict[str, list[Item]] = {}
    for path in paths:
        if not path.startswith("hf:") and not Path(path).exists():
            raise TuneforgeError(f"eval data '{path}' does not exist", "check the --data path")
        spec = DatasetSpec(path=path, max_samples=max_samples)
        report = DataReport()
        examples = load_examples(spec, report)
        if not examples:
            raise DataError(f"no usable rows in '{path}':\n{report.summary()}", "fix the rows listed above")
        out[path] = [Item(ex, ex.source, *_split(ex)) for ex in examples]
    return out


def require_references(items: dict[str, list[Item]]) -> None:
    """Mode 'generate' scores replies against references: every file must have them."""
    for path, rows in items.items():
        lacking = [it for it in rows if it.reference is None]
        if lacking:
            raise TuneforgeError(
                f"'{path}' has {len(lacking)} row(s) without a reference answer (the first: {lacking[0].source}), "
                "so generations cannot be scored",
                "use rows with an assistant reply (alpaca output, a conversation ending in an assistant turn), "
                "or leave out generate: --mode loss")
