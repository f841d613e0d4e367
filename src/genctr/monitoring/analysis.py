"""A/B statistics of a canary: per-arm metrics, relative uplift with delta-method intervals, SRM.

Units are analysed the way they were randomised (:mod:`genctr.monitoring.units`): per user for a
user-sticky split, per request for a request-randomised one; observations inside one unit are
correlated, so the impression-level binomial variance understates the error. CTR = Σclicks /
Σimpressions and RPM = 1000 · Σrevenue / Σimpressions are *ratios of per-unit sums*; their
variance comes from the delta method on per-unit totals (Deng, Knoblich & Lu, KDD 2018)::

    Var(X̄ / Ȳ) ≈ Var_i(X_i - R · Y_i) / (n · Ȳ²)        R = ΣX / ΣY, n units

The relative uplift ``R_canary / R_champion - 1`` gets its interval from the delta method on the
*log* of the ratio (``Var(log R) ≈ Var(R) / R²``, the arms independent), optionally with CUPED
(:mod:`genctr.monitoring.cuped`: the pre-period covariate removes part of the variance)::

    log(R_t / R_c) ± m · sqrt(Var(R_t)/R_t² + Var(R_c)/R_c²),  then exp(·) - 1

which keeps the interval above -100 % and is asymmetric like the ratio itself. The multiplier
``m`` is the method's (:mod:`genctr.monitoring.sequential`): ``z_{1-α/2}`` for one planned look
(``fixed_horizon``), or the normal-mixture confidence sequence's, valid however often the canary
is looked at (``sequential``, the default). Every :class:`Uplift` carries both intervals.
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
from genctr.monitoring.cuped import RatioSums, log_ratio
from genctr.monitoring.logs import ARMS, ABLogs
from genctr.monitoring.sequential import DEFAULT_TUNING_N, cs_multiplier, fixed_multiplier, mixture_rho2, p_value
from genctr.monitoring.units import covariate, resolve_unit, unit_totals

if TYPE_CHECKING:
    from genctr.monitoring.decision import CanaryPolicy

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["users", "requests", "impressions", "clicks", "revenue", "ctr", "rpm", "error_rate",
                  "latency_p50_ms", "latency_p99_ms"]


@dataclass
class Uplift:
    """Relative uplift ``canary / champion - 1`` of one ratio metric, with its (1 - alpha) intervals.

    ``lo``/``hi``/``p_value`` are ``method``'s (what the decision reads); ``cs_*`` (the always-valid
    confidence sequence) and ``fixed_*`` (one planned look) are both kept for the report.
    """

    champion: float  # the ratio metric of each arm (CTR, or revenue per impression), unadjusted
    canary: float
    champion_se: float  # delta-method standard error of each arm's ratio (no CUPED)
    canary_se: float
    estimate: float  # relative uplift, e.g. 0.05 = +5 % (CUPED-adjusted when cuped)
    lo: float
    hi: float
    p_value: float  # two-sided, H0: no uplift; always-valid (mixture SPRT) when sequential
    method: str = "fixed_horizon"  # genctr.monitoring.sequential.METHODS
    units: int = 0  # analysis units of both arms (the n of the confidence sequence)
    se_log: float = math.nan  # standard error of log(canary / champion), after CUPED
    cs_lo: float = math.nan  # always-valid (1 - alpha) confidence sequence at this look
    cs_hi: float = math.nan
    fixed_lo: float = math.nan  # fixed-horizon (1 - alpha) interval: valid for one planned look only
    fixed_hi: float = math.nan
    cuped: bool = False
    variance_reduction: float = 0.0  # share of the log uplift's variance CUPED removed (0 without)


@dataclass
class SRMResult:
    """Chi-square test of units per arm (users or requests: ``unit``) against the configured split."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p_value: float
    unit: str = "user"


@dataclass
class ABAnalysis:
    """Everything the canary decision needs; ``arms`` is :func:`arm_metrics` as arm -> metric -> value."""

    canary_percent: int
    alpha: float
    arms: dict[str, dict[str, float]]
    ctr: Uplift
    rpm: Uplift  # uplift of revenue per impression (the 1000x of RPM cancels in the ratio)
    srm: SRMResult
    mixed_users: int  # users seen in both arms: broken assignment when user-randomised, counted in each arm
    shortfalls: list[str] = field(default_factory=list)  # sample sizes still below the policy's minimum
    # rows of the logs not taken at face value: orphan_clicks (never credited), duplicate_* (dropped)
    log_quality: dict[str, int] = field(default_factory=dict)
    unit: str = "user"  # the analysis (= randomisation) unit: "user" | "request"
    method: str = "fixed_horizon"  # how ctr/rpm lo, hi were formed: "sequential" | "fixed_horizon"
    sequential_tuning_n: int = DEFAULT_TUNING_N  # units at which the confidence sequence is narrowest
    cuped: bool = False

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


