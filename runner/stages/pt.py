"""Stage pt: continued pre-training. The data layer turns plain text into rows whose every token
is trained (no chat template; pt.concatenate joins documents into max_length blocks), so the
trainer is SFT's: packed, padding-free batches and the labelled-positions head loss."""

from __future__ import annotations

from .sft import build

__all__ = ["build"]
