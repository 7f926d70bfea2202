"""Tokenized-data cache: prepared rows are reused across runs, never served stale.

The key hashes everything the tokens depend on: each source's content (file bytes or hub
fingerprint), the data options, the seed, the tokenizer (its full serialized vocabulary, merges
and special tokens), the chat template text, the stage and this package's own source code. An
entry is a folder under `<cache>/data/<key>/` with numpy arrays (loaded with allow_pickle=False:
nothing in the cache is ever executed) and a JSON report, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ..paths import cache_dir

FORMAT = 2


def data_cache_root() -> Path:
    return cache_dir() / "data"


def _code_hash() -> str:
    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tok) -> str:
    h = hashlib.sha256(type(tok).__name__.encode())
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    h.update(json.dumps(tok.special_tokens_map, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def cache_key(parts: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT, "code": _code_hash(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _pack(items, prefix: str, arrays: dict) -> None:
    import numpy as np

    from .template import CUTS

    def flat(seqs):
        lens = np.array([len(s) for s in seqs], dtype=np.int64)
        data = np.fromiter((x for s in seqs for x in s), dtype=np.int32, count=int(lens.sum()))
        return data, lens

    arrays[f"{prefix}_ids"], arrays[f"{prefix}_lens"] = flat([t.input_ids for t in items])
    arrays[f"{prefix}_labels"], _ = flat([t.labels for t in items])
    arrays[f"{prefix}_truncated"] = np.array([t.truncated for t in items], dtype=bool)
    arrays[f"{prefix}_label"] = np.array([-1 if t.label is None else int(t.label) for t in items], dtype=np.int8)
    arrays[f"{prefix}_plen"] = np.array([-1 if t.prompt_len is None else t.prompt_len for t in items], dtype=np.int64)
    arrays[f"{prefix}_cut"] = np.array([CUTS.index(t.cut) for t in items], dtype=np.int8)
    arrays[f"{prefix}_margin"] = np.array([np.nan if t.margin is None else t.margin for t in items], dtype=np.float64)
    if items and items[0].rejected_ids is not None:
        arrays[f"{prefix}_rids"], arrays[f"{prefix}_rlens"] = flat([t.rejected_ids for t in items])
        arrays[f"{prefix}_rlabels"], _ = flat([t.rejected_labels for t in items])


def _unpack(arrays, prefix: str, sources: list[str]):
    import numpy as np

    from .template import CUTS, Tokenized

    def split(data, lens):
        cuts = np.cumsum(lens)[:-1]
        return [a.tolist() for a in np.split(data, cuts)] if len(lens) else []

    ids = split(arrays[f"{prefix}_ids"], arrays[f"{prefix}_lens"])
    labels = split(arrays[f"{prefix}_labels"], arrays[f"{prefix}_lens"])
    rids = split(arrays[f"{prefix}_rids"], arrays[f"{prefix}_rlens"]) if f"{prefix}_rids" in arrays else None
    rlabels = split(arrays[f"{prefix}_rlabels"], arrays[f"{prefix}_rlens"]) if rids is not None else None
    out = []
    for i in range(len(ids)):
        lab, plen = int(arrays[f"{prefix}_label"][i]), int(arrays[f"{prefix}_plen"][i])
        out.append(Tokenized(ids[i], labels[i], bool(arrays[f"{prefix}_truncated"][i]),
                             rids[i] if rids else None, rlabels[i] if rlabels else None,
                             None if lab < 0 else bool(lab), sources[i], None if plen < 0 else plen,
                             CUTS[int(arrays[f"{prefix}_cut"][i])], _margin(arrays[f"{prefix}_margin"][i])))
    return out


def _margin(value) -> float | None:
    return None if value != value else float(value)  # NaN: no margin


def save(key: str, prepared) -> Path:
    """Write an entry atomically (a temporary folder renamed into place)."""
    import numpy as np

    root = data_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / key
    tmp = root / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    arrays: dict[str, Any] = {}
    _pack(prepared.train, "train", arrays)
    _pack(prepared.eval, "eval", arrays)
    np.savez(tmp / "tokens.npz", **arrays)
    meta = {"format": FORMAT, "kind": prepared.kind, "report": prepared.report.to_dict(),
            "train_sources": [t.source for t in prepared.train], "eval_sources": [t.source for t in prepared.eval]}
    (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    if target.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load(key: str):
    """(train, eval, report, kind) cached under a key, or None (missing or unreadable entries are
    misses). The caller (data.tokenize_for) builds its Prepared from them: the cache stays below it."""
    import numpy as np

    from .report import DataReport

    folder = data_cache_root() / key
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        with np.load(folder / "tokens.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        train = _unpack(arrays, "train", meta["train_sources"])
        evals = _unpack(arrays, "eval", meta["eval_sources"])
        return train, evals, DataReport.from_dict(meta["report"]), meta["kind"]
    except (OSError, ValueError, KeyError):
        return None
