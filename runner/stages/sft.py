"""Stage sft: the HF Trainer (trainer.TuneforgeTrainer) on conversations, only the replies trained,
with packing, the labelled-positions head loss and length-grouped batches."""

from __future__ import annotations

from .base import StageContext, config, eval_items, trainer_kwargs


def tokens_dataset(items):
    from datasets import Dataset

    return Dataset.from_dict({
        "input_ids": [t.input_ids for t in items],
        "attention_mask": [[1] * len(t.input_ids) for t in items],
        "labels": [t.labels for t in items],
    })


def build(ctx: StageContext):
    from transformers import TrainingArguments

    from .. import packing
    from ..trainer import trainer_class

    args = config(TrainingArguments, ctx, include_num_input_tokens_seen="all" if ctx.packed else "non_padding")
    evals = eval_items(ctx)
    return trainer_class()(
        train_dataset=tokens_dataset(ctx.data.train), eval_dataset=tokens_dataset(evals) if evals else None,
        data_collator=packing.collator(ctx.tokenizer, ctx.packed), **trainer_kwargs(ctx, args),
    )
