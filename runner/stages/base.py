"""What every stage builder receives, and the pieces they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class StageContext:
    recipe: Any
    run: Any  # rundir.RunDir
    placement: Any  # device.Placement
    resolved: Any  # model.ResolvedModel of the policy's starting weights
    model: Any  # the model to train (peft-wrapped for lora/qlora)
    tokenizer: Any
    data: Any  # runner.data.Prepared
    args: dict  # TrainingArguments keywords shared by every stage (train.py)
    callbacks: list = field(default_factory=list)
    packed: bool = False  # padding-free batches (packing.packing_on)
    say: Callable[[str], None] = print


def dataset(cols: dict):
    from datasets import Dataset

    return Dataset.from_dict(cols)


def config(cls, ctx: StageContext, **stage_kwargs):
    """The stage's TRL config: the shared TrainingArguments keywords plus the stage's own."""
    return cls(**{"include_num_input_tokens_seen": "non_padding", **ctx.args, **stage_kwargs})


def trainer_kwargs(ctx: StageContext, args) -> dict:
    """Keywords every stage's trainer takes: model, args, optimizer, callbacks, batching."""
    from .. import methods

    return {"model": ctx.model, "args": args, "callbacks": ctx.callbacks,
            "optimizers": (methods.make_optimizer(ctx.model, ctx.recipe, args), None),
            "length_grouped": ctx.recipe.speed.group_by_length}


def eval_items(ctx: StageContext):
    return ctx.data.eval if ctx.data.eval else None
