"""Paired differences and Holm's correction: exact values and, by simulation, their error rates."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from genctr.evaluation.paired import holm, paired_difference


def test_paired_difference_matches_scipy_and_a_hand_computed_interval() -> None:
    arm, base = [0.71, 0.73, 0.72, 0.74, 0.70], [0.70, 0.70, 0.71, 0.72, 0.70]
    d = np.subtract(arm, base)
    r = paired_difference(arm, base)
    assert r.n == 5 and r.mean == pytest.approx(d.mean()) and r.std == pytest.approx(d.std(ddof=1))
    assert r.p == pytest.approx(stats.ttest_rel(arm, base).pvalue)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (r.lo, r.hi) == pytest.approx((d.mean() - half, d.mean() + half))
    # an unpaired reading of the same numbers would be far less sure: pairing is what is tested
    assert r.p < stats.ttest_ind(arm, base).pvalue


def test_paired_difference_degenerate_cases() -> None:
    one = paired_difference([0.7], [0.6])
    assert one.mean == pytest.approx(0.1) and math.isnan(one.p) and math.isnan(one.lo)
    same = paired_difference([1.0, 2.0], [0.5, 1.5])  # every difference 0.5: no spread to test
    assert same.std == pytest.approx(0.0) and math.isnan(same.p)
    with pytest.raises(ValueError, match="one length"):
        paired_difference([0.1, 0.2], [0.1])


def test_holm_by_hand() -> None:
    # sorted: 0.01 * 4 = 0.04, 0.02 * 3 = 0.06, 0.03 * 2 = 0.06 (monotone), 0.5 * 1 = 0.5
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone
    got = holm([0.01, float("nan"), 0.04])  # NaN is not a test: m = 2
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)
    assert holm([]) == []


def _null_family(rng: np.random.Generator, reps: int, m: int, n: int, rho: float) -> np.ndarray:
    """p-values (reps, m) of m paired t-tests on n seeds where no arm differs from its base.

    The arms share one baseline per seed (as an ablation's arms do), so the tests are
    correlated with coefficient ``rho`` through a common per-seed term."""
    common = rng.standard_normal((reps, 1, n))
    own = rng.standard_normal((reps, m, n))
    d = math.sqrt(rho) * common + math.sqrt(1 - rho) * own  # (reps, m, n) differences, mean 0
    t = d.mean(-1) / (d.std(-1, ddof=1) / math.sqrt(n))
    return 2 * stats.t.sf(np.abs(t), n - 1)


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_holm_keeps_the_family_wise_error_under_the_null_by_simulation(rho: float) -> None:
    rng = np.random.default_rng(7)
    reps, m, n, alpha = 4000, 20, 5, 0.05
    p = _null_family(rng, reps, m, n, rho)
    # each test alone is valid...
    assert abs((p < alpha).mean() - alpha) < 0.01
    # ...but a 20-cell table read without correction claims something most of the time
    raw_fwer = (p < alpha).any(axis=1).mean()
    assert raw_fwer > 0.25
    adjusted = np.array([holm(row) for row in p])
    fwer = (adjusted <= alpha).any(axis=1).mean()
    # Holm: at most alpha (binomial sd at 4000 reps ~ 0.0035), and not far below Bonferroni's
    assert fwer <= alpha + 0.01
    assert fwer == pytest.approx(((p * m) <= alpha).any(axis=1).mean(), abs=0.01)


def test_holm_keeps_power_for_a_real_effect() -> None:
    """One arm truly better by 2 sd of the seed noise, 19 null arms: Holm still finds it."""
    rng = np.random.default_rng(11)
    reps, m, n = 2000, 20, 10
    p = _null_family(rng, reps, m, n, 0.0)
    d = rng.standard_normal((reps, n)) + 2.0
    p[:, 0] = 2 * stats.t.sf(np.abs(d.mean(-1) / (d.std(-1, ddof=1) / math.sqrt(n))), n - 1)
    adjusted = np.array([holm(row) for row in p])
    assert (adjusted[:, 0] <= 0.05).mean() > 0.9
