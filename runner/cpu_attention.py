"""Attention for CPU training, chosen per batch by length, registered with transformers'
AttentionInterface under its own name (so any stage's model can use it, and give it back).

Short rows run eager attention (plain matmul + softmax), where torch's SDPA kernel has a slow
backward; long rows run SDPA, where eager's batch x heads x length^2 score tensors cost time and
memory. A packed row (see packing.py) is run example by example: its examples are found once per
forward pass by a pre-hook on the model's decoder and handed down to every layer as the keyword
`packed_segments` (transformers passes the decoder's keywords through the layers to the attention).
"""

from __future__ import annotations

from functools import lru_cache

# Query lengths up to this run eager attention on CPU; longer ones torch's SDPA kernel. Measured
# here (SmolLM2-135M shapes: 9 heads of 64, bf16, forward + backward per layer, batch 8): eager
# 4 ms vs SDPA 15 ms at 64 tokens, 28 vs 30 at 192, 57 vs 54 at 288, 292 vs 91 at 512.
EAGER_CPU_MAX_QUERY = 256
CPU_ATTENTION = "tuneforge_cpu"
SEGMENTS = "packed_segments"  # the keyword the decoder's pre-hook adds for the attention
_SEQ_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
_UNSET = object()


def _model_eager(module):
    """The attention module's own eager function (its modeling file's), or None."""
    import sys

    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def cpu_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """The attention function: eager for short rows, SDPA for long ones. A padded batch brings the
    eager float mask, which SDPA takes as an additive bias; a packed or unpadded batch brings none
    (cpu_mask) and is run causally, example by example (_maskless_attention)."""
    segments = kwargs.pop(SEGMENTS, _UNSET)
    if attention_mask is None:
        return _maskless_attention(module, query, key, value, segments, *args, **kwargs)
    for k in _SEQ_KWARGS:
        kwargs.pop(k, None)
    eager = _model_eager(module) if query.shape[-2] <= EAGER_CPU_MAX_QUERY else None
    if eager is not None:
        return eager(module, query, key, value, attention_mask, *args, **kwargs)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask.is_floating_point() and attention_mask.dtype != query.dtype:
        attention_mask = attention_mask.to(query.dtype)
    return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)


def _maskless_attention(module, query, key, value, segments, *args, **kwargs):
    """A batch without a mask: rows with no padding, or one packed row of several examples. The
    packed row's examples are gathered into a padded (examples x longest) block, run causally --
    right padding never reaches a real token under a causal mask, so no padding mask is needed --
    and scattered back: every layer but attention sees real tokens only, and attention costs what
    the padded batch's would."""
    cu = kwargs.get("cu_seq_lens_q")
    for k in _SEQ_KWARGS:
        kwargs.pop(k, None)
    if segments is _UNSET:  # called without the decoder's pre-hook: find the examples here
        segments = packed_segments(cu, kwargs.get("position_ids"), query.shape[-2]) if query.shape[0] == 1 else None
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


def packed_segments(cu_seq_lens, position_ids, tokens: int):
    """(token index into a rows x longest block, rows, longest) for a packed row, from the
    collator's cu_seq_lens or else from where the positions restart; None for one sequence."""
    import torch

    if cu_seq_lens is not None:
        bounds = cu_seq_lens.long()
    elif position_ids is not None:
        pos = position_ids[0]
        starts = (torch.nonzero(pos[1:] - pos[:-1] != 1).flatten() + 1).tolist()
        bounds = torch.tensor([0, *starts, tokens])
    else:
        return None
    lengths = bounds.diff()
    if lengths.numel() <= 1:
        return None
    rows, longest = lengths.numel(), int(lengths.max())
    row = torch.repeat_interleave(torch.arange(rows), lengths)
    return row * longest + torch.arange(tokens) - bounds[:-1][row], rows, longest


def _segments_pre_hook(module, args, kwargs):
    """Before the decoder runs: find a packed row's examples once, for all its layers."""
    ref = kwargs.get("input_ids")
    if ref is None:
        ref = kwargs.get("inputs_embeds")
    if ref is None or ref.shape[0] != 1 or SEGMENTS in kwargs:
        return None  # a padded batch (or a positional call): the attention copes without
    kwargs[SEGMENTS] = packed_segments(kwargs.get("cu_seq_lens_q"), kwargs.get("position_ids"), ref.shape[1])
    return args, kwargs


def cpu_mask(*args, attention_mask=None, **kwargs):
    """The mask for cpu_attention: none for a batch without padding (a packed row included; the
    attention knows the examples' boundaries), else transformers' eager float mask."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import eager_mask

    return eager_mask(*args, attention_mask=attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(CPU_ATTENTION, cpu_attention)
    AttentionMaskInterface.register(CPU_ATTENTION, cpu_mask)


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def use(model, max_length: int, device: str) -> str:
    """On CPU, switch a model loaded with SDPA to cpu_attention (and hook its decoder); returns the
    implementation training uses, for the log. Only for a model whose modeling file has an eager
    path and whose sliding window (if any) covers max_length; restore() puts the loaded
    implementation back, so the trained model computes like a freshly loaded base + adapter."""
    model = _base(model)
    current = getattr(model.config, "_attn_implementation", None)
    if device != "cpu" or current != "sdpa":
        return current or "default"
    if _model_eager(model) is None:  # no eager path in this model's modeling file
        return current
    window = _sliding_window(model.config)
    if window is not None and window < max_length:  # unpadded rows here get no window
        return current
    _register()
    try:
        model.set_attn_implementation(CPU_ATTENTION)
    except (ValueError, AttributeError, ImportError, KeyError):  # a model that refuses it keeps its own
        return current
    decoder = model.get_decoder()
    model._tuneforge_attn_restore = (current, decoder.register_forward_pre_hook(_segments_pre_hook, with_kwargs=True))
    return describe(model)


def _sliding_window(config) -> int | None:
    """The model's attention window when some layer uses one, else None."""
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types and not any("sliding" in str(t) for t in layer_types):
        return None
    return int(window)


def describe(model) -> str:
    """The attention implementation training uses, for the log."""
    current = getattr(_base(model).config, "_attn_implementation", None) or "default"
    if current == CPU_ATTENTION:
        return f"eager for rows up to {EAGER_CPU_MAX_QUERY} tokens, SDPA above, packed examples one by one (CPU)"
    return current


def restore(model) -> None:
    """Undo use(): the model goes back to the implementation it was loaded with."""
    base = _base(model)
    saved = getattr(base, "_tuneforge_attn_restore", None)
    if saved:
        before, hook = saved
        hook.remove()
        base.set_attn_implementation(before)
        base._tuneforge_attn_restore = None
