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
    args = config(RewardConfig, ctx, center_rewards_coefficient=spec.center_rewards_coefficient, max_length=None)
    train = rows.reward_columns(ctx.data.train)
    if spec.margin_column and "margin" not in train:
        raise TuneforgeError(f"rm.margin_column '{spec.margin_column}': the rows carry no margin (this data layer "
                             "does not read the column, or some rows lack it)",
                             "give every row the margin column, or remove rm.margin_column")
    evals = eval_items(ctx)
    trainer = trainer_class(RewardTrainer)(
        processing_class=ctx.tokenizer, train_dataset=dataset(train),
        eval_dataset=dataset(rows.reward_columns(evals)) if evals else None,
        lengths=rows.lengths(train, "chosen_ids", "rejected_ids"), **trainer_kwargs(ctx, args),
    )
    if ctx.packed:  # padding-free rows, the score head only at each row's scored token
        logps.install_reward(logps.bare(trainer.accelerator.unwrap_model(trainer.model)))
    return trainer
