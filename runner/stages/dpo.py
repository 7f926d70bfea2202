"""Stage dpo: TRL's DPOTrainer on tuneforge's pairs (rows.pair_columns), with the packed,
response-only forward (logps.py) and the reference of dpo.reference (reference.py)."""

from __future__ import annotations

from .base import StageContext, config, dataset, eval_items, trainer_kwargs


def build(ctx: StageContext):
    from trl import DPOConfig, DPOTrainer

    from ..trainer import trainer_class
    from . import prefs, reference, rows

    spec = ctx.recipe.dpo
    losses = [spec.loss_type] + (["sft"] if spec.sft_weight else [])
    args = config(DPOConfig, ctx, beta=spec.beta, loss_type=losses,
                  loss_weights=[1.0, spec.sft_weight] if spec.sft_weight else None,
                  label_smoothing=spec.label_smoothing, max_length=None,  # the data layer already cut each pair
                  precompute_ref_log_probs=spec.reference.kind == "precomputed")
    train = rows.pair_columns(ctx.data.train)
    evals = eval_items(ctx)
    trainer = trainer_class(prefs.tokenized_rows(DPOTrainer))(
        ref_model=reference.load_reference(ctx, spec.reference), processing_class=ctx.tokenizer,
        train_dataset=dataset(train), eval_dataset=dataset(rows.pair_columns(evals)) if evals else None,
        lengths=rows.lengths(train, "prompt_ids", "chosen_ids", "rejected_ids"), packed=ctx.packed,
        ref_key=reference.fingerprint(ctx, spec.reference), ref_columns=("ref_chosen_logps", "ref_rejected_logps"),
        **trainer_kwargs(ctx, args),
    )
    prefs.finish(trainer, ctx.packed)
    return trainer
