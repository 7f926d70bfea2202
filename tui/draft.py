"""The wizard's working copy of a recipe: a nested dict edited field by field.

The pydantic `Recipe` stays the single source of truth: field titles, help text, choices and
validation messages all come from it. A draft becomes a recipe only through `Recipe` validation,
and is written as YAML that `tuneforge validate` reads back unchanged.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.runner.recipe import Recipe, format_errors, parse_override
from tuneforge.runner.errors import TuneforgeError
from tuneforge.runner.recipe_stages import STAGE_KINDS


def default_run_name() -> str:
    """A timestamp, as the recipe's name field promises (and as `tuneforge train` picks without one)."""
    from datetime import datetime

    return datetime.now().strftime("run-%Y%m%d-%H%M%S")


def new_draft() -> dict[str, Any]:
    return {
        "name": default_run_name(),
        "method": "lora",
        "model": {"name_or_path": "smollm2-135m"},
        "data": {"train": [{"path": ""}]},
        "train": {},
    }


def draft_from_file(path: Path) -> dict[str, Any]:
    """Open an existing recipe for editing (yaml.safe_load: never executed). Paths stay as written,
    made relative to the working directory so the wizard's checks see the same files."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise TuneforgeError(f"{path} is not valid YAML: {exc}", "fix the file or start a new recipe with: tuneforge new") from None
    if not isinstance(data, dict):
        raise TuneforgeError(f"{path} does not hold a recipe mapping", "start a new recipe with: tuneforge new")
    base = path.resolve().parent
    for spec in (data.get("data") or {}).get("train") or []:
        if isinstance(spec, dict) and isinstance(spec.get("path"), str):
            spec["path"] = _from_base(spec["path"], base)
    model = data.get("model") or {}
    name = model.get("name_or_path")
    if isinstance(name, str) and (name.startswith(("./", "../", "/", "~")) or name.endswith(".gguf") or (base / name).exists()):
        model["name_or_path"] = _from_base(name, base)
    model.setdefault("name_or_path", field_spec("model.name_or_path").default)
    data["model"] = model
    data.setdefault("train", {})
    return data


def _from_base(p: str, base: Path) -> str:
    full = Path(os.path.expanduser(p))
    full = full if full.is_absolute() else (base / full).resolve()
    return nice_path(full)


def nice_path(p: Path | str) -> str:
    """A path relative to the working directory when that is short, else absolute."""
    p = Path(p)
    return _relative_or_absolute(p.resolve() if p.is_absolute() else (Path.cwd() / p).resolve(), Path.cwd())


def _relative_or_absolute(full: Path, base: Path) -> str:
    """Relative to base when they share a folder below the root (and at most 2 levels up)."""
    try:
        common = os.path.commonpath([full, base.resolve()])
        rel = os.path.relpath(full, base.resolve())
    except ValueError:
        return str(full)
    return rel if common != os.sep and rel.count("..") <= 2 else str(full)


# ------------------------------------------------------------------------------------------
# Fields of the schema


@dataclass
class FieldSpec:
    path: str  # dotted, e.g. "train.batch_size"
    title: str
    description: str
    annotation: Any
    default: Any
    choices: list[Any] | None = None  # Literal values
    optional: bool = False
    is_bool: bool = False


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None`."""
    if get_origin(annotation) in (Union, getattr(__import__("types"), "UnionType", Union)):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        if len(args) == 1:
            return args[0], optional
        return annotation, optional
    return annotation, False


def field_spec(path: str) -> FieldSpec:
    """Title, help text, choices and default of a recipe field, straight from the pydantic model."""
    cls: type[BaseModel] = Recipe
    parts = [p for p in path.split(".") if not p.isdigit()]  # data.train.0.path -> data.train.path
    for part in parts[:-1]:
        ann, _ = _unwrap(cls.model_fields[part].annotation)
        if get_origin(ann) is list:
            ann = get_args(ann)[0]
        cls = ann
    info = cls.model_fields[parts[-1]]
    ann, optional = _unwrap(info.annotation)
    choices = list(get_args(ann)) if get_origin(ann) is Literal else None
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    title = parts[-1].replace("_", " ")
    return FieldSpec(path, title, info.description or "", ann, default, choices, optional, ann is bool)


def method_choices() -> list[str]:
    """The methods the schema allows today (new ones such as qlora/freeze appear automatically)."""
    return list(field_spec("method").choices or [])


# What each stage's data looks like, in the words the dataset step uses (kinds: runner/data/schema.py).
KIND_WORDS = {"conversation": "conversations", "text": "plain text", "preference": "preference pairs (chosen/rejected)",
              "feedback": "feedback rows (a true/false label)"}
