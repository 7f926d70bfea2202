"""Training stages: one module per stage builds its TRL 1.x config and trainer from the recipe.

train.py asks this registry three things: which options to tokenize the data with
(`data_options`), which kind of model to load (`model_task`), and the stage's trainer (`build`).
Every builder takes a `StageContext` (base.py) and returns a Trainer whose class comes from
trainer.trainer_class(TRL's trainer), so atomic checkpoints, length-grouped batches and the run's
callbacks work the same for every stage.
"""

from __future__ import annotations

import importlib

from .base import StageContext

__all__ = ["StageContext", "build", "data_options", "model_task", "rows_per_epoch"]

MODULES = {"sft": "sft", "pt": "pt", "rm": "rm", "dpo": "dpo", "kto": "kto", "orpo": "orpo", "simpo": "simpo"}


def data_options(recipe) -> dict:
    """Keywords for runner.data.tokenize_for beyond the data section: the stage, and where the data
    layer takes them, kto.unpair / pt.concatenate / rm.margin_column (data.stage_rows.stage_options).
    Without those (an older data layer) KTO on pairs reads the pairs and rows.unpair splits them."""
    try:
        from ..data.stage_rows import stage_options
    except ImportError:
        return {"stage": "dpo"} if recipe.stage == "kto" and recipe.kto.unpair else {"stage": recipe.stage}
    return {"stage": recipe.stage, **stage_options(recipe)}


def rows_per_epoch(recipe, data) -> int:
    """Training rows the stage's trainer sees in one epoch (kto.unpair makes two of each pair)."""
    return len(data.train) * (2 if recipe.stage == "kto" and recipe.kto.unpair else 1)


def model_task(recipe) -> str:
    """'reward' (a sequence-classification model with one output) for stage rm, else 'causal'."""
    return "reward" if recipe.stage == "rm" else "causal"


def build(ctx: StageContext):
    """The stage's Trainer, ready for .train()."""
    module = importlib.import_module(f"{__name__}.{MODULES[ctx.recipe.stage]}")
    return module.build(ctx)
