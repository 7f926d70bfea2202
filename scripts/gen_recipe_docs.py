"""Write docs/recipes.md from the recipe's pydantic models (the single source of truth).

    python scripts/gen_recipe_docs.py          # rewrite the file
    python scripts/gen_recipe_docs.py --check  # exit 1 if the file is out of date (a test runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tuneforge.runner.recipe import Recipe

OUT = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"


def _type_name(annotation: Any) -> str:
    if _sub_model(annotation) is not None and isinstance(annotation, type):
        return "section"
    text = repr(annotation).replace("typing.", "").replace("tuneforge.runner.recipe.", "")
    return text.replace("<class '", "").replace("'>", "").replace("NoneType", "None").replace("|", "\\|")


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        return "(section)" if isinstance(value, BaseModel) else f"`{value!r}`"
    return f"`{field.default!r}`"


def _sub_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _sub_model(arg)
        if found:
            return found
    return None


def render() -> str:
    lines = [
        "# Recipe reference",
        "",
        "Generated from the pydantic models in `runner/recipe.py` by `scripts/gen_recipe_docs.py` — do not edit",
        "by hand. `tuneforge recipe schema` prints the same as JSON Schema; `tuneforge validate RECIPE` checks a",
        "file and prints it fully resolved. Override any field on the command line: `key.sub=value`",
        "(list items by index: `data.train.0.path=x.json`). An unknown key, in the file or an override,",
        "gets the closest known key anywhere below (`learnig_rate` → `train.learning_rate`), and other",
        "tools' names are recognised (`lora_rank`, `cutoff_len`, `num_train_epochs`, ...). Local data, model",
        "and template paths must exist; UTF-8 with or without a byte-order mark.",
        "",
    ]
    sections: list[tuple[str, type[BaseModel]]] = [("", Recipe)]
    seen = set()
    while sections:
        prefix, model = sections.pop(0)
        if model in seen:
            continue
        seen.add(model)
        lines += [f"## `{prefix or 'top level'}`", ""]
        if model.__doc__ and model is not Recipe:
            lines += [model.__doc__.strip().splitlines()[0], ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            sub = _sub_model(field.annotation)
            key = f"{prefix}.{name}" if prefix else name
            if sub is not None:
                sections.append((key + ("[]" if "list" in repr(field.annotation) else ""), sub))
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{key}` | `{_type_name(field.annotation)}` | {_default(field)} | {desc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python scripts/gen_recipe_docs.py")
            sys.exit(1)
        sys.exit(0)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
