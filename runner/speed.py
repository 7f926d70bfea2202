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


EAGER_CPU_MAX_LENGTH = 512


def attention(model, recipe, device: str) -> str:
    """Use eager attention for CPU training at cut-offs up to 512 tokens: torch's CPU SDPA kernel
    (flash-attention for CPU) has a slow backward at short lengths (eager was ~20% faster per step
    on SmolLM2-135M at 150 tokens, even at 450); longer rows keep SDPA's memory-saving kernel.
    The Trainer puts SDPA back when training ends (restore_attention), so the returned model
    computes like the saved adapter on a freshly loaded base."""
    current = getattr(model.config, "_attn_implementation", None)
    if device != "cpu" or recipe.data.max_length > EAGER_CPU_MAX_LENGTH or current != "sdpa":
        return current or "default"
    try:
        model.set_attn_implementation("eager")
    except (ValueError, AttributeError, ImportError):  # a model without an eager path keeps its own
        return current
    model._tuneforge_attn_restore = current
    return "eager"


def restore_attention(model) -> None:
    """Undo attention(): the model goes back to the implementation it was loaded with."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = getattr(base, "_tuneforge_attn_restore", None)
    if before:
        base.set_attn_implementation(before)
        base._tuneforge_attn_restore = None


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


def _accepts_logits_to_keep(model) -> bool:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def label_positions_loss(model, inputs, num_items_in_batch=None):
    """The causal-LM loss with the output head run only where a label is predicted.

    The head (hidden x vocab, 49k wide on small models) and its fp32 softmax are a large share of a
    small model's step; prompt and pad positions (label -100) never reach the loss, so their logits
    are not computed (the model's `logits_to_keep` with a boolean mask). Same loss value and
    gradients as the full computation, including the Trainer's num_items_in_batch normalisation.
    """
    import torch

    labels = inputs["labels"]
    shift = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    keep = shift != -100
    kept = shift[keep]
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    if num_items_in_batch is not None:
        rest["num_items_in_batch"] = num_items_in_batch
    return model(**rest, logits_to_keep=keep, labels=kept, shift_labels=kept).loss


def trainer_class(recipe):
    """The HF Trainer with tuneforge's length-grouped sampler (speed.group_by_length) and a
    training loss that computes logits only at labelled positions (see label_positions_loss)."""
    from transformers import Trainer

    class SpeedTrainer(Trainer):
        def train(self, *args, **kwargs):
            try:
                return super().train(*args, **kwargs)
            finally:
                restore_attention(self.accelerator.unwrap_model(self.model))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if (return_outputs or not model.training or "labels" not in inputs or self.label_smoother is not None
                    or self.compute_loss_func is not None or not self.model_accepts_loss_kwargs
                    or not _accepts_logits_to_keep(self.accelerator.unwrap_model(model))):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return label_positions_loss(model, inputs, num_items_in_batch)

        if recipe.speed.group_by_length:
            def _get_train_sampler(self, train_dataset=None):
                ds = train_dataset if train_dataset is not None else self.train_dataset
                lengths = [len(x) for x in ds["input_ids"]]
                per_step = self.args.train_batch_size
                return LengthGroupedBatches(lengths, per_step, self.args.seed)

    return SpeedTrainer
