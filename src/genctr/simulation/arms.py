"""User-level arm assignment for simulated traffic, with an optional deliberate SRM."""
from __future__ import annotations

import numpy as np

from genctr.deploy.base import CANARY, assign_arm

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection of uint64 with good avalanche (wraps on purpose)."""
    with np.errstate(over="ignore"):  # 0-d arrays warn on the intended wrap-around
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit_hash(*keys: np.ndarray | int) -> np.ndarray:
    """A deterministic uniform number in [0, 1) per element of the broadcast integer ``keys``."""
    shape = np.broadcast(*(np.asarray(k) for k in keys)).shape
    h = np.zeros(shape, np.uint64)
    for k in keys:
        h = _mix64(h ^ np.asarray(k, dtype=np.int64).astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def assign_users(user_ids: np.ndarray, canary_percent: int, srm_skew: float = 0.0, seed: int = 0) -> np.ndarray:
    """(U,) bool, True = canary, for raw ``user_ids`` (U,).

    The split is the deployment's own stable hash (:func:`genctr.deploy.base.assign_arm`), so a
    user lands on the same arm here as with any other client. ``srm_skew`` then moves that
    share of the champion-bucket users to the canary, also per user and stable (a hash of
    ``seed`` and the id): the canary's expected share becomes p + (1 - p) * srm_skew.
    """
    if canary_percent <= 0:
        canary = np.zeros(len(user_ids), bool)
    else:  # one hash per distinct user, once per run: not in the per-request path
        canary = np.fromiter((assign_arm(int(u), canary_percent) == CANARY for u in user_ids), bool, len(user_ids))
    if srm_skew > 0.0:
        canary |= unit_hash(np.asarray(user_ids, np.int64), seed, 0x5A3) < srm_skew
    return canary
