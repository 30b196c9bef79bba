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
