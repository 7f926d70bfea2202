"""Stage simpo: SimPO as TRL's CPOTrainer (trl.experimental.cpo) with loss_type 'simpo' and
cpo_alpha = simpo.sft_weight (0: SimPO proper), on tuneforge's pairs with the packed,
response-only forward (prefs.cpo_rows). No reference model."""

from __future__ import annotations

from .base import StageContext, config


def build(ctx: StageContext):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from . import prefs

    spec = ctx.recipe.simpo
    return prefs.build_cpo_family(ctx, CPOTrainer, config(CPOConfig, ctx, loss_type="simpo", beta=spec.beta,
                                                           simpo_gamma=spec.gamma, cpo_alpha=spec.sft_weight))
