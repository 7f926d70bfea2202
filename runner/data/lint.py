"""Data that looks valid but is not: unfilled `{{...}}` placeholders and media the trainer would ignore.

Both kinds of rows convert cleanly, so row validation cannot see them. LLaMA-Factory's identity.json
carries `{{name}}`/`{{author}}` for the user to fill (the dataset entry's `placeholders:`); left as
they are the model learns the braces literally. Rows with an images/videos/audios column or an
`<image>` marker would train the marker as text with the picture dropped, so they are refused per row
until multimodal training exists (`data.ignore_media: true` trains their text anyway). Light module:
the wizard's dataset step calls `unfilled_placeholders` on its preview rows.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from .formats import RowError
from .schema import Example

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# media kind -> (the LLaMA-Factory column, the marker in text, the report reason)
MEDIA = {
    "images": ("images", "<image>", "images are not supported yet"),
    "videos": ("videos", "<video>", "videos are not supported yet"),
    "audios": ("audios", "<audio>", "audio is not supported yet"),
}
MEDIA_REASONS = tuple(r for _, _, r in MEDIA.values())


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def placeholders_in(row: Any) -> set[str]:
    """Names of the `{{name}}` placeholders anywhere in a row (its strings, nested lists/objects)."""
    return {m.group(1) for s in _strings(row) if "{{" in s for m in PLACEHOLDER.finditer(s)}


def unfilled_placeholders(rows: Iterable[Any], placeholders: dict[str, str] | None = None) -> dict[str, int]:
    """{name: rows holding it} for placeholders left unfilled once `placeholders` (the dataset entry's
    values) are applied; {} when there are none. For the wizard's preview rows and `data check`."""
    given = set(placeholders or {})
    counts: dict[str, int] = {}
    for row in rows:
        for name in placeholders_in(row) - given:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def placeholder_fix(names: Iterable[str]) -> str:
    """The fix, written as the dataset entry's line: placeholders: {name: ..., author: ...}."""
    return "placeholders: {" + ", ".join(f"{n}: ..." for n in names) + "} in the dataset entry"


def placeholder_message(counts: dict[str, int], where: Iterable[str] = ()) -> str:
    """One line for the report, the log and the wizard: which placeholders, in how many rows, the fix."""
    if not counts:
        return ""
    found = ", ".join(f"{{{{{n}}}}} in {c} row{'s' if c != 1 else ''}" for n, c in counts.items())
    first = ", ".join(list(where)[:3])
    return (f"unfilled placeholders: {found}" + (f" (first: {first})" if first else "")
            + f"; the model would learn them literally - fix: {placeholder_fix(counts)}")


def _non_empty(value: Any) -> bool:
    return value not in (None, "", [], {})


def media_problem(row: Any, ex: Example, columns: dict[str, str]) -> RowError | None:
    """A RowError when the row carries images, videos or audio (a column or a marker in its text)."""
    texts = [m.content for m in ex.messages] + [m.content for m in (ex.chosen, ex.rejected) if m] + [ex.text or ""]
    for key, (col, marker, reason) in MEDIA.items():
        name = columns.get(key, col)
        if isinstance(row, dict) and _non_empty(row.get(name)):
            n = len(row[name]) if isinstance(row[name], list) else 1
            return RowError(reason, f"'{name}' holds {n} file{'s' if n != 1 else ''}; set data.ignore_media: true to train on the text alone")
        if any(marker in t for t in texts):
            return RowError(reason, f"the text has {marker} markers; set data.ignore_media: true to train on the text alone")
    return None
