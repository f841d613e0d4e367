"""A/B statistics of a canary: per-arm metrics, relative uplift with delta-method CIs, SRM.

Users are the unit of randomisation, so observations inside one user are correlated and the
impression-level binomial variance understates the error. CTR = Σclicks / Σimpressions and
RPM = 1000 · Σrevenue / Σimpressions are *ratios of per-user sums*; their variance comes from the
delta method on per-user totals (Deng, Knoblich & Lu, KDD 2018)::

    Var(X̄ / Ȳ) ≈ Var_i(X_i - R · Y_i) / (n · Ȳ²)        R = ΣX / ΣY, n users

The relative uplift ``R_canary / R_champion - 1`` gets its interval from the delta method on the
*log* of the ratio (``Var(log R) ≈ Var(R) / R²``, the arms independent)::

    log(R_t / R_c) ± z · sqrt(Var(R_t)/R_t² + Var(R_c)/R_c²),  then exp(·) - 1

which keeps the interval above -100 % and is asymmetric like the ratio itself.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from genctr.errors import ConfigError, describe
from genctr.monitoring.logs import ARMS, ABLogs

if TYPE_CHECKING:
    from genctr.monitoring.decision import CanaryPolicy

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["users", "requests", "impressions", "clicks", "revenue", "ctr", "rpm", "error_rate",
                  "latency_p50_ms", "latency_p99_ms"]


@dataclass
class Uplift:
    """Relative uplift ``canary / champion - 1`` of one ratio metric, with its (1 - alpha) CI."""

    champion: float  # the ratio metric of each arm (CTR, or revenue per impression)
    canary: float
    champion_se: float  # delta-method standard error of each arm's ratio
    canary_se: float
    estimate: float  # relative uplift, e.g. 0.05 = +5 %
    lo: float
    hi: float
    p_value: float  # two-sided, H0: no uplift (z test on the log ratio)


@dataclass
class SRMResult:
    """Chi-square test of users per arm against the configured split."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p_value: float


