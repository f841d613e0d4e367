"""Canaries looked at on a schedule, simulated at aggregate level and vectorised across runs.

No HTTP and no logs: each run draws per-unit totals directly (impressions, clicks, revenue, and
the pre-period ones), every unit arrives at a uniform time in the window, and the per-arm sums of
:class:`~genctr.monitoring.cuped.RatioSums` at each look are cumulative bincounts over the looks.
The looks are then judged with the canary step's own functions:
:func:`genctr.monitoring.analysis.uplift_arrays` (the intervals, either method, with or without
CUPED) and :func:`genctr.monitoring.decision.statistical_actions` (the decision rules 2-4). The
guardrails (errors, latency, SRM) are outside it: its split is right by construction.

The users (heterogeneous, as real ones are)::

    activity a ~ Gamma(activity_shape, mean_impressions / activity_shape)     heavy-tailed
    CTR      p ~ Beta(*ctr_beta)                                             mean 5 % by default
    pre-period impressions ~ Poisson(pre_period · a), 0 for new_user_share of the users;
    clicks ~ Binomial(impressions, p); revenue of k clicks ~ Gamma(2k, 0.25) (0.50 per click)
    in the window the CTR has drifted, p · LogNormal(-σ²/2, σ) with σ = ctr_drift, times
    (1 + ctr_lift) in the canary, so the pre-period CTR predicts the in-period CTR, not perfectly

``unit="user"``: a user-sticky split; the user has 1 + Poisson(a) impressions in the window and
arrives (with all of them) at one uniform time: the analysis unit is the user. ``unit="request"``:
each request is drawn to an arm on its own; a user makes 1 + Poisson(a / slots) requests of
``slots`` impressions, each at its own uniform time: the unit is the request, and one user's
correlated requests land in both arms.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from genctr.errors import ConfigError, describe
from genctr.monitoring.analysis import uplift_arrays
from genctr.monitoring.cuped import SUM_FIELDS, RatioSums
from genctr.monitoring.decision import CanaryPolicy, statistical_actions
from genctr.monitoring.units import pre_covariate

log = logging.getLogger(__name__)

REVENUE_SHAPE, REVENUE_SCALE = 2.0, 0.25  # revenue per click ~ Gamma(2, 0.25): mean 0.50


@dataclass
class CanarySimulation:
    """One simulated setting: ``runs`` seeded canaries of ``users`` users, each looked at ``looks`` times."""

    runs: int = 500
    looks: int = 24  # evenly spaced in the window: the hourly schedule over a day
    users: int = 8_000  # users of both arms together
    canary_percent: int = 50
    unit: str = "user"  # "user" (user-sticky split) | "request" (each request drawn on its own)
    ctr_lift: float = 0.0  # relative CTR lift of the canary: 0 = A/A, 0.05 = +5 %
    mean_impressions: float = 20.0  # a user's mean activity per window
    activity_shape: float = 1.0  # Gamma shape of the activity: 1 = exponential, heavy-tailed
    ctr_beta: tuple[float, float] = (0.5, 9.5)
    slots: int = 3  # impressions per request (request unit)
    pre_period: float = 1.0  # pre-period length relative to the window
    new_user_share: float = 0.2  # users without any pre-period traffic
    ctr_drift: float = 0.3  # log-normal sd of a user's CTR change from the pre-period to the window
    seed: int = 0
    max_chunk_units: int = 2_000_000  # units drawn at once (memory ~ 100 bytes per unit)

    def __post_init__(self) -> None:
        for name in ("runs", "looks", "users", "slots", "seed", "max_chunk_units"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise ConfigError(f"canary simulation {name} must be a positive integer, got {describe(value)}")
        if not isinstance(self.canary_percent, int) or not 0 < self.canary_percent < 100:
            raise ConfigError(f"canary simulation canary_percent must be in 1..99, got {describe(self.canary_percent)}")
        if self.unit not in ("user", "request"):
            raise ConfigError(f"canary simulation unit must be 'user' or 'request', got {describe(self.unit)}")
        if not -1.0 < self.ctr_lift < 10.0:
            raise ConfigError(f"canary simulation ctr_lift must be in (-1, 10), got {describe(self.ctr_lift)}")
        for name in ("mean_impressions", "activity_shape"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"canary simulation {name} must be positive, got {describe(getattr(self, name))}")
        if len(self.ctr_beta) != 2 or not all(v > 0 for v in self.ctr_beta):
            raise ConfigError(f"canary simulation ctr_beta must be two positive numbers, got {describe(self.ctr_beta)}")
        if self.pre_period < 0 or self.ctr_drift < 0 or not 0.0 <= self.new_user_share <= 1.0:
            raise ConfigError("canary simulation pre_period and ctr_drift must be >= 0 and new_user_share in [0, 1], "
                              f"got {self.pre_period}, {self.ctr_drift}, {self.new_user_share}")


@dataclass
class SimulatedLooks:
    """Per-arm sums at every look of every run: each array ``(runs, looks)``, arms last where ``2``."""

    ctr: tuple[RatioSums, RatioSums]  # (canary, champion) sums of clicks / impressions
    rpm: tuple[RatioSums, RatioSums]  # (canary, champion) sums of revenue / impressions
    users: np.ndarray  # (runs, looks, 2) distinct users seen per arm [champion, canary]
    impressions: np.ndarray  # (runs, looks, 2)


def _users(rng: np.random.Generator, cfg: CanarySimulation, runs: int) -> dict[str, np.ndarray]:
    """Per-user draws, each ``(runs, users)``: activity, window CTR (before the lift), pre-period sums."""
    shape = (runs, cfg.users)
    act = rng.gamma(cfg.activity_shape, cfg.mean_impressions / cfg.activity_shape, shape)
    p = rng.beta(*cfg.ctr_beta, shape)
    has_pre = rng.random(shape) >= cfg.new_user_share
    imp_pre = rng.poisson(cfg.pre_period * act) * has_pre
    clk_pre = rng.binomial(imp_pre, p)
    rev_pre = rng.gamma(REVENUE_SHAPE * clk_pre, REVENUE_SCALE) * (clk_pre > 0)  # Gamma(0) is 0 anyway
    drift = np.exp(cfg.ctr_drift * rng.standard_normal(shape) - cfg.ctr_drift**2 / 2)
    return {"act": act, "p": p * drift, "imp_pre": imp_pre, "clk_pre": clk_pre, "rev_pre": rev_pre}


def _units(rng: np.random.Generator, cfg: CanarySimulation, u: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flat per-unit arrays of one chunk: run, user (flat index), arm, look, impressions, clicks, revenue."""
    runs = u["act"].shape[0]
    flat_user = np.arange(runs * cfg.users)  # (runs * users,) user index across the chunk's runs
    if cfg.unit == "user":
        user, imps = flat_user, 1 + rng.poisson(u["act"]).ravel()
    else:
        user = np.repeat(flat_user, 1 + rng.poisson(u["act"] / cfg.slots).ravel())  # (requests,)
        imps = np.full(len(user), cfg.slots)
    arm = (rng.random(len(user)) < cfg.canary_percent / 100).astype(np.int64)  # 1 = canary
    p = np.minimum(u["p"].ravel()[user] * np.where(arm == 1, 1.0 + cfg.ctr_lift, 1.0), 1.0)
    clicks = rng.binomial(imps, p)
    revenue = rng.gamma(REVENUE_SHAPE * clicks, REVENUE_SCALE) * (clicks > 0)
    look = np.minimum((rng.random(len(user)) * cfg.looks).astype(np.int64), cfg.looks - 1)  # arrival look
    return {"run": user // cfg.users, "user": user, "arm": arm, "look": look, "imps": imps.astype(float),
            "clicks": clicks.astype(float), "revenue": revenue}


