"""Where rows come from: files (json, jsonl, csv, parquet, txt), folders, hub datasets and
LLaMA-Factory `dataset_info.json` registries.

`open_source(spec)` turns one recipe dataset entry into a `Source`: a label for reports, a
fingerprint for the cache (content hashes, so an edited file is never served stale), the
column/tag mapping, and a `rows()` reader yielding (row number, row) pairs.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import DataError
from ..recipe_io import data_files, data_path_problem



@dataclass
class Source:
    label: str  # short name for reports: "alpaca_en_demo.json"
    fingerprint: str  # content hash (files) or name@revision (hub)
    layout: str = "auto"
    kind: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    reader: Callable[[], Iterator[tuple[str, Any]]] | None = None

    def rows(self) -> Iterator[tuple[str, Any]]:
        """(where, row) pairs; `where` is 'row N' (json/parquet/csv), 'line N' (jsonl/txt)."""
        assert self.reader is not None
        return self.reader()


# ------------------------------------------------------------------------------------------
# files


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:24]


def _text(raw: bytes, name: str, first_line: int = 1) -> str:
    """UTF-8 text of a file (or of one of its lines); a leading byte-order mark is dropped (editors
    on Windows write one). Anything else that is not UTF-8 is a DataError naming the line."""
    try:
        return raw.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + raw.count(b"\n", 0, exc.start)
        col = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise DataError(f"{name} line {line} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {col})",
                        "save the file as UTF-8, or fix or remove that line") from None


def parse_json(text: str, name: str, line: int | None = None):
    """json.loads with the file (and line) named in every failure, deep nesting included."""
    where = f"{name} line {line}" if line else name
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f" (column {exc.colno})" if line else f" at line {exc.lineno}, column {exc.colno}"
        fix = "fix or remove that line" if line else "fix the file (a .json file holds one list of rows; use .jsonl for one row per line)"
        raise DataError(f"{where} is not valid JSON: {exc.msg}{at}", fix) from None
    except RecursionError:
        raise DataError(f"{where} is nested too deeply to read (JSON arrays/objects inside each other ~1000 deep)",
                        "fix the file: rows are objects of text fields and lists of turns") from None


def _read_json(p: Path) -> Iterator[tuple[str, Any]]:
    data = parse_json(_text(p.read_bytes(), p.name), p.name)
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        raise DataError(f"{p.name} must hold a list of rows, not a {type(data).__name__}", "wrap the rows in [ ... ] or use .jsonl")
    for n, row in enumerate(data, 1):
        yield f"row {n}", row


def _read_jsonl(p: Path) -> Iterator[tuple[str, Any]]:
    with p.open("rb") as f:
        for n, raw in enumerate(f, 1):
            line = _text(raw, p.name, n)
            if line.strip():
                yield f"line {n}", parse_json(line, p.name, n)


def _read_csv(p: Path) -> Iterator[tuple[str, Any]]:
    extra = object()
    reader = csv.DictReader(io.StringIO(_text(p.read_bytes(), p.name), newline=""), restkey=extra)  # type: ignore[arg-type]
    n = 0
    try:
        for n, row in enumerate(reader, 1):
            if extra in row:
                raise DataError(f"{p.name} row {n} (line {reader.line_num}) has {len(row) - 1 + len(row[extra])} "
                                f"fields but the header has {len(reader.fieldnames or [])}",
                                "quote fields that contain commas (\"like, this\"), or fix that row")
            yield f"row {n}", row
    except csv.Error as exc:
        raise DataError(f"{p.name} row {n + 1} is not valid CSV: {exc}", "fix that row") from None


def _read_parquet(p: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(p).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise DataError(f"{p.name} is not a readable parquet file: {exc}", "check the file") from None
    for n, row in enumerate(rows, 1):
        yield f"row {n}", row


def _read_txt(p: Path) -> Iterator[tuple[str, Any]]:
    with p.open("rb") as f:
        for n, raw in enumerate(f, 1):
            line = _text(raw, p.name, n)
            if line.strip():
                yield f"line {n}", {"text": line.rstrip("\r\n")}


READERS = {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet, ".txt": _read_txt}


def file_source(path: str, what: str = "data.train[].path") -> Source:
    p = Path(path)
    problem = data_path_problem(p, what)
    if problem:
        raise DataError(*problem)
    if p.is_dir():
        files = data_files(p)
        kind = files[0].suffix.lower()

        def read_dir() -> Iterator[tuple[str, Any]]:
            for f in files:
                for where, row in READERS[kind](f):
                    yield f"{f.name} {where}", row

        return Source(p.name + "/", _hash_files(files), layout="text" if kind == ".txt" else "auto", reader=read_dir)
    return Source(p.name, _hash_files([p]), layout="text" if p.suffix.lower() == ".txt" else "auto",
                  reader=lambda: READERS[p.suffix.lower()](p))


# ------------------------------------------------------------------------------------------
# hub


def hub_source(name: str, split: str = "train", subset: str | None = None, revision: str | None = None) -> Source:
    """A hub dataset through `datasets`; offline or unreachable is a user-facing error."""
    fix = "download it where there is network and point 'path' at the local file, or unset HF_HUB_OFFLINE"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"} or os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        raise DataError(f"hub dataset '{name}' cannot be fetched: offline mode (HF_HUB_OFFLINE) is on", fix)
    try:
        from datasets import load_dataset

        ds = load_dataset(name, subset, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-dataset errors all land here
        raise DataError(f"hub dataset '{name}' could not be loaded: {type(exc).__name__}: {exc}", fix) from None

    def read() -> Iterator[tuple[str, Any]]:
        for n, row in enumerate(ds, 1):
            yield f"row {n}", row

    return Source(f"hf:{name}", f"hub:{name}:{subset}:{split}:{getattr(ds, '_fingerprint', revision)}", reader=read)


# ------------------------------------------------------------------------------------------
# LLaMA-Factory registry


def load_registry(registry: str | None) -> tuple[dict[str, Any], Path]:
    if not registry:
        raise DataError("a dataset entry names 'dataset' but no 'registry'",
                        "set registry: path/to/dataset_info.json (or its folder)")
    p = Path(registry)
    try:
        if p.is_dir():
            p = p / "dataset_info.json"
        if not p.is_file():
            raise DataError(f"registry '{p}' does not exist", "point 'registry' at a LLaMA-Factory dataset_info.json")
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"registry '{p}' cannot be read: {exc.strerror or exc}", "check 'registry'") from None
    entries = parse_json(_text(raw, f"registry {p.name}"), f"registry {p.name}")
    if not isinstance(entries, dict):
        raise DataError(f"registry {p.name} must map dataset names to entries", "use LLaMA-Factory's dataset_info.json format")
    return entries, p.parent


def registry_source(name: str, registry: str | None) -> Source:
    """A registry entry by name: its file (beside the registry) or hub id, with its columns and tags."""
    entries, folder = load_registry(registry)
    entry = entries.get(name)
    if not isinstance(entry, dict):
        close = difflib.get_close_matches(name, list(entries), n=3)
        raise DataError(f"dataset '{name}' is not in {folder / 'dataset_info.json'}",
                        f"did you mean {', '.join(close)}?" if close else f"known entries: {', '.join(list(entries)[:12])} ...")
    for key in ("columns", "tags"):
        value = entry.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise DataError(f"dataset '{name}' in {folder / 'dataset_info.json'}: '{key}' must map names to column "
                            f"names (text), got {json.dumps(value)[:80]}", "fix that entry of the registry")
    for key in ("formatting", "file_name", "hf_hub_url", "split", "subset", "revision"):
        if key in entry and not isinstance(entry[key], str):
            raise DataError(f"dataset '{name}' in {folder / 'dataset_info.json'}: '{key}' must be text, got "
                            f"{json.dumps(entry[key])[:80]}", "fix that entry of the registry")
    columns = dict(entry.get("columns") or {})
    tags = dict(entry.get("tags") or {})
    layout = entry.get("formatting", "alpaca")
    kind = "preference" if entry.get("ranking") else "feedback" if "kto_tag" in columns else "auto"
    if layout not in {"alpaca", "sharegpt"}:
        raise DataError(f"dataset '{name}' has formatting '{layout}'", "tuneforge reads alpaca and sharegpt registry entries")
    if layout == "alpaca" and set(columns) == {"prompt"}:  # LLaMA-Factory's pre-training entries
        layout, kind, columns = "text", "text", {"text": columns["prompt"]}
    if "file_name" in entry:
        path = folder / entry["file_name"]
        if not path.exists():
            raise DataError(f"dataset '{name}' points at {path}, which does not exist",
                            f"put {entry['file_name']} beside {folder / 'dataset_info.json'}, or use another entry")
        src = file_source(str(path), f"the registry entry '{name}'")
    elif "hf_hub_url" in entry:
        try:
            src = hub_source(entry["hf_hub_url"], entry.get("split", "train"), entry.get("subset"), entry.get("revision"))
        except DataError as exc:
            raise DataError(f"dataset '{name}' (registry entry) is on the hub: {exc.message}", exc.fix) from None
    else:
        hubs = [k for k in entry if k.endswith("_hub_url")]
        raise DataError(f"dataset '{name}' has no file_name or hf_hub_url (only {', '.join(hubs) or 'nothing usable'})",
                        "download it and point 'path' at the file")
    src.label = f"{name} ({src.label})"
    if src.layout != "text":
        src.layout = layout
    src.kind, src.columns, src.tags = kind, columns, tags
    return src


def open_source(spec) -> Source:
    """One recipe dataset entry (path | hf:name | registry entry) → a Source with its mapping applied."""
    if spec.dataset:
        src = registry_source(spec.dataset, spec.registry)
    elif spec.path.startswith("hf:"):
        src = hub_source(spec.path[3:], spec.split, spec.subset, spec.revision)
    else:
        src = file_source(spec.path)
    if spec.format != "auto":
        src.layout = spec.format
    if spec.kind != "auto":
        src.kind = spec.kind
    src.columns = {**src.columns, **spec.columns}
    src.tags = {**src.tags, **spec.tags}
    return src
