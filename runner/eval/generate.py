"""Batched greedy generation: prompts rendered with the run's template, left-padded, KV-cached.

Prompts are sorted by length so a batch pads little; each finished batch is appended to the
predictions file at once, so a crash mid-eval keeps every prediction written so far.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The ids a reply is generated after: the chat template with the generation prompt (as chat does)."""
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(enc["input_ids"])


def greedy_kwargs(tokenizer, max_new_tokens: int) -> dict:
    """The generate() arguments every path shares (the benchmark's plain loop uses them too)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return dict(max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                pad_token_id=pad, use_cache=True)


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 128, batch_size: int = 16,
             device: str = "cpu", on_batch: Callable[[list[tuple[int, str]]], None] | None = None) -> list[str]:
    """Greedy replies to token-id prompts, in the prompts' order. `on_batch` gets (index, text) pairs
    as soon as each batch is done."""
    import torch

    kwargs = greedy_kwargs(tokenizer, max_new_tokens)
    pad = kwargs["pad_token_id"]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str | None] = [None] * len(prompts)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                n = len(prompts[i])
                ids[r, width - n:] = torch.tensor(prompts[i])
                attn[r, width - n:] = 1
            gen = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), **kwargs)
            texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
            done = []
            for i, text in zip(idx, texts):
                out[i] = text.strip()
                done.append((i, out[i]))
            if on_batch is not None:
                on_batch(done)
    return out  # type: ignore[return-value]


class PredictionWriter:
    """Appends predictions to a JSONL file as they are made (flushed per batch)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, records: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
