"""DeLong's test for two correlated ROC AUCs measured on the same rows.

Fast O(n log n) version of Sun & Xu (2014), "Fast implementation of DeLong's algorithm
for comparing the areas under correlated receiver operating characteristic curves":
midranks of each model's scores over positives, negatives and all rows give the
structural components ``V10`` (one per positive) and ``V01`` (one per negative) without
the O(m n) pairwise comparison of DeLong et al. (1988).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm, rankdata

from genctr.errors import DataValidationError
from genctr.evaluation.metrics import check_labels_scores


@dataclass(frozen=True)
class DeLongResult:
    """AUCs of models a and b, their difference ``a - b`` and its test.

    ``p_one_sided`` tests H1: AUC_a > AUC_b; ``p_two_sided`` tests H1: AUC_a != AUC_b.
    """

    auc_a: float
    auc_b: float
    diff: float  # auc_a - auc_b
    var_a: float
    var_b: float
    cov_ab: float
    var_diff: float  # var_a + var_b - 2 cov_ab
    z: float
    p_two_sided: float
    p_one_sided: float
    n_pos: int
    n_neg: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def structural_components(labels: ArrayLike, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong components of K models: ``scores`` (K, N) -> auc (K,), V10 (K, m), V01 (K, n).

    ``V10[k, i]`` is the share of negatives ranked below positive i (ties one half);
    ``V01[k, j]`` the share of positives ranked above negative j.
    """
    y = np.asarray(labels).reshape(-1).astype(bool)
    pos, neg = scores[:, y], scores[:, ~y]  # (K, m), (K, n)
    m, n = pos.shape[1], neg.shape[1]
    tx = rankdata(pos, axis=1)  # midranks among positives
    ty = rankdata(neg, axis=1)  # midranks among negatives
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # midranks among all rows
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_covariance(labels: ArrayLike, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (K,) and their DeLong covariance matrix (K, K) for scores (K, N)."""
    aucs, v10, v01 = structural_components(labels, scores)
    m, n = v10.shape[1], v01.shape[1]
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(labels: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike) -> DeLongResult:
    """Compare the AUC of model a with model b on the same rows (paired DeLong z-test)."""
    y, sa = check_labels_scores(labels, scores_a)
    _, sb = check_labels_scores(labels, scores_b)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos < 2 or n_neg < 2:
        raise DataValidationError(
            f"DeLong's test needs at least 2 clicks and 2 non-clicks; got {n_pos} and {n_neg}"
        )
    aucs, cov = delong_covariance(y, np.stack([sa, sb]))
    diff = float(aucs[0] - aucs[1])
    var_diff = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if var_diff > 0.0:
        z = diff / math.sqrt(var_diff)
    else:  # identical rankings (or a degenerate case): no evidence either way unless diff != 0
        z = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return DeLongResult(
        auc_a=float(aucs[0]),
        auc_b=float(aucs[1]),
        diff=diff,
        var_a=float(cov[0, 0]),
        var_b=float(cov[1, 1]),
        cov_ab=float(cov[0, 1]),
        var_diff=max(var_diff, 0.0),
        z=z,
        p_two_sided=float(2.0 * norm.sf(abs(z))),
        p_one_sided=float(norm.sf(z)),
        n_pos=n_pos,
        n_neg=n_neg,
    )


__all__ = ["DeLongResult", "delong_covariance", "delong_test", "structural_components"]
