"""Stage kto: TRL's KTOTrainer on feedback rows (a reply labelled desirable or not), or on pairs
split into one desirable and one undesirable row (kto.unpair), with the packed, response-only
forward and the reference of kto.reference. Loss 'kto' estimates the KL term from mismatched
neighbours inside each batch, so its batches keep the (shuffled once) data order: no length grouping."""

from __future__ import annotations

from .base import StageContext, config, dataset, eval_items, trainer_kwargs


def build(ctx: StageContext):
    from trl import KTOConfig, KTOTrainer

    from ..trainer import trainer_class
    from . import prefs, reference, rows

    spec = ctx.recipe.kto
    kl = spec.loss_type == "kto"  # TRL estimates KL from each row's neighbours: a fixed order is needed
    args = config(KTOConfig, ctx, beta=spec.beta, loss_type=spec.loss_type, desirable_weight=spec.desirable_weight,
                  undesirable_weight=spec.undesirable_weight, max_length=None,
                  precompute_ref_log_probs=spec.reference.kind == "precomputed",
                  **({"train_sampling_strategy": "sequential"} if kl else {}))
    kl = args.per_device_train_batch_size if kl else None
    train = rows.feedback_columns(rows.unpair(ctx.data.train), kl)
    evals = eval_items(ctx)
    eval_cols = rows.feedback_columns(rows.unpair(evals), kl and args.per_device_eval_batch_size) if evals else None
    trainer = trainer_class(prefs.tokenized_rows(KTOTrainer))(
        ref_model=reference.load_reference(ctx, spec.reference), processing_class=ctx.tokenizer,
        train_dataset=dataset(train), eval_dataset=dataset(eval_cols) if eval_cols else None,
        lengths=rows.lengths(train, "prompt_ids", "completion_ids"), packed=ctx.packed,
        ref_key=reference.fingerprint(ctx, spec.reference), ref_columns=("ref_logps", "ref_KL_logps"),
        **{**trainer_kwargs(ctx, args), **({"length_grouped": False} if kl else {})},
    )
    prefs.finish(trainer, ctx.packed)
    return trainer
