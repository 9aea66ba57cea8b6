"""The closed-form Wilson interval against scipy's binomtest (the reference it replaced)."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from lltfi_mlir.campaign.stats import wilson


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("trials", [1, 2, 3, 7, 50, 1000, 123457])
def test_wilson_equals_scipy(trials, confidence):
    for successes in sorted({0, 1, trials // 3, trials // 2, trials - 1, trials}):
        ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
        rate, low, high = wilson(successes, trials, confidence)
        assert rate == successes / trials
        assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)


def test_wilson_without_trials_is_nan():
    assert all(math.isnan(v) for v in wilson(0, 0))
