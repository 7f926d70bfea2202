"""Throughput settings: length-grouped batches, padding-free batches, checkpointing, compile.

Padding-free batches ("packing") are contamination-free: a batch becomes one row with per-example
position ids and no attention mask, and the first label of every example is masked. On CPU,
cpu_attention runs attention example by example (gathered into a padded block, causal, and
scattered back), so every other layer computes real tokens only; elsewhere transformers builds a
block-diagonal mask from the position ids or passes sequence boundaries to flash-attention.
tests/test_packing.py checks that packed logits equal the examples run one by one.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache


def packing_on(recipe, attn_implementation: str | None) -> bool:
    """speed.packing resolved: 'auto' packs where tuneforge's CPU attention runs the packed
    examples one by one (padding-free then costs nothing extra); on GPUs transformers' SDPA would
    compute one block-diagonal (tokens x tokens) mask instead, so 'auto' leaves packing off there."""
    choice = recipe.speed.packing
    if choice is True or choice is False:
        return choice
    return attn_implementation == CPU_ATTENTION and not recipe.speed.torch_compile


def packing_expected(recipe, device: str) -> bool:
    """packing_on() before the model is loaded (for the estimate): auto packs on CPU."""
    choice = recipe.speed.packing
    if choice is True or choice is False:
        return choice
    return device == "cpu" and not recipe.speed.torch_compile


def collator(tokenizer, packed: bool):
    if packed:
        from transformers import DataCollatorWithFlattening

        # sequence boundaries as cu_seq_lens: cpu_attention and flash-attention use them as given
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100, return_flash_attn_kwargs=True)
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
    batch x heads x length^2 score tensors cost time and memory. A padded batch brings the eager
    float mask, which SDPA takes as an additive bias; a packed or unpadded batch brings none
    (cpu_mask) and is run causally, example by example (_maskless_attention)."""
    if attention_mask is None:
        return _maskless_attention(module, query, key, value, *args, **kwargs)
    for k in _SEQ_KWARGS:
        kwargs.pop(k, None)
    eager = _model_eager(module) if query.shape[-2] <= EAGER_CPU_MAX_QUERY else None
    if eager is not None:
        return eager(module, query, key, value, attention_mask, *args, **kwargs)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask.is_floating_point() and attention_mask.dtype != query.dtype:
        attention_mask = attention_mask.to(query.dtype)
    return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)


_SEQ_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def _maskless_attention(module, query, key, value, *args, **kwargs):
    """A batch without a mask: rows with no padding, or one packed row of several examples. The
    packed row's examples (from cu_seq_lens_q, else from where position_ids restart) are gathered
    into a padded (examples x longest) block, run causally -- right padding never reaches a real
    token under a causal mask, so no padding mask is needed -- and scattered back: every layer
    but attention sees real tokens only, and attention costs what the padded batch's would."""
    cu = kwargs.get("cu_seq_lens_q")
    for k in _SEQ_KWARGS:
        kwargs.pop(k, None)
    segments = _segments(cu, kwargs.get("position_ids"), query.shape[-2]) if query.shape[0] == 1 else None
    if segments is None:
        return _causal_attention(module, query, key, value, *args, **kwargs)
    index, rows, longest = segments

    def to_rows(t):  # (1, heads, tokens, dim) -> (rows, heads, longest, dim), zeros after each example
        heads, dim = t.shape[1], t.shape[3]
        flat = t[0].transpose(0, 1)
        block = flat.new_zeros(rows * longest, heads, dim).index_copy(0, index, flat)
        return block.view(rows, longest, heads, dim).transpose(1, 2)

    out, _ = _causal_attention(module, to_rows(query), to_rows(key), to_rows(value), *args, **kwargs)
    return out.reshape(rows * longest, *out.shape[2:]).index_select(0, index).unsqueeze(0), None


def _causal_attention(module, query, key, value, *args, **kwargs):
    """Causal attention without a padding mask: eager with a shared (1 x 1 x L x L) causal mask for
    short rows, SDPA's is_causal for long ones (or when the keys are longer than the queries)."""
    length = query.shape[-2]
    eager = _model_eager(module) if length <= EAGER_CPU_MAX_QUERY and key.shape[-2] == length else None
    if eager is not None:
        return eager(module, query, key, value, _causal_mask(length, query.dtype), *args, **kwargs)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, None, *args, **kwargs)


