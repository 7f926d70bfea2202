"""What every wizard worker thread shares: one lock for loading libraries and models, and one way
to turn an unexpected exception into a line on the step (plus its traceback in a log file) instead
of a dead app."""

from __future__ import annotations

import logging
import threading
import traceback
from pathlib import Path

# transformers' lazy imports and the Rust tokenizers are not thread-safe: every worker that may
# import them or load a tokenizer (the data preview, the estimate) holds this lock while it does.
LOAD_LOCK = threading.RLock()


def log_path() -> Path:
    from tuneforge.runner.paths import cache_dir

    return cache_dir() / "tui.log"


def explain(exc: BaseException, what: str) -> str:
    """One line for the step ('<what> failed: ...'); the traceback goes to the log file.
    A TuneforgeError is a user's mistake with a fix: its message is enough."""
    message = getattr(exc, "message", None)
    if message:
        fix = getattr(exc, "fix", None)
        return f"{what}: {message}" + (f" — fix: {fix}" if fix else "")
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {what}\n{''.join(traceback.format_exception(exc))}\n")
        where = f" (details in {path})"
    except OSError:
        logging.getLogger("tuneforge.tui").exception(what)
        where = ""
    return f"{what}: {type(exc).__name__}: {exc}{where}"
