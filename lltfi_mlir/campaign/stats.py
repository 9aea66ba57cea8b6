"""Binomial statistics for fault-injection rates (scipy.stats does the arithmetic)."""

from __future__ import annotations

import functools
import math

from scipy import stats


@functools.lru_cache(maxsize=8)
def _z(confidence: float) -> float:
    return float(stats.norm.ppf(1 - (1 - confidence) / 2))


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(rate, low, high) with the Wilson score interval; NaNs when there are no trials.

    The score interval itself, as scipy's `binomtest(...).proportion_ci(method="wilson")` computes it
    (tests compare the two): binomtest also computes an exact p-value, which made a summary of a
    campaign with many layers take seconds."""
    if trials == 0:
        return math.nan, math.nan, math.nan
    z = _z(confidence)
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == trials else min(1.0, center + half)
    return p, low, high


def planned_trials(population: int, margin: float, confidence: float = 0.95, p: float = 0.5) -> int:
    """Leveugle et al. (DATE 2009): trials for a given error margin over a finite fault population."""
    if not 0 < margin < 1:
        raise ValueError("margin must be in (0, 1)")
    t = stats.norm.ppf(1 - (1 - confidence) / 2)
    n = population / (1 + margin**2 * (population - 1) / (t**2 * p * (1 - p)))
    return max(1, math.ceil(n))