@lru_cache(maxsize=4)
def _causal_mask(length: int, dtype):
    import torch

    return torch.full((length, length), torch.finfo(dtype).min, dtype=dtype).triu(1)[None, None]


_last_segments: list = [None, None]  # (the tensor they were derived from, result): all layers share it


def _segments(cu_seq_lens, position_ids, tokens: int):
    """(token index into a rows x longest block, rows, longest) for a packed row, or None when the
    row holds one sequence. Computed once per forward pass: every layer gets the same tensors."""
    import torch

    source = cu_seq_lens if cu_seq_lens is not None else position_ids
    if source is None:
        return None
    if _last_segments[0] is source:
        return _last_segments[1]
    if cu_seq_lens is not None:
        bounds = cu_seq_lens.long()
    else:
        pos = position_ids[0]
        starts = (torch.nonzero(pos[1:] - pos[:-1] != 1).flatten() + 1).tolist()
        bounds = torch.tensor([0, *starts, tokens])
    lengths = bounds.diff()
    result = None
    if lengths.numel() > 1:
        rows, longest = lengths.numel(), int(lengths.max())
        row = torch.repeat_interleave(torch.arange(rows), lengths)
        result = (row * longest + torch.arange(tokens) - bounds[:-1][row], rows, longest)
    _last_segments[0], _last_segments[1] = source, result
    return result


def cpu_mask(*args, attention_mask=None, **kwargs):
    """The mask for cpu_attention: none for a batch without padding (a packed row included; the
    attention knows the examples' boundaries), else transformers' eager float mask."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import eager_mask

    return eager_mask(*args, attention_mask=attention_mask, **kwargs)


def _register_cpu_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(CPU_ATTENTION, cpu_attention)
    AttentionMaskInterface.register(CPU_ATTENTION, cpu_mask)


def attention(model, recipe, device: str) -> str:
    """On CPU, train with attention chosen per batch by length (cpu_attention): eager for short
    rows, SDPA for long ones; packed rows example by example. Only for a model loaded with SDPA
    whose modeling file has an eager path and whose sliding window (if any) covers the cut-off;
    the Trainer puts the loaded implementation back when training ends (restore_attention), so
    the returned model computes like the saved adapter on a freshly loaded base."""
    current = getattr(model.config, "_attn_implementation", None)
    if device != "cpu" or current != "sdpa":
        return current or "default"
    if _model_eager(model) is None:  # no eager path in this model's modeling file
        return current
    window = _sliding_window(model.config)
    if window is not None and window < recipe.data.max_length:  # unpadded rows here get no window
        return current
    _register_cpu_attention()
    try:
        model.set_attn_implementation(CPU_ATTENTION)
    except (ValueError, AttributeError, ImportError, KeyError):  # a model that refuses it keeps its own
        return current
    model._tuneforge_attn_restore = current
    return describe_attention(model)


def _sliding_window(config) -> int | None:
    """The model's attention window when some layer uses one, else None."""
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types and not any("sliding" in str(t) for t in layer_types):
        return None
    return int(window)


def describe_attention(model) -> str:
    """The attention implementation training uses, for the log."""
    current = getattr(model.config, "_attn_implementation", None) or "default"
    if current == CPU_ATTENTION:
        return f"eager for rows up to {EAGER_CPU_MAX_QUERY} tokens, SDPA above, packed examples one by one (CPU)"
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


