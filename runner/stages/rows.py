"""tuneforge's tokenized rows (runner/data: Tokenized) as the columns TRL's trainers read.

The data layer already rendered the chat template and marked the trained tokens exactly; here
each row is only cut where the trainers want it cut: a shared prompt, then each reply up to its
last trained token (the template's text after the reply's end-of-turn is never scored).
"""

from __future__ import annotations

IGNORE = -100


def first_label(labels: list[int]) -> int:
    return next((i for i, x in enumerate(labels) if x != IGNORE), len(labels))


def reply_end(labels: list[int]) -> int:
    """One past the last trained token."""
    return next((len(labels) - i for i, x in enumerate(reversed(labels)) if x != IGNORE), 0)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prompt_len(t) -> int:
    """Tokens the two replies of a pair share before the first trained token of either."""
    known = getattr(t, "prompt_len", None)
    if known is not None:
        return known
    n = first_label(t.labels)
    if t.rejected_ids is not None:
        n = min(n, first_label(t.rejected_labels), common_prefix(t.input_ids, t.rejected_ids))
    return n


def pair_columns(items) -> dict[str, list]:
    """DPO / CPO / ORPO rows: prompt_ids, chosen_ids, rejected_ids (replies cut after their last trained token)."""
    cols: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for t in items:
        p = prompt_len(t)
        cols["prompt_ids"].append(t.input_ids[:p])
        cols["chosen_ids"].append(t.input_ids[p:max(reply_end(t.labels), p + 1)])
        cols["rejected_ids"].append(t.rejected_ids[p:max(reply_end(t.rejected_labels), p + 1)])
    return cols


def reward_columns(items) -> dict[str, list]:
    """RewardTrainer rows: the whole prompt+chosen and prompt+rejected sequences, scored at their end."""
    cols = {"chosen_ids": [t.input_ids[:reply_end(t.labels)] for t in items],
            "rejected_ids": [t.rejected_ids[:reply_end(t.rejected_labels)] for t in items]}
    margins = [getattr(t, "margin", None) for t in items]
    if items and all(m is not None for m in margins):  # rm.margin_column, where the data layer carries it
        cols["margin"] = [float(m) for m in margins]
    return cols


def unpair(items) -> list:
    """KTO from pairs: each pair becomes a desirable (chosen) and an undesirable (rejected) row."""
    from dataclasses import replace

    out = []
    for t in items:
        if t.rejected_ids is None:
            out.append(t)
            continue
        out.append(replace(t, rejected_ids=None, rejected_labels=None, label=True))
        out.append(replace(t, input_ids=t.rejected_ids, labels=t.rejected_labels, rejected_ids=None,
                           rejected_labels=None, label=False))
    return out


def feedback_columns(items, kl_batch: int | None = None) -> dict[str, list]:
    """KTOTrainer rows: prompt_ids, completion_ids, label; with kl_batch, KL_completion_ids are the
    completions rotated by one inside each block of kl_batch rows (TRL's mismatched pairs)."""
    cols: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "label": []}
    for t in items:
        p = first_label(t.labels)
        cols["prompt_ids"].append(t.input_ids[:p])
        cols["completion_ids"].append(t.input_ids[p:max(reply_end(t.labels), p + 1)])
        cols["label"].append(bool(t.label))
    if kl_batch:
        comp, kl = cols["completion_ids"], []
        for s in range(0, len(comp), kl_batch):
            block = comp[s:s + kl_batch]
            kl += [block[-1], *block[:-1]]
        cols["KL_completion_ids"] = kl
    return cols


def lengths(cols: dict[str, list], *keys: str) -> list[int]:
    """Each row's tokens over the given columns (for length-grouped batches)."""
    return [sum(len(cols[k][i]) for k in keys) for i in range(len(cols[keys[0]]))]


def fingerprint(cols: dict[str, list]) -> str:
    """A hash of the token columns (half of the precomputed reference's cache key)."""
    import hashlib
    import json

    h = hashlib.sha256()
    for k in sorted(cols):
        h.update(k.encode())
        h.update(json.dumps(cols[k], separators=(",", ":")).encode())
    return h.hexdigest()[:20]
