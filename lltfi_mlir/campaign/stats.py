"""Binomial statistics for fault-injection rates (scipy.stats does the arithmetic)."""

from __future__ import annotations

import math

from scipy import stats


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(rate, low, high) with the Wilson score interval; NaNs when there are no trials."""
    if trials == 0:
        return math.nan, math.nan, math.nan
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return successes / trials, float(ci.low), float(ci.high)


def planned_trials(population: int, margin: float, confidence: float = 0.95, p: float = 0.5) -> int:
    """Leveugle et al. (DATE 2009): trials for a given error margin over a finite fault population."""
    if not 0 < margin < 1:
        raise ValueError("margin must be in (0, 1)")
    t = stats.norm.ppf(1 - (1 - confidence) / 2)
    n = population / (1 + margin**2 * (population - 1) / (t**2 * p * (1 - p)))
    return max(1, math.ceil(n))
