"""Throughput settings: length-grouped batches, padding-free packing, checkpointing, compile.

Packing is contamination-free: a batch becomes one row with per-example position ids and no
attention mask; transformers then builds a block-diagonal causal mask from the position ids (SDPA
and eager) or passes sequence boundaries to flash-attention, and the first label of every example
is masked, so no example sees or predicts another (tests/test_packing.py checks the logits).
"""

from __future__ import annotations


def collator(tokenizer, recipe):
    if recipe.speed.packing:
        from transformers import DataCollatorWithFlattening

        return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def checkpointing_needed(recipe, est) -> tuple[bool, str]:
    """(on, why) for speed.gradient_checkpointing; 'auto' asks the memory estimate."""
    choice = recipe.speed.gradient_checkpointing
    if choice is not True and choice is not False:
        if est is None:
            return False, "auto: no memory estimate, left off"
        if est.fits:
            return False, "auto: the run fits in memory without it"
        return True, "auto: the memory estimate says the run needs it"
    return bool(choice), "set in the recipe"


def trainer_args(recipe, checkpointing: bool) -> dict:
    """TrainingArguments keywords for the speed section."""
    out = {
        "train_sampling_strategy": "group_by_length" if recipe.speed.group_by_length else "random",
        "gradient_checkpointing": checkpointing,
        "torch_compile": recipe.speed.torch_compile,
    }
    if checkpointing:
        out["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return out


def plan(recipe, placement, lengths: list[int]) -> tuple[dict, str]:
    """(TrainingArguments keywords, a line for the log) for this run's speed settings."""
    est = None
    if recipe.speed.gradient_checkpointing == "auto":
        try:
            from .estimate import estimate

            est = estimate(recipe, lengths, len(lengths), placement.device, placement.precision, flops=1.0)
        except Exception:  # noqa: BLE001 - the estimate only advises; training goes on without it
            est = None
    on, why = checkpointing_needed(recipe, est)
    s = recipe.speed
    note = (f"speed: {'length-grouped' if s.group_by_length else 'random'} batches, packing {'on' if s.packing else 'off'}, "
            f"gradient checkpointing {'on' if on else 'off'} ({why}), torch.compile {'on' if s.torch_compile else 'off'}")
    if est is not None:
        note += f"; estimated peak memory {est.peak_bytes / 2**30:.2f} GiB of {est.available_bytes / 2**30:.2f} GiB"
    return trainer_args(recipe, on), note