def _covariates(cfg: CanarySimulation, u: dict[str, np.ndarray], user: np.ndarray) -> dict[str, np.ndarray]:
    """The product's CUPED covariate of each unit, from its user's pre-period (pooled ratio per run)."""
    den = u["imp_pre"].astype(float)
    out = {}
    for metric, num in (("ctr", u["clk_pre"].astype(float)), ("rpm", u["rev_pre"])):
        with np.errstate(divide="ignore", invalid="ignore"):
            r_pre = np.nan_to_num(num.sum(axis=1, keepdims=True) / den.sum(axis=1, keepdims=True))  # (runs, 1)
        out[metric] = pre_covariate(num, den, r_pre, cfg.unit).ravel()[user]
    return out


def _cumulative(terms: list[np.ndarray], bins: np.ndarray, runs: int, looks: int) -> np.ndarray:
    """10 per-unit terms ``(units,)`` -> ``(10, runs, looks, 2)`` sums over the units arrived by each look."""
    k = runs * looks * 2
    sums = np.stack([np.bincount(bins, weights=row, minlength=k) for row in terms])  # 10 bincounts, not per unit
    return sums.reshape(len(terms), runs, looks, 2).cumsum(axis=2)


def _chunk(rng: np.random.Generator, cfg: CanarySimulation, runs: int) -> dict[str, np.ndarray]:
    u = _users(rng, cfg, runs)
    x = _units(rng, cfg, u)
    cov = _covariates(cfg, u, x["user"])
    bins = (x["run"] * cfg.looks + x["look"]) * 2 + x["arm"]  # (units,) -> (run, look, arm)
    out = {m: _cumulative(RatioSums.terms(x[num], x["imps"], cov[m]), bins, runs, cfg.looks)
           for m, num in (("ctr", "clicks"), ("rpm", "revenue"))}
    # distinct users per arm by each look: a user counts from their first unit in that arm
    first = np.full(runs * cfg.users * 2, cfg.looks)
    np.minimum.at(first, x["user"] * 2 + x["arm"], x["look"])
    seen = first < cfg.looks
    key = ((np.arange(first.size) // (2 * cfg.users)) * cfg.looks + first) * 2 + np.arange(first.size) % 2
    users = np.bincount(key[seen], minlength=runs * cfg.looks * 2).reshape(runs, cfg.looks, 2).cumsum(axis=1)
    out["users"] = users.astype(float)
    return out


def simulate(cfg: CanarySimulation) -> SimulatedLooks:
    """Draw ``cfg.runs`` canaries (seeded by ``cfg.seed``) and sum each arm at each look."""
    rng = np.random.default_rng(cfg.seed)
    units_per_run = cfg.users * (1 if cfg.unit == "user" else 1 + cfg.mean_impressions / cfg.slots)
    per_chunk = max(1, int(cfg.max_chunk_units // units_per_run))
    parts = [_chunk(rng, cfg, min(per_chunk, cfg.runs - start)) for start in range(0, cfg.runs, per_chunk)]
    joined = {k: np.concatenate([p[k] for p in parts], axis=1 if k != "users" else 0) for k in parts[0]}

    def arms(sums: np.ndarray) -> tuple[RatioSums, RatioSums]:  # (10, runs, looks, 2) -> (canary, champion)
        return RatioSums.stack(sums[..., 1]), RatioSums.stack(sums[..., 0])

    imps = joined["ctr"][SUM_FIELDS.index("d")]  # (runs, looks, 2)
    return SimulatedLooks(arms(joined["ctr"]), arms(joined["rpm"]), joined["users"], imps)


@dataclass
class Verdicts:
    """The decision at every look and the first one of each run."""

    actions: np.ndarray  # (runs, looks) "promote" | "rollback" | "continue"
    first_action: np.ndarray  # (runs,) the first non-continue action, "continue" if none
    first_look: np.ndarray  # (runs,) 1-based look of that decision, 0 if none
    ctr_lo: np.ndarray  # (runs, looks) bounds the decisions read
    ctr_hi: np.ndarray
    ctr_variance_reduction: np.ndarray  # (runs,) share of the CTR uplift's variance CUPED removed, last look


def judge(looks: SimulatedLooks, policy: CanaryPolicy) -> Verdicts:
    """Every look judged by ``policy`` (method, alpha, n*, CUPED, thresholds) with the product's rules."""
    ctr, rpm = ({k: v for k, v in uplift_arrays(t, c, alpha=policy.alpha, method=policy.method,
                                                tuning_n=policy.sequential_tuning_n, cuped=policy.cuped).items()}
                for t, c in (looks.ctr, looks.rpm))
    actions = statistical_actions(looks.users, looks.impressions, ctr["lo"], ctr["hi"], rpm["hi"], policy)
    decided = actions != "continue"
    any_decided = decided.any(axis=1)
    first = decided.argmax(axis=1)  # (runs,) first decided look, 0 when none (masked below)
    first_action = np.where(any_decided, actions[np.arange(len(first)), first], "continue")
    return Verdicts(actions, first_action, np.where(any_decided, first + 1, 0), ctr["lo"], ctr["hi"],
                    ctr["variance_reduction"][:, -1])


def summarise(v: Verdicts) -> dict[str, float]:
    """Rates of first decisions and the median look of each kind (NaN when none happened).

    ``<action>_rate``: share of runs whose first decision is that action (the canary acts on it and
    stops); ``<action>_median_look``: median 1-based look of those decisions; ``one_look_<action>_rate``:
    the share had the last look been the only one (the planned single look a fixed horizon is for).
    """
    out: dict[str, float] = {"runs": float(len(v.first_action))}
    for action in ("promote", "rollback"):
        hit = v.first_action == action
        out[f"{action}_rate"] = float(hit.mean())
        out[f"{action}_median_look"] = float(np.median(v.first_look[hit])) if hit.any() else float("nan")
        out[f"one_look_{action}_rate"] = float((v.actions[:, -1] == action).mean())
    out["ctr_variance_reduction_median"] = float(np.median(v.ctr_variance_reduction))
    return out


def run(cfg: CanarySimulation, policies: dict[str, CanaryPolicy]) -> dict[str, dict[str, float]]:
    """:func:`simulate` once, then :func:`judge` and :func:`summarise` it under each named policy."""
    looks = simulate(cfg)
    return {name: summarise(judge(looks, p)) for name, p in policies.items()}


__all__ = ["CanarySimulation", "SimulatedLooks", "Verdicts", "judge", "run", "simulate", "summarise"]
