"""Stage orpo: TRL's ORPOTrainer (trl.experimental.orpo): the chosen reply's NLL plus orpo.beta
times the log odds ratio, no reference model, on tuneforge's pairs with the packed,
response-only forward (prefs.cpo_rows). The NLL covers the chosen reply's trained tokens (TRL's
own ORPOTrainer also trains on the prompt)."""

from __future__ import annotations

from .base import StageContext, config


def build(ctx: StageContext):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from . import prefs

    return prefs.build_cpo_family(ctx, ORPOTrainer, config(ORPOConfig, ctx, beta=ctx.recipe.orpo.beta))
