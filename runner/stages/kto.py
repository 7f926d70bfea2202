"""Stage kto: TRL's KTOTrainer on feedback rows (a reply labelled desirable or not), or on pairs
split into one desirable and one undesirable row (kto.unpair), with the packed, response-only
forward and the reference of kto.reference."""

from __future__ import annotations

from .base import StageContext, config, dataset, eval_items, trainer_kwargs


def build(ctx: StageContext):
    from trl import KTOConfig, KTOTrainer

    from ..trainer import trainer_class
    from . import prefs, reference, rows

    spec = ctx.recipe.kto
    args = config(KTOConfig, ctx, beta=spec.beta, loss_type=spec.loss_type, desirable_weight=spec.desirable_weight,
                  undesirable_weight=spec.undesirable_weight, max_length=None,
                  precompute_ref_log_probs=spec.reference.kind == "precomputed")
    kl = args.per_device_train_batch_size if spec.loss_type == "kto" else None  # TRL's KL estimate pairs
    train = rows.feedback_columns(rows.unpair(ctx.data.train), kl)
    evals = eval_items(ctx)
    eval_cols = rows.feedback_columns(rows.unpair(evals), kl and args.per_device_eval_batch_size) if evals else None
    trainer = trainer_class(prefs.tokenized_rows(KTOTrainer))(
        ref_model=reference.load_reference(ctx, spec.reference), processing_class=ctx.tokenizer,
        train_dataset=dataset(train), eval_dataset=dataset(eval_cols) if eval_cols else None,
        lengths=rows.lengths(train, "prompt_ids", "completion_ids"), packed=ctx.packed,
        ref_key=reference.fingerprint(ctx, spec.reference), ref_columns=("ref_logps", "ref_KL_logps"),
        **trainer_kwargs(ctx, args),
    )
    prefs.finish(trainer, ctx.packed)
    return trainer
