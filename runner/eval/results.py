"""Eval results on disk and their headline: runs/<name>/eval/<timestamp>/results.json.

Light (no torch): `tuneforge runs`, the TUI and `tuneforge plot` read results through here.
results.json holds one row per (section, metric): the tuned score, the base score, their
difference and its 95% interval; `headline` is the one line `tuneforge runs` shows.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

RESULTS = "results.json"
DURING = "during_training.jsonl"  # points scored every N steps while training (for the plot)
LOWER_IS_BETTER = {"loss", "perplexity"}


def eval_root(run_path: Path) -> Path:
    return Path(run_path) / "eval"


def new_dir(root: Path) -> Path:
    """A fresh eval/<timestamp>/ folder (a suffix when two evals start in the same second)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / stamp, 2
    while path.exists():
        path, n = root / f"{stamp}-{n}", n + 1
    path.mkdir(parents=True)
    return path


def latest(run_path: Path) -> dict[str, Any] | None:
    """The newest results.json of a run (None when it has none)."""
    root = eval_root(run_path)
    if not root.is_dir():
        return None
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
        try:
            data = json.loads((folder / RESULTS).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        data["dir"] = str(folder)
        return data
    return None


def headline(rows: list[dict]) -> str:
    """The first score of each section, tuned and (when scored) its difference from the base."""
    parts, seen = [], set()
    for r in rows:
        if r["section"] in seen or r.get("tuned") is None:
            continue
        seen.add(r["section"])
        name = "" if r["section"].startswith(("loss ·", "generate ·")) else r["section"] + " "
        text = f"{name}{r['metric']} {fmt(r['tuned'], r['metric'])}"
        if r.get("diff") is not None:
            text += f" ({r['diff']:+.{_places(r['metric'])}f})"
        parts.append(text)
    return ", ".join(parts)


def headline_for(run_path: Path) -> str:
    """`tuneforge runs`'s eval column: the latest eval's headline, or ''."""
    data = latest(run_path)
    if not data:
        return ""
    return headline(data.get("rows") or []) or f"(eval {data.get('state', '?')})"


def _places(metric: str) -> int:
    return 4 if metric in LOWER_IS_BETTER else 2


def fmt(value, metric: str) -> str:
    if value is None:
        return "-"
    if abs(value) >= 10000:
        return f"{value:.4g}"
    return f"{value:.{_places(metric)}f}"


def read_during(run_path: Path) -> list[dict]:
    """Eval points written during training: [{step, loss, ...}], for `tuneforge plot`."""
    path = eval_root(run_path) / DURING
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out
