"""Training methods: how the base model is loaded and which of its weights train.

- full: every weight trains (fp32 master weights; autocast does bf16/fp16 compute).
- freeze: only the last/first N transformer layers and named modules train.
- lora: adapters on a frozen base; the frozen base is stored in bf16/fp16 when the run computes in
  that precision anyway (half the memory, no per-step weight casts); adapters stay fp32.
- qlora: adapters on a base quantized to 4-bit (NF4/FP4) or 8-bit by bitsandbytes (CPU and CUDA).

train.py loads the model with model.load_model(**load_options(...)), then calls `apply_method`,
`optimizer_args` and `make_optimizer`; the recipe's cross-field checks live in runner/recipe.py
(combination_problems).
"""

from __future__ import annotations

import re

from .errors import TuneforgeError


def storage_dtype(recipe, precision: str) -> str:
    """The dtype the base weights are stored in: half precision only for a frozen base."""
    if recipe.method == "lora" and precision in ("bf16", "fp16") and recipe.lora.init != "pissa":
        return precision  # the frozen base; adapters are kept in fp32 by peft (autocast_adapter_dtype)
    if recipe.method == "qlora":
        return "bf16" if precision == "bf16" else ("fp16" if precision == "fp16" else "fp32")
    return "fp32"


def quantization_config(recipe, precision: str):
    """bitsandbytes settings for method qlora (None otherwise)."""
    if recipe.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    q = recipe.qlora
    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=quant_storage(recipe, compute, torch.uint8),
    )


def quant_storage(recipe, compute, default):
    """FSDP shards one flat tensor per dtype: QLoRA + FSDP stores the 4-bit weights in the compute
    dtype so they shard beside the rest (runner/distributed.py)."""
    dist = getattr(recipe, "distributed", None)
    return compute if dist is not None and dist.strategy == "fsdp" else default


def load_options(recipe, placement) -> dict:
    """model.load_model keywords for the method: storage dtype, quantization, revision, device."""
    return {"dtype": storage_dtype(recipe, placement.precision), "revision": recipe.model.revision,
            "trust_remote_code": recipe.model.trust_remote_code,
            "quantization": quantization_config(recipe, placement.precision), "device": placement.device}


def layer_list(model):
    """(prefix, ModuleList) of the transformer blocks: the longest ModuleList in the model."""
    import torch

    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and (best is None or len(mod) > len(best[1])):
            best = (name, mod)
    if best is None:
        raise TuneforgeError("method 'freeze' could not find the model's layer list", "use method: lora or full")
    return best


