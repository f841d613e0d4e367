"""The traffic split of a user-sticky A/B test: which arm a user is on, for a given canary percent.

One function for every party: the user-hash router (:mod:`genctr.serving.router`) routes by it, the
traffic simulator groups users by it, a client batching users calls it, and the analysis'
sample-ratio check expects its shares. (Re-exported by :mod:`genctr.deploy.base`.)
"""
from __future__ import annotations

import numpy as np

from genctr.serving.state import CANARY, CHAMPION

ARM_SALT = 0x67656E637472  # "genctr": the split's hash key; another salt is another split


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection of uint64 with good avalanche (wraps on purpose)."""
    with np.errstate(over="ignore"):  # 0-d arrays warn on the intended wrap-around
        z = z + np.uint64(0x9E3779B97F4A7C15)
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


def assign_arms(user_ids: np.ndarray, canary_percent: int, salt: int = ARM_SALT) -> np.ndarray:
    """(U,) bool, True = canary: the user-level split of (U,) integer ``user_ids``.

    A stable hash puts each user in one of 100 buckets; buckets below ``canary_percent`` go to
    the canary, so a user keeps the arm for a given split and raising the percent only moves
    champion users over. The one assignment function of the product: the user-hash router,
    the simulator and any client that groups users by arm all call it.
    """
    bucket = (unit_hash(np.asarray(user_ids, dtype=np.int64), salt) * 100).astype(np.int64)  # (U,) in 0..99
    return bucket < canary_percent


def assign_arm(user_id: int, canary_percent: int, salt: int = ARM_SALT) -> str:
    """:func:`assign_arms` for one user: ``"champion"`` or ``"canary"``."""
    return CANARY if bool(assign_arms(np.asarray([user_id]), canary_percent, salt)[0]) else CHAMPION