@dataclass
class ABAnalysis:
    """Everything the canary decision needs; ``arms`` is :func:`arm_metrics` as arm -> metric -> value."""

    canary_percent: int
    alpha: float
    arms: dict[str, dict[str, float]]
    ctr: Uplift
    rpm: Uplift  # uplift of revenue per impression (the 1000x of RPM cancels in the ratio)
    srm: SRMResult
    mixed_users: int  # users seen in both arms: broken assignment, counted in each arm
    shortfalls: list[str] = field(default_factory=list)  # sample sizes still below the policy's minimum
    # rows of the logs not taken at face value: orphan_clicks (never credited), duplicate_* (dropped)
    log_quality: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def json_safe(x: Any) -> Any:
    """Plain Python types for JSON: NaN/inf become None, numpy scalars become floats/ints."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def check_canary_percent(canary_percent: int) -> None:
    if isinstance(canary_percent, bool) or not isinstance(canary_percent, (int, np.integer)) \
            or not 0 < canary_percent < 100:
        raise ConfigError("canary_percent must be an integer in 1..99 for an A/B analysis, "
                          f"got {describe(canary_percent)}")


# ----------------------------------------------------------------------------- delta method
def ratio_delta(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ratio of sums and its delta-method variance, over the last axis (users).

    ``num``, ``den``: (..., n) per-user totals (e.g. clicks, impressions). Returns ``(R, Var(R))``
    of shape (...); NaN where fewer than 2 users or no denominator.
    """
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    n = num.shape[-1]
    den_mean = den.mean(axis=-1) if n else np.full(den.shape[:-1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num.sum(axis=-1) / den.sum(axis=-1)
        if n < 2:
            return r, np.full_like(r, np.nan)
        resid = num - r[..., None] * den  # (..., n) linearised per-user contribution
        var = resid.var(axis=-1, ddof=1) / (n * den_mean**2)
    return r, var


def log_ratio_ci(r_t: np.ndarray, var_t: np.ndarray, r_c: np.ndarray, var_c: np.ndarray,
                 alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Relative uplift ``r_t / r_c - 1`` with its CI and p-value, via the delta method on the log.

    Broadcasts over arrays. Returns ``(estimate, lo, hi, p_value)``. A canary ratio of exactly 0
    (no clicks or no revenue at all) has no log: its uplift is -100 % with the upper bound of the
    linear delta method, ``-1 + z·sqrt(var_t)/r_c``, so a dead canary can still be rolled back.
    NaN where the champion's ratio is 0 or a ratio is undefined.
    """
    z = stats.norm.ppf(1 - alpha / 2)
    r_t, var_t, r_c, var_c = (np.asarray(v, dtype=float) for v in (r_t, var_t, r_c, var_c))
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (r_t > 0) & (r_c > 0)
        log_ratio = np.where(ok, np.log(r_t / r_c), np.nan)
        se = np.where(ok, np.sqrt(var_t / r_t**2 + var_c / r_c**2), np.nan)
        p = 2 * stats.norm.sf(np.abs(log_ratio / se))
        p = np.where(se == 0, np.where(log_ratio == 0, 1.0, 0.0), p)  # degenerate: no variance at all
        est, lo, hi = np.expm1(log_ratio), np.expm1(log_ratio - z * se), np.expm1(log_ratio + z * se)
        dead = (r_t == 0) & (r_c > 0)  # d(r_t/r_c)/dr_t = 1/r_c; the r_c term vanishes at r_t = 0
        se_dead = np.sqrt(var_t) / r_c
        est, lo = np.where(dead, -1.0, est), np.where(dead, -1.0, lo)
        hi = np.where(dead, -1.0 + z * se_dead, hi)
        p = np.where(dead, 2 * stats.norm.sf(1.0 / se_dead), p)
    return est[()], lo[()], hi[()], p[()]  # [()]: numpy scalars for scalar inputs


def uplift(num_t: np.ndarray, den_t: np.ndarray, num_c: np.ndarray, den_c: np.ndarray, alpha: float) -> Uplift:
    """Relative uplift of canary (t) over champion (c) from per-user totals (1-D arrays)."""
    r_t, var_t = ratio_delta(num_t, den_t)
    r_c, var_c = ratio_delta(num_c, den_c)
    est, lo, hi, p = log_ratio_ci(r_t, var_t, r_c, var_c, alpha)
    return Uplift(float(r_c), float(r_t), float(np.sqrt(var_c)), float(np.sqrt(var_t)),
                  float(est), float(lo), float(hi), float(p))


# ----------------------------------------------------------------------------- aggregation
def user_totals(logs: ABLogs, cutoff_ts: int | None = None) -> pd.DataFrame:
    """Per (arm, user) totals: impressions, clicks, revenue; one row per user seen by an arm.

    Users come from requests and impressions, so users who were served but saw no ad count
    (with zero impressions). With ``cutoff_ts`` only events with ``ts <= cutoff_ts`` count, and a
    click only if it happened by then.
    """
    req, imp = logs.requests, logs.impressions
    clicked = imp["clicked"].to_numpy(dtype=float)
    if cutoff_ts is not None:
        req = req[req["ts"].to_numpy() <= cutoff_ts]
        click_ts = _click_times(logs)  # (n_impressions,) first click ts, NaN if none
        clicked = clicked * (click_ts <= cutoff_ts)
        keep = imp["ts"].to_numpy() <= cutoff_ts
        imp, clicked = imp[keep], clicked[keep]
    per_imp = pd.DataFrame({"arm": imp["arm"].to_numpy(), "user_id": imp["user_id"].to_numpy(),
                            "impressions": 1.0, "clicks": clicked,
                            "revenue": clicked * imp["cpc"].to_numpy(dtype=float)})
    totals = per_imp.groupby(["arm", "user_id"], sort=True)[["impressions", "clicks", "revenue"]].sum()
    served = pd.MultiIndex.from_frame(req[["arm", "user_id"]].astype({"arm": object}).drop_duplicates())
    index = totals.index.union(served)
    return totals.reindex(index, fill_value=0.0)


def _click_times(logs: ABLogs) -> np.ndarray:
    """First click time of each impression row (aligned with ``logs.impressions``), NaN if none."""
    first = logs.clicks.groupby(["request_id", "item_id"], as_index=False)["ts"].min()
    keys = logs.impressions[["request_id", "item_id"]]
    merged = keys.merge(first, on=["request_id", "item_id"], how="left")  # left merge keeps row order
    return merged["ts"].to_numpy(dtype=float)


def arm_metrics(logs: ABLogs) -> pd.DataFrame:
    """Per-arm table (index: champion, canary) with :data:`METRIC_COLUMNS`."""
    totals = user_totals(logs).groupby(level="arm").agg(
        users=("impressions", "size"), impressions=("impressions", "sum"),
        clicks=("clicks", "sum"), revenue=("revenue", "sum"))
    req = logs.requests
    by_arm = req.assign(error=(req["status"] != 200).astype(float)).groupby("arm")
    served = pd.DataFrame({
        "requests": by_arm.size(), "error_rate": by_arm["error"].mean(),
        "latency_p50_ms": by_arm["latency_ms"].quantile(0.5),
        "latency_p99_ms": by_arm["latency_ms"].quantile(0.99)})
    out = totals.join(served, how="outer").reindex(list(ARMS))
    for col in ("users", "requests", "impressions", "clicks", "revenue"):
        out[col] = out[col].fillna(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ctr"] = out["clicks"] / out["impressions"]
        out["rpm"] = 1000.0 * out["revenue"] / out["impressions"]
    out = out[METRIC_COLUMNS].astype(float)
    out.index.name = "arm"
    return out


# ----------------------------------------------------------------------------- SRM and sizes
def srm_test(users: dict[str, int], canary_percent: int) -> SRMResult:
    """Chi-square goodness of fit of users per arm to the configured ``canary_percent`` split."""
    check_canary_percent(canary_percent)
    observed = np.array([users.get("champion", 0), users.get("canary", 0)], dtype=float)
    total = observed.sum()
    share = np.array([100 - canary_percent, canary_percent], dtype=float) / 100.0
    expected = total * share
    if total == 0:
        chi2, p = 0.0, 1.0
    else:
        res = stats.chisquare(observed, f_exp=expected)
        chi2, p = float(res.statistic), float(res.pvalue)
    return SRMResult({a: int(o) for a, o in zip(ARMS, observed, strict=True)},
                     {a: float(e) for a, e in zip(ARMS, expected, strict=True)}, chi2, p)


def sample_shortfalls(arms: dict[str, dict[str, float]], min_users: int, min_impressions: int) -> list[str]:
    """Reasons no statistical decision may be taken yet, e.g. ``"not enough users: canary 120 < 200"``."""
    out = []
    for arm in ARMS:
        m = arms.get(arm, {})
        users, imps = int(m.get("users", 0)), int(m.get("impressions", 0))
        if users < min_users:
            out.append(f"not enough users: {arm} {users} < {min_users}")
        if imps < min_impressions:
            out.append(f"not enough impressions: {arm} {imps} < {min_impressions}")
    return out


# ----------------------------------------------------------------------------- public entry points
def _analyze_totals(totals: pd.DataFrame, canary_percent: int, alpha: float) -> tuple[Uplift, Uplift, SRMResult]:
    def arm(name: str) -> pd.DataFrame:
        return totals.xs(name, level="arm") if name in totals.index.get_level_values("arm") else totals.iloc[:0]

    c, t = arm("champion"), arm("canary")
    ctr = uplift(t["clicks"].to_numpy(), t["impressions"].to_numpy(),
                 c["clicks"].to_numpy(), c["impressions"].to_numpy(), alpha)
    rpm = uplift(t["revenue"].to_numpy(), t["impressions"].to_numpy(),
                 c["revenue"].to_numpy(), c["impressions"].to_numpy(), alpha)
    srm = srm_test({"champion": len(c), "canary": len(t)}, canary_percent)
    return ctr, rpm, srm


def analyze(logs: ABLogs, canary_percent: int, policy: CanaryPolicy) -> ABAnalysis:
    """Per-arm metrics, CTR/RPM uplift with (1 - ``policy.alpha``) delta-method CIs, and SRM."""
    check_canary_percent(canary_percent)
    totals = user_totals(logs)
    users = totals.index.to_frame(index=False)
    mixed = int(users.groupby("user_id")["arm"].nunique().gt(1).sum())
    if mixed:
        log.warning("%d user(s) appear in both arms: assignment is not sticky per user", mixed)
    ctr, rpm, srm = _analyze_totals(totals, canary_percent, policy.alpha)
    arms = {a: {k: float(v) for k, v in row.items()} for a, row in arm_metrics(logs).iterrows()}
    shortfalls = sample_shortfalls(arms, policy.min_users_per_arm, policy.min_impressions_per_arm)
    result = ABAnalysis(canary_percent, policy.alpha, arms, ctr, rpm, srm, mixed, shortfalls,
                        asdict(logs.quality))
    log.info("A/B: CTR uplift %+.2f%% [%+.2f%%, %+.2f%%], RPM uplift %+.2f%% [%+.2f%%, %+.2f%%], SRM p=%.3g",
             100 * ctr.estimate, 100 * ctr.lo, 100 * ctr.hi, 100 * rpm.estimate, 100 * rpm.lo, 100 * rpm.hi,
             srm.p_value)
    return result


def uplift_over_time(logs: ABLogs, canary_percent: int, policy: CanaryPolicy, n_points: int = 10) -> pd.DataFrame:
    """Cumulative uplift and CI at ``n_points`` evenly spaced ``ts`` cut-offs (the last: every event).

    One row per cut-off: ``cutoff_ts``, users/impressions per arm, and ``ctr_*`` / ``rpm_*``
    estimate, lo, hi, plus ``srm_p``: the data for a plot of the interval narrowing over time.
    """
    check_canary_percent(canary_percent)
    if n_points < 1:
        raise ConfigError(f"n_points must be >= 1, got {n_points}")
    ts = np.concatenate([logs.requests["ts"].to_numpy(), logs.impressions["ts"].to_numpy(),
                         logs.clicks["ts"].to_numpy()])  # the last cut-off sees every logged click
    if ts.size == 0:
        return pd.DataFrame()
    cutoffs = np.unique(np.linspace(ts.min(), ts.max(), n_points + 1)[1:].round().astype(np.int64))
    rows = []
    for cut in cutoffs:  # n_points iterations, each fully vectorised over users
        totals = user_totals(logs, cutoff_ts=int(cut))
        ctr, rpm, srm = _analyze_totals(totals, canary_percent, policy.alpha)
        per_arm = totals.groupby(level="arm")["impressions"].agg(["size", "sum"]).reindex(list(ARMS), fill_value=0)
        rows.append({"cutoff_ts": int(cut),
                     "users_champion": int(per_arm.loc["champion", "size"]),
                     "users_canary": int(per_arm.loc["canary", "size"]),
                     "impressions_champion": int(per_arm.loc["champion", "sum"]),
                     "impressions_canary": int(per_arm.loc["canary", "sum"]),
                     "ctr_uplift": ctr.estimate, "ctr_lo": ctr.lo, "ctr_hi": ctr.hi,
                     "rpm_uplift": rpm.estimate, "rpm_lo": rpm.lo, "rpm_hi": rpm.hi,
                     "srm_p": srm.p_value})
    return pd.DataFrame(rows)


__all__ = ["ABAnalysis", "SRMResult", "Uplift", "METRIC_COLUMNS", "analyze", "arm_metrics", "json_safe",
           "log_ratio_ci", "ratio_delta", "sample_shortfalls", "srm_test", "uplift", "uplift_over_time", "user_totals"]