STAGE_DATA = {s: " or ".join(KIND_WORDS[k] for k in kinds) for s, kinds in STAGE_KINDS.items()}


def set_stage(draft: dict, stage: str) -> None:
    """Choose a stage; the other stages' option blocks leave the draft (the schema refuses them)."""
    draft["stage"] = stage
    for other in STAGE_KINDS:
        if other != stage:
            draft.pop(other, None)


def method_sections(method: str) -> list[str]:
    """Recipe sections holding a method's options: its own section and, for qlora, lora's too."""
    names = []
    if method in ("lora", "qlora") and "lora" in Recipe.model_fields:
        names.append("lora")
    if method != "lora" and method in Recipe.model_fields:
        names.append(method)
    return names


def section_fields(section: str, scalar_only: bool = True) -> list[str]:
    """Dotted paths of a section's fields the wizard can edit with one input."""
    ann, _ = _unwrap(Recipe.model_fields[section].annotation)
    out = []
    for name, info in ann.model_fields.items():
        inner, _ = _unwrap(info.annotation)
        if scalar_only and isinstance(inner, type) and issubclass(inner, BaseModel):
            continue
        out.append(f"{section}.{name}")
    return out


# ------------------------------------------------------------------------------------------
# Reading and writing values


def get(draft: dict, path: str, default: Any = None) -> Any:
    node: Any = draft
    for part in path.split("."):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return default
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return default
    return node


def put(draft: dict, path: str, value: Any) -> None:
    """Set a value; `None` removes the key so the schema default applies."""
    parts = path.split(".")
    node: Any = draft
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is None:
        node.pop(last, None)
    else:
        node[last] = value


def parse_text(text: str, spec: FieldSpec) -> Any:
    """An input's text as a typed value (YAML scalars, like command-line overrides). '' = default."""
    if not text.strip():
        return None
    if spec.annotation is str:
        return text.strip()
    if spec.path.endswith("target_modules"):
        t = text.strip()
        return t if t == "all-linear" else [m.strip() for m in t.strip("[]").split(",") if m.strip()]
    return parse_override(f"x={text}")[1]


def show_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


# ------------------------------------------------------------------------------------------
# Validation


@dataclass
class Checked:
    recipe: Recipe | None
    errors: dict[str, str] = field(default_factory=dict)  # dotted path -> message

    def errors_under(self, *prefixes: str) -> dict[str, str]:
        return {k: v for k, v in self.errors.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}


def check(draft: dict, files: bool = False) -> Checked:
    """Validate the draft with the real schema; errors keyed by dotted field path.
    files: also check the files it names, relative to the working directory (as the wizard shows them)."""
    data = copy.deepcopy(draft)
    try:
        return Checked(Recipe.model_validate(data, context={"base_dir": Path.cwd()} if files else None))
    except ValidationError as err:
        errors: dict[str, str] = {}
        for e, line in zip(err.errors(), format_errors(err)):
            key = ".".join(str(p) for p in e["loc"])
            errors.setdefault(key, line.split(": ", 1)[-1])
        return Checked(None, errors)


# ------------------------------------------------------------------------------------------
# YAML


def to_yaml(draft: dict, recipe_path: Path) -> str:
    """The recipe file: only what differs from the defaults (plus the essentials), with data and
    model paths written relative to the recipe's folder so the pair can be moved together."""
    checked = check(draft)
    if checked.recipe is None:
        raise TuneforgeError("the recipe is not valid yet: " + "; ".join(f"{k}: {v}" for k, v in checked.errors.items()),
                             "go back to the step that shows the problem")
    rec = checked.recipe
    data = rec.model_dump(mode="json", exclude_defaults=True)
    data = {"version": rec.version, "name": rec.name, "method": rec.method, **data}
    data.setdefault("model", {})["name_or_path"] = rec.model.name_or_path
    base = recipe_path.resolve().parent
    for spec in data["data"]["train"] + data["data"].get("eval", []):
        spec["path"] = _relative_to(spec["path"], base)
    name = data["model"]["name_or_path"]
    if name.startswith(("./", "../", "/", "~")) or name.endswith(".gguf") or Path(name).exists():
        data["model"]["name_or_path"] = _relative_to(name, base)
    order = ["version", "name", "method", "model", *[k for k in data if k not in ("version", "name", "method", "model")]]
    return yaml.safe_dump({k: data[k] for k in order}, sort_keys=False, allow_unicode=True)


def _relative_to(p: str, base: Path) -> str:
    full = Path(os.path.expanduser(p))
    full = full if full.is_absolute() else (Path.cwd() / full).resolve()
    return _relative_or_absolute(full, base)
