"""The one reader of a model's config.json (the estimator's shape arithmetic, the wizard's model
panel): small metadata only, never weights or torch. A name (alias, .gguf, hub id) is resolved
first, so a GGUF-backed alias reads the folder it is converted to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ModelError


def read_config(source: Any) -> dict:
    """config.json of a model folder: a path, a `ResolvedModel`, or a name `model.resolve` takes.
    A missing or unreadable file is a ModelError naming it."""
    path = getattr(source, "path", source)
    if isinstance(path, str) and not Path(path).expanduser().is_dir():
        from .model import resolve

        path = resolve(path).path
    f = Path(path).expanduser() / "config.json"
    try:
        cfg = json.loads(f.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise ModelError(f"model folder '{f.parent}' has no config.json, so it is not a Hugging Face model folder",
                         "point model.name_or_path at the folder that holds config.json and the weights") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{f} cannot be read: {exc}", "check the model folder (re-download it if it is damaged)") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{f} holds a {type(cfg).__name__}, not a model configuration", "check the model folder")
    return cfg


def text_config(cfg: dict) -> dict:
    """The language model's part of a config (multimodal configs nest it under text_config)."""
    inner = cfg.get("text_config")
    return inner if isinstance(inner, dict) and inner else cfg