def uplift_arrays(t: RatioSums, c: RatioSums, *, alpha: float, method: str = "sequential",
                  tuning_n: float = DEFAULT_TUNING_N, cuped: bool = False) -> dict[str, np.ndarray]:
    """Every numeric :class:`Uplift` field, as arrays of the sums' shape, from per-arm sums.

    Vectorised: ``t``, ``c`` of shape ``()`` give one analysis, ``(runs, looks)`` a whole
    simulation. A canary ratio of exactly 0 (no clicks or no revenue at all) has no log: its
    uplift is -100 % with the upper bound of the linear delta method, ``-1 + m·sqrt(var_t)/r_c``,
    so a dead canary can still be rolled back. NaN where the champion's ratio is 0 or undefined.
    """
    lr = log_ratio(t, c, cuped=cuped)
    m_fixed = fixed_multiplier(alpha)
    m_cs = cs_multiplier(lr.n, alpha, mixture_rho2(tuning_n, alpha))
    with np.errstate(divide="ignore", invalid="ignore"):
        dead = (lr.r_t == 0) & (lr.r_c > 0)  # d(r_t/r_c)/dr_t = 1/r_c; the r_c term vanishes at r_t = 0
        se_dead = np.sqrt(lr.var_t) / lr.r_c
        z = np.where(dead, 1.0 / se_dead, lr.estimate / lr.se)

        def bounds(m: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
            lo, hi = np.expm1(lr.estimate - m * lr.se), np.expm1(lr.estimate + m * lr.se)
            return np.where(dead, -1.0, lo), np.where(dead, -1.0 + m * se_dead, hi)

        fixed_lo, fixed_hi = bounds(m_fixed)
        cs_lo, cs_hi = bounds(m_cs)
        p = p_value(method, z, lr.n, alpha, tuning_n)
        degenerate = ~dead & (lr.se == 0)  # no variance at all: certain when the estimate moved
        p = np.where(degenerate, np.where(lr.estimate == 0, 1.0, 0.0), p)
        reduction = np.where(lr.se_raw > 0, 1.0 - (lr.se / lr.se_raw) ** 2, 0.0)
    sequential = method == "sequential"
    return {"champion": lr.r_c, "canary": lr.r_t, "champion_se": np.sqrt(lr.var_c), "canary_se": np.sqrt(lr.var_t),
            "estimate": np.where(dead, -1.0, np.expm1(lr.estimate)),
            "lo": cs_lo if sequential else fixed_lo, "hi": cs_hi if sequential else fixed_hi, "p_value": p,
            "units": lr.n, "se_log": lr.se, "cs_lo": cs_lo, "cs_hi": cs_hi, "fixed_lo": fixed_lo,
            "fixed_hi": fixed_hi, "variance_reduction": reduction}


def uplift(num_t: np.ndarray, den_t: np.ndarray, num_c: np.ndarray, den_c: np.ndarray, alpha: float, *,
           method: str = "fixed_horizon", tuning_n: float = DEFAULT_TUNING_N, cov_t: np.ndarray | None = None,
           cov_c: np.ndarray | None = None) -> Uplift:
    """Relative uplift of canary (t) over champion (c) from per-unit totals (1-D arrays).

    ``cov_t``/``cov_c``: each unit's pre-period covariate (:func:`genctr.monitoring.units.covariate`);
    given, the estimate is CUPED-adjusted.
    """
    if (cov_t is None) != (cov_c is None):
        raise ConfigError("uplift: give the covariate of both arms (cov_t and cov_c) or of neither")
    cuped = cov_t is not None
    arrays = uplift_arrays(RatioSums.of(num_t, den_t, cov_t), RatioSums.of(num_c, den_c, cov_c), alpha=alpha,
                           method=method, tuning_n=tuning_n, cuped=cuped)
    values: dict[str, Any] = {k: float(v) for k, v in arrays.items()}
    values["units"] = int(values["units"])
    return Uplift(**values, method=method, cuped=cuped)


# ----------------------------------------------------------------------------- aggregation
def user_totals(logs: ABLogs, cutoff_ts: int | None = None) -> pd.DataFrame:
    """Per (arm, user) totals: impressions, clicks, revenue; one row per user seen by an arm.

    Users come from requests and impressions, so users who were served but saw no ad count
    (with zero impressions). With ``cutoff_ts`` only events with ``ts <= cutoff_ts`` count, and a
    click only if it happened by then. (:func:`genctr.monitoring.units.unit_totals` with ``"user"``.)
    """
    return unit_totals(logs, "user", cutoff_ts)


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
def srm_test(users: dict[str, int], canary_percent: int, unit: str = "user") -> SRMResult:
    """Chi-square goodness of fit of units per arm (``users``: arm -> count of ``unit``) to the split."""
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
                     {a: float(e) for a, e in zip(ARMS, expected, strict=True)}, chi2, p, unit)


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
def _arm_frame(totals: pd.DataFrame, name: str) -> pd.DataFrame:
    return totals.xs(name, level="arm") if name in totals.index.get_level_values("arm") else totals.iloc[:0]


