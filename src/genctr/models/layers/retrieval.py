"""SIM-style hard search (Pi et al., 2020): which K of a long history a target attends.

Stage one of two-stage target attention: for every candidate, keep the K behaviours of the
candidate's category, most recent first; when the category has fewer than K behaviours, the
free slots go to the most recent behaviours of other categories (the recent, short-term part a
200-long history would have shown). Stage two is the usual DIN attention over the K kept
behaviours (:class:`~genctr.models.layers.target_attention.TargetAttention`).

One integer score per (candidate, behaviour) and one ``topk``, all on the device: O(L) integer
compares + O(L log K) selection per candidate, no per-row Python. With K >= L every valid
behaviour is kept and the pooled result is full target attention's (sum pooling is
order-free; mean pooling divides by the number kept, then the number valid).
"""
from __future__ import annotations

import torch
from torch import Tensor


def category_top_k(hist_cate: Tensor, mask: Tensor, target_cate: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """hist_cate [B, L] long, mask [B, L] bool (valid behaviours), target_cate [B] long ->
    ``idx`` [B, K] long (history positions to attend, K = min(k, L)) and ``keep`` [B, K] bool
    (False where fewer than K valid behaviours exist: those slots point at padding).

    Score of behaviour l: ``l`` (recency), plus L when its category is the target's, -1 for
    padding; the K highest win. Positions are distinct, so there are no ties among valid
    behaviours and the selection is deterministic.
    """
    B, L = hist_cate.shape
    K = min(k, L)
    pos = torch.arange(L, device=hist_cate.device, dtype=torch.int32)  # [L]: later behaviours score higher
    # int32 (scores < 2L) and in place: one [B, L] buffer, half of int64's memory traffic
    score = (hist_cate == target_cate.unsqueeze(1)).to(torch.int32).mul_(L).add_(pos)  # [B, L]
    score.masked_fill_(~mask, -1)
    top, idx = score.topk(K, dim=1)  # [B, K] each, highest first
    return idx, top >= 0


__all__ = ["category_top_k"]
