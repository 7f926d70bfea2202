"""Where tuneforge keeps things on disk: the model cache and the runs folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """User cache (converted models, tokenized data). TUNEFORGE_CACHE overrides it."""
    env = os.environ.get("TUNEFORGE_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tuneforge", appauthor=False))


def models_cache() -> Path:
    return cache_dir() / "models"
