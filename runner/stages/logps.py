"""Per-token log-probs of the labelled (response) tokens, padding-free, for every preference stage.

TRL's DPO and KTO trainers call `model(..., labels=labels, fused_lm_head=True)` and read
`.log_probs` (batch x length-1); their `add_fused_lm_head` forward runs the decoder on the padded
batch and, off Triton devices, scores every position through the head (prompt and padding
included). `install(model, packed)` puts tuneforge's forward in its place, after the trainer's
__init__: it packs the batch's real tokens into one row (cpu_attention runs the examples one by
one, so no layer sees a pad), runs the head only at positions whose next token is labelled, with
TRL's own chunked log-prob kernel, and scatters the values back to the padded shape. The loss code
of the trainers stays untouched; tests/test_stages_logps.py checks the values against the padded
forward.
"""

from __future__ import annotations

OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")
MARK = "_tuneforge_packed_head"


def _kernel():
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, _ChunkedLogProbFunction

    return _ChunkedLogProbFunction, _CHUNKED_LOGPROB_CHUNK_SIZE


def _backbone(model):
    return getattr(model, model.base_model_prefix) if getattr(model, "base_model_prefix", "") else model.get_decoder()


def _plain_head(model) -> bool:
    """Only heads that compute head(hidden) (no softcap, no scale) get the compact path."""
    from ..head_loss import plain_head_config

    return plain_head_config(model.config)


def packed_inputs(input_ids, attention_mask):
    """(ids 1 x N, position ids 1 x N, cu_seq_lens, longest, flat index B x T) of the real tokens."""
    import torch

    mask = attention_mask.bool()
    lengths = mask.sum(1)
    flat = (mask.flatten().cumsum(0) - 1).view(mask.shape)  # each real token's place in the packed row
    positions = (mask.long().cumsum(1) - 1)[mask]
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    return input_ids[mask][None], positions[None], cu, int(lengths.max()), flat


def response_log_probs(model, input_ids, attention_mask, labels, packed: bool = True, outputs=OUTPUTS,
                       **kwargs):
    """TRL's FusedCausalLMOutput for `model` (a bare causal LM) with the head run only where the
    next token is labelled. packed: run the decoder on one padding-free row."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    kwargs = {k: v for k, v in kwargs.items() if v is not None and k != "use_cache"}
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    shift = labels[:, 1:]
    valid = (shift != -100) & attention_mask[:, 1:].bool()
    backbone = _backbone(model)
    if packed:
        ids, pos, cu, longest, flat = packed_inputs(input_ids, attention_mask)
        hidden = backbone(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest,
                          max_length_k=longest, use_cache=False, **kwargs).last_hidden_state[0]
        picked = hidden[flat[:, :-1][valid]]
    else:
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).last_hidden_state
        picked = hidden[:, :-1][valid]
    head = model.get_output_embeddings()
    fn, chunk = _kernel()
    per_token = fn.apply(picked.to(head.weight.device), head.weight, head.bias, shift[valid].to(head.weight.device),
                         1.0, chunk, None, 1.0, tuple(outputs))
    full = [None if x is None else x.new_zeros(valid.shape).masked_scatter(valid, x) for x in per_token]
    log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = full
    loss = -log_probs.sum() / valid.sum().clamp(min=1)
    return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=entropy, log_sum_sq_probs=log_sum_sq_probs,
                               mean_logits=mean_logits, is_top1=is_top1, label_mask=valid, aux_loss=None)


def install(model, packed: bool, outputs=OUTPUTS) -> bool:
    """Make `model(..., labels=, fused_lm_head=True)` use response_log_probs (model: the bare causal
    LM, under peft if any). Other calls go to the forward it had. False (nothing changed) for heads
    that are not plain (softcapping, logit scales, MoE): TRL's own fused head stays there."""
    import types

    if getattr(model, MARK, False) or not _plain_head(model):
        return False
    previous = model.forward

    def forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        if labels is not None and (not fused_lm_head or args or "input_ids" not in kwargs):
            kwargs["labels"] = labels
        if not fused_lm_head:
            return previous(*args, **kwargs)
        if args or "input_ids" not in kwargs:  # a call this forward does not know: TRL's fused head, if any
            return previous(*args, fused_lm_head=True, **kwargs)
        kwargs.pop("shift_labels", None)
        kwargs.pop("num_items_in_batch", None)
        ids, mask = kwargs.pop("input_ids"), kwargs.pop("attention_mask", None)
        return response_log_probs(self, ids, mask, labels, packed, outputs, **kwargs)

    model.forward = types.MethodType(forward, model)
    setattr(model, MARK, True)
    return True


def bare(model):
    """The causal LM under peft and accelerate wrappers."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def install_reward(model) -> bool:
    """The reward model's forward on padding-free rows: the decoder runs on the batch's real tokens
    packed into one row, the score head only at each row's scored token (transformers' rule: the
    last token that is not the pad token). Same scores as the padded forward
    (tests/test_stages_logps.py); used when packing is on."""
    import types

    import torch
    from transformers.modeling_outputs import SequenceClassifierOutputWithPast

    if getattr(model, MARK, False) or not hasattr(model, "score"):
        return False
    previous = model.forward

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if input_ids is None or attention_mask is None or kwargs.get("inputs_embeds") is not None or kwargs.get("labels") is not None:
            return previous(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        ids, pos, cu, longest, flat = packed_inputs(input_ids, attention_mask)
        hidden = _backbone(self)(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest,
                                 max_length_k=longest, use_cache=False).last_hidden_state[0]
        pad = self.config.pad_token_id
        scored = (input_ids != pad) if pad is not None else torch.ones_like(input_ids, dtype=torch.bool)
        index = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (index * (scored & attention_mask.bool())).argmax(-1)  # transformers' last non-pad token
        picked = hidden[flat[torch.arange(input_ids.shape[0], device=input_ids.device), last]]
        return SequenceClassifierOutputWithPast(logits=self.score(picked))

    model.forward = types.MethodType(forward, model)
    setattr(model, MARK, True)
    return True
