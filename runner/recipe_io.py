"""Reading recipes: the YAML file, `key.sub=value` overrides, and validation errors as lines a
person can act on ('dotted.path: what is wrong', with a did-you-mean from anywhere in the schema).

Kept apart from runner/recipe.py (the schema) so that module stays the one place settings are
described; nothing here knows a field by name except the ALIASES of other tools' spellings.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from .errors import RecipeError

# Other tools' names for tuneforge settings (LLaMA-Factory, transformers, peft): an unknown key
# spelled like one of these is pointed at the tuneforge field, wherever it was written.
ALIASES = {
    "rank": "lora.r", "lora_rank": "lora.r", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout",
    "lora_target": "lora.target_modules", "lr": "train.learning_rate", "num_train_epochs": "train.epochs",
    "per_device_train_batch_size": "train.batch_size", "gradient_accumulation_steps": "train.grad_accum",
    "lr_scheduler_type": "train.scheduler", "cutoff_len": "data.max_length", "max_seq_length": "data.max_length",
    "model_name_or_path": "model.name_or_path", "finetuning_type": "method", "template": "model.chat_template",
    "output_dir": "output.runs_dir", "quantization_bit": "qlora.bits", "bf16": "precision", "fp16": "precision",
}
MAX_YAML_BYTES = 10 * 1024 * 1024
DATA_FILE_TYPES = (".json", ".jsonl", ".csv", ".parquet", ".txt")
CHAT_TEMPLATES = ("chatml", "llama3", "alpaca", "plain")


def read_yaml(path: Path) -> Any:
    """A recipe file's YAML (never executed). Every way a file can be unreadable is a RecipeError
    naming the file and, where there is one, the line: missing, a folder, binary, not UTF-8 (a
    UTF-8 byte-order mark is fine), bad YAML, nested too deep."""
    src = str(path)
    try:
        if path.is_dir():
            raise RecipeError([f"'{path}' is a folder, not a recipe file — fix: pass the .yaml file inside it"], src)
        if not path.is_file():
            raise RecipeError([f"recipe file '{path}' does not exist"], "command line")
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError([f"cannot read the file: {exc.strerror or exc}"], src) from None
    if len(raw) > MAX_YAML_BYTES:
        raise RecipeError([f"the file is {len(raw) // 2**20} MiB: not a recipe (they are a few KiB)"], src)
    if b"\x00" in raw:
        raise RecipeError(["this is a binary file, not a YAML recipe — fix: pass the recipe's .yaml file"], src)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RecipeError([f"line {line} is not UTF-8 text (byte 0x{raw[exc.start]:02x}) — fix: save the file "
                           "as UTF-8 in your editor"], src) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError([f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"], src) from None
    except RecursionError:
        raise RecipeError(["the YAML is nested too deeply to be a recipe"], src) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (['train', 'lr'], 0.0001). Values are typed like YAML scalars; a value
    that is not valid YAML stays the text it is."""
    if "=" not in text:
        raise RecipeError([f"override '{text}' is not key=value (e.g. train.batch_size=4)"], "command line")
    key, raw = text.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise RecipeError([f"override '{text}' has an empty key part"], "command line")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads '1e-4' as text; people mean a number
        try:
            value = float(value) if value.strip().lower() not in {"nan", "inf", "-inf", "infinity"} else value
        except ValueError:
            pass
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` overrides to a nested dict (list items by index: data.train.0.path=x)."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(
                        [f"override '{text}': '{part}' is not an index of a list of {len(node)} item(s)"],
                        "command line",
                    )
                if last:
                    node[int(part)] = value
                    continue
                if not isinstance(node[int(part)], (dict, list)):
                    node[int(part)] = {}
                node = node[int(part)]
            elif last:
                node[part] = value
            else:
                nxt = node.get(part)
                if not isinstance(nxt, (dict, list)):
                    nxt = node[part] = {}
                node = nxt
    return data


# ---------------------------------------------------------------------------------------------
# local files: checked while validating a recipe file (so they are listed with every other
# problem) and again by the data and model layers when they open them


def data_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in DATA_FILE_TYPES)


def data_path_problem(path: Path, what: str = "the path") -> tuple[str, str] | None:
    """Why a local data file or folder cannot be read, as (message, fix); None when it can."""
    try:
        if path.is_dir():
            types = sorted({f.suffix.lower() for f in data_files(path)})
            if not types:
                return (f"folder '{path}' holds no data files ({', '.join(DATA_FILE_TYPES)})",
                        f"point {what} at a data file or a folder of data files")
            if len(types) > 1:
                return (f"folder '{path}' mixes file types ({', '.join(types)})",
                        "keep one type per folder, or list the files as separate datasets")
            return None
        if not path.is_file():
            return f"data file '{path}' does not exist", f"check {what} (relative paths start at the recipe's folder)"
    except OSError as exc:
        return f"'{path}' cannot be read: {exc.strerror or exc}", f"check {what}"
    if path.suffix.lower() not in DATA_FILE_TYPES:
        return f"data file '{path}' has an unsupported type '{path.suffix}'", f"use one of {', '.join(DATA_FILE_TYPES)}"
    return None


def resolve_path(value: str, base_dir: Path) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def looks_like_local_model(value: str, base_dir: Path) -> bool:
    if value.startswith(("/", "./", "../", "~")) or value.endswith(".gguf"):
        return True
    try:
        return (base_dir / value).exists()
    except (OSError, ValueError):
        return False


def file_problem(value: str | None, info: ValidationInfo, check) -> str | None:
    """Run `check(resolved path)` when validating a recipe file (its folder is in the context)."""
    base = (info.context or {}).get("base_dir")
    if base is None or not value:
        return value
    try:
        problem = check(Path(resolve_path(value, base)), base)
    except OSError as exc:  # a name too long for the file system, a folder that cannot be listed, ...
        problem = f"'{value}' cannot be read: {exc.strerror or exc}"
    if problem:
        raise PydanticCustomError("file_problem", "{problem}", {"problem": problem})
    return value


def data_check(p: Path, base: Path) -> str | None:
    found = data_path_problem(p)
    return f"{found[0]} — fix: {found[1]}" if found else None


def registry_check(p: Path, base: Path) -> str | None:
    f = p / "dataset_info.json" if p.is_dir() else p
    return None if f.is_file() else f"registry '{f}' does not exist — fix: point it at a LLaMA-Factory dataset_info.json"


def model_check(p: Path, base: Path) -> str | None:
    if p.is_dir() and not (p / "config.json").is_file():
        return f"model folder '{p}' has no config.json — fix: point it at the folder that holds config.json and the weights"
    return None if p.exists() else f"model path '{p}' does not exist — fix: check the path (relative to the recipe's folder)"


def run_check(p: Path, base: Path) -> str | None:
    """model.from_run: a finished run directory with final weights (adapter/ or model/)."""
    if not p.is_dir():
        return f"run directory '{p}' does not exist — fix: give the folder of an earlier run, e.g. runs/my-sft"
    if not ((p / "adapter").is_dir() or (p / "model").is_dir()):
        return (f"run '{p}' has no final weights (adapter/ or model/) — fix: let it finish, or resume it "
                "with 'tuneforge resume'")
    return None


def template_check(p: Path, base: Path) -> str | None:
    return None if p.is_file() else (f"chat template file '{p}' does not exist — fix: use auto, one of "
                                     f"{', '.join(CHAT_TEMPLATES)}, or a path to a .jinja file")


# ---------------------------------------------------------------------------------------------
# validation errors as lines


def inner_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`X`, `list[X]`, `X | None`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = inner_model(arg)
        if found is not None:
            return found
    return None


def model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class found by walking a validation-error location from `root`."""
    cls: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if cls is None or part not in cls.model_fields:
            return None
        cls = inner_model(cls.model_fields[part].annotation)
    return cls


def clean_loc(root: type[BaseModel], loc: tuple) -> tuple:
    """The location without pydantic's union-member tags (`lora.target_modules.list[str]` is
    `lora.target_modules`): a text part under a field whose type is a union of plain types."""
    out, cls, ann = [], root, None
    for part in loc:
        if isinstance(part, str) and cls is not None and part in cls.model_fields:
            ann = cls.model_fields[part].annotation
            cls = inner_model(ann)
        elif isinstance(part, str) and get_origin(ann) in (Union, UnionType) and cls is None:
            continue  # a tag naming which member of the union failed
        else:
            ann = None if not isinstance(part, int) else ann
        out.append(part)
    return tuple(out)


def merge_alternatives(lines: list[str]) -> list[str]:
    """'p: Input should be A (got x)' + 'p: Input should be B (got x)' -> 'p: Input should be A or B (got x)'."""
    out: list[str] = []
    for line in lines:
        head, _, rest = line.partition(": ")
        if out and out[-1].startswith(head + ": ") and rest.startswith("Input should be "):
            prev = out[-1]
            got = rest[rest.rfind(" (got "):] if " (got " in rest else ""
            if prev.endswith(got):
                out[-1] = prev[: len(prev) - len(got)] + " or " + rest[len("Input should be "):]
                continue
        out.append(line)
    return out


def known_keys(root: type[BaseModel]) -> list[tuple[str, str, type[BaseModel]]]:
    """Every (key, dotted path, owning model) in the schema; list items are written `[]`."""
    out, todo, seen = [], [("", root)], set()
    while todo:
        prefix, model = todo.pop(0)
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            path = f"{prefix}{name}"
            out.append((name, path, model))
            sub = inner_model(field.annotation)
            if sub is not None:
                listy = get_origin(field.annotation) is list
                todo.append((path + ("[]." if listy else "."), sub))
    return out


def did_you_mean(root: type[BaseModel], key: str, where: tuple = ()) -> str | None:
    """The dotted path of the known key closest to `key`, written at location `where`: a key of the
    same section keeps that location (`data.train.0.path`), one elsewhere in the schema gets its
    own path (`train.learning_rate` for a top-level `learnig_rate`, `data.train[].format`)."""
    parent = model_at(root, where)
    here = "".join(f"{p}." for p in where)
    norm = key.lower().replace("-", "_")
    keys = known_keys(root)
    if norm in ALIASES:
        target = ALIASES[norm]
        local = next((n for n, p, m in keys if p == target and m is parent), None)
        return here + local if local else target
    best, score = None, 0.0
    for name, path, model in keys:
        s = difflib.SequenceMatcher(None, norm, name).ratio() + (0.05 if model is parent else 0.0)
        if s > score:
            best, score = (name, path, model), s
    if best is None or score < 0.6:
        return None
    name, path, model = best
    return here + name if model is parent else path


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_errors(err: ValidationError, root: type[BaseModel], overridden: set[str] = frozenset()) -> list[str]:
    """Pydantic errors as 'dotted.path: what is wrong (got X)' lines with a 'did you mean'.
    `overridden`: dotted keys set on the command line, so their lines say so."""
    lines = []
    for e in err.errors():
        loc = clean_loc(root, tuple(e["loc"]))
        path = ".".join(str(p) for p in loc) or "(top level)"
        origin = " (from the command line)" if any(path == o or path.startswith(o + ".") or o.startswith(path + ".")
                                                   for o in overridden) else ""
        if e["type"] == "extra_forbidden":
            parent = model_at(root, loc[:-1])
            guess = did_you_mean(root, str(loc[-1]), loc[:-1])
            known = list(parent.model_fields) if parent else []
            hint = f"; did you mean '{guess}'?" if guess else (f" (known keys: {', '.join(known)})" if known else "")
            lines.append(f"{path}: unknown key{origin}{hint}")
            continue
        if e["type"] == "value_error" and not loc:  # cross-field checks: one line per problem
            lines.extend(str(e["ctx"]["error"]).split("; ") if e.get("ctx") else [e["msg"]])
            continue
        if e["type"] == "missing":
            parent = model_at(root, loc[:-1])
            field = parent.model_fields.get(str(loc[-1])) if parent else None
            desc = f" — {field.description}" if field and field.description else ""
            lines.append(f"{path}: required field is missing{desc}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        got_txt = "" if isinstance(got, (dict, list)) or e["type"] == "file_problem" else f" (got {_short(got)})"
        lines.append(f"{path}: {msg}{got_txt}{origin}")
    return lines
