"""Throughput settings: length-grouped batches, padding-free packing, checkpointing, compile.

Packing is contamination-free: a batch becomes one row with per-example position ids and no
attention mask; transformers then builds a block-diagonal causal mask from the position ids (SDPA
and eager) or passes sequence boundaries to flash-attention, and the first label of every example
is masked, so no example sees or predicts another (tests/test_packing.py checks the logits).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache


def collator(tokenizer, recipe):
    if recipe.speed.packing:
        from transformers import DataCollatorWithFlattening

        return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


# Query lengths up to this run eager attention on CPU; longer ones torch's SDPA kernel. Measured
# here (SmolLM2-135M shapes: 9 heads of 64, bf16, forward + backward per layer, batch 8): eager
# 4 ms vs SDPA 15 ms at 64 tokens, 28 vs 30 at 192, 57 vs 54 at 288, 292 vs 91 at 512.
EAGER_CPU_MAX_QUERY = 256
CPU_ATTENTION = "tuneforge_cpu"


def _model_eager(module):
    """The attention module's own eager function (its modeling file's), or None."""
    import sys

    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def cpu_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """Attention for CPU training, chosen per batch by length: eager (plain matmul + softmax) for
    short rows, where torch's SDPA kernel has a slow backward, SDPA for long rows, where eager's
    batch x heads x length^2 score tensors cost time and memory. The mask is the eager float mask,
    which SDPA takes as an additive bias."""
    eager = _model_eager(module) if query.shape[-2] <= EAGER_CPU_MAX_QUERY else None
    if eager is not None:
        return eager(module, query, key, value, attention_mask, *args, **kwargs)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.is_floating_point() and attention_mask.dtype != query.dtype:
        attention_mask = attention_mask.to(query.dtype)
    return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)


def _register_cpu_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(CPU_ATTENTION, cpu_attention)
    AttentionMaskInterface.register(CPU_ATTENTION, eager_mask)


def attention(model, recipe, device: str) -> str:
    """On CPU, train with attention chosen per batch by length (cpu_attention): eager for short
    rows, SDPA for long ones. Only for a model loaded with SDPA whose modeling file has an eager
    path; the Trainer puts the loaded implementation back when training ends (restore_attention),
    so the returned model computes like the saved adapter on a freshly loaded base."""
    current = getattr(model.config, "_attn_implementation", None)
    if device != "cpu" or current != "sdpa":
        return current or "default"
    if _model_eager(model) is None:  # no eager path in this model's modeling file
        return current
    _register_cpu_attention()
    try:
        model.set_attn_implementation(CPU_ATTENTION)
    except (ValueError, AttributeError, ImportError, KeyError):  # a model that refuses it keeps its own
        return current
    model._tuneforge_attn_restore = current
    return describe_attention(model)


def describe_attention(model) -> str:
    """The attention implementation training uses, for the log."""
    current = getattr(model.config, "_attn_implementation", None) or "default"
    if current == CPU_ATTENTION:
        return f"eager for rows up to {EAGER_CPU_MAX_QUERY} tokens, SDPA above (CPU)"
    return current


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


def plan(recipe, placement, lengths: list[int], labelled: list[int] | None = None) -> tuple[dict, str]:
    """(TrainingArguments keywords, a line for the log) for this run's speed settings."""
    est = None
    if recipe.speed.gradient_checkpointing == "auto":
        try:
            from .estimate import estimate

            est = estimate(recipe, lengths, len(lengths), placement.device, placement.precision, flops=1.0,
                           labelled=labelled)
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
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes_logits_to_keep(type(base))


@lru_cache(maxsize=None)
def _forward_takes_logits_to_keep(cls) -> bool:
    """Asked on every step: inspect each model class's forward signature once."""
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(cls.forward).parameters
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


@contextmanager
def adapter_inputs_uncast(model, autocast: bool):
    """Under autocast, stop peft from casting each adapter's input to the adapter's fp32 dtype.

    peft casts the (bf16) activations to fp32 before every LoRA A matrix, and autocast casts them
    straight back to bf16 for the matmul: two copies of the layer input per adapter, forward and
    backward, for bit-identical values (tests/test_speed.py). That round trip was ~10% of a
    SmolLM2-135M LoRA step on CPU. Outside training (no autocast) the casting is needed again."""
    if not autocast:
        yield
        return
    from peft.helpers import disable_input_dtype_casting

    with disable_input_dtype_casting(model):
        yield


def trainer_class(recipe):
    """The HF Trainer with tuneforge's length-grouped sampler (speed.group_by_length) and a
    training loss that computes logits only at labelled positions (see label_positions_loss)."""
    from transformers import Trainer

    class SpeedTrainer(Trainer):
        def train(self, *args, **kwargs):
            try:
                with adapter_inputs_uncast(self.model, self.args.bf16 or self.args.fp16):
                    return super().train(*args, **kwargs)
            finally:
                restore_attention(self.accelerator.unwrap_model(self.model))

        def _labels_only(self, model, inputs) -> bool:
            return ("labels" in inputs and self.label_smoother is None and self.compute_loss_func is None
                    and self.model_accepts_loss_kwargs and _accepts_logits_to_keep(self.accelerator.unwrap_model(model)))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not model.training or not self._labels_only(model, inputs):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return label_positions_loss(model, inputs, num_items_in_batch)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            """Eval loss with the head run only at labelled positions, as in training: the
            full-vocabulary logits of a long eval batch were the peak memory of checkpointed runs."""
            if not prediction_loss_only or not self._labels_only(model, inputs):
                return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            import torch

            inputs = self._prepare_inputs(inputs)
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = label_positions_loss(model, inputs)
            return loss.detach(), None, None

        if recipe.speed.group_by_length:
            def _get_train_sampler(self, train_dataset=None):
                ds = train_dataset if train_dataset is not None else self.train_dataset
                lengths = [len(x) for x in ds["input_ids"]]
                per_step = self.args.train_batch_size
                return LengthGroupedBatches(lengths, per_step, self.args.seed)

    return SpeedTrainer
