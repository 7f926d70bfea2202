"""Each training stage's key figures beside the loss: which metrics.jsonl keys, short labels, formats.

metrics.jsonl keeps the figures under the names TRL 1.16's trainers log them (DPOTrainer:
rewards/margins, rewards/accuracies, ...; KTOTrainer: kl; RewardTrainer: accuracy, margin; the
experimental ORPO/CPO trainers: log_odds_ratio, nll_loss; evaluation adds the prefix eval_). This
module is the one place that says which of them each view shows: the rich panel and plain lines
(progress.py), `tuneforge watch`, `tuneforge plot` and the TUI monitor. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    key: str  # the key TRL logs (train records; eval records carry "eval_" + key)
    label: str  # short, for a status line
    kind: str = "num"  # "num" (signed, 3 decimals), "share" (a 0-1 fraction shown as %), "logp"

    def fmt(self, value: float) -> str:
        if not math.isfinite(value):
            return str(value)
        if self.kind == "share":
            return f"{value:.0%}"
        if self.kind == "logp":
            return f"{value:.1f}"
        return f"{value:+.3f}"


_MARGIN = Figure("rewards/margins", "margin")
_ACC = Figure("rewards/accuracies", "acc", "share")
_CHOSEN, _REJECTED = Figure("rewards/chosen", "chosen"), Figure("rewards/rejected", "rejected")

# The first two of a stage are its headline figures (plain lines, the TUI's first row); all of them
# go in the rich panel and on the plot's second panel.
FIGURES: dict[str, tuple[Figure, ...]] = {
    "pt": (),
    "sft": (),
    "rm": (Figure("accuracy", "acc", "share"), Figure("margin", "margin"), Figure("mean_reward", "mean reward")),
    "dpo": (_MARGIN, _ACC, _CHOSEN, _REJECTED, Figure("logps/chosen", "logp chosen", "logp"),
            Figure("logps/rejected", "logp rejected", "logp")),
    # KTOTrainer logs the desirable rows' rewards as rewards/chosen, the undesirable ones' as rewards/rejected
    "kto": (Figure("kl", "kl"), Figure("rewards/margins", "margin"), Figure("rewards/chosen", "desirable"),
            Figure("rewards/rejected", "undesirable")),
    "orpo": (_MARGIN, _ACC, Figure("log_odds_ratio", "log-odds"), Figure("nll_loss", "nll")),
    "simpo": (_MARGIN, _ACC, _CHOSEN, _REJECTED, Figure("nll_loss", "nll")),
}
HEADLINE = 2
# A record's own keys tell the stage when the run's recipe cannot be read (checked in this order).
_SIGNATURE = (("kl", "kto"), ("log_odds_ratio", "orpo"), ("accuracy", "rm"), ("rewards/margins", "dpo"))


def guess_stage(rec: dict[str, Any]) -> str:
    """The stage whose figures a record carries ('sft' when it carries none)."""
    for key, stage in _SIGNATURE:
        if key in rec or f"eval_{key}" in rec:
            return stage
    return "sft"


def figures(stage: str | None) -> tuple[Figure, ...]:
    return FIGURES.get(stage or "sft", ())


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def values(rec: dict[str, Any], stage: str | None = None, evaluation: bool = False,
           headline: bool = False) -> list[tuple[str, str]]:
    """(label, formatted value) of the stage's figures present in a record: its training figures, or
    with `evaluation` its eval_ ones. stage None: guessed from the record's keys."""
    figs = figures(stage or guess_stage(rec))
    if headline:
        figs = figs[:HEADLINE]
    prefix = "eval_" if evaluation else ""
    return [(f.label, f.fmt(float(rec[prefix + f.key]))) for f in figs if _num(rec.get(prefix + f.key))]


def describe(rec: dict[str, Any], stage: str | None = None, headline: bool = False, sep: str = " ") -> list[str]:
    """'margin +0.412', 'acc 75%', ... for a record's training figures, then 'eval margin ...' for its
    eval ones: what a status line shows."""
    out = [f"{label}{sep}{value}" for label, value in values(rec, stage, headline=headline)]
    out += [f"eval {label}{sep}{value}" for label, value in values(rec, stage, evaluation=True, headline=headline)]
    return out


def series(records: list[dict[str, Any]], stage: str | None = None) -> dict[Figure, dict[str, list[tuple[int, float]]]]:
    """Per figure, its (step, value) points: {"train": [...], "eval": [...]} (for the plot)."""
    if stage is None:
        stage = next((s for s in map(guess_stage, records) if s != "sft"), "sft")
    out: dict[Figure, dict[str, list[tuple[int, float]]]] = {}
    for f in figures(stage):
        pts = {"train": [], "eval": []}
        for rec in records:
            for part, key in (("train", f.key), ("eval", "eval_" + f.key)):
                v = rec.get(key)
                if _num(v) and math.isfinite(v) and rec.get("step") is not None:
                    pts[part].append((rec["step"], float(v)))
        if pts["train"] or pts["eval"]:
            out[f] = pts
    return out


def run_stage(run_path: str | Path) -> str | None:
    """A run's stage: status.json's 'stage' when the run wrote one, else recipe.yaml's; None when
    neither says (the views then read it from the records' keys)."""
    import json

    import yaml

    path = Path(run_path)
    for name, parse in (("status.json", json.loads), ("recipe.yaml", yaml.safe_load)):
        try:
            stage = (parse((path / name).read_text(encoding="utf-8")) or {}).get("stage")
        except (OSError, ValueError, AttributeError, yaml.YAMLError):
            continue
        if isinstance(stage, str) and stage in FIGURES:
            return stage
    return None


# Keys a Trainer logs that a record already holds under its own name, or that only repeat the clock.
_MAPPED = {"loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "total_flos", "num_tokens", "eval_num_tokens",
           "train_loss", "train_runtime", "eval_runtime", "num_input_tokens_seen"}


def extra_logs(logs: dict[str, Any]) -> dict[str, float]:
    """The numeric figures of a Trainer's log call that metrics.jsonl keeps under their TRL names (the
    stage's own figures: rewards/*, logps/*, kl, accuracy, margin, ...)."""
    return {k: v for k, v in logs.items()
            if k not in _MAPPED and _num(v) and not k.endswith(("_per_second", "_runtime"))}
