"""Stage simpo: SimPO as TRL's CPOTrainer (trl.experimental.cpo) with loss_type 'simpo' and
cpo_alpha = simpo.sft_weight (0: SimPO proper), on tuneforge's pairs with the packed,
response-only forward (prefs.cpo_rows). No reference model."""

from __future__ import annotations

from .base import StageContext, config, dataset, eval_items, trainer_kwargs


def build(ctx: StageContext):
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from ..trainer import trainer_class
    from . import prefs, rows

    spec = ctx.recipe.simpo
    args = config(CPOConfig, ctx, loss_type="simpo", beta=spec.beta, simpo_gamma=spec.gamma, cpo_alpha=spec.sft_weight)
    train = rows.pair_columns(ctx.data.train)
    evals = eval_items(ctx)
    trainer = trainer_class(prefs.cpo_rows(CPOTrainer))(
        processing_class=ctx.tokenizer, data_collator=DataCollatorForPreference(pad_token_id=ctx.tokenizer.pad_token_id),
        train_dataset=dataset(train), eval_dataset=dataset(rows.pair_columns(evals)) if evals else None,
        lengths=rows.lengths(train, "prompt_ids", "chosen_ids", "rejected_ids"), packed=ctx.packed,
        **trainer_kwargs(ctx, args),
    )
    prefs.finish(trainer, ctx.packed, trl_head=True)
    return trainer
