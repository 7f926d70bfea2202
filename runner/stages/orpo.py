"""Stage orpo: TRL's ORPOTrainer (trl.experimental.orpo): the chosen reply's NLL plus orpo.beta
times the log odds ratio, no reference model, on tuneforge's pairs with the packed,
response-only forward (prefs.cpo_rows). The NLL covers the chosen reply's trained tokens (TRL's
own ORPOTrainer also trains on the prompt)."""

from __future__ import annotations

from .base import StageContext, config, dataset, eval_items, trainer_kwargs


def build(ctx: StageContext):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from ..trainer import trainer_class
    from . import prefs, rows

    args = config(ORPOConfig, ctx, beta=ctx.recipe.orpo.beta)
    train = rows.pair_columns(ctx.data.train)
    evals = eval_items(ctx)
    trainer = trainer_class(prefs.cpo_rows(ORPOTrainer))(
        processing_class=ctx.tokenizer, data_collator=DataCollatorForPreference(pad_token_id=ctx.tokenizer.pad_token_id),
        train_dataset=dataset(train), eval_dataset=dataset(rows.pair_columns(evals)) if evals else None,
        lengths=rows.lengths(train, "prompt_ids", "chosen_ids", "rejected_ids"), packed=ctx.packed,
        **trainer_kwargs(ctx, args),
    )
    prefs.finish(trainer, ctx.packed, trl_head=True)
    return trainer
