"""mean_ci against scipy's t interval."""

import math

import numpy as np
import pytest
from scipy import stats

from benchmark.stats import mean_ci


@pytest.mark.parametrize("n", [2, 3, 10, 600])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_mean_ci_matches_scipy_t_interval(n, confidence):
    x = np.random.default_rng(n).normal(0.6, 0.1, n)
    mean, half = mean_ci(x, confidence)
    low, high = stats.t.interval(confidence, n - 1, loc=x.mean(), scale=stats.sem(x))
    assert mean == pytest.approx(x.mean(), abs=1e-12)
    assert mean - half == pytest.approx(low, rel=1e-10)
    assert mean + half == pytest.approx(high, rel=1e-10)


def test_mean_ci_default_is_95_percent():
    x = [0.2, 0.5, 0.9, 0.4]
    assert mean_ci(x) == mean_ci(x, 0.95)
    assert mean_ci(x)[1] == pytest.approx(stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2)


def test_mean_ci_degenerate_inputs():
    assert all(math.isnan(v) for v in mean_ci([]))
    mean, half = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(half)
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.0)
