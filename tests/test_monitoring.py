"""Canary A/B analysis: delta-method coverage, SRM, the decision rules, policy validation, plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genctr.errors import ConfigError
from genctr.monitoring.analysis import (
    analyze,
    arm_metrics,
    log_ratio_ci,
    ratio_delta,
    srm_test,
    uplift_over_time,
    user_totals,
)
from genctr.monitoring.decision import CanaryPolicy, decide
from genctr.monitoring.logs import ABLogs, append, read_logs
from genctr.monitoring.plots import plot_arm_bars, plot_uplift_over_time

POLICY = CanaryPolicy(min_users_per_arm=200, min_impressions_per_arm=2_000)
T0 = 1_700_000_000  # epoch seconds of the simulated experiment's start


# ----------------------------------------------------------------------------- simulated logs
def make_logs(log_dir: Path, *, n_users: int = 2_000, assign_percent: float = 50.0, canary_lift: float = 0.0,
              canary_cpc: float = 1.0, canary_error: float = 0.0, canary_latency: float = 1.0,
              seed: int = 0) -> ABLogs:
    """Write a day of A/B logs with ``append`` and read them back (all vectorised).

    Users are assigned to the canary with probability ``assign_percent`` %, make 1 + Poisson(3)
    requests, each showing 3 ads; a user's CTR is Beta(1, 19) (mean 5 %) times a position effect,
    times ``1 + canary_lift`` in the canary. ``canary_cpc`` scales the canary's charged price,
    ``canary_error`` is its share of failed scoring calls, ``canary_latency`` scales its latency.
    """
    rng = np.random.default_rng(seed)
    canary_user = rng.random(n_users) < assign_percent / 100
    user_ctr = rng.beta(1.0, 19.0, n_users) * np.where(canary_user, 1 + canary_lift, 1.0)
    n_req = 1 + rng.poisson(3, n_users)
    req_user = np.repeat(np.arange(n_users), n_req)  # (R,)
    is_canary = canary_user[req_user]
    n = len(req_user)
    failed = rng.random(n) < np.where(is_canary, canary_error, 0.0)
    requests = pd.DataFrame({
        "request_id": np.char.add("r", np.arange(n).astype(str)), "ts": T0 + rng.integers(0, 86_400, n),
        "user_id": req_user, "arm": np.where(is_canary, "canary", "champion"),
        "status": np.where(failed, 500, 200),
        "latency_ms": rng.gamma(4.0, 8.0, n) * np.where(is_canary, canary_latency, 1.0),
        "n_candidates": rng.integers(20, 60, n), "randomisation": "user"})
    ok = requests[~failed]
    rows = np.repeat(np.arange(len(ok)), 3)  # (I,) three slots per served request
    position = np.tile(np.arange(3), len(ok))
    users = ok["user_id"].to_numpy()[rows]
    bid = rng.gamma(2.0, 0.5, len(rows)) + 0.05
    cpc = bid * rng.uniform(0.3, 1.0, len(rows)) * np.where(ok["arm"].to_numpy()[rows] == "canary", canary_cpc, 1.0)
    p_click = np.clip(user_ctr[users] * np.array([1.0, 0.7, 0.5])[position], 0, 1)
    impressions = pd.DataFrame({
        "request_id": ok["request_id"].to_numpy()[rows], "ts": ok["ts"].to_numpy()[rows], "user_id": users,
        "arm": ok["arm"].to_numpy()[rows], "item_id": rng.integers(0, 1_000, len(rows)) * 3 + position,
        "category_id": rng.integers(0, 20, len(rows)), "position": position, "bid": bid,
        "pctr": np.clip(p_click + rng.normal(0, 0.01, len(rows)), 0, 1), "cpc": cpc,
        "randomisation": "user"})
    clicked = rng.random(len(rows)) < p_click
    clicks = impressions.loc[clicked, ["request_id", "item_id", "ts"]].copy()
    clicks["ts"] += rng.integers(1, 3_600, len(clicks))  # a click comes after its impression
    for table, df in (("requests", requests), ("impressions", impressions), ("clicks", clicks)):
        append(log_dir, table, df)
    return read_logs(log_dir)


# ----------------------------------------------------------------------------- delta method
def _simulate_users(rng: np.random.Generator, runs: int, n: int, lift: float) -> tuple[np.ndarray, ...]:
    """(runs, n) per-user impressions, clicks and revenue of one arm.

    Impressions are 1 + NegBin (mean 20, heavily skewed) and per-user CTR is Beta(0.5, 9.5), so
    clicks within a user are correlated and the binomial variance is far too small.
    """
    imps = 1 + rng.negative_binomial(1.0, 1 / 20, size=(runs, n))
    ctr = rng.beta(0.5, 9.5, size=(runs, n)) * (1 + lift)
    clicks = rng.binomial(imps, np.minimum(ctr, 1.0))
    return imps, clicks, clicks * rng.gamma(2.0, 0.25, size=(runs, n))


@pytest.mark.parametrize("true_uplift", [0.0, 0.05])
def test_delta_method_interval_covers_at_nominal_rate(true_uplift: float) -> None:
    rng = np.random.default_rng(1)
    runs = 600
    imps_c, clicks_c, rev_c = _simulate_users(rng, runs, 1_500, 0.0)
    imps_t, clicks_t, rev_t = _simulate_users(rng, runs, 1_500, true_uplift)
    # CTR, then revenue per impression; the SE tolerance is tighter for CTR, where dropping the
    # clicks-impressions covariance term of the delta method inflates the SE by ~10 %.
    for num_t, num_c, se_tol in ((clicks_t, clicks_c, 0.06), (rev_t, rev_c, 0.1)):
        r_t, var_t = ratio_delta(num_t, imps_t)  # (runs,): one estimate per run (axis -1 = users)
        r_c, var_c = ratio_delta(num_c, imps_c)
        _, lo, hi, _ = log_ratio_ci(r_t, var_t, r_c, var_c, alpha=0.05)
        coverage = np.mean((lo <= true_uplift) & (true_uplift <= hi))
        assert abs(coverage - 0.95) <= 0.03, coverage
        # The delta-method SE of the log ratio matches the spread of the estimates across runs.
        se = np.sqrt(var_t / r_t**2 + var_c / r_c**2)
        calibration = se.mean() / np.std(np.log(r_t / r_c), ddof=1)
        assert abs(calibration - 1) <= se_tol, calibration

    # The naive impression-level binomial interval, same data: far too narrow.
    p_t, p_c = clicks_t.sum(1) / imps_t.sum(1), clicks_c.sum(1) / imps_c.sum(1)
    _, lo, hi, _ = log_ratio_ci(p_t, p_t * (1 - p_t) / imps_t.sum(1), p_c, p_c * (1 - p_c) / imps_c.sum(1), 0.05)
    naive = np.mean((lo <= true_uplift) & (true_uplift <= hi))
    assert naive < 0.85, naive


def test_ratio_delta_matches_the_covariance_formula() -> None:
    rng = np.random.default_rng(3)
    y = 1 + rng.poisson(5, 500).astype(float)
    x = rng.binomial(y.astype(int), 0.1).astype(float)
    r, var = ratio_delta(x, y)
    cov = np.cov(x, y)  # (2, 2), ddof 1
    expected = (cov[0, 0] - 2 * r * cov[0, 1] + r**2 * cov[1, 1]) / (len(x) * y.mean() ** 2)
    assert r == pytest.approx(x.sum() / y.sum()) and var == pytest.approx(expected, rel=1e-10)


# ----------------------------------------------------------------------------- analyze on real logs
def test_analyze_on_written_logs(tmp_path: Path) -> None:
    logs = make_logs(tmp_path, canary_lift=0.3, canary_error=0.02)
    m = arm_metrics(logs)
    imp, req = logs.impressions, logs.requests
    for arm in ("champion", "canary"):
        i, r = imp[imp["arm"] == arm], req[req["arm"] == arm]
        assert m.loc[arm, "users"] == r["user_id"].nunique()
        assert m.loc[arm, "requests"] == len(r) and m.loc[arm, "impressions"] == len(i)
        assert m.loc[arm, "ctr"] == pytest.approx(i["clicked"].mean())
        assert m.loc[arm, "rpm"] == pytest.approx(1000 * i["revenue"].sum() / len(i))
        assert m.loc[arm, "error_rate"] == pytest.approx((r["status"] != 200).mean())
        assert m.loc[arm, "latency_p99_ms"] == pytest.approx(np.percentile(r["latency_ms"], 99))
    assert m.loc["champion", "error_rate"] == 0 and m.loc["canary", "error_rate"] > 0.01

    a = analyze(logs, 50, POLICY)
    # Independent per-user aggregation (users with only failed requests have 0 impressions).
    per_user = imp.groupby(["arm", "user_id"])[["clicked"]].agg(["sum", "size"])
    per_user.columns = ["clicks", "imps"]
    per_user = per_user.reindex(pd.MultiIndex.from_frame(req[["arm", "user_id"]].astype({"arm": object})
                                                         .drop_duplicates()), fill_value=0)
    (r_t, v_t), (r_c, v_c) = (ratio_delta(per_user.loc[arm, "clicks"].to_numpy(), per_user.loc[arm, "imps"].to_numpy())
                              for arm in ("canary", "champion"))
    est, lo, hi, _ = log_ratio_ci(r_t, v_t, r_c, v_c, 0.05)
    assert (a.ctr.estimate, a.ctr.lo, a.ctr.hi) == pytest.approx((est, lo, hi))
    assert a.ctr.lo < 0.3 < a.ctr.hi and a.ctr.lo > 0  # planted +30 %, detected
    assert a.rpm.lo < 0.3 < a.rpm.hi
    assert a.srm.p_value > 0.001 and a.mixed_users == 0 and a.shortfalls == []
    json.dumps(a.to_dict(), allow_nan=False)


def test_uplift_over_time_narrows_and_ends_at_the_full_analysis(tmp_path: Path) -> None:
    logs = make_logs(tmp_path, canary_lift=0.3)
    df = uplift_over_time(logs, 50, POLICY, n_points=6)
    assert len(df) == 6 and df["cutoff_ts"].is_monotonic_increasing
    assert (df["impressions_canary"].diff().dropna() >= 0).all()
    full = analyze(logs, 50, POLICY)
    last = df.iloc[-1]
    assert (last["ctr_uplift"], last["ctr_lo"], last["ctr_hi"]) == pytest.approx((full.ctr.estimate, full.ctr.lo,
                                                                                 full.ctr.hi))
    widths = np.log1p(df["ctr_hi"].to_numpy()) - np.log1p(df["ctr_lo"].to_numpy())  # symmetric on the log scale
    assert widths[-1] < 0.6 * widths[0] and widths[-1] == widths.min()
    # A cut-off counts only clicks that happened by then, on impressions shown by then.
    cut = int(df["cutoff_ts"].iloc[2])
    clicks = logs.clicks.merge(logs.impressions[["request_id", "item_id", "ts"]], on=["request_id", "item_id"],
                               suffixes=("", "_imp"))
    expected = int(((clicks["ts"] <= cut) & (clicks["ts_imp"] <= cut)).sum())
    assert user_totals(logs, cutoff_ts=cut)["clicks"].sum() == expected


# ----------------------------------------------------------------------------- SRM
def test_srm_flags_a_60_40_split_of_a_50_50_canary(tmp_path: Path) -> None:
    assert srm_test({"champion": 600, "canary": 400}, 50).p_value < 0.001
    assert srm_test({"champion": 500, "canary": 510}, 50).p_value > 0.5
    assert srm_test({"champion": 900, "canary": 100}, 10).p_value == pytest.approx(1.0)
    skewed = analyze(make_logs(tmp_path / "skewed", assign_percent=40), 50, POLICY)
    assert skewed.srm.p_value < 0.001
    assert analyze(make_logs(tmp_path / "fair", assign_percent=40), 40, POLICY).srm.p_value > 0.001


# ----------------------------------------------------------------------------- decide
def test_decide_promotes_a_clearly_better_canary(tmp_path: Path) -> None:
    d = decide(analyze(make_logs(tmp_path, canary_lift=0.4), 50, POLICY), POLICY)
    assert d.action == "promote", d.reasons
    assert "lower bound" in d.reasons[0] and "%" in d.reasons[0]
    assert d.numbers["ctr_lo"] > 0
    json.dumps(d.to_dict(), allow_nan=False)


def test_decide_rolls_back_a_clearly_worse_canary(tmp_path: Path) -> None:
    d = decide(analyze(make_logs(tmp_path, canary_lift=-0.4), 50, POLICY), POLICY)
    assert d.action == "rollback" and any("CTR uplift" in r and "below 0" in r for r in d.reasons), d.reasons


def test_decide_rolls_back_when_rpm_drops_unless_rpm_is_waived(tmp_path: Path) -> None:
    a = analyze(make_logs(tmp_path, canary_lift=0.4, canary_cpc=0.4), 50, POLICY)
    d = decide(a, POLICY)
    assert d.action == "rollback" and any(r.startswith("RPM uplift") for r in d.reasons), d.reasons
    waived = CanaryPolicy(min_users_per_arm=200, min_impressions_per_arm=2_000, rpm_must_not_be_worse=False)
    assert decide(a, waived).action == "promote"


def test_decide_continues_with_too_few_samples(tmp_path: Path) -> None:
    a = analyze(make_logs(tmp_path, n_users=250, canary_lift=0.4), 50, POLICY)
    d = decide(a, POLICY)
    canary_users = int(a.arms["canary"]["users"])
    assert d.action == "continue"
    assert f"not enough users: canary {canary_users} < 200" in d.reasons


def test_decide_continues_when_uplift_is_not_yet_significant(tmp_path: Path) -> None:
    d = decide(analyze(make_logs(tmp_path, canary_lift=0.0, seed=5), 50, POLICY), POLICY)
    assert d.action == "continue" and "<= threshold" in d.reasons[0], d.reasons


def test_guardrails_roll_back(tmp_path: Path) -> None:
    errors = decide(analyze(make_logs(tmp_path / "e", canary_lift=0.4, canary_error=0.05), 50, POLICY), POLICY)
    assert errors.action == "rollback" and errors.reasons[0].startswith("canary error rate 0.0"), errors.reasons
    slow = decide(analyze(make_logs(tmp_path / "l", canary_lift=0.4, canary_latency=10.0), 50, POLICY), POLICY)
    assert slow.action == "rollback" and "p99 latency" in slow.reasons[0] and "> max 200.0 ms" in slow.reasons[0]
    srm = decide(analyze(make_logs(tmp_path / "s", canary_lift=0.4, assign_percent=40), 50, POLICY), POLICY)
    assert srm.action == "rollback" and srm.reasons[0].startswith("sample ratio mismatch"), srm.reasons


# ----------------------------------------------------------------------------- policy
@pytest.mark.parametrize("field,value", [
    ("alpha", 1.5), ("srm_alpha", 0.0), ("min_users_per_arm", 0), ("min_impressions_per_arm", 1.5),
    ("ctr_uplift_threshold", -2.0), ("rpm_must_not_be_worse", "yes"), ("max_error_rate", 2.0),
    ("max_p99_latency_ms", 0.0), ("alpha", float("nan")),
])
def test_bad_policy_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        CanaryPolicy(**{field: value})


def test_policy_from_dict() -> None:
    p = CanaryPolicy.from_dict({"alpha": 0.1, "max_p99_latency_ms": 150})
    assert p.alpha == 0.1 and p.max_p99_latency_ms == 150 and p.srm_alpha == 0.001
    with pytest.raises(ConfigError, match="alpah"):
        CanaryPolicy.from_dict({"alpah": 0.1})


def test_canary_percent_must_leave_two_arms(tmp_path: Path) -> None:
    logs = make_logs(tmp_path, n_users=50)
    for bad in (0, 100, 50.5):
        with pytest.raises(ConfigError, match="canary_percent"):
            analyze(logs, bad, POLICY)


def test_empty_logs_continue_with_json_safe_numbers(tmp_path: Path) -> None:
    a = analyze(read_logs(tmp_path), 50, POLICY)
    assert np.isnan(a.ctr.estimate)
    d = decide(a, POLICY)
    assert d.action == "continue" and "not enough users: champion 0 < 200" in d.reasons
    json.dumps(a.to_dict(), allow_nan=False)
    json.dumps(d.to_dict(), allow_nan=False)


# ----------------------------------------------------------------------------- plots
def test_plots_write_pngs(tmp_path: Path) -> None:
    logs = make_logs(tmp_path / "logs", canary_lift=0.3)
    df = uplift_over_time(logs, 50, POLICY, n_points=4)
    for path in (plot_uplift_over_time(df, tmp_path / "uplift.png", threshold=0.01),
                 plot_uplift_over_time(df, tmp_path / "uplift_t.png", x="time"),
                 plot_arm_bars(arm_metrics(logs), tmp_path / "arms.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_canary_without_clicks_is_rolled_back(tmp_path: Path) -> None:
    a = analyze(make_logs(tmp_path, canary_lift=-1.0), 50, POLICY)
    assert a.arms["canary"]["clicks"] == 0 and a.ctr.estimate == -1.0 and a.ctr.hi < 0
    d = decide(a, POLICY)
    assert d.action == "rollback" and "CTR uplift -100.00%" in d.reasons[0], d.reasons
    json.dumps(d.to_dict(), allow_nan=False)
