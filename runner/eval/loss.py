"""Loss and perplexity: the log-likelihood of exactly the tokens training learns from.

Rows are tokenized by the data layer's ChatTokenizer with the run's template and its data settings
(assistant tokens only for chat rows, every token for text), batched by length with right padding,
and the head is run only at labelled positions (the model's `logits_to_keep` mask, as
runner/head_loss.py does in training). Per-row sums are kept so the base/tuned difference gets a
paired confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.template import IGNORE


@dataclass
class RowLoss:
    nll: float  # sum of -log p over labelled tokens
    tokens: int


def chat_tokenizer(tokenizer, data_opts: dict):
    """The run's own ChatTokenizer: its template (saved with the weights) and its data settings."""
    from ..data.template import ChatTokenizer

    return ChatTokenizer(tokenizer, tokenizer.chat_template, int(data_opts.get("max_length", 1024)),
                         bool(data_opts.get("train_on_prompt", False)), bool(data_opts.get("last_turn_only", False)),
                         "keep_start" if data_opts.get("truncation") == "drop" else data_opts.get("truncation", "keep_start"))


def tokenize(items, chat) -> list:
    """Tokenized rows (input_ids, labels) for the items; rows the template refuses are left out."""
    from ..data.formats import RowError

    return [t for t in chat.encode_many([it.example for it in items]) if not isinstance(t, RowError)]


def row_losses(model, rows, batch_size: int = 16, device: str = "cpu") -> list[RowLoss]:
    """Per-row summed NLL and labelled-token count, in the rows' order."""
    import torch

    from ..head_loss import accepts_logits_to_keep

    masked_head = accepts_logits_to_keep(model)
    pad = 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))
    out: list[RowLoss | None] = [None] * len(rows)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            width = max(len(rows[i].input_ids) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            labels = torch.full((len(idx), width), IGNORE, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                n = len(rows[i].input_ids)
                ids[r, :n] = torch.tensor(rows[i].input_ids)
                labels[r, :n] = torch.tensor(rows[i].labels)
                attn[r, :n] = 1
            target = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)  # the token each position predicts
            keep = target != IGNORE
            ids, attn, keep, target = ids.to(device), attn.to(device), keep.to(device), target.to(device)
            if masked_head:
                logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=keep).logits
                logits = logits.reshape(-1, logits.shape[-1])
            else:
                logits = model(input_ids=ids, attention_mask=attn).logits[keep]
            nll = torch.nn.functional.cross_entropy(logits.float(), target[keep], reduction="none")
            row_of = keep.nonzero()[:, 0]
            sums = torch.zeros(len(idx), dtype=torch.float64, device=nll.device).index_add_(0, row_of, nll.double())
            counts = keep.sum(1)
            for r, i in enumerate(idx):
                out[i] = RowLoss(float(sums[r]), int(counts[r]))
    return out  # type: ignore[return-value]


def summarize(losses: list[RowLoss]) -> dict:
    """Token-weighted loss (as training reports it) and its perplexity."""
    import math

    tokens = sum(r.tokens for r in losses)
    loss = sum(r.nll for r in losses) / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700)), "tokens": tokens, "rows": len(losses)}