def plan(recipe, placement, lengths: list[int], labelled: list[int] | None = None,
         packed: bool = False) -> tuple[dict, str]:
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
    pack_why = " (auto)" if s.packing == "auto" else ""
    note = (f"speed: {'length-grouped' if s.group_by_length else 'random'} batches, "
            f"packing {'on: padding-free batches' if packed else 'off'}{pack_why}, "
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
    are not computed (the model's `logits_to_keep` with a boolean mask). Where the model's head is a
    plain frozen linear layer, the kept positions go through HeadCrossEntropy (chunked, no logits
    kept). Same loss value and gradients as the full computation, including the Trainer's
    num_items_in_batch normalisation.
    """
    import torch

    labels = inputs["labels"]
    shift = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    keep = shift != -100
    kept = shift[keep]
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = _frozen_plain_head(base)
    if head is not None:  # the model runs as usual (its wrappers: autocast...), its head on no position
        seen = {}

        def grab(module, args, output):
            seen["hidden"] = output.last_hidden_state
            kind = seen["hidden"].device.type
            seen["amp"] = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None

        hook = base.model.register_forward_hook(grab)
        try:
            model(**rest, logits_to_keep=torch.zeros_like(keep))
        finally:
            hook.remove()
        count = num_items_in_batch if num_items_in_batch is not None else max(kept.numel(), 1)
        return head_cross_entropy(seen["hidden"][keep], head.weight, kept, count, seen["amp"])
    if num_items_in_batch is not None:
        rest["num_items_in_batch"] = num_items_in_batch
    return model(**rest, logits_to_keep=keep, labels=kept, shift_labels=kept).loss


# Tokens per chunk of the fused head: measured on this CPU (2000 labelled tokens, SmolLM2's 49k
# vocabulary, forward + backward): 404-428 ms at 128, 574-621 at 256, 794 at 512, 884-904 unfused.
HEAD_CHUNK = 128


def head_cross_entropy(hidden, weight, labels, count, amp_dtype=None):
    """sum of cross-entropy(hidden @ weight.T, labels) / count for a frozen head (HeadCrossEntropy)."""
    return _head_cross_entropy_fn().apply(hidden, weight, labels, count, amp_dtype)


@lru_cache(maxsize=1)
def _head_cross_entropy_fn():
    import torch

    class HeadCrossEntropy(torch.autograd.Function):
        """The head's logits, their log-softmax and the gradient (softmax - one-hot) / count, chunk by
        chunk of HEAD_CHUNK tokens in the forward pass, multiplied back through the weight at once:
        only the (tokens x hidden) gradient is kept, never the (tokens x vocabulary) logits. Small
        chunks stay in cache: about twice as fast as logits + cross_entropy + backward on this CPU,
        and about 1 GB less memory at 2000 labelled tokens. Matmuls run in the autocast dtype the
        model ran in (as its own head would); the softmax is fp32, as in transformers' loss."""

        @staticmethod
        def forward(ctx, hidden, weight, labels, count, amp_dtype):
            dtype = amp_dtype or hidden.dtype
            h, w = hidden.to(dtype), weight.to(dtype)
            scale = 1.0 / count.to(torch.float32) if torch.is_tensor(count) else 1.0 / count
            want_grad = ctx.needs_input_grad[0]
            grad = torch.empty_like(h) if want_grad else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for s in range(0, h.shape[0], HEAD_CHUNK):
                logits = (h[s:s + HEAD_CHUNK] @ w.t()).float()
                lab = labels[s:s + HEAD_CHUNK]
                lse = torch.logsumexp(logits, -1)
                total += (lse - logits.gather(1, lab[:, None]).squeeze(1)).sum()
                if want_grad:
                    probs = logits.sub_(lse[:, None]).exp_()
                    probs[torch.arange(lab.numel(), device=lab.device), lab] -= 1.0
                    grad[s:s + HEAD_CHUNK] = probs.mul_(scale).to(dtype) @ w
            if want_grad:
                ctx.save_for_backward(grad)
                ctx.hidden_dtype = hidden.dtype
            return total * scale

        @staticmethod
        def backward(ctx, grad_out):
            (grad,) = ctx.saved_tensors
            return (grad * grad_out.to(grad.dtype)).to(ctx.hidden_dtype), None, None, None, None

    return HeadCrossEntropy


_BENT_HEADS = ("softcap", "logit_scale", "logits_scaling", "aux_loss", "router")


def _frozen_plain_head(base):
    """The output head when HeadCrossEntropy computes exactly the model's own loss: a frozen,
    bias-free nn.Linear whose model class does `logits = self.lm_head(hidden_states)` and the
    standard loss (no softcapping, logit scaling or router losses; checked in its source), with the
    backbone at `.model`. None otherwise (a trained head, LoRA on the head, other heads)."""
    import torch

    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear or head.bias is not None or head.weight.requires_grad:
        return None
    if not _plain_head_class(type(base)) or not isinstance(getattr(base, "model", None), torch.nn.Module):
        return None
    return head


@lru_cache(maxsize=None)
def _plain_head_class(cls) -> bool:
    import inspect

    try:
        src = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    assigns = [ln.strip() for ln in src.splitlines() if ln.strip().startswith("logits =")]
    return (assigns == ["logits = self.lm_head(hidden_states)"] and "self.model(" in src
            and "self.loss_function(" in src and not any(w in src for w in _BENT_HEADS))


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
