"""The canary decision: promote, roll back, or keep collecting data.

Order of the rules:

1. Guardrails act at once, whatever the sample size, because they are about safety and trust:
   canary error rate above ``max_error_rate``, canary p99 latency above ``max_p99_latency_ms``,
   or a sample-ratio mismatch (SRM p < ``srm_alpha`` on the randomisation unit's counts: the split
   itself is broken, so no uplift measured on it can be trusted) -> ``rollback``.
2. Below the minimum sample size (users and impressions per arm) -> ``continue``.
3. CTR uplift's upper bound below 0, or (with ``rpm_must_not_be_worse``) RPM's -> ``rollback``.
4. CTR uplift's lower bound above ``ctr_uplift_threshold`` (and RPM not significantly worse)
   -> ``promote``; otherwise ``continue``.

Before all of them: a window without a single request or impression in either arm is
``continue`` with the reason "no traffic yet" (nothing can be judged, nothing is wrong).

The bounds of rules 3 and 4 are the (1 - ``alpha``) intervals of ``method``: by default the
always-valid confidence sequence (:mod:`genctr.monitoring.sequential`), so the hourly schedule may
look as often as it likes; A/A, a false promotion has probability <= alpha/2 (the CTR interval's
lower side) and a false rollback <= alpha (the CTR or the RPM interval's upper side, alpha/2 each).
``fixed_horizon`` is for one planned look only: looked at every hour its error rates grow with the
number of looks. Rules 2-4 are :func:`statistical_actions`, vectorised, so a simulation of many
canaries and looks decides with the very function the canary step uses.

Every reason string carries the method and the numbers it was decided on.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from genctr.config import from_dict
from genctr.errors import ConfigError, describe
from genctr.monitoring.analysis import ABAnalysis, Uplift, json_safe, sample_shortfalls
from genctr.monitoring.logs import DUPLICATE_POLICIES
from genctr.monitoring.sequential import DEFAULT_TUNING_N, METHODS
from genctr.monitoring.units import UNIT_CHOICES

log = logging.getLogger(__name__)

ACTIONS = ("promote", "rollback", "continue")


@dataclass
class CanaryPolicy:
    """Thresholds of the canary decision (uplifts are relative: 0.01 = +1 %)."""

    alpha: float = 0.05  # two-sided intervals of the uplifts are (1 - alpha): alpha/2 per side
    min_users_per_arm: int = 200  # the delta method's normal approximation needs a few hundred users
    min_impressions_per_arm: int = 2_000
    ctr_uplift_threshold: float = 0.0  # promote when the CTR uplift's lower bound exceeds this
    rpm_must_not_be_worse: bool = True  # an RPM upper bound < 0 blocks promotion and rolls back
    srm_alpha: float = 0.001  # SRM p-value below this = broken split (strict: SRM is checked often)
    max_error_rate: float = 0.01  # canary share of non-200 scoring calls
    max_p99_latency_ms: float = 200.0  # canary p99 scoring latency
    # a (request_id, item_id) logged twice: "refuse" = DataValidationError, "dedupe" = keep the first
    # row per key and count the rest (see genctr.monitoring.logs)
    duplicates: str = "refuse"
    # "sequential": always-valid confidence sequences (look as often as wanted; the hourly schedule);
    # "fixed_horizon": the classic interval, valid only for one look planned in advance
    method: str = "sequential"
    # n*: analysis units (both arms together) at which the confidence sequence is narrowest; sets the
    # normal mixture's rho^2 = x*(alpha) / n* (genctr.monitoring.sequential). Best near the smallest
    # sample a decision is wanted at: narrower there, slightly wider (~sqrt(log n)) far beyond it
    sequential_tuning_n: int = DEFAULT_TUNING_N
    # CUPED: adjust each uplift by the units' pre-period traffic (needs the logs before the canary's start)
    cuped: bool = False
    # "auto": the unit the logs' randomisation column records; "user"/"request" insist on one (and are
    # refused on logs randomised the other way)
    analysis_unit: str = "auto"

    def __post_init__(self) -> None:
        for name in ("alpha", "srm_alpha"):
            if not 0.0 < _number(self, name) < 1.0:
                raise ConfigError(f"canary policy {name} must be in (0, 1), got {describe(getattr(self, name))}")
        for name in ("min_users_per_arm", "min_impressions_per_arm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"canary policy {name} must be an integer >= 2, got {describe(value)}")
        if not -1.0 < _number(self, "ctr_uplift_threshold") < 10.0:
            raise ConfigError("canary policy ctr_uplift_threshold is a relative uplift and must be in (-1, 10), "
                              f"got {describe(self.ctr_uplift_threshold)}")
        if not isinstance(self.rpm_must_not_be_worse, bool):
            raise ConfigError(f"canary policy rpm_must_not_be_worse must be true or false, "
                              f"got {describe(self.rpm_must_not_be_worse)}")
        if not 0.0 <= _number(self, "max_error_rate") <= 1.0:
            raise ConfigError(f"canary policy max_error_rate must be in [0, 1], got {describe(self.max_error_rate)}")
        if not _number(self, "max_p99_latency_ms") > 0.0:
            raise ConfigError("canary policy max_p99_latency_ms must be positive, "
                              f"got {describe(self.max_p99_latency_ms)}")
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ConfigError(f"canary policy method must be one of {METHODS} (sequential: any number of looks; "
                              f"fixed_horizon: one planned look), got {describe(self.method)}")
        n_star = self.sequential_tuning_n
        if isinstance(n_star, bool) or not isinstance(n_star, int) or n_star < 1:
            raise ConfigError("canary policy sequential_tuning_n (units, both arms, at which the confidence "
                              f"sequence is narrowest) must be an integer >= 1, got {describe(n_star)}")
        if not isinstance(self.cuped, bool):
            raise ConfigError(f"canary policy cuped must be true or false, got {describe(self.cuped)}")
        if not isinstance(self.analysis_unit, str) or self.analysis_unit not in UNIT_CHOICES:
            raise ConfigError(f"canary policy analysis_unit must be one of {UNIT_CHOICES} (auto: the unit the logs "
                              f"record), got {describe(self.analysis_unit)}")
        if self.duplicates not in DUPLICATE_POLICIES:
            raise ConfigError(f"canary policy duplicates must be one of {DUPLICATE_POLICIES}, "
                              f"got {describe(self.duplicates)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CanaryPolicy:
        """Build from a plain dict (YAML/JSON); unknown keys are a ConfigError."""
        return from_dict(cls, data)


def _number(policy: CanaryPolicy, name: str) -> float:
    value = getattr(policy, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"canary policy {name} must be a finite number, got {describe(value)}")
    return float(value)


@dataclass
class Decision:
    """``action`` in :data:`ACTIONS`, the reasons behind it, and the numbers it rests on."""

    action: str
    reasons: list[str]
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": list(self.reasons), "numbers": json_safe(self.numbers)}


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}%" if math.isfinite(x) else "n/a"


def guardrail_breaks(a: ABAnalysis, policy: CanaryPolicy) -> list[str]:
    canary = a.arms["canary"]
    out = []
    if a.srm.p_value < policy.srm_alpha:
        obs, exp = a.srm.observed, a.srm.expected
        out.append(f"sample ratio mismatch: {a.srm.unit}s champion {obs['champion']} / canary {obs['canary']} vs "
                   f"expected {exp['champion']:.0f} / {exp['canary']:.0f} at {a.canary_percent}% canary, "
                   f"chi2={a.srm.chi2:.2f}, p={a.srm.p_value:.3g} < {policy.srm_alpha:g}")
    if canary["requests"] > 0 and canary["error_rate"] > policy.max_error_rate:
        out.append(f"canary error rate {canary['error_rate']:.4f} > max {policy.max_error_rate:.4f} "
                   f"({int(round(canary['error_rate'] * canary['requests']))} of {int(canary['requests'])} requests)")
    if canary["requests"] > 0 and canary["latency_p99_ms"] > policy.max_p99_latency_ms:
        out.append(f"canary p99 latency {canary['latency_p99_ms']:.1f} ms > max {policy.max_p99_latency_ms:.1f} ms")
    return out


def statistical_actions(users: ArrayLike, impressions: ArrayLike, ctr_lo: ArrayLike, ctr_hi: ArrayLike,
                        rpm_hi: ArrayLike, policy: CanaryPolicy) -> np.ndarray:
    """Rules 2-4 of the module docstring, elementwise: an array of ``"promote"|"rollback"|"continue"``.

    ``users``, ``impressions``: ``(..., 2)`` per arm (either order: the smaller arm is checked);
    ``ctr_lo``, ``ctr_hi``, ``rpm_hi``: ``(...)`` bounds of the uplift intervals (NaN: undefined).
    The guardrails (rule 1) need the request log and are :func:`guardrail_breaks`.
    """
    n_units, n_imps = np.asarray(users, dtype=float), np.asarray(impressions, dtype=float)
    lo, hi, r_hi = (np.asarray(v, dtype=float) for v in (ctr_lo, ctr_hi, rpm_hi))
    ready = (n_units.min(axis=-1) >= policy.min_users_per_arm) & (n_imps.min(axis=-1) >= policy.min_impressions_per_arm)
    rpm_rule = policy.rpm_must_not_be_worse
    worse = (hi < 0) | (rpm_rule & (r_hi < 0))  # NaN compares False: undefined is never "worse"
    better = np.isfinite(lo) & (lo > policy.ctr_uplift_threshold) & (np.isfinite(r_hi) | (not rpm_rule))
    return np.select([~ready, worse, better], ["continue", "rollback", "promote"], "continue")[()]


def _interval(a: ABAnalysis, u: Uplift, name: str) -> str:
    """``"CTR uplift +4.10% (95% sequential CS [+1.20%, +7.00%], 8000 users)"``: method and numbers."""
    level = f"{100 * (1 - a.alpha):g}%"
    kind = "sequential CS" if u.method == "sequential" else "fixed-horizon CI"
    extra = " + CUPED" if u.cuped else ""
    return (f"{name} uplift {_pct(u.estimate)} ({level} {kind}{extra} [{_pct(u.lo)}, {_pct(u.hi)}], "
            f"{u.units} {a.unit}s)")


def _uplift_verdict(a: ABAnalysis, policy: CanaryPolicy) -> tuple[list[str], list[str]]:
    """(reasons to roll back, reasons promotion is not yet earned) from the uplift intervals."""
    ctr, rpm = _interval(a, a.ctr, "CTR"), _interval(a, a.rpm, "RPM")
    worse, pending = [], []
    if a.ctr.hi < 0:
        worse.append(f"{ctr} is significantly below 0")
    if policy.rpm_must_not_be_worse and a.rpm.hi < 0:
        worse.append(f"{rpm} is significantly below 0")
    if not math.isfinite(a.ctr.lo):
        pending.append(f"{ctr} is undefined: an arm has no clicks yet")
    elif not a.ctr.lo > policy.ctr_uplift_threshold:
        pending.append(f"{ctr}: lower bound {_pct(a.ctr.lo)} <= threshold {_pct(policy.ctr_uplift_threshold)}")
    if policy.rpm_must_not_be_worse and not math.isfinite(a.rpm.hi):
        pending.append(f"{rpm} is undefined: an arm has no revenue yet")
    return worse, pending


def _numbers(a: ABAnalysis) -> dict[str, Any]:
    canary, champion = a.arms["canary"], a.arms["champion"]
    return {
        "users_champion": champion["users"], "users_canary": canary["users"],
        "units_champion": a.srm.observed["champion"], "units_canary": a.srm.observed["canary"],
        "impressions_champion": champion["impressions"], "impressions_canary": canary["impressions"],
        "ctr_champion": champion["ctr"], "ctr_canary": canary["ctr"],
        "ctr_uplift": a.ctr.estimate, "ctr_lo": a.ctr.lo, "ctr_hi": a.ctr.hi, "ctr_p": a.ctr.p_value,
        "ctr_fixed_lo": a.ctr.fixed_lo, "ctr_fixed_hi": a.ctr.fixed_hi,
        "rpm_champion": champion["rpm"], "rpm_canary": canary["rpm"],
        "rpm_uplift": a.rpm.estimate, "rpm_lo": a.rpm.lo, "rpm_hi": a.rpm.hi, "rpm_p": a.rpm.p_value,
        "rpm_fixed_lo": a.rpm.fixed_lo, "rpm_fixed_hi": a.rpm.fixed_hi,
        "ctr_variance_reduction": a.ctr.variance_reduction, "rpm_variance_reduction": a.rpm.variance_reduction,
        "srm_p": a.srm.p_value, "canary_error_rate": canary["error_rate"],
        "canary_p99_latency_ms": canary["latency_p99_ms"], "mixed_users": a.mixed_users,
        **a.log_quality,
    }


def decide(analysis: ABAnalysis, policy: CanaryPolicy) -> Decision:
    """Promote, roll back or continue the canary (rules in the module docstring)."""
    if policy.alpha != analysis.alpha:
        log.warning("decide: policy alpha %g differs from the analysis' %g; the analysis' intervals are used",
                    policy.alpha, analysis.alpha)
    # the interval a decision reads is the analysis'; one formed another way than the policy asks is refused
    for name in ("method", "cuped", "sequential_tuning_n"):
        if getattr(policy, name) != getattr(analysis, name):
            raise ConfigError(f"the canary policy asks for {name}={getattr(policy, name)!r} but the analysis was made "
                              f"with {name}={getattr(analysis, name)!r}: analyse with the same policy "
                              "(genctr.monitoring.analysis.analyze(logs, canary_percent, policy)) before deciding")
    if policy.analysis_unit not in ("auto", analysis.unit):
        raise ConfigError(f"the canary policy asks for analysis_unit={policy.analysis_unit!r} but the analysis is per "
                          f"{analysis.unit}: analyse with the same policy before deciding")
    numbers = _numbers(analysis)
    decision = _decide(analysis, policy, numbers)
    log.info("canary decision %s: %s", decision.action, "; ".join(decision.reasons))
    return decision


def _decide(a: ABAnalysis, policy: CanaryPolicy, numbers: dict[str, Any]) -> Decision:
    if all(a.arms[arm]["requests"] == 0 and a.arms[arm]["impressions"] == 0 for arm in a.arms):
        shortfalls = sample_shortfalls(a.arms, policy.min_users_per_arm, policy.min_impressions_per_arm)
        return Decision("continue", ["no traffic yet: no request or impression logged for either arm",
                                     *shortfalls], numbers)
    breaks = guardrail_breaks(a, policy)
    if breaks:
        return Decision("rollback", breaks, numbers)
    arms = [a.arms.get(arm, {}) for arm in ("champion", "canary")]
    action = str(statistical_actions(np.array([m.get("users", 0) for m in arms]),
                                     np.array([m.get("impressions", 0) for m in arms]),
                                     a.ctr.lo, a.ctr.hi, a.rpm.hi, policy))
    shortfalls = sample_shortfalls(a.arms, policy.min_users_per_arm, policy.min_impressions_per_arm)
    worse, pending = _uplift_verdict(a, policy)
    if shortfalls:
        return Decision("continue", shortfalls, numbers)
    if action == "rollback":
        return Decision("rollback", worse, numbers)
    if action == "continue":
        return Decision("continue", pending, numbers)
    reasons = [f"{_interval(a, a.ctr, 'CTR')}: lower bound > threshold {_pct(policy.ctr_uplift_threshold)}"]
    if policy.rpm_must_not_be_worse:
        reasons.append(f"{_interval(a, a.rpm, 'RPM')} is not significantly below 0")
    return Decision("promote", reasons, numbers)


__all__ = ["ACTIONS", "CanaryPolicy", "Decision", "decide", "guardrail_breaks", "statistical_actions"]
