"""Stage rm: TRL's RewardTrainer on pairs. The model is a sequence classifier with one output
(model.load_model(task='reward')): method lora saves a SEQ_CLS adapter with the score head in
modules_to_save (adapter/), full/freeze the whole classifier (model/); `tuneforge score` reads both."""

from __future__ import annotations

from ..errors import TuneforgeError
from .base import StageContext, config, dataset, eval_items, trainer_kwargs


def build(ctx: StageContext):
    from trl import RewardConfig, RewardTrainer

    from ..trainer import trainer_class
    from . import logps, rows

    spec = ctx.recipe.rm
    if spec.margin_column:
        raise TuneforgeError("rm.margin_column: the data layer does not carry a margin column yet",
                             "remove rm.margin_column (every pair then counts as chosen > rejected)")
    args = config(RewardConfig, ctx, center_rewards_coefficient=spec.center_rewards_coefficient, max_length=None)
    train = rows.reward_columns(ctx.data.train)
    evals = eval_items(ctx)
    trainer = trainer_class(RewardTrainer)(
        processing_class=ctx.tokenizer, train_dataset=dataset(train),
        eval_dataset=dataset(rows.reward_columns(evals)) if evals else None,
        lengths=rows.lengths(train, "chosen_ids", "rejected_ids"), **trainer_kwargs(ctx, args),
    )
    if ctx.packed:  # padding-free rows, the score head only at each row's scored token
        logps.install_reward(logps.bare(trainer.accelerator.unwrap_model(trainer.model)))
    return trainer
