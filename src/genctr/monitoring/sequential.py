"""Always-valid intervals for a canary that is looked at on a schedule: asymptotic confidence sequences.

A fixed-horizon interval ``est ± z_{1-α/2} · se`` holds at *one* planned look. The canary
pipeline looks every hour and acts on the first interval that clears a bound, so the chance that
*some* look falsely clears it grows with the number of looks (an A/A canary looked at 24 times
with 95 % intervals is promoted about 12 % of the time, not 2.5 %). A confidence sequence (CS)
is a sequence of intervals that covers the true value at *every* look simultaneously, so the
schedule may look as often as it likes and stop at the first decision.

The boundary is the normal mixture (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist.) in its
asymptotic form (Waudby-Smith, Arnold, Wu, Howard & Ramdas 2023, "Anytime-valid inference via
asymptotic confidence sequences", Thm 2.2), the boundary GrowthBook's gbstats ships. For an
estimate ``θ̂_n`` that is asymptotically a mean of ``n`` i.i.d. influence values with standard
deviation ``σ``::

    θ̂_n ± σ̂_n · sqrt( 2 (nρ² + 1) / (n² ρ²) · log( sqrt(nρ² + 1) / α ) )

covers ``θ`` at all ``n`` at once with probability -> 1 - α. With ``se_n = σ̂_n / sqrt(n)`` the
half-width is ``se_n`` times a multiplier that depends only on ``x = nρ²`` and ``α``::

    m(x) = sqrt( (x + 1) / x · (2 log(1/α) + log(x + 1)) )       (fixed horizon: z_{1-α/2})

``ρ > 0`` is the mixture's spread, the one tuning parameter. It is set by ``n*``, the sample size
(analysis units, both arms) at which the CS is narrowest: minimising ``m`` over ``x`` gives
``x* = -W₋₁(-α²/e) - 1`` (W₋₁ the lower Lambert-W branch; ≈ ``-2 log α + log(1 - 2 log α)``, the
closed form of Waudby-Smith et al. and gbstats), so ``ρ² = x* / n*``. At ``n*`` the CS is
``sqrt(x* + 1)`` standard errors wide on each side (3.04 at α = 0.05, against 1.96 for one look);
it widens only like ``sqrt(log n)`` relative to the fixed interval past ``n*`` but quickly below
it, so ``n*`` is best set near the *smallest* sample at which a decision is wanted.

The same boundary is the mixture SPRT of Johari, Koomen, Pekelis & Walsh (2017, "Peeking at A/B
tests"; Oper. Res. 2022) with a ``N(0, τ²)`` prior on the effect, ``τ² = ρ² σ²``; its likelihood
ratio is ``Λ_n = (1 + x)^{-1/2} exp(z² x / (2 (1 + x)))`` with ``z = θ̂_n / se_n``, and
``p_n = min(1, 1/Λ_n)`` is the always-valid p-value: the CS excludes 0 exactly when ``p_n < α``.

How α is spent: each interval is a two-sided (1 - α) CS. By Ville's inequality the probability that
it *ever* excludes the true value, on either side, is at most α; for a null estimate, symmetric
about the truth, each side takes α/2. The canary promotes on the CTR interval's lower side only
(false promotion <= α/2) and rolls back on the CTR *or* RPM interval's upper side (false rollback
<= α/2 + α/2 = α, by the union bound).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from genctr.errors import ConfigError, describe

METHODS = ("sequential", "fixed_horizon")  # how an uplift interval is formed (CanaryPolicy.method)
# n*: analysis units (both arms) at which the confidence sequence is narrowest (CanaryPolicy.sequential_tuning_n)
DEFAULT_TUNING_N = 10_000


def optimal_x(alpha: float) -> float:
    """``x* = n*ρ²`` that minimises the CS multiplier ``m(x)`` at level ``alpha`` (module docstring)."""
    _check_alpha(alpha)
    # stationary point of (1 + 1/x)(L + log(1 + x)), L = -2 log α: y - log y = 1 + L with y = 1 + x
    return float(-special.lambertw(-(alpha**2) / math.e, k=-1).real - 1.0)


def mixture_rho2(n_star: float, alpha: float) -> float:
    """The normal mixture's ``ρ²`` that makes the (1 - alpha) CS narrowest at ``n_star`` units."""
    if isinstance(n_star, bool) or not isinstance(n_star, (int, float, np.integer, np.floating)) \
            or not math.isfinite(n_star) or n_star <= 0:
        raise ConfigError(f"the sequential tuning sample size n* must be a positive number of units, "
                          f"got {describe(n_star)}")
    return optimal_x(alpha) / float(n_star)


def cs_multiplier(n: np.ndarray | float, alpha: float, rho2: float) -> np.ndarray:
    """Half-width of the (1 - alpha) confidence sequence in standard errors, at ``n`` units.

    Broadcasts over ``n`` (any shape); NaN where ``n <= 0`` (no data, no interval).
    """
    _check_alpha(alpha)
    x = np.asarray(n, dtype=float) * rho2
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.sqrt((x + 1.0) / x * (2.0 * math.log(1.0 / alpha) + np.log1p(x)))
    return np.where(x > 0, m, np.nan)[()]


def fixed_multiplier(alpha: float) -> float:
    """``z_{1-α/2}``: the half-width of one planned look's (1 - alpha) interval, in standard errors."""
    _check_alpha(alpha)
    return float(stats.norm.ppf(1 - alpha / 2))


def always_valid_p(z: np.ndarray | float, n: np.ndarray | float, rho2: float) -> np.ndarray:
    """Mixture-SPRT p-value ``min(1, sqrt(1 + x) · exp(-z² x / (2 (1 + x))))``, ``x = nρ²``.

    ``z``: estimate / standard error (any shape, broadcast with ``n``). Below ``alpha`` exactly when
    the (1 - alpha) CS excludes 0. NaN where ``z`` is NaN or ``n <= 0``.
    """
    z, x = np.asarray(z, dtype=float), np.asarray(n, dtype=float) * rho2
    with np.errstate(over="ignore", invalid="ignore"):
        log_p = 0.5 * np.log1p(x) - z**2 * x / (2.0 * (1.0 + x))
        p = np.minimum(1.0, np.exp(log_p))
    return np.where(x > 0, p, np.nan)[()]


def interval_multiplier(method: str, n: np.ndarray | float, alpha: float, n_star: float) -> np.ndarray:
    """Half-width in standard errors of ``method``'s (1 - alpha) interval at ``n`` units (broadcasts)."""
    if method == "sequential":
        return cs_multiplier(n, alpha, mixture_rho2(n_star, alpha))
    if method == "fixed_horizon":
        return np.broadcast_to(fixed_multiplier(alpha), np.shape(n)).astype(float)[()]
    raise ConfigError(f"interval method must be one of {METHODS}, got {describe(method)}")


def p_value(method: str, z: np.ndarray | float, n: np.ndarray | float, alpha: float, n_star: float) -> np.ndarray:
    """Two-sided p-value of H0 "no uplift" matching ``method``'s interval (always-valid when sequential)."""
    if method == "sequential":
        return always_valid_p(z, n, mixture_rho2(n_star, alpha))
    if method == "fixed_horizon":
        return (2.0 * stats.norm.sf(np.abs(np.asarray(z, dtype=float))))[()]
    raise ConfigError(f"interval method must be one of {METHODS}, got {describe(method)}")


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {describe(alpha)}")


__all__ = ["DEFAULT_TUNING_N", "METHODS", "always_valid_p", "cs_multiplier", "fixed_multiplier", "interval_multiplier",
           "mixture_rho2", "optimal_x", "p_value"]
