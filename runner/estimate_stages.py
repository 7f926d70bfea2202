"""What each training stage adds to a step, for the memory/time estimate (estimate.py).

sft trains one sequence per row. rm, dpo, orpo and simpo train two per row (prompt+chosen and
prompt+rejected in the same batch). dpo and kto compare with a frozen reference: 'base' is the same
weights with the adapter off (one extra no-grad forward per sequence, no second copy), 'model' a
second copy of the weights (and its forward), 'precomputed' a one-off pass over the data before
training and nothing per step. KTO adds a no-grad forward of the policy over mismatched
prompt/reply pairs for its KL term (TRL 1.16's KTOTrainer, loss_type 'kto'), and the reference runs
on those too. pt trains packed max_length blocks, every token labelled. rm scores the last token
with a one-output head: no vocabulary logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PAIR_STAGES = ("rm", "dpo", "orpo", "simpo")


@dataclass
class StagePlan:
    seqs_per_row: int = 1  # sequences trained per data row
    no_grad_forwards: float = 0.0  # extra forward passes (no gradient) per trained sequence and step
    reference: str | None = None  # 'base' | 'model' | 'precomputed'
    reference_path: str | None = None  # kind 'model': what is loaded beside the policy
    precompute_forwards: float = 0.0  # forward passes per sequence, once before training (precomputed)
    vocab_head: bool = True  # False for rm: a one-output score head instead of the LM head
    notes: list[str] = field(default_factory=list)


def plan(recipe) -> StagePlan:
    stage = recipe.stage
    p = StagePlan()
    if stage in PAIR_STAGES:
        p.seqs_per_row = 2
        p.notes.append(f"stage {stage}: two sequences per row (prompt+chosen, prompt+rejected)")
    if stage == "rm":
        p.vocab_head = False
    if stage == "pt":
        how = "packed max_length blocks" if recipe.pt.concatenate else "one example per document"
        p.notes.append(f"stage pt: plain text in {how}, every token trained")
    ref = recipe.dpo.reference if stage == "dpo" else recipe.kto.reference if stage == "kto" else None
    if ref is None:
        return p
    kl = stage == "kto" and recipe.kto.loss_type == "kto"  # the KL term's mismatched pairs
    passes = 2.0 if kl else 1.0  # the reference sees the rows (and the KL pairs)
    p.reference, p.reference_path = ref.kind, ref.model
    p.no_grad_forwards = 1.0 if kl else 0.0  # the policy's own no-grad pass over the KL pairs
    if ref.kind == "precomputed":
        p.precompute_forwards = passes
        p.notes.append(f"{stage}.reference precomputed: one pass over the data before training, no reference per step")
    else:
        p.no_grad_forwards += passes
        what = ("the adapter switched off: an extra no-grad forward per step, no second copy" if ref.kind == "base"
                else f"a second, frozen copy of the weights ({ref.model}) and its no-grad forward per step")
        p.notes.append(f"{stage}.reference {ref.kind}: {what}")
    if kl:
        p.notes.append("kto: a no-grad forward over mismatched prompt/reply pairs per step (the KL term)")
    return p


def pt_blocks(lengths: list[int], n_examples: int, max_length: int) -> tuple[list[int], int]:
    """(block lengths of a sample, blocks in the whole data) when pt concatenates documents into
    max_length blocks: the same tokens, no padding."""
    total_sample = sum(lengths)
    if not total_sample:
        return [], 0
    blocks = [max_length] * (total_sample // max_length) + ([total_sample % max_length] if total_sample % max_length else [])
    scale = n_examples / max(len(lengths), 1)
    return blocks, math.ceil(total_sample * scale / max_length)
