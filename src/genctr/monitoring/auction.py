"""Generalised second-price (GSP) auction over scored candidates, vectorised over requests.

Candidates are ranked by score = pCTR x bid. The ad in slot k pays per click the least bid
that would have kept it there: ``cpc_k = score_{k+1} / pCTR_k`` (the next ranked candidate,
shown or not), at least the reserve price and never more than its own bid. When no eligible
candidate follows, it pays the reserve.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AuctionResult:
    """Outcome for B requests and S slots."""

    column: np.ndarray  # (B, S) int64: candidate column shown in each slot (undefined where not shown)
    shown: np.ndarray  # (B, S) bool: slot filled (fewer eligible candidates than slots leave some empty)
    cpc: np.ndarray  # (B, S) float64: price per click, <= bid


def first_occurrence(items: np.ndarray) -> np.ndarray:
    """(B, K) bool: True for the first occurrence of each item in its row (an ad shows once per page)."""
    order = np.argsort(items, axis=1, kind="stable")  # (B, K); equal items keep column order
    srt = np.take_along_axis(items, order, axis=1)
    repeat = np.zeros(items.shape, bool)
    repeat[:, 1:] = srt[:, 1:] == srt[:, :-1]
    keep = np.empty(items.shape, bool)
    np.put_along_axis(keep, order, ~repeat, axis=1)
    return keep


def gsp_auction(pctr: np.ndarray, bid: np.ndarray, slots: int, reserve: float = 0.0,
                eligible: np.ndarray | None = None) -> AuctionResult:
    """Rank (B, K) candidates by pCTR x bid, fill ``slots`` slots and price them.

    ``eligible`` (B, K) bool masks candidates out of the auction (besides non-finite pCTRs
    and bids below ``reserve``, which are always out). Ties keep the candidates' order.
    """
    n, k = pctr.shape
    ok = np.isfinite(pctr) & (bid >= reserve)
    if eligible is not None:
        ok &= eligible
    score = np.where(ok, pctr * bid, -np.inf)  # (B, K)
    if k < slots + 1:  # room for the runner-up of the last slot
        score = np.pad(score, ((0, 0), (0, slots + 1 - k)), constant_values=-np.inf)
    order = np.argsort(-score, axis=1, kind="stable")[:, : slots + 1]  # (B, S+1)
    ranked = np.take_along_axis(score, order, axis=1)  # (B, S+1), descending
    column = order[:, :slots]
    shown = np.isfinite(ranked[:, :slots])
    safe = np.where(shown, column, 0)  # padded columns are never shown; keep the gather in range
    p = np.take_along_axis(pctr, safe, axis=1)  # (B, S)
    b = np.take_along_axis(bid, safe, axis=1)
    runner_up = np.where(np.isfinite(ranked[:, 1:]), ranked[:, 1:], 0.0)  # (B, S)
    with np.errstate(divide="ignore", invalid="ignore"):
        second = np.where(p > 0, runner_up / p, 0.0)
    cpc = np.minimum(np.maximum(second, reserve), b)
    return AuctionResult(column=column.astype(np.int64), shown=shown, cpc=np.where(shown, cpc, 0.0))
