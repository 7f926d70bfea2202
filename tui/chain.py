"""The chain of runs a recipe builds on (model.from_run), as the review step shows it:
base -> runs/x (sft) -> this run (dpo). Reads the earlier runs' saved recipes only."""

from __future__ import annotations

from pathlib import Path

import yaml


def chain_line(draft: dict, limit: int = 8) -> str:
    """'base -> runs/x (sft) -> this run (dpo)'; a missing run is named with '(not found)'."""
    stage = draft.get("stage") or "sft"
    model = draft.get("model") or {}
    links: list[str] = []
    ref = model.get("from_run")
    base = model.get("name_or_path") or "smollm2-135m"
    for _ in range(limit):
        if not ref:
            break
        saved = _saved_recipe(Path(str(ref)).expanduser())
        if saved is None:
            links.append(f"{ref} (not found)")
            break
        links.append(f"{ref} ({saved.get('stage') or 'sft'})")
        saved_model = saved.get("model") or {}
        base = saved_model.get("name_or_path") or base
        ref = saved_model.get("from_run")
    return " -> ".join([base, *reversed(links), f"this run ({stage})"])


def _saved_recipe(path: Path) -> dict | None:
    try:
        data = yaml.safe_load((path / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None