def _unit_users(frame: pd.DataFrame, unit: str) -> np.ndarray:
    """The user of each unit row of one arm's totals (the key of the pre-period covariate)."""
    return frame.index.to_numpy() if unit == "user" else frame["user_id"].to_numpy()


def _analyze_totals(totals: pd.DataFrame, unit: str, canary_percent: int, policy: CanaryPolicy,
                    pre_period: pd.DataFrame | None) -> tuple[Uplift, Uplift, SRMResult]:
    c, t = _arm_frame(totals, "champion"), _arm_frame(totals, "canary")
    out = []
    for metric, num in (("ctr", "clicks"), ("rpm", "revenue")):
        covs: dict[str, np.ndarray | None] = {"t": None, "c": None}
        if policy.cuped and pre_period is not None:
            covs = {k: covariate(pre_period, _unit_users(f, unit), unit, metric) for k, f in (("t", t), ("c", c))}
        out.append(uplift(t[num].to_numpy(), t["impressions"].to_numpy(), c[num].to_numpy(),
                          c["impressions"].to_numpy(), policy.alpha, method=policy.method,
                          tuning_n=policy.sequential_tuning_n, cov_t=covs["t"], cov_c=covs["c"]))
    srm = srm_test({"champion": len(c), "canary": len(t)}, canary_percent, unit)
    return out[0], out[1], srm


def _check_pre_period(policy: CanaryPolicy, pre_period: pd.DataFrame | None) -> None:
    if policy.cuped and pre_period is None:
        raise ConfigError("canary policy cuped=true needs each unit's pre-period traffic: pass pre_period="
                          "genctr.monitoring.units.pre_period_totals(logs_before_the_window, since_ts), or set "
                          "cuped=false")
    if policy.cuped and pre_period is not None and pre_period.empty:
        log.warning("CUPED: no traffic before the canary's start, so no covariate; the uplifts are unadjusted")


def analyze(logs: ABLogs, canary_percent: int, policy: CanaryPolicy,
            pre_period: pd.DataFrame | None = None) -> ABAnalysis:
    """Per-arm metrics, CTR/RPM uplift with (1 - ``policy.alpha``) intervals by ``policy.method``, and SRM.

    The analysis unit is the randomisation unit the logs record (``policy.analysis_unit`` may only
    confirm it). ``pre_period``: per-user totals before the canary's start
    (:func:`genctr.monitoring.units.pre_period_totals`), required when ``policy.cuped``.
    Raises DataValidationError for logs that mix randomisation units, ConfigError for a unit asked
    for that the logs were not randomised on.
    """
    check_canary_percent(canary_percent)
    _check_pre_period(policy, pre_period)
    unit = resolve_unit(logs, policy.analysis_unit)
    totals = unit_totals(logs, unit)
    users = (totals if unit == "user" else user_totals(logs)).index.to_frame(index=False)
    mixed = int(users.groupby("user_id")["arm"].nunique().gt(1).sum())
    if mixed and unit == "user":
        log.warning("%d user(s) appear in both arms: assignment is not sticky per user", mixed)
    ctr, rpm, srm = _analyze_totals(totals, unit, canary_percent, policy, pre_period)
    arms = {a: {k: float(v) for k, v in row.items()} for a, row in arm_metrics(logs).iterrows()}
    shortfalls = sample_shortfalls(arms, policy.min_users_per_arm, policy.min_impressions_per_arm)
    result = ABAnalysis(canary_percent, policy.alpha, arms, ctr, rpm, srm, mixed, shortfalls,
                        asdict(logs.quality), unit, policy.method, policy.sequential_tuning_n, policy.cuped)
    log.info("A/B per %s, %s%s: CTR uplift %+.2f%% [%+.2f%%, %+.2f%%], RPM uplift %+.2f%% [%+.2f%%, %+.2f%%], "
             "SRM p=%.3g", unit, policy.method, " + CUPED" if policy.cuped else "", 100 * ctr.estimate,
             100 * ctr.lo, 100 * ctr.hi, 100 * rpm.estimate, 100 * rpm.lo, 100 * rpm.hi, srm.p_value)
    return result


