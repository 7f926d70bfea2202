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

    @property
    def bad_count(self) -> int:
        return sum(self.bad_totals.values())

    def add_bad(self, reason: str, where: str, detail: str = "") -> None:
        self.bad_totals[reason] += 1
        if len(self.bad[reason]) < FIRST:
            self.bad[reason].append((where, detail))

    def add_truncated(self, where: str) -> None:
        self.truncated += 1
        if len(self.truncated_where) < FIRST:
            self.truncated_where.append(where)

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
        if self.truncated:
            lines.append(f"  {self.truncated} truncated to max_length: {', '.join(self.truncated_where[:first])}"
                         + (" ..." if self.truncated > first else ""))
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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataReport":
        r = cls(rows=d["rows"], used=d["used"], truncated=d["truncated"]["count"],
                dropped_long=d["dropped_too_long"]["count"], truncated_where=list(d["truncated"]["first"]),
                dropped_where=list(d["dropped_too_long"]["first"]), sources=dict(d.get("sources", {})))
        for k, v in d["bad"].items():
            r.bad_totals[k] = v["count"]
            r.bad[k] = [(x["where"], x["detail"]) for x in v["first"]]
        return r
