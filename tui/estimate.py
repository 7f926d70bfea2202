"""Memory and time estimate for the Method step.

When the runner's estimator (`tuneforge.runner.estimate.estimate`) exists it is used as is.
Otherwise `_estimate_for` computes a small, documented first-order estimate:

  peak memory = weights + trainable state + activations
    weights     4 B/param (fp32 master weights; 2 B for LoRA on a bf16 GPU; ~0.56 B for 4-bit QLoRA)
    trainable   16 B per trainable param (fp32 grad 4 + AdamW moments 8 + fp32 copy 4)
    activations batch x length x hidden x layers x 20 B, plus fp32 logits and their grad
                (batch x length x vocab x 8 B)
  time per epoch = tokens x flops/token / machine throughput
    flops/token 6 x params for full training, 4 x params when the base is frozen (LoRA/freeze)
    throughput  CPU: 15 GFLOP/s per core; CUDA: 30% of 100 TFLOP/s
The available memory is free RAM (psutil) on CPU and free GPU memory (nvidia-smi) on CUDA.
It is deliberately simple; it answers "will this fit, roughly how long" — not more.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


@dataclass
class Estimate:
    peak_bytes: int
    available_bytes: int
    fits: bool
    seconds_per_epoch: float | None
    advice: list[str] = field(default_factory=list)
    device: str = "cpu"


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


@lru_cache(maxsize=32)
def _model_shape(name: str) -> dict:
    """params, hidden, layers, inter, vocab of a model from its metadata (no weights)."""
    from . import modelinfo

    info = modelinfo.inspect(name)
    shape = {"params": info.params or 0}
    folder = None
    if name == modelinfo.EMBEDDED_ALIAS:
        folder = modelinfo.models_cache() / "smollm2-135m-instruct"
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
    if folder is not None and (folder / "config.json").is_file():
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        cfg = cfg.get("text_config") or cfg
        shape.update(hidden=cfg.get("hidden_size"), layers=cfg.get("num_hidden_layers"),
                     inter=cfg.get("intermediate_size"), vocab=cfg.get("vocab_size"))
    return shape


def _gpu_free_bytes() -> int | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5).stdout.split()
        return int(float(out[0])) * 2**20 if out else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def available_memory(device: str) -> tuple[str, int]:
    """('cpu'|'cuda', free bytes) for the recipe's device setting."""
    if device != "cpu":
        free = _gpu_free_bytes()
        if free is not None:
            return "cuda", free
    import psutil

    return "cpu", int(psutil.virtual_memory().available)


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _count_examples(recipe) -> int | None:
    total = 0
    for spec in recipe.data.train:
        p = Path(spec.path)
        if not p.is_file():
            return None
        if p.suffix == ".jsonl":
            n = sum(1 for line in p.open(encoding="utf-8") if line.strip())
        elif p.suffix == ".json":
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                return None
            n = len(data) if isinstance(data, list) else 0
        else:
            return None
        total += min(n, spec.max_samples or n)
    return total


def _estimate_for(recipe) -> Estimate:
    """The estimate shown on the Method step (the runner's estimator when present)."""
    try:
        from tuneforge.runner.estimate import estimate as runner_estimate  # type: ignore[import-not-found]
    except ImportError:
        runner_estimate = None
    if runner_estimate is not None:
        from tuneforge.runner.errors import TuneforgeError

        try:
            return runner_estimate(recipe)
        except TuneforgeError:  # no readable dataset yet: assume every example fills max_length
            return runner_estimate(recipe, lengths=[recipe.data.max_length], n_examples=0)
    return fallback_estimate(recipe)


def fallback_estimate(recipe) -> Estimate:
    """The first-order estimate described at the top of this module."""
    shape = _model_shape(recipe.model.name_or_path)
    params = shape.get("params") or 0
    device, available = available_memory(recipe.device)
    if not params:
        return Estimate(0, available, True, None, ["model size unknown (hub id not cached): no estimate"], device)
    h, layers = shape.get("hidden") or 1024, shape.get("layers") or 24
    inter, vocab = shape.get("inter") or 4 * h, shape.get("vocab") or 32000
    method = recipe.method
    lora_r = getattr(getattr(recipe, "lora", None), "r", 16)
    if method in ("lora", "qlora"):
        trainable = lora_r * layers * (8 * h + 3 * (h + inter))
    elif method == "full":
        trainable = params
    else:  # freeze and future methods: assume a tenth of the model trains
        trainable = params // 10
    weight_bytes = 4.0
    if method == "qlora":
        weight_bytes = 0.56
    elif method == "lora" and device == "cuda":
        weight_bytes = 2.0
    t = recipe.train
    length = recipe.data.max_length
    activations = t.batch_size * length * (h * layers * 20 + vocab * 8)
    peak = int(params * weight_bytes + trainable * 16 + activations)
    fits = peak < 0.9 * available
    advice: list[str] = []
    if not fits:
        if method == "full" and "lora" in _methods():
            advice.append("use method lora: only small adapters train")
        if t.batch_size > 1:
            advice.append(f"lower train.batch_size (now {t.batch_size}) and raise train.grad_accum")
        if length > 512:
            advice.append(f"lower data.max_length (now {length})")
        if "qlora" in _methods() and method != "qlora" and device == "cuda":
            advice.append("use method qlora: 4-bit base weights")
    flops_per_token = (6 if method == "full" else 4) * params
    throughput = 0.3 * 100e12 if device == "cuda" else 15e9 * cpu_cores()
    n = _count_examples(recipe)
    seconds = None
    if n:
        tokens = n * min(length, 256)  # typical instruction examples are ~100-300 tokens
        seconds = tokens * flops_per_token / throughput
    return Estimate(peak, available, fits, seconds, advice, device)


def _methods() -> list[str]:
    from .draft import method_choices

    return method_choices()
