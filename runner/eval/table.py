"""The table people read at the end of an eval: tuned and base side by side, the difference, its 95% interval."""

from __future__ import annotations

from .results import fmt


def table(doc: dict):
    from rich.table import Table

    rows = doc.get("rows", [])
    has_base = any("base" in r for r in rows)
    t = Table(title=f"eval of {doc.get('target')}", title_justify="left")
    for col in ["section", "metric", "tuned" if doc.get("run") else "score", *(["base", "diff", "95% CI of diff"] if has_base else ["95% CI"]), "n"]:
        t.add_column(col, justify="left" if col in ("section", "metric") else "right", no_wrap=col != "section")
    last = None
    for r in rows:
        m = r["metric"]
        if last is not None and r["section"] != last:
            t.add_section()
        cells = ["" if r["section"] == last else r["section"], m + (" ↓" if not r.get("higher_is_better", True) else ""), fmt(r.get("tuned"), m)]
        if has_base:
            diff = r.get("diff")
            better = diff is not None and (diff > 0) == r.get("higher_is_better", True) and diff != 0
            color = "green" if better else ("red" if diff else "")
            ci = r.get("ci95")
            text = ("+" if diff > 0 else "") + fmt(diff, m) if diff is not None else "-"
            cells += [fmt(r.get("base"), m), f"[{color}]{text}[/]" if color else text,
                      _ci(ci, m) if ci else ""]
        else:
            ci = r.get("ci95_score")
            cells.append(_ci(ci, m) if ci else "")
        cells.append(str(r.get("n", "")))
        last = r["section"]
        t.add_row(*cells)
    return t


def _ci(ci, m: str) -> str:
    if ci[0] != ci[0]:  # nan: too few rows
        return ""
    return f"{fmt(ci[0], m)} … {fmt(ci[1], m)}"