OVER_TIME_FIELDS = ("uplift", "lo", "hi", "cs_lo", "cs_hi", "fixed_lo", "fixed_hi")  # per metric, as <metric>_<f>


def uplift_over_time(logs: ABLogs, canary_percent: int, policy: CanaryPolicy, n_points: int = 10,
                     pre_period: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cumulative uplift and intervals at ``n_points`` evenly spaced ``ts`` cut-offs (the last: every event).

    One row per cut-off (a look): ``cutoff_ts``, units/users/impressions per arm, and for ``ctr``
    and ``rpm``: ``<m>_uplift``, ``<m>_lo``/``<m>_hi`` (``policy.method``'s interval, what the
    decision reads), ``<m>_cs_lo``/``<m>_cs_hi`` (the always-valid confidence sequence: it covers the
    truth at every row at once) and ``<m>_fixed_lo``/``<m>_fixed_hi`` (one planned look's interval,
    beside it for comparison), plus ``srm_p``: the data for a plot of the intervals over time.
    """
    check_canary_percent(canary_percent)
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 1:
        raise ConfigError(f"n_points must be an integer >= 1, got {describe(n_points)}")
    _check_pre_period(policy, pre_period)
    unit = resolve_unit(logs, policy.analysis_unit)
    ts = np.concatenate([logs.requests["ts"].to_numpy(), logs.impressions["ts"].to_numpy(),
                         logs.clicks["ts"].to_numpy()])  # the last cut-off sees every logged click
    if ts.size == 0:
        return pd.DataFrame()
    cutoffs = np.unique(np.linspace(ts.min(), ts.max(), n_points + 1)[1:].round().astype(np.int64))
    rows = []
    for cut in cutoffs:  # n_points iterations, each fully vectorised over units
        totals = unit_totals(logs, unit, cutoff_ts=int(cut))
        ctr, rpm, srm = _analyze_totals(totals, unit, canary_percent, policy, pre_period)
        per_arm = totals.groupby(level="arm")["impressions"].agg(["size", "sum"]).reindex(list(ARMS), fill_value=0)
        per_user = totals if unit == "user" else user_totals(logs, cutoff_ts=int(cut))
        users = per_user.groupby(level="arm").size().reindex(list(ARMS), fill_value=0)
        row: dict[str, Any] = {"cutoff_ts": int(cut), "unit": unit, "method": policy.method, "alpha": policy.alpha,
                               "units_champion": int(per_arm.loc["champion", "size"]),
                               "units_canary": int(per_arm.loc["canary", "size"]),
                               "users_champion": int(users.loc["champion"]), "users_canary": int(users.loc["canary"]),
                               "impressions_champion": int(per_arm.loc["champion", "sum"]),
                               "impressions_canary": int(per_arm.loc["canary", "sum"])}
        for name, u in (("ctr", ctr), ("rpm", rpm)):
            row.update({f"{name}_{f}": getattr(u, "estimate" if f == "uplift" else f) for f in OVER_TIME_FIELDS})
        rows.append({**row, "srm_p": srm.p_value})
    return pd.DataFrame(rows)


__all__ = ["ABAnalysis", "OVER_TIME_FIELDS", "SRMResult", "Uplift", "METRIC_COLUMNS", "analyze", "arm_metrics",
           "json_safe", "log_ratio_ci", "ratio_delta", "sample_shortfalls", "srm_test", "uplift", "uplift_arrays",
           "uplift_over_time", "user_totals"]
