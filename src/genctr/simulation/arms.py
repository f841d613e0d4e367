"""User-level arm assignment for simulated traffic, with an optional deliberate SRM."""
from __future__ import annotations

import numpy as np

from genctr.deploy.base import assign_arms, unit_hash

__all__ = ["assign_users", "leaked_users", "unit_hash"]


def leaked_users(user_ids: np.ndarray, srm_skew: float, seed: int = 0) -> np.ndarray:
    """(U,) bool: the users a misconfigured client sends straight to the canary's own URL.

    A stable per-user share ``srm_skew`` (a hash of ``seed`` and the id): the deliberate
    sample-ratio mismatch of a test. Their requests bypass the split, as a client that found
    the canary's tag URL would.
    """
    if srm_skew <= 0.0:
        return np.zeros(len(user_ids), bool)
    return unit_hash(np.asarray(user_ids, np.int64), seed, 0x5A3) < srm_skew


def assign_users(user_ids: np.ndarray, canary_percent: int, srm_skew: float = 0.0, seed: int = 0) -> np.ndarray:
    """(U,) bool, True = canary, for raw ``user_ids`` (U,): where each user's traffic lands.

    The split is the deployment's own (:func:`genctr.deploy.base.assign_arms`, which the
    user-hash router applies too), so a user lands on the same arm here as through the router;
    :func:`leaked_users` then moves a share ``srm_skew`` of the champion-bucket users to the
    canary: the canary's expected share becomes p + (1 - p) * srm_skew.
    """
    canary = assign_arms(user_ids, canary_percent) if canary_percent > 0 else np.zeros(len(user_ids), bool)
    return canary | leaked_users(user_ids, srm_skew, seed)
