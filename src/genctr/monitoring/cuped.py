"""The log uplift of a ratio metric from additive per-arm sums: delta method, optionally with CUPED.

A ratio metric ``R = ΣY / ΣD`` over units (CTR: clicks / impressions; revenue per impression)
is, to first order, a mean of per-unit *influence values* (Deng, Knoblich & Lu, KDD 2018); on the
log scale the influence of unit ``i`` is ``ℓ_i = Y_i / Ȳ - D_i / D̄`` (mean 0 in each arm), so::

    Var(log R) ≈ Σ ℓ_i² / ((n - 1) n)          Σ ℓ² = ΣY²/Ȳ² - 2 ΣYD/(Ȳ D̄) + ΣD²/D̄²

which equals ``Var(R) / R²`` with ``Var(R)`` of :func:`genctr.monitoring.analysis.ratio_delta`.

CUPED (Deng, Xu, Kohavi & Walker, WSDM 2013) removes the part of ``ℓ`` a pre-experiment
covariate ``X`` predicts. For a ratio metric the adjustment acts on the linearised values (the
delta method first, then CUPED)::

    θ = Σ_arms Σ_i ℓ_i (X_i - X̄_arm) / Σ_arms Σ_i (X_i - X̄_arm)²    pooled over both arms
    log(R_t / R_c)_cuped = log(R_t / R_c) - θ (X̄_t - X̄_c)
    Var_arm = Σ (ℓ_i - θ (X_i - X̄_arm))² / ((n - 1) n)

``X`` is measured before the canary started, so it cannot depend on the arm: ``E[X̄_t - X̄_c] = 0``
and the adjusted estimate stays unbiased, while its variance shrinks by the share of ``ℓ``'s
variance that ``X`` explains (``1 - corr(ℓ, X)²``). θ is pooled (within-arm centred) because one θ
for both arms is what keeps the adjustment's expectation 0; estimating it from the same data costs
O(1/n) bias, negligible at canary sizes (Deng et al. 2013, sec. 3.3).

Every quantity is a sum over units, so sums of a prefix of the units (cumulative sums, one per look)
give the estimate at every look without revisiting a unit: :class:`RatioSums` holds them, any shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUM_FIELDS = ("n", "y", "d", "yy", "dd", "yd", "x", "xx", "xy", "xd")


@dataclass(frozen=True)
class RatioSums:
    """Sums over one arm's units of a ratio metric ``ΣY / ΣD`` and its covariate ``X``.

    Every field is an array of the same shape (``()`` for one analysis, ``(runs, looks)`` in a
    simulation); sums of disjoint sets of units add field by field.
    """

    n: np.ndarray  # units
    y: np.ndarray  # Σ Y  (clicks, or revenue)
    d: np.ndarray  # Σ D  (impressions)
    yy: np.ndarray  # Σ Y²
    dd: np.ndarray  # Σ D²
    yd: np.ndarray  # Σ Y·D
    x: np.ndarray  # Σ X  (0 everywhere without a covariate)
    xx: np.ndarray  # Σ X²
    xy: np.ndarray  # Σ X·Y
    xd: np.ndarray  # Σ X·D

    @staticmethod
    def terms(num: np.ndarray, den: np.ndarray, cov: np.ndarray | None = None) -> list[np.ndarray]:
        """The 10 per-unit terms in :data:`SUM_FIELDS` order, each ``num``'s shape; sum (or bincount) each."""
        y, d = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
        x = np.zeros_like(y) if cov is None else np.asarray(cov, dtype=float)
        return [np.ones_like(y), y, d, y * y, d * d, y * d, x, x * x, x * y, x * d]

    @classmethod
    def of(cls, num: np.ndarray, den: np.ndarray, cov: np.ndarray | None = None) -> RatioSums:
        """Sums over the last axis of per-unit ``num``, ``den`` and ``cov`` (each ``(..., n)``)."""
        return cls.stack([term.sum(axis=-1) for term in cls.terms(num, den, cov)])

    @classmethod
    def stack(cls, sums: np.ndarray | list[np.ndarray]) -> RatioSums:
        """From 10 arrays of sums (a list, or a ``(10, ...)`` array) in :data:`SUM_FIELDS` order."""
        return cls(*(np.asarray(s, dtype=float) for s in sums))


