"""Which kind of rows a data file holds (conversation, preference, feedback, text), so the dataset
step lists the files a stage can train on. Reads the first rows with the runner's own data layer;
runs in the file tree's loader thread, never on the UI thread."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

MAX_BYTES = 64 * 2**20  # larger files are listed without a look inside


def file_kind(path: Path) -> str | None:
    """The kind of the file's first rows; None when it cannot tell (unreadable, too big, unknown)."""
    try:
        st = path.stat()
    except OSError:
        return None
    if st.st_size > MAX_BYTES:
        return None
    return _kind(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=512)
def _kind(path: str, mtime_ns: int, size: int) -> str | None:
    from tuneforge.runner.data import read_rows
    from tuneforge.runner.data.formats import Mapping, detect_kind, detect_layout

    try:
        rows = read_rows(path)[:20]
    except Exception:  # noqa: BLE001 - any file the reader refuses: the preview says why when chosen
        return None
    for row in rows:
        layout = detect_layout(row)
        if layout is not None and isinstance(row, dict):
            return detect_kind(row, Mapping(layout))
    return None


def fits(path: Path, kinds: tuple[str, ...] | None) -> bool:
    """Whether a stage that trains on `kinds` can use the file (unknown files are kept)."""
    if not kinds:
        return True
    kind = file_kind(path)
    return kind is None or kind in kinds
