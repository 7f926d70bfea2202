"""The speed plan of a run: gradient checkpointing (asked of the memory estimate when 'auto'),
the TrainingArguments keywords of the speed section, and the line the log prints about them.

The pieces it plans for live in their own modules, each usable by any stage: sampler.py
(length-grouped batches), packing.py (padding-free batches), cpu_attention.py (attention chosen
per batch on CPU) and head_loss.py (the head run only at labelled positions).
"""

from __future__ import annotations


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
        "train_sampling_strategy": "random",  # grouping: TuneforgeTrainer brings its own sampler
        "gradient_checkpointing": checkpointing,
        "torch_compile": recipe.speed.torch_compile,
    }
    if checkpointing:
        out["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return out


def plan(recipe, placement, lengths: list[int], labelled: list[int] | None = None,
         packed: bool = False) -> tuple[dict, str]:
    """(TrainingArguments keywords, a line for the log) for this run's speed settings."""
    est = None
    if recipe.speed.gradient_checkpointing == "auto":
        try:
            from .estimate import estimate

            est = estimate(recipe, lengths, len(lengths), placement.device, placement.precision, flops=1.0,
                           labelled=labelled)
        except Exception:  # noqa: BLE001 - the estimate only advises; training goes on without it
            est = None
    on, why = checkpointing_needed(recipe, est)
    s = recipe.speed
    pack_why = " (auto)" if s.packing == "auto" else ""
    note = (f"speed: {'length-grouped' if s.group_by_length else 'random'} batches, "
            f"packing {'on: padding-free batches' if packed else 'off'}{pack_why}, "
            f"gradient checkpointing {'on' if on else 'off'} ({why}), torch.compile {'on' if s.torch_compile else 'off'}")
    if est is not None:
        note += f"; estimated peak memory {est.peak_bytes / 2**30:.2f} GiB of {est.available_bytes / 2**30:.2f} GiB"
    return trainer_args(recipe, on), note
