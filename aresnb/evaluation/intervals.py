"""95% intervals for the shares and means the figures and the report show."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (sound for small n and 0 or n hits)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_mean_interval(values: Sequence[float], n_samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean of ``values`` (seeded)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    draws = x[np.random.default_rng(seed).integers(0, len(x), size=(n_samples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return (float(lo), float(hi))


def hierarchical_bootstrap(groups: Sequence[tuple[Sequence[float], Sequence[float]]], n_samples: int = 2000,
                           seed: int = 0, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile interval of a pooled ratio of sums ``sum(num) / sum(den)`` over seeds, resampling
    seeds first and then the problems within each drawn seed (a hierarchical bootstrap).

    ``groups`` holds one ``(num, den)`` pair of per-problem arrays per seed: e.g. a win as (1, 1),
    a tie as (0, 1) for a win rate; (win, decided) for the decisive rate; (true claims, sentences) for
    a claim share; (correct_a - correct_b, 1) for an accuracy difference. Problems of one seed are
    not independent of the seed's model: resampling them as if they were (a flat bootstrap over all
    problems) ignores the spread between seeds, which with few seeds is most of the uncertainty.
    With one seed this is the bootstrap over its problems. (None, None) when nothing has a weight.
    """
    data = [(np.asarray(n, dtype=float), np.asarray(d, dtype=float)) for n, d in groups if len(d)]
    if not data or sum(float(d.sum()) for _, d in data) == 0:
        return (None, None)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_samples)
    k = len(data)
    for b in range(n_samples):
        num = den = 0.0
        for g in rng.integers(0, k, size=k):  # seeds, with replacement
            n, d = data[g]
            idx = rng.integers(0, len(d), size=len(d))  # then that seed's problems
            num += n[idx].sum()
            den += d[idx].sum()
        stats[b] = num / den if den else np.nan
    stats = stats[~np.isnan(stats)]
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def pooled_ratio(groups: Sequence[tuple[Sequence[float], Sequence[float]]]) -> float | None:
    """``sum(num) / sum(den)`` over every problem of every seed (the point estimate of the above)."""
    num = sum(float(np.sum(n)) for n, _ in groups)
    den = sum(float(np.sum(d)) for _, d in groups)
    return num / den if den else None
