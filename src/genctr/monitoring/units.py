"""Analysis units of the A/B logs: the randomisation unit they record, per-unit totals, the covariate.

The randomisation unit is the analysis unit. The delta method treats units as independent draws,
which holds for the unit the split was drawn on and for nothing finer:

- ``randomisation == "user"`` (a user-sticky split): every request of a user goes to one arm, so
  a user's requests are correlated *and* assigned together; the unit is the user, the analysis
  runs on per-user totals (Deng, Knoblich & Lu, KDD 2018). A request-level analysis of such logs
  would treat one user's correlated requests as independent and understate the error.
- ``randomisation == "request"`` (e.g. KServe ``canaryTrafficPercent``): each request is drawn
  on its own, so one user reaches both arms; the unit is the request, the analysis runs on
  per-request totals. Per-user totals would mix both arms' traffic in one user and the
  user-level delta method is invalid.

The covariate of CUPED (:mod:`genctr.monitoring.cuped`) comes from the traffic *before* the
canary started (:func:`pre_period_totals`), so the canary cannot have moved it. Per unit, for a
ratio metric ``R = ΣY/ΣD`` with pooled pre-period ratio ``R_pre``:

- user unit: ``X = Y_pre - R_pre · D_pre``, the user's pre-period clicks (or revenue) in excess
  of what the pooled pre-period CTR predicts: the delta-method linearisation of the pre-period
  metric, the same form as the in-period influence value, so it carries both how active and how
  click-happy the user is. A user with no pre-period traffic adds nothing to the pre-period
  ratio, and that is exactly their ``X = 0``: nothing to impute.
- request unit: ``X = Y_pre / D_pre - R_pre`` of the request's user, the deviation of that user's
  pre-period CTR from the pooled one (a request has no history of its own); ``0`` for a user
  without pre-period impressions, i.e. the pooled mean: no adjustment without information.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from genctr.errors import ConfigError, DataValidationError, describe
from genctr.monitoring.logs import RANDOMISATION_UNITS, ABLogs

log = logging.getLogger(__name__)

UNIT_CHOICES = ("auto", *RANDOMISATION_UNITS)  # CanaryPolicy.analysis_unit: "auto" = what the logs record
METRIC_COLUMNS = {"ctr": "clicks", "rpm": "revenue"}  # ratio metric -> numerator column (denominator: impressions)
_KEY = {"user": "user_id", "request": "request_id"}


def recorded_unit(logs: ABLogs) -> str | None:
    """The randomisation unit every request and impression row records; None for empty logs.

    Raises DataValidationError naming the counts when rows disagree: one canary is split one way.
    """
    counts: dict[str, dict[str, int]] = {}
    for table, df in (("requests", logs.requests), ("impressions", logs.impressions)):
        if "randomisation" not in df.columns:
            raise DataValidationError(f"{table} log lacks the randomisation column; expected one of "
                                      f"{list(RANDOMISATION_UNITS)} on every row")
        counts[table] = {str(k): int(v) for k, v in df["randomisation"].value_counts().items()}
    seen = sorted({u for c in counts.values() for u in c})
    if len(seen) > 1:
        detail = "; ".join(f"{table}: " + ", ".join(f"{n} {u!r}" for u, n in sorted(c.items()))
                           for table, c in counts.items() if c)
        raise DataValidationError(f"A/B logs mix randomisation units ({detail}): one canary's traffic is split one way "
                                  "only; analyse the window of a single rollout (since_ts at its start) or fix the "
                                  "logger that writes the randomisation column")
    return seen[0] if seen else None


def resolve_unit(logs: ABLogs, analysis_unit: str = "auto") -> str:
    """The analysis unit for ``logs``: what they record (``"auto"``), or the one asked if it matches.

    Empty logs record nothing; they are analysed per user (nothing to analyse either way).
    Raises ConfigError when the unit asked for is not the unit the logs were randomised on.
    """
    if analysis_unit not in UNIT_CHOICES:
        raise ConfigError(f"analysis unit must be one of {UNIT_CHOICES}, got {describe(analysis_unit)}")
    recorded = recorded_unit(logs)
    if recorded is None:
        return "user" if analysis_unit == "auto" else analysis_unit
    if analysis_unit in ("auto", recorded):
        return recorded
    if analysis_unit == "user":
        raise ConfigError("a user-level analysis was asked for (analysis_unit='user'), but these A/B logs are "
                          "request-randomised (randomisation='request'): one user reaches both arms, so per-user "
                          "totals mix the arms and the user-level delta method is invalid. Run the request-level "
                          "analysis (analysis_unit='request' or 'auto'), or roll the canary out user-sticky "
                          "(randomisation='user') to judge it per user")
    raise ConfigError("a request-level analysis was asked for (analysis_unit='request'), but these A/B logs are "
                      "user-randomised (randomisation='user'): a user's requests are assigned together and are "
                      "correlated, so treating them as independent understates the error. Run the user-level "
                      "analysis (analysis_unit='user' or 'auto')")


def unit_totals(logs: ABLogs, unit: str, cutoff_ts: int | None = None) -> pd.DataFrame:
    """Per (arm, unit) totals: impressions, clicks, revenue, and the unit's ``user_id``.

    Index ``(arm, user_id)`` for ``unit="user"``, ``(arm, request_id)`` for ``"request"``. Units
    come from requests and impressions, so a unit that was served but saw no ad counts (with zero
    impressions). With ``cutoff_ts`` only events with ``ts <= cutoff_ts`` count, and a click only
    if it happened by then.
    """
    if unit not in _KEY:
        raise ConfigError(f"analysis unit must be one of {list(_KEY)}, got {describe(unit)}")
    key = _KEY[unit]
    req, imp = logs.requests, logs.impressions
    clicked = imp["clicked"].to_numpy(dtype=float)
    if cutoff_ts is not None:
        req = req[req["ts"].to_numpy() <= cutoff_ts]
        clicked = clicked * (click_times(logs) <= cutoff_ts)  # (n_impressions,) NaN (never clicked) -> 0
        keep = imp["ts"].to_numpy() <= cutoff_ts
        imp, clicked = imp[keep], clicked[keep]
    cols = ["arm", key] if key == "user_id" else ["arm", key, "user_id"]
    per_imp = imp[cols].assign(impressions=1.0, clicks=clicked, revenue=clicked * imp["cpc"].to_numpy(dtype=float))
    served = req[cols].assign(impressions=0.0, clicks=0.0, revenue=0.0)  # served units with no ad still count
    both = pd.concat([per_imp, served], ignore_index=True).astype({"arm": object})
    sums = {"impressions": ("impressions", "sum"), "clicks": ("clicks", "sum"), "revenue": ("revenue", "sum")}
    if key != "user_id":
        sums = {"user_id": ("user_id", "first"), **sums}
    return both.groupby(["arm", key], sort=True).agg(**sums)


def click_times(logs: ABLogs) -> np.ndarray:
    """First click time of each impression row (aligned with ``logs.impressions``), NaN if none."""
    first = logs.clicks.groupby(["request_id", "item_id"], as_index=False)["ts"].min()
    keys = logs.impressions[["request_id", "item_id"]]
    merged = keys.merge(first, on=["request_id", "item_id"], how="left")  # left merge keeps row order
    return merged["ts"].to_numpy(dtype=float)


def pre_period_totals(logs: ABLogs, since_ts: int) -> pd.DataFrame:
    """Per-user impressions, clicks and revenue before ``since_ts`` (the canary's start), any arm.

    ``logs``: the whole log, before :func:`genctr.monitoring.collect.window` cuts it. Only clicks
    that happened before ``since_ts`` count, so the covariate holds nothing the canary could move.
    Index ``user_id``; users without pre-period traffic are absent (their covariate is 0).
    """
    if isinstance(since_ts, bool) or not isinstance(since_ts, (int, np.integer)) or since_ts < 0:
        raise ConfigError(f"since_ts must be epoch seconds >= 0, got {describe(since_ts)}")
    imp = logs.impressions
    before = imp["ts"].to_numpy() < since_ts
    clicked = imp["clicked"].to_numpy(dtype=float) * (click_times(logs) < since_ts)  # NaN < t is False
    frame = pd.DataFrame({"user_id": imp["user_id"].to_numpy()[before], "impressions": 1.0,
                          "clicks": clicked[before], "revenue": (clicked * imp["cpc"].to_numpy(dtype=float))[before]})
    out = frame.groupby("user_id", sort=True)[["impressions", "clicks", "revenue"]].sum()
    log.info("pre-period before %d: %d users, %d impressions", since_ts, len(out), int(out["impressions"].sum()))
    return out


def covariate(pre: pd.DataFrame, users: np.ndarray, unit: str, metric: str) -> np.ndarray:
    """CUPED covariate (module docstring) of each analysis unit, given its ``users`` (n,) -> (n,).

    ``pre``: :func:`pre_period_totals`; ``metric``: ``"ctr"`` or ``"rpm"`` (each metric is adjusted
    by its own pre-period value: clicks for CTR, revenue for revenue per impression).
    """
    missing = [c for c in ("impressions", METRIC_COLUMNS[metric]) if c not in pre.columns]
    if missing:
        raise DataValidationError(f"pre-period totals lack column(s) {missing}; expected pre_period_totals' frame")
    den_all = float(pre["impressions"].sum())
    r_pre = float(pre[METRIC_COLUMNS[metric]].sum()) / den_all if den_all > 0 else 0.0
    found = pre.reindex(users)  # (n, 3) NaN for units whose user has no pre-period
    return pre_covariate(found[METRIC_COLUMNS[metric]].fillna(0.0).to_numpy(dtype=float),
                         found["impressions"].fillna(0.0).to_numpy(dtype=float), r_pre, unit)


def pre_covariate(num_pre: np.ndarray, den_pre: np.ndarray, r_pre: np.ndarray | float, unit: str) -> np.ndarray:
    """The covariate from each unit's (its user's) pre-period sums ``num_pre``, ``den_pre`` (any shape).

    ``r_pre``: the pooled pre-period ratio (broadcast). User unit: ``num - r_pre·den`` (the
    linearised pre-period metric); request unit: ``num/den - r_pre``; both 0 without pre-period.
    """
    num, den = np.asarray(num_pre, dtype=float), np.asarray(den_pre, dtype=float)
    if unit == "user":
        return num - r_pre * den
    if unit != "request":
        raise ConfigError(f"analysis unit must be 'user' or 'request', got {describe(unit)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den - r_pre, 0.0)


__all__ = ["METRIC_COLUMNS", "UNIT_CHOICES", "click_times", "covariate", "pre_covariate", "pre_period_totals",
           "recorded_unit", "resolve_unit", "unit_totals"]
