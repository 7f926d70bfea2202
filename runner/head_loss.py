"""The causal-LM loss with the output head run only where a label is predicted, chunked.

The head (hidden x vocab, 49k wide on small models) and its fp32 softmax are a large share of a
small model's step; prompt and pad positions (label -100) never reach the loss, so their logits
are not computed. Usable by any stage that needs the token log-likelihood of labelled positions.
Whether a model's head is "plain" (logits = head(decoder output), standard loss) is read from
transformers' own APIs: get_output_embeddings(), get_decoder() and the config.
"""

from __future__ import annotations

from functools import lru_cache

# Tokens per chunk of the fused head: measured on this CPU (2000 labelled tokens, SmolLM2's 49k
# vocabulary, forward + backward): 404-428 ms at 128, 574-621 at 256, 794 at 512, 884-904 unfused.
HEAD_CHUNK = 128

# Config keys of models whose head computes more than head(hidden) + cross-entropy: logit
# softcapping (Gemma 2), logit scaling (Cohere, Granite), router/MoE auxiliary losses.
BENT_HEAD_KEYS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "router_aux_loss_coef",
                  "output_router_logits", "num_experts", "num_local_experts", "n_routed_experts")


def plain_head_config(config) -> bool:
    """True when a model with this config computes logits = head(decoder output) and the standard
    loss: a transformers-native causal LM (no remote code) with none of BENT_HEAD_KEYS set."""
    if getattr(config, "auto_map", None):  # remote code: its forward is unknown
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return not any(getattr(c, k, None) is not None for c in (config, text) for k in BENT_HEAD_KEYS)


@lru_cache(maxsize=None)
def plain_head_model_type(model_type: str) -> bool:
    """plain_head_config for a model type's native causal-LM class (the estimate's question,
    before any weights are loaded)."""
    try:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and plain_head_config(AutoConfig.for_model(model_type))
    except (ImportError, ValueError, KeyError):
        return False


def frozen_plain_head(base):
    """The output head when HeadCrossEntropy computes exactly the model's own loss: a frozen,
    bias-free nn.Linear of a transformers-native causal LM with a plain head (plain_head_config),
    whose decoder is a module of its own. None otherwise (a trained head, LoRA on the head, ...)."""
    import torch

    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear or head.bias is not None or head.weight.requires_grad:
        return None
    config = getattr(base, "config", None)
    if config is None or not plain_head_model_type(getattr(config, "model_type", "")) or not plain_head_config(config):
        return None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type) != type(base).__name__:
        return None  # a subclass or another head class: its forward may differ
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if not isinstance(decoder, torch.nn.Module) or decoder is base:
        return None
    return head


def accepts_logits_to_keep(model) -> bool:
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
    """The causal-LM loss with the head run only at labelled positions (the model's
    `logits_to_keep` with a boolean mask). Where the model's head is a plain frozen linear layer,
    the kept positions go through HeadCrossEntropy (chunked, no logits kept). Same loss value and
    gradients as the full computation, including the Trainer's num_items_in_batch normalisation."""
    import torch

    labels = inputs["labels"]
    shift = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    keep = shift != -100
    kept = shift[keep]
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = frozen_plain_head(base)
    if head is not None:  # the model runs as usual (its wrappers: autocast...), its head on no position
        seen = {}

        def grab(module, args, output):
            seen["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            kind = seen["hidden"].device.type
            seen["amp"] = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None

        hook = base.get_decoder().register_forward_hook(grab)
        try:
            model(**rest, logits_to_keep=torch.zeros_like(keep))
        finally:
            hook.remove()
        count = num_items_in_batch if num_items_in_batch is not None else max(kept.numel(), 1)
        return head_cross_entropy(seen["hidden"][keep], head.weight, kept, count, seen["amp"])
    if num_items_in_batch is not None:
        rest["num_items_in_batch"] = num_items_in_batch
    return model(**rest, logits_to_keep=keep, labels=kept, shift_labels=kept).loss


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
