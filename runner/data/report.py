"""The validation report: every bad, truncated or dropped row is counted by reason and named.

Nothing leaves the pipeline without a line here; `data_report.json` in the run directory and
`tuneforge data check` both show it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

FIRST = 10  # row locations kept per reason


@dataclass
class DataReport:
    rows: int = 0
    used: int = 0
    truncated: int = 0  # cut to max_length (keep_start / keep_end)
    dropped_long: int = 0  # left out by truncation: drop
    bad: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))  # reason -> [(where, detail)]
    bad_totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    truncated_where: list[str] = field(default_factory=list)
    dropped_where: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)  # label -> rows read
    cut: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # truncation reason -> first rows
    cut_totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    placeholders: dict[str, int] = field(default_factory=dict)  # unfilled {{name}} -> rows holding it
    placeholder_where: list[str] = field(default_factory=list)
    unpaired: int = 0  # pairs split into a desirable and an undesirable row (kto.unpair)
    documents: int = 0  # text documents joined into the stream (pt.concatenate)
    blocks: int = 0  # max_length blocks cut from that stream

    @property
    def bad_count(self) -> int:
        return sum(self.bad_totals.values())

    def add_bad(self, reason: str, where: str, detail: str = "") -> None:
        self.bad_totals[reason] += 1
        if len(self.bad[reason]) < FIRST:
            self.bad[reason].append((where, detail))

    def add_truncated(self, where: str, reason: str = "cut to max_length") -> None:
        self.truncated += 1
        if len(self.truncated_where) < FIRST:
            self.truncated_where.append(where)
        self.cut_totals[reason] += 1
        if len(self.cut[reason]) < FIRST:
            self.cut[reason].append(where)

    def add_placeholders(self, names: set[str], where: str) -> None:
        for name in names:
            self.placeholders[name] = self.placeholders.get(name, 0) + 1
        if len(self.placeholder_where) < FIRST:
            self.placeholder_where.append(where)

    def placeholder_warning(self) -> str:
        from .lint import placeholder_message

        return placeholder_message(dict(sorted(self.placeholders.items())), self.placeholder_where)

    def add_dropped(self, where: str) -> None:
        self.dropped_long += 1
        if len(self.dropped_where) < FIRST:
            self.dropped_where.append(where)

    def summary(self, first: int = 5) -> str:
        lines = [f"{self.rows} rows read, {self.used} used, {self.bad_count} bad, {self.truncated} truncated"
                 + (f", {self.dropped_long} dropped as too long" if self.dropped_long else "")]
        for reason, total in sorted(self.bad_totals.items(), key=lambda kv: -kv[1]):
            shown = self.bad[reason][:first]
            where = "; ".join(f"{w} ({d})" if d else w for w, d in shown)
            lines.append(f"  {total} x {reason}: {where}" + (" ..." if total > len(shown) else ""))
        for reason, total in sorted(self.cut_totals.items(), key=lambda kv: -kv[1]):
            shown = self.cut[reason][:first]
            lines.append(f"  {total} truncated ({reason}): {', '.join(shown)}" + (" ..." if total > len(shown) else ""))
        if self.unpaired:
            lines.append(f"  {self.unpaired} pairs split into a desirable and an undesirable row (kto.unpair)")
        if self.documents:
            lines.append(f"  {self.documents} documents joined and cut into {self.blocks} blocks of max_length (pt.concatenate)")
        if self.placeholders:
            lines.append("  " + self.placeholder_warning())
        if self.dropped_long:
            lines.append(f"  {self.dropped_long} dropped (longer than max_length): {', '.join(self.dropped_where[:first])}"
                         + (" ..." if self.dropped_long > first else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "used": self.used, "bad_count": self.bad_count,
            "truncated": {"count": self.truncated, "first": self.truncated_where},
            "dropped_too_long": {"count": self.dropped_long, "first": self.dropped_where},
            "bad": {k: {"count": self.bad_totals[k], "first": [{"where": w, "detail": d} for w, d in self.bad[k]]}
                    for k in self.bad_totals},
            "sources": self.sources,
            "truncation": {k: {"count": self.cut_totals[k], "first": self.cut[k]} for k in self.cut_totals},
            "placeholders": {"unfilled": dict(sorted(self.placeholders.items())), "first": self.placeholder_where},
            "unpaired": self.unpaired, "documents": self.documents, "blocks": self.blocks,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataReport":
        r = cls(rows=d["rows"], used=d["used"], truncated=d["truncated"]["count"],
                dropped_long=d["dropped_too_long"]["count"], truncated_where=list(d["truncated"]["first"]),
                dropped_where=list(d["dropped_too_long"]["first"]), sources=dict(d.get("sources", {})),
                unpaired=d.get("unpaired", 0), documents=d.get("documents", 0), blocks=d.get("blocks", 0))
        for k, v in d.get("truncation", {}).items():
            r.cut_totals[k] = v["count"]
            r.cut[k] = list(v["first"])
        ph = d.get("placeholders", {})
        r.placeholders, r.placeholder_where = dict(ph.get("unfilled", {})), list(ph.get("first", []))
        for k, v in d["bad"].items():
            r.bad_totals[k] = v["count"]
            r.bad[k] = [(x["where"], x["detail"]) for x in v["first"]]
        return r
