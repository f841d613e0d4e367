"""The canary decision: promote, roll back, or keep collecting data.

Order of the rules:

1. Guardrails act at once, whatever the sample size, because they are about safety and trust:
   canary error rate above ``max_error_rate``, canary p99 latency above ``max_p99_latency_ms``,
   or a sample-ratio mismatch (SRM p < ``srm_alpha``: the split itself is broken, so no uplift
   measured on it can be trusted) -> ``rollback``.
2. Below the minimum sample size (users and impressions per arm) -> ``continue``.
3. CTR uplift's upper bound below 0, or (with ``rpm_must_not_be_worse``) RPM's -> ``rollback``.
4. CTR uplift's lower bound above ``ctr_uplift_threshold`` (and RPM not significantly worse)
   -> ``promote``; otherwise ``continue``.

Before all of them: a window without a single request or impression in either arm is
``continue`` with the reason "no traffic yet" (nothing can be judged, nothing is wrong).

Every reason string carries the numbers it was decided on.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from genctr.config import from_dict
from genctr.errors import ConfigError, describe
from genctr.monitoring.analysis import ABAnalysis, json_safe, sample_shortfalls
from genctr.monitoring.logs import DUPLICATE_POLICIES

log = logging.getLogger(__name__)

ACTIONS = ("promote", "rollback", "continue")


@dataclass
class CanaryPolicy:
    """Thresholds of the canary decision (uplifts are relative: 0.01 = +1 %)."""

    alpha: float = 0.05  # two-sided CIs of the uplifts are (1 - alpha)
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
        out.append(f"sample ratio mismatch: users champion {obs['champion']} / canary {obs['canary']} vs expected "
                   f"{exp['champion']:.0f} / {exp['canary']:.0f} at {a.canary_percent}% canary, "
                   f"chi2={a.srm.chi2:.2f}, p={a.srm.p_value:.3g} < {policy.srm_alpha:g}")
    if canary["requests"] > 0 and canary["error_rate"] > policy.max_error_rate:
        out.append(f"canary error rate {canary['error_rate']:.4f} > max {policy.max_error_rate:.4f} "
                   f"({int(round(canary['error_rate'] * canary['requests']))} of {int(canary['requests'])} requests)")
    if canary["requests"] > 0 and canary["latency_p99_ms"] > policy.max_p99_latency_ms:
        out.append(f"canary p99 latency {canary['latency_p99_ms']:.1f} ms > max {policy.max_p99_latency_ms:.1f} ms")
    return out


def _uplift_verdict(a: ABAnalysis, policy: CanaryPolicy) -> tuple[list[str], list[str]]:
    """(reasons to roll back, reasons promotion is not yet earned) from the uplift CIs."""
    level = f"{100 * (1 - a.alpha):g}% CI"
    ctr = f"CTR uplift {_pct(a.ctr.estimate)} ({level} [{_pct(a.ctr.lo)}, {_pct(a.ctr.hi)}])"
    rpm = f"RPM uplift {_pct(a.rpm.estimate)} ({level} [{_pct(a.rpm.lo)}, {_pct(a.rpm.hi)}])"
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
        "impressions_champion": champion["impressions"], "impressions_canary": canary["impressions"],
        "ctr_champion": champion["ctr"], "ctr_canary": canary["ctr"],
        "ctr_uplift": a.ctr.estimate, "ctr_lo": a.ctr.lo, "ctr_hi": a.ctr.hi, "ctr_p": a.ctr.p_value,
        "rpm_champion": champion["rpm"], "rpm_canary": canary["rpm"],
        "rpm_uplift": a.rpm.estimate, "rpm_lo": a.rpm.lo, "rpm_hi": a.rpm.hi, "rpm_p": a.rpm.p_value,
        "srm_p": a.srm.p_value, "canary_error_rate": canary["error_rate"],
        "canary_p99_latency_ms": canary["latency_p99_ms"], "mixed_users": a.mixed_users,
        **a.log_quality,
    }


def decide(analysis: ABAnalysis, policy: CanaryPolicy) -> Decision:
    """Promote, roll back or continue the canary (rules in the module docstring)."""
    if policy.alpha != analysis.alpha:
        log.warning("decide: policy alpha %g differs from the analysis' %g; the analysis' CIs are used",
                    policy.alpha, analysis.alpha)
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
    shortfalls = sample_shortfalls(a.arms, policy.min_users_per_arm, policy.min_impressions_per_arm)
    if shortfalls:
        return Decision("continue", shortfalls, numbers)
    worse, pending = _uplift_verdict(a, policy)
    if worse:
        return Decision("rollback", worse, numbers)
    if pending:
        return Decision("continue", pending, numbers)
    level = f"{100 * (1 - a.alpha):g}% CI"
    reasons = [f"CTR uplift {_pct(a.ctr.estimate)} ({level} [{_pct(a.ctr.lo)}, {_pct(a.ctr.hi)}]): "
               f"lower bound > threshold {_pct(policy.ctr_uplift_threshold)}"]
    if policy.rpm_must_not_be_worse:
        reasons.append(f"RPM uplift {_pct(a.rpm.estimate)} ({level} [{_pct(a.rpm.lo)}, {_pct(a.rpm.hi)}]) "
                       "is not significantly below 0")
    return Decision("promote", reasons, numbers)


__all__ = ["ACTIONS", "CanaryPolicy", "Decision", "decide", "guardrail_breaks"]