@dataclass(frozen=True)
class LogRatio:
    """``log(R_t / R_c)`` and its standard error, raw and CUPED-adjusted (arrays, one shape)."""

    r_t: np.ndarray  # each arm's ratio ΣY/ΣD
    r_c: np.ndarray
    var_t: np.ndarray  # delta-method Var(R) of each arm (linear scale, no CUPED)
    var_c: np.ndarray
    estimate: np.ndarray  # log(R_t / R_c), minus θ(X̄_t - X̄_c) with CUPED; NaN where a ratio is 0
    se: np.ndarray  # standard error of ``estimate``
    se_raw: np.ndarray  # standard error without CUPED (== se when CUPED is off)
    theta: np.ndarray  # CUPED coefficient (0 when off or when the covariate does not vary)
    n: np.ndarray  # units of both arms


def _arm(s: RatioSums) -> tuple[np.ndarray, ...]:
    """``(R, Var(R), Σℓ², ΣXℓ, Σ(X - X̄)²)`` of one arm; NaN where the arm has < 2 units or no ``D``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(s.n >= 2, s.n, np.nan)
        r = s.y / s.d
        y_bar, d_bar = s.y / n, s.d / n
        resid = s.yy - 2 * r * s.yd + r**2 * s.dd  # Σ (Y - R D)²: the linearised residual's sum of squares
        var = np.maximum(resid, 0.0) / ((n - 1) * n * d_bar**2)
        s_ll = np.maximum(resid, 0.0) / (y_bar**2)  # Σ ℓ² with ℓ = (Y - R D) / Ȳ = Y/Ȳ - D/D̄
        s_xl = s.xy / y_bar - s.xd / d_bar  # Σ X ℓ = Σ (X - X̄) ℓ, as Σ ℓ = 0
        s_xx = np.maximum(s.xx - s.x**2 / n, 0.0)
    return r, var, s_ll, s_xl, s_xx


def log_ratio(t: RatioSums, c: RatioSums, cuped: bool = False) -> LogRatio:
    """``log(R_t / R_c)`` of canary (t) over champion (c) with its delta-method SE (module docstring).

    With ``cuped`` the covariate sums adjust estimate and SE, θ pooled over both arms; where the
    covariate does not vary (e.g. no unit has a pre-period) θ is 0 and nothing changes.
    """
    r_t, var_t, ll_t, xl_t, xx_t = _arm(t)
    r_c, var_c, ll_c, xl_c, xx_c = _arm(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (r_t > 0) & (r_c > 0)
        est = np.where(ok, np.log(r_t / r_c), np.nan)
        n_t, n_c = t.n, c.n
        var_raw = ll_t / ((n_t - 1) * n_t) + ll_c / ((n_c - 1) * n_c)
        theta = np.zeros_like(est)
        if cuped:
            theta = (xl_t + xl_c) / (xx_t + xx_c)
            theta = np.where(np.isfinite(theta), theta, 0.0)
        adj_t = np.maximum(ll_t - 2 * theta * xl_t + theta**2 * xx_t, 0.0) / ((n_t - 1) * n_t)
        adj_c = np.maximum(ll_c - 2 * theta * xl_c + theta**2 * xx_c, 0.0) / ((n_c - 1) * n_c)
        shift = theta * (t.x / n_t - c.x / n_c)  # θ (X̄_t - X̄_c): 0 in expectation
        est = est - np.where(theta != 0, shift, 0.0)
        se = np.where(ok, np.sqrt(adj_t + adj_c), np.nan)
        se_raw = np.where(ok, np.sqrt(var_raw), np.nan)
    return LogRatio(r_t, r_c, var_t, var_c, est, se, se_raw, theta, t.n + c.n)


__all__ = ["SUM_FIELDS", "LogRatio", "RatioSums", "log_ratio"]
