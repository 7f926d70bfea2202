"""Throughput settings: length-grouped batches, padding-free packing, checkpointing, compile.

Packing is contamination-free: a batch becomes one row with per-example position ids and no
attention mask; transformers then builds a block-diagonal causal mask from the position ids (SDPA
and eager) or passes sequence boundaries to flash-attention, and the first label of every example
is masked, so no example sees or predicts another (tests/test_packing.py checks the logits).
"""

from __future__ import annotations


def collator(tokenizer, recipe):
    if recipe.speed.packing:
        from transformers import DataCollatorWithFlattening

        return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def checkpointing_needed(recipe, est) -> tuple[bool, str]:
    """(on, why) for speed.gradient_checkpointing; 'auto' asks the memory estimate."""
    choice = recipe.speed.gradient_checkpointing
    if choice is not True and choice is not False:
        if est is None:
            return False, "auto: no memory estimate, left off"
        if est.fits:
            return False, "auto: the run fits in memory without it"
        return True, "auto: the memory estimate says the run needs it"
    return bool(choice), "set in the recipe"


def trainer_args(recipe, checkpointing: bool) -> dict:
    """TrainingArguments keywords for the speed section."""
    out = {
        "train_sampling_strategy": "random",  # grouping: trainer_class() supplies its own sampler
        "gradient_checkpointing": checkpointing,
        "torch_compile": recipe.speed.torch_compile,
    }
    if checkpointing:
        out["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return out


def plan(recipe, placement, lengths: list[int]) -> tuple[dict, str]:
    """(TrainingArguments keywords, a line for the log) for this run's speed settings."""
    est = None
    if recipe.speed.gradient_checkpointing == "auto":
        try:
            from .estimate import estimate

            est = estimate(recipe, lengths, len(lengths), placement.device, placement.precision, flops=1.0)
        except Exception:  # noqa: BLE001 - the estimate only advises; training goes on without it
            est = None
    on, why = checkpointing_needed(recipe, est)
    s = recipe.speed
    note = (f"speed: {'length-grouped' if s.group_by_length else 'random'} batches, packing {'on' if s.packing else 'off'}, "
            f"gradient checkpointing {'on' if on else 'off'} ({why}), torch.compile {'on' if s.torch_compile else 'off'}")
    if est is not None:
        note += f"; estimated peak memory {est.peak_bytes / 2**30:.2f} GiB of {est.available_bytes / 2**30:.2f} GiB"
    return trainer_args(recipe, on), note


class LengthGroupedBatches:
    """Index order for length-grouped batches that stays random: each epoch, shuffle, cut into
    pools of 64 batches, sort each pool by length, cut into batches, shuffle the batches.

    transformers' own LengthGroupedSampler uses pools of only len/4 examples on small datasets
    (and moves the longest example to the front), which leaves much of the padding in place.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, pool_batches: int = 64):
        self.lengths, self.batch, self.seed, self.pool = list(lengths), batch_size, seed, pool_batches
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.pool * self.batch
        batches = []
        for k in range(0, len(order), size):
            pool = sorted(order[k:k + size], key=lambda i: self.lengths[i])
            batches += [pool[j:j + self.batch] for j in range(0, len(pool), self.batch)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield from batches[b]


def trainer_class(recipe):
    """The HF Trainer, with tuneforge's length-grouped sampler when speed.group_by_length is on."""
    from transformers import Trainer

    if not recipe.speed.group_by_length:
        return Trainer

    class GroupedTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            lengths = [len(x) for x in ds["input_ids"]]
            per_step = self.args.train_batch_size
            return LengthGroupedBatches(lengths, per_step, self.args.seed)

    return GroupedTrainer