def _apply_freeze(model, spec) -> None:
    prefix, layers = layer_list(model)
    n = len(layers)
    if spec.layers > n:
        raise TuneforgeError(
            f"freeze.layers is {spec.layers} but the model has only {n} layers", f"set freeze.layers to at most {n}"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = range(n - spec.layers, n) if spec.side == "last" else range(spec.layers)
    for i in chosen:
        for p in layers[i].parameters():
            p.requires_grad_(True)
    names = dict(model.named_modules())
    for wanted in spec.modules:
        hits = [m for name, m in names.items() if name == wanted or name.endswith("." + wanted)]
        if not hits:
            short = sorted({re.sub(r"\.\d+\.", ".N.", k).split(".")[-1] for k in names if k})
            raise TuneforgeError(
                f"freeze.modules: no module is named '{wanted}'",
                f"use module names of this model, e.g. {', '.join(short[:12])}",
            )
        for m in hits:
            for p in m.parameters():
                p.requires_grad_(True)


def lora_config(recipe):
    from peft import LoraConfig

    lo = recipe.lora
    reward = getattr(recipe, "stage", "sft") == "rm"  # a reward model trains its new score head in full
    keep = list(lo.modules_to_save or []) + (["score"] if reward and "score" not in (lo.modules_to_save or []) else [])
    return LoraConfig(
        r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=lo.target_modules,
        modules_to_save=keep or None, use_dora=lo.use_dora, use_rslora=lo.use_rslora,
        init_lora_weights="pissa" if lo.init == "pissa" else True, task_type="SEQ_CLS" if reward else "CAUSAL_LM",
    )


def apply_method(model, recipe):
    """Mark what trains (and wrap the model with adapters for lora/qlora). Returns the model to train."""
    if recipe.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if recipe.method == "freeze":
        _apply_freeze(model, recipe.freeze)
        if getattr(model, "score", None) is not None and getattr(recipe, "stage", "sft") == "rm":
            model.score.requires_grad_(True)  # a reward model's new head always trains
        return model
    from peft import get_peft_model

    if recipe.method == "qlora":
        # What peft's prepare_model_for_kbit_training does, minus casting the (large) embeddings to
        # fp32 and minus forcing gradient checkpointing: that is speed.gradient_checkpointing's call.
        for p in model.parameters():
            p.requires_grad_(False)
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    try:
        peft_model = get_peft_model(model, lora_config(recipe))
    except ValueError as exc:
        raise TuneforgeError(f"LoRA could not be applied: {exc}", "check lora.target_modules / lora.modules_to_save") from None
    if recipe.lora.init == "pissa":
        _keep_pissa_start(peft_model)
    return peft_model


def _keep_pissa_start(peft_model) -> None:
    """PiSSA rewrites the base weights; keep the starting adapter so the saved one applies to the
    original base (peft converts it to a plain LoRA adapter at save time)."""
    import tempfile

    start = tempfile.mkdtemp(prefix="tuneforge-pissa-")
    cfg = peft_model.peft_config["default"]
    cfg.init_lora_weights = True  # saved as a plain start point: loading it must not redo the SVD
    peft_model.save_pretrained(start)
    cfg.init_lora_weights = "pissa"
    peft_model._tuneforge_pissa_start = start


def save_pretrained(model, folder) -> None:
    """Save trained weights; a PiSSA adapter is converted so it loads onto the unchanged base model."""
    import shutil

    start = getattr(model, "_tuneforge_pissa_start", None)
    if start:
        model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=start)
        shutil.rmtree(start, ignore_errors=True)
        model._tuneforge_pissa_start = None
    else:
        model.save_pretrained(str(folder))


def fused_adamw_ok(device: str) -> bool:
    """torch's fused AdamW runs on CUDA and (torch >= 2.4) on CPU."""
    import torch

    if device.startswith("cuda"):
        return True
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return device == "cpu" and (major, minor) >= (2, 4)


def optimizer_args(recipe, device: str) -> dict:
    """TrainingArguments keywords for the optimizer the method asks for."""
    choice = recipe.full.optim if recipe.method in ("full", "freeze") else "auto"
    if choice == "auto":
        choice = "adamw_torch_fused" if fused_adamw_ok(device) else "adamw_torch"
    if choice == "adamw_torch_fused" and not fused_adamw_ok(device):
        raise TuneforgeError(f"full.optim 'adamw_torch_fused' is not supported on {device}", "use full.optim: auto")
    if choice == "adamw_8bit":
        return {"optim": "adamw_bnb_8bit"}
    return {"optim": choice}


def make_optimizer(model, recipe, args):
    """The LoRA+ optimizer (B matrices at lr * ratio) when asked for; None = the Trainer's own."""
    ratio = recipe.lora.loraplus_lr_ratio
    if recipe.method not in ("lora", "qlora") or not ratio:
        return None
    import torch
    from peft.optimizers import create_loraplus_optimizer

    fused = {"fused": True} if args.optim == "adamw_torch_fused" else {}
    return create_loraplus_optimizer(
        model=model, optimizer_cls=torch.optim.AdamW, lr=args.learning_rate, loraplus_lr_ratio=ratio,
        weight_decay=args.weight_decay, **fused,
    )


def final_weights_kind(recipe) -> str:
    """'adapter' for lora/qlora, 'model' for methods that change base weights."""
    return "adapter" if recipe.method in ("lora", "qlora") else "model"
