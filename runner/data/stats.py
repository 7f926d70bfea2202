"""Numbers about prepared data: token-length percentiles, a histogram, and the padding a batch
size wastes. Pure functions over `Tokenized` rows, shared by `tuneforge data stats` and tests."""

from __future__ import annotations

import math
from dataclasses import dataclass


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return 0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def padding_waste(lengths: list[int], batch_size: int) -> float:
    """Share of padded positions when rows are batched in this order and padded to the longest."""
    padded = real = 0
    for b in range(0, len(lengths), batch_size):
        batch = lengths[b:b + batch_size]
        padded += max(batch) * len(batch)
        real += sum(batch)
    return 0.0 if not padded else 1 - real / padded


def histogram(values: list[int], bins: int = 10) -> list[tuple[int, int, int]]:
    """(low, high, count) buckets of equal width covering min..max."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = max(1, math.ceil((hi - lo + 1) / bins))
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, (v - lo) // width)] += 1
    return [(lo + i * width, lo + (i + 1) * width - 1, c) for i, c in enumerate(counts) if lo + i * width <= hi]


@dataclass
class LengthStats:
    count: int
    tokens: int
    trained: int
    p50: int
    p90: int
    p95: int
    p99: int
    max: int
    mean: float


def length_stats(lengths: list[int], trained: list[int]) -> LengthStats:
    s = sorted(lengths)
    return LengthStats(len(s), sum(s), sum(trained), percentile(s, 50), percentile(s, 90), percentile(s, 95),
                       percentile(s, 99), s[-1] if s else 0, sum(s) / len(s) if s else 0.0)
