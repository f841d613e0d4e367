"""Paired comparisons over seeds, Holm-corrected as a family.

An ablation compares each arm with its baseline on the same seeds (the same data order,
the same initialisation seed, the same label sample), so the unit of evidence is the per-seed
difference ``d_s = arm_s - base_s``. ``paired_difference`` gives its mean, a Student-t
confidence interval and the two-sided p-value of the paired t-test (n - 1 degrees of freedom).

A table of such tests is looked at all at once, and a claim is made from any cell that clears
the bar: the family-wise error rate, not each test's, is what has to stay at alpha.
``holm`` adjusts the family's p-values by Holm's step-down method, valid under any dependence
between the tests (the cells of one table share baselines and seeds); ``tests/test_paired.py``
checks both levels by simulation under the null.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """arm - base over paired seeds: mean, a (1 - alpha) CI, the paired t-test's two-sided p."""

    n: int
    mean: float
    std: float  # sample std of the per-seed differences (ddof 1); 0 when n < 2
    lo: float
    hi: float
    p: float  # nan when n < 2 or every difference is equal (no spread to test against)


def paired_difference(arm: Sequence[float], base: Sequence[float], alpha: float = 0.05) -> PairedDifference:
    """Paired t statistics of ``arm - base`` (equal-length sequences, element i = seed i)."""
    from scipy import stats

    a, b = np.asarray(arm, dtype=float), np.asarray(base, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_difference needs two 1-d sequences of one length, got {a.shape} and {b.shape}")
    d = a - b  # (n,)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return PairedDifference(n, mean, 0.0, math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1)) if se > 0 else math.nan
    return PairedDifference(n, mean, sd, mean - half, mean + half, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input's order; NaN stays NaN (and is not counted).

    Sorted ascending, the k-th of m p-values (k from 0) is multiplied by (m - k), the running
    maximum keeps the adjusted values monotone, and each is capped at 1. Rejecting where the
    adjusted value is <= alpha keeps the family-wise error rate at alpha.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if m == 0:
        return out.tolist()
    order = finite[np.argsort(p[finite], kind="stable")]  # indices, smallest p first
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out.tolist()


__all__ = ["PairedDifference", "holm", "paired_difference"]
