"""Scores of generated replies, and confidence intervals by paired bootstrap.

BLEU-4 is sacrebleu's corpus BLEU (tokenizer '13a', or 'zh' when the references are Chinese);
ROUGE-1/2/L are rouge-score's F-measures averaged over rows, with Chinese text segmented by jieba
first (as LLaMA-Factory does) because rouge-score's own tokenizer drops non-Latin characters;
exact match compares stripped, whitespace-collapsed text. Every score is kept as per-row
statistics so a difference between two models on the same rows gets a paired bootstrap interval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def has_cjk(texts) -> bool:
    return any(_CJK.search(t or "") for t in texts)


def normalize(text: str) -> str:
    return " ".join((text or "").split())


@dataclass
class Scored:
    """Per-row statistics (rows x k) and how they become one score."""

    stats: np.ndarray
    aggregate: Callable[[np.ndarray], float]

    def value(self) -> float:
        return float(self.aggregate(self.stats))


def _mean(stats: np.ndarray) -> float:
    return float(stats[:, 0].mean()) if len(stats) else float("nan")


def _ratio(stats: np.ndarray) -> float:
    return float(stats[:, 0].sum() / max(stats[:, 1].sum(), 1))


class _JiebaTokenizer:
    """rouge-score tokenizer for Chinese: jieba words, punctuation and spaces dropped."""

    def tokenize(self, text: str) -> list[str]:
        import jieba

        return [w for w in jieba.cut(text) if w.strip() and re.search(r"\w", w)]


def bleu(predictions: list[str], references: list[str]) -> Scored:
    from sacrebleu.metrics import BLEU

    metric = BLEU(tokenize="zh" if has_cjk(references) else "13a")
    stats = np.array(metric._extract_corpus_statistics(predictions, [references]), dtype=np.int64)

    def agg(s: np.ndarray) -> float:
        return float(metric._compute_score_from_stats(s.sum(0).tolist()).score) if len(s) else float("nan")

    return Scored(stats, agg)


def rouge(predictions: list[str], references: list[str]) -> dict[str, Scored]:
    from rouge_score import rouge_scorer

    tokenizer = _JiebaTokenizer() if has_cjk(references) else None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=tokenizer)
    rows = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    return {t: Scored(np.array([[r[t].fmeasure * 100] for r in rows]).reshape(-1, 1), _mean) for t in ROUGE_TYPES}


def exact_match(predictions: list[str], references: list[str]) -> Scored:
    hits = [[100.0 * (normalize(p) == normalize(r))] for p, r in zip(predictions, references)]
    return Scored(np.array(hits).reshape(-1, 1), _mean)


def generation_scores(predictions: list[str], references: list[str]) -> dict[str, Scored]:
    """bleu4, rouge1, rouge2, rougeL, exact_match (all 0-100)."""
    return {"bleu4": bleu(predictions, references), **rouge(predictions, references),
            "exact_match": exact_match(predictions, references)}


def mean_scored(values: list[float]) -> Scored:
    return Scored(np.array(values, dtype=np.float64).reshape(-1, 1), _mean)


def ratio_scored(numerators: list[float], denominators: list[float]) -> Scored:
    return Scored(np.array([numerators, denominators], dtype=np.float64).T.reshape(-1, 2), _ratio)


def paired_interval(tuned: Scored, base: Scored, iters: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of (tuned - base) by resampling the same rows for both (percentile bootstrap)."""
    n = len(tuned.stats)
    if n < 2 or len(base.stats) != n:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    diffs = np.empty(iters)
    for k in range(iters):
        idx = rng.integers(0, n, n)
        diffs[k] = tuned.aggregate(tuned.stats[idx]) - base.aggregate(base.stats[idx])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def interval(scored: Scored, iters: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of one score."""
    n = len(scored.stats)
    if n < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    vals = np.array([scored.aggregate(scored.stats[rng.integers(0, n, n)]) for _ in range(iters)])
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)
