"""Hyperparameter defaults that depend on the method and the model's size.

Only fields the user has not touched are filled in; the schema's own defaults remain the fallback.
"""

from __future__ import annotations


PREFERENCE_STAGES = ("rm", "dpo", "kto", "orpo", "simpo")


def suggest(method: str, params: int | None, context_length: int | None, stage: str = "sft") -> dict[str, object]:
    """Dotted recipe paths -> suggested values. Preference stages start from a trained policy and
    take ten times smaller steps (LLaMA-Factory's and TRL's DPO examples: 5e-6 full, 5e-5 LoRA)."""
    p = params or 0
    big = p >= 3e9
    mid = 5e8 <= p < 3e9
    if method == "full":
        lr = 1e-5 if big else (2e-5 if mid else 5e-5)
    elif method == "freeze":
        lr = 5e-5
    else:  # lora, qlora: adapters start at zero and need a larger step
        lr = 2e-4
    if stage in PREFERENCE_STAGES:
        lr = 5e-6 if method in ("full", "freeze") else 5e-5
    batch = 2 if big else (4 if mid else 8)
    out: dict[str, object] = {
        "train.learning_rate": lr,
        "train.batch_size": batch,
        "train.grad_accum": max(1, 16 // batch),
        "train.epochs": 3.0 if p < 1e9 else 2.0,
        "data.max_length": min(1024, context_length or 1024),
    }
    return out
