"""Always-valid canary statistics: the confidence sequence, CUPED, the vectorised rules, and the A/A
error rates of both methods measured by simulation over many looks."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from genctr.errors import ConfigError
from genctr.monitoring.ab_simulation import CanarySimulation, judge, simulate, summarise
from genctr.monitoring.analysis import ABAnalysis, SRMResult, Uplift, uplift, uplift_arrays
from genctr.monitoring.cuped import RatioSums, log_ratio
from genctr.monitoring.decision import CanaryPolicy, decide, statistical_actions
from genctr.monitoring.sequential import (
    always_valid_p,
    cs_multiplier,
    fixed_multiplier,
    interval_multiplier,
    mixture_rho2,
    optimal_x,
)
from genctr.monitoring.units import covariate

ALPHA = 0.05
SEQ = CanaryPolicy()
FIXED = dataclasses.replace(SEQ, method="fixed_horizon")


def binomial_margin(p: float, runs: int, sds: float = 3.0) -> float:
    """``sds`` standard deviations of a rate ``p`` estimated from ``runs`` runs (3 sd: ~0.1 % one-sided)."""
    return sds * math.sqrt(p * (1 - p) / runs)


# ----------------------------------------------------------------------------- the boundary
def test_cs_multiplier_matches_the_published_boundary_and_is_narrowest_at_n_star() -> None:
    rho2 = mixture_rho2(10_000, ALPHA)
    n = np.array([2_000, 5_000, 8_000, 10_000, 12_500, 20_000, 1_000_000])
    m = cs_multiplier(n, ALPHA, rho2)
    # Waudby-Smith et al. 2023, Thm 2.2: half-width
    #   sigma * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) * log(sqrt(n rho^2 + 1) / alpha)),
    # i.e. sqrt(n) times that in standard errors sigma / sqrt(n)
    published = np.sqrt(n) * np.sqrt(2 * (n * rho2 + 1) / (n**2 * rho2) * np.log(np.sqrt(n * rho2 + 1) / ALPHA))
    assert m == pytest.approx(published, rel=1e-12)
    assert m.argmin() == 3 and m[3] == pytest.approx(math.sqrt(optimal_x(ALPHA) + 1))  # 3.04 at alpha 0.05
    assert optimal_x(ALPHA) == pytest.approx(-2 * math.log(ALPHA) + math.log(1 - 2 * math.log(ALPHA)), rel=0.05)
    assert (m > fixed_multiplier(ALPHA)).all() and fixed_multiplier(ALPHA) == pytest.approx(1.959964, abs=1e-6)
    assert interval_multiplier("fixed_horizon", n, ALPHA, 10_000) == pytest.approx(np.full(7, 1.959964), abs=1e-6)
    # the always-valid p-value is below alpha exactly where the sequence excludes 0
    z = np.linspace(0.0, 6.0, 6_001)
    assert ((always_valid_p(z, 10_000, rho2) < ALPHA) == (z > m[3])).all()
    assert np.isnan(cs_multiplier(0, ALPHA, rho2))
    with pytest.raises(ConfigError, match="n\\*"):
        mixture_rho2(0, ALPHA)
    with pytest.raises(ConfigError, match="interval method"):
        interval_multiplier("bayes", n, ALPHA, 10_000)


def _arm_users(rng: np.random.Generator, runs: int, n: int, lift: float) -> tuple[np.ndarray, np.ndarray]:
    """(runs, n) per-user impressions and clicks: heavy-tailed activity, Beta(0.5, 9.5) CTR."""
    imps = 1 + rng.negative_binomial(1.0, 1 / 20, size=(runs, n))
    return imps, rng.binomial(imps, np.minimum(rng.beta(0.5, 9.5, size=(runs, n)) * (1 + lift), 1.0))


def test_confidence_sequence_covers_at_a_fixed_n_and_contains_the_fixed_interval() -> None:
    rng = np.random.default_rng(11)
    runs, n, true = 1_500, 1_000, 0.05
    imps_c, clicks_c = _arm_users(rng, runs, n, 0.0)
    imps_t, clicks_t = _arm_users(rng, runs, n, true)
    u = uplift_arrays(RatioSums.of(clicks_t, imps_t), RatioSums.of(clicks_c, imps_c), alpha=ALPHA,
                      method="sequential", tuning_n=2 * n)  # (runs,) each
    cs = np.mean((u["cs_lo"] <= true) & (true <= u["cs_hi"]))
    fixed = np.mean((u["fixed_lo"] <= true) & (true <= u["fixed_hi"]))
    assert abs(fixed - 0.95) <= binomial_margin(0.05, runs), fixed  # the delta method itself is calibrated
    assert cs >= 1 - ALPHA and cs > fixed + 0.03, (cs, fixed)  # one look: far above the nominal level
    assert ((u["cs_lo"] < u["fixed_lo"]) & (u["fixed_hi"] < u["cs_hi"])).all()
    assert (u["lo"] == u["cs_lo"]).all() and (u["p_value"] <= 1).all()
    # the CS's always-valid p-value and interval agree run by run
    assert ((u["p_value"] < ALPHA) == ((u["cs_lo"] > 0) | (u["cs_hi"] < 0))).all()


# ----------------------------------------------------------------------------- A/A over 24 looks
@pytest.mark.parametrize("unit,users", [("user", 4_000), ("request", 1_000)])
def test_aa_false_decisions_stay_within_alpha_with_24_looks_and_fixed_horizon_does_not(unit: str, users: int) -> None:
    runs = 1_000
    looks = simulate(CanarySimulation(runs=runs, looks=24, users=users, unit=unit, seed=3))
    seq, fixed = summarise(judge(looks, SEQ)), summarise(judge(looks, FIXED))
    # alpha is split alpha/2 per side: promotion reads the CTR interval's lower side only, rollback the
    # upper side of CTR or RPM (alpha/2 each, union <= alpha); margins are 3 binomial sd of that rate
    promote_bound = ALPHA / 2 + binomial_margin(ALPHA / 2, runs)  # 0.0398 at 1,000 runs
    rollback_bound = ALPHA + binomial_margin(ALPHA, runs)  # 0.0707
    assert seq["promote_rate"] <= promote_bound and seq["rollback_rate"] <= rollback_bound, seq
    # the same data and rules with one look's interval at every look: inflated far past the same bounds
    assert fixed["promote_rate"] > promote_bound + 0.03 and fixed["rollback_rate"] > rollback_bound, fixed
    # time-uniform coverage: the A/A CTR sequence holds 0 at every look of >= 1 - alpha of the runs
    v = judge(looks, SEQ)
    covered = np.all(~(v.ctr_lo > 0) & ~(v.ctr_hi < 0), axis=1)  # NaN (no data yet) counts as covering
    assert covered.mean() >= 1 - ALPHA - binomial_margin(ALPHA, runs), covered.mean()


def test_a_clearly_better_canary_is_promoted_by_the_sequential_rule() -> None:
    looks = simulate(CanarySimulation(runs=300, looks=24, users=8_000, ctr_lift=0.25, seed=4))
    v = judge(looks, SEQ)
    s = summarise(v)
    assert s["promote_rate"] > 0.9 and s["rollback_rate"] == 0, s  # a CS that never decides would fail here
    assert 1 < s["promote_median_look"] < 24
    assert (v.first_look[v.first_action == "promote"] >= 1).all()


# ----------------------------------------------------------------------------- CUPED
def test_cuped_narrows_the_interval_and_leaves_the_estimate_unbiased() -> None:
    runs, lift = 600, 0.05
    looks = simulate(CanarySimulation(runs=runs, looks=1, users=8_000, ctr_lift=lift, seed=5))
    t, c = looks.ctr
    raw, adj = log_ratio(t, c, cuped=False), log_ratio(t, c, cuped=True)  # (runs, 1)
    ratio = (adj.se / raw.se).ravel()
    assert np.median(ratio) < 0.85 and (ratio < 1.0).mean() > 0.95, np.median(ratio)
    truth = math.log1p(lift)
    for est in (raw.estimate.ravel(), adj.estimate.ravel()):  # both centred on the truth
        assert abs(est.mean() - truth) < 3 * est.std(ddof=1) / math.sqrt(runs), est.mean()
    assert adj.estimate.std() < 0.9 * raw.estimate.std()  # the spread shrinks, not only the reported SE
    # the reported SE matches the spread of the estimates (calibrated after adjustment too)
    assert float(np.mean(adj.se)) / float(np.std(adj.estimate, ddof=1)) == pytest.approx(1.0, abs=0.1)
    # no pre-period at all (every user new): covariate 0 everywhere, theta 0, nothing changes
    fresh = simulate(CanarySimulation(runs=50, looks=1, users=2_000, new_user_share=1.0, seed=6))
    f_raw, f_adj = log_ratio(*fresh.ctr, cuped=False), log_ratio(*fresh.ctr, cuped=True)
    assert (f_adj.theta == 0).all() and np.array_equal(f_adj.se, f_raw.se)


def test_cuped_with_a_useless_covariate_changes_little_and_stays_unbiased() -> None:
    rng = np.random.default_rng(7)
    runs, n = 800, 1_000
    imps_c, clicks_c = _arm_users(rng, runs, n, 0.0)
    imps_t, clicks_t = _arm_users(rng, runs, n, 0.0)
    noise_t, noise_c = rng.normal(size=(runs, n)), rng.normal(size=(runs, n))  # independent of everything
    u = uplift_arrays(RatioSums.of(clicks_t, imps_t, noise_t), RatioSums.of(clicks_c, imps_c, noise_c),
                      alpha=ALPHA, method="fixed_horizon", cuped=True)
    assert np.abs(u["variance_reduction"]).max() < 0.02  # ~1/n by chance, never a real gain
    covered = np.mean((u["fixed_lo"] <= 0) & (0 <= u["fixed_hi"]))
    assert abs(covered - 0.95) <= binomial_margin(0.05, runs), covered


def test_cuped_uplift_on_unit_arrays_and_the_covariate_of_units_without_history() -> None:
    rng = np.random.default_rng(8)
    n = 4_000
    pre_rate = rng.beta(0.5, 9.5, 2 * n)  # per-user CTR, shared by both periods
    imps = 1 + rng.poisson(20, 2 * n)
    clicks = rng.binomial(imps, pre_rate)
    pre = pd.DataFrame({"impressions": imps * 1.0, "clicks": rng.binomial(imps, pre_rate) * 1.0,
                        "revenue": 0.0}, index=pd.Index(np.arange(2 * n), name="user_id"))
    cov = covariate(pre, np.arange(2 * n), "user", "ctr")
    arm = np.arange(2 * n) < n
    plain = uplift(clicks[~arm], imps[~arm], clicks[arm], imps[arm], ALPHA)
    adjusted = uplift(clicks[~arm], imps[~arm], clicks[arm], imps[arm], ALPHA, cov_t=cov[~arm], cov_c=cov[arm])
    assert adjusted.cuped and adjusted.variance_reduction > 0.3 and adjusted.se_log < plain.se_log
    assert adjusted.hi - adjusted.lo < 0.85 * (plain.hi - plain.lo)
    # users absent from the pre-period: covariate 0 (user unit: no excess clicks; request unit: the pooled CTR)
    unknown = np.array([10 * n, 10 * n + 1])
    for unit in ("user", "request"):
        assert (covariate(pre, unknown, unit, "ctr") == 0).all()
    r_pre = pre["clicks"].sum() / pre["impressions"].sum()
    first = pre["clicks"][0] / pre["impressions"][0] - r_pre
    assert covariate(pre, np.array([0]), "request", "ctr")[0] == pytest.approx(first)
    with pytest.raises(ConfigError, match="both arms"):
        uplift(clicks, imps, clicks, imps, ALPHA, cov_t=cov)


# ----------------------------------------------------------------------------- the vectorised rules
def _analysis(ctr_lo: float, ctr_hi: float, rpm_hi: float, users: int) -> ABAnalysis:
    arm = {"users": float(users), "requests": 3.0 * users, "impressions": 9.0 * users, "clicks": 1.0, "revenue": 1.0,
           "ctr": 0.05, "rpm": 20.0, "error_rate": 0.0, "latency_p50_ms": 5.0, "latency_p99_ms": 9.0}

    def up(lo: float, hi: float) -> Uplift:
        return Uplift(0.05, 0.05, 0.01, 0.01, (lo + hi) / 2 if math.isfinite(lo + hi) else math.nan, lo, hi, 0.5,
                      method="sequential", units=2 * users)

    return ABAnalysis(50, ALPHA, {"champion": dict(arm), "canary": dict(arm)}, up(ctr_lo, ctr_hi),
                      up(-0.01, rpm_hi), SRMResult({"champion": users, "canary": users}, {}, 0.0, 1.0), 0,
                      method="sequential")


def test_statistical_actions_are_the_rules_decide_applies() -> None:
    policy = dataclasses.replace(SEQ, ctr_uplift_threshold=0.01)
    grid = [(lo, hi, rpm, users) for lo in (-0.2, 0.005, 0.02, math.nan) for hi in (-0.01, 0.3, math.nan)
            for rpm in (-0.001, 0.2, math.nan) for users in (150, 500) if not lo > hi]
    lo, hi, rpm, users = (np.array(col, dtype=float) for col in zip(*grid, strict=True))
    both = np.stack([users, users], axis=-1)  # (G, 2)
    vectorised = statistical_actions(both, 9 * both, lo, hi, rpm, policy)
    one_by_one = [decide(_analysis(*g), policy).action for g in grid]
    assert list(vectorised) == one_by_one
    assert {"promote", "rollback", "continue"} == set(one_by_one)  # every branch exercised
    waived = dataclasses.replace(policy, rpm_must_not_be_worse=False)
    assert statistical_actions([500, 500], [4_500, 4_500], 0.02, 0.3, -0.5, waived) == "promote"
    assert statistical_actions([500, 500], [4_500, 4_500], 0.02, 0.3, -0.5, policy) == "rollback"
