"""Offline CTR metrics: AUC, LogLoss, user-weighted gAUC, and one ``evaluate`` over a split.

Every function takes 1-D arrays of the same length: ``labels`` in {0, 1}, ``scores`` as
probabilities (or logits where a ``from_logits`` flag says so), ``users`` of any hashable
dtype. AUC is rank-based, so logits and probabilities give the same AUC and gAUC.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from genctr.errors import DataValidationError

log = logging.getLogger(__name__)

EPS = 1e-7  # probability clip for LogLoss: log(1e-7) ≈ -16 caps one row's loss


def check_labels_scores(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to ``(labels int8 (N,), scores float64 (N,))``."""
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise DataValidationError(f"labels ({y.size}) and scores ({s.size}) must have the same length")
    if y.size == 0:
        raise DataValidationError("no rows to evaluate: labels and scores are empty")
    if not np.isin(y, (0, 1)).all():
        raise DataValidationError("labels must be 0 or 1 (clicked); found other values")
    if not np.isfinite(s).all():
        raise DataValidationError("scores contain NaN or infinite values; check the model's outputs")
    return y.astype(np.int8), s


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC (ties count one half). Needs both classes present.

    The Mann-Whitney statistic of :func:`per_user_auc` with every row one user: numpy alone,
    so a training process does not pay scikit-learn's import (~1.5 s) for one number."""
    y, s = check_labels_scores(labels, scores)
    if y.min() == y.max():
        raise DataValidationError("AUC needs both clicks and non-clicks; the labels hold one class only")
    auc_u, _ = per_user_auc(y, s, np.zeros(y.size, dtype=np.int8))
    return float(auc_u[0])


def logloss(labels: ArrayLike, scores: ArrayLike, *, from_logits: bool = False, eps: float = EPS) -> float:
    """Mean binary cross-entropy (natural log).

    Probabilities are clipped to ``[eps, 1 - eps]``; with ``from_logits=True`` the loss is
    computed stably from logits as ``log(1 + e^z) - y z`` and needs no clipping.
    """
    y, s = check_labels_scores(labels, scores)
    if from_logits:
        return float(np.mean(np.logaddexp(0.0, s) - y * s))
    if s.min() < 0.0 or s.max() > 1.0:
        raise DataValidationError("probabilities must lie in [0, 1]; pass from_logits=True for logits")
    p = np.clip(s, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def per_user_auc(labels: ArrayLike, scores: ArrayLike, users: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """AUC of every user that has both a click and a non-click, without a Python loop.

    Midranks of the scores within each user (one lexsort) give the Mann-Whitney statistic
    per user: ``AUC_u = (R_u - P_u (P_u + 1) / 2) / (P_u N_u)`` with ``R_u`` the rank sum of
    the user's positives. Returns ``(auc (U,), impressions (U,))`` for those users only.
    """
    y, s = check_labels_scores(labels, scores)
    u = np.asarray(users).reshape(-1)
    if u.shape != y.shape:
        raise DataValidationError(f"users ({u.size}) must have one entry per row ({y.size})")
    _, code = np.unique(u, return_inverse=True)
    order = np.lexsort((s, code))  # by user, then score
    code, s, y = code[order], s[order], y[order]
    n = y.size
    pos = np.arange(n)
    # Run starts: a new user, or a new score within the same user (a tie block ends).
    user_start = np.r_[True, code[1:] != code[:-1]]
    tie_start = user_start | np.r_[True, s[1:] != s[:-1]]
    first_of_user = np.maximum.accumulate(np.where(user_start, pos, 0))
    tie_id = np.cumsum(tie_start) - 1
    tie_first = pos[tie_start]
    tie_last = np.r_[tie_first[1:], n] - 1
    midrank = (tie_first + tie_last)[tie_id] / 2.0 - first_of_user + 1.0  # 1-based, within user
    n_users = code[-1] + 1
    count = np.bincount(code, minlength=n_users)
    n_pos = np.bincount(code, weights=y, minlength=n_users)
    rank_sum = np.bincount(code, weights=midrank * y, minlength=n_users)
    n_neg = count - n_pos
    keep = (n_pos > 0) & (n_neg > 0)
    auc_u = (rank_sum[keep] - n_pos[keep] * (n_pos[keep] + 1) / 2.0) / (n_pos[keep] * n_neg[keep])
    return auc_u, count[keep].astype(np.float64)


def gauc(labels: ArrayLike, scores: ArrayLike, users: ArrayLike) -> float:
    """Group AUC: per-user AUC averaged with weights = the user's impressions.

    Users whose impressions are all clicks or all non-clicks have no AUC and are skipped
    (their impressions count neither in the numerator nor the weights). Returns NaN when
    no user has both classes.
    """
    auc_u, weight = per_user_auc(labels, scores, users)
    if auc_u.size == 0:
        log.warning("gAUC undefined: no user has both a click and a non-click")
        return float("nan")
    return float(np.sum(auc_u * weight) / np.sum(weight))


def evaluate(
    labels: ArrayLike, scores: ArrayLike, users: ArrayLike | None = None, *, from_logits: bool = False
) -> dict[str, Any]:
    """All offline metrics of one model on one split, as a flat JSON-ready dict.

    Keys: ``auc``, ``logloss``, ``gauc`` (NaN without ``users``), ``gauc_users`` (users
    counted in gAUC), ``gauc_coverage`` (share of rows those users hold), ``rows``,
    ``click_rate``.
    """
    y, s = check_labels_scores(labels, scores)
    out: dict[str, Any] = {
        "auc": auc(y, s),
        "logloss": logloss(y, s, from_logits=from_logits),
        "gauc": float("nan"),
        "gauc_users": 0,
        "gauc_coverage": 0.0,
        "rows": int(y.size),
        "click_rate": float(y.mean()),
    }
    if users is not None:
        auc_u, weight = per_user_auc(y, s, users)
        if auc_u.size:
            out["gauc"] = float(np.sum(auc_u * weight) / np.sum(weight))
        out["gauc_users"] = int(auc_u.size)
        out["gauc_coverage"] = float(weight.sum() / y.size)
    return out


__all__ = ["EPS", "auc", "check_labels_scores", "evaluate", "gauc", "logloss", "per_user_auc"]
