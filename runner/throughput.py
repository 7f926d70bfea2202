"""Speed figures, defined once (docs/runs.md, "metrics.jsonl"):

- train_s: seconds this process spent in training steps (forward, backward, optimizer step; from
  the Trainer's on_step_begin to its on_step_end): loading, evaluation, logging and checkpoint
  saving are not in it. elapsed_s stays wall time since the run started.
- tokens_per_s: training tokens this process has seen / train_s. Every figure shown (metrics.jsonl,
  the live panel, plain lines, the end-of-run summary, status.json) is this one.
- mfu: tokens_per_s x model FLOPs per token / this machine's matmul rate in the run's precision,
  measured at start. FLOPs per token = 4 N + 2 N_trainable (forward 2N, backward through the
  activations 2N, weight gradients 2 per trainable weight), N the weights of the transformer
  blocks: the input embedding is a lookup, and the output head runs only at labelled positions
  (head_loss.py), so neither counts; attention scores are not counted either.
"""

from __future__ import annotations

import time


class TrainClock:
    """Seconds inside training steps and the tokens trained, for this process."""

    def __init__(self):
        self.seconds, self.tokens_at_start, self._began = 0.0, 0, None

    def start(self, tokens_seen: int) -> None:
        self.tokens_at_start = tokens_seen  # > 0 when resumed: this process's tokens only

    def step_begin(self) -> None:
        self._began = time.perf_counter()

    def step_end(self) -> None:
        if self._began is not None:
            self.seconds += time.perf_counter() - self._began
            self._began = None

    def tokens(self, tokens_seen: int) -> int:
        return max(tokens_seen - self.tokens_at_start, 0)

    def tokens_per_s(self, tokens_seen: int) -> float | None:
        return round(self.tokens(tokens_seen) / self.seconds, 1) if self.seconds > 0 else None


def flops_per_token(model) -> float:
    """Model FLOPs per trained token: 4 N + 2 N_trainable over the transformer blocks' weights
    (bitsandbytes' 4-bit weights count as the weights they stand for)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    skip = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(base, get, lambda: None)()
        if module is not None:
            skip |= {id(p) for p in module.parameters()}
    n = trainable = 0
    for p in base.parameters():
        if id(p) in skip:
            continue
        count = p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)  # two 4-bit weights per byte
        n += count
        trainable += count if p.requires_grad else 0
    return 4.0 * n + 2.0 * trainable


def matmul_rate(device: str, precision: str) -> float | None:
    """This machine's dense matmul rate (FLOP/s) in the precision the run computes in (~0.3 s)."""
    from .estimate import matmul_flops

    try:
        return matmul_flops(precision, device=device)
    except Exception:  # noqa: BLE001 - a missing figure never fails a run
        return None


def mfu(tokens_per_s: float | None, per_token: float, rate: float | None) -> float | None:
    if not tokens_per_s or not rate:
        return None
    return round(tokens_per_s * per_token / rate, 4)
