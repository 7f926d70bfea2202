"""Padding-free batches ("packing"), contamination-free: a batch becomes one row with per-example
position ids and no attention mask, and the first label of every example is masked.

On CPU, cpu_attention runs attention example by example (gathered into a padded block, causal, and
scattered back), so every other layer computes real tokens only; elsewhere transformers builds a
block-diagonal mask from the position ids or passes sequence boundaries to flash-attention.
tests/test_packing.py checks that packed logits equal the examples run one by one.
"""

from __future__ import annotations

from .cpu_attention import CPU_ATTENTION


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
    """The batch collator: padding-free rows when packed, else rows padded to the longest."""
    if packed:
        from transformers import DataCollatorWithFlattening

        # sequence boundaries as cu_seq_lens: cpu_attention and flash-attention use them as given
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100, return_flash_attn_kwargs=True)
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
