"""Negative sampling for GenCTR's next-item sampled softmax.

* ``cs`` (category-conditioned, the paper's choice): negatives share the positive's category.
  Items are sorted by category once; a draw is ``items_by_cate[start[c] + floor(u * count[c])]``
  — fully vectorised, no Python loop over categories.
* ``rs`` (random, the ablation): uniform over the real items ``[FIRST_ID, n_items)``.

Both consume exactly one ``torch.rand`` of shape [N, K] from ``generator``. A positive whose
category has no items (category pad/OOV, or an item missing from the item table) falls back to
uniform draws. Negatives equal to the positive ("accidental hits") are *not* removed here: the
caller masks them (a category with one item yields only hits).

Both draws are uniform over their support (all real items, or the positive's category), so the
probability q of drawing a given negative is one number per row: :meth:`log_expected_count`
gives log(K q), the log-Q correction a caller subtracts from the negatives' logits.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genctr.errors import DataValidationError
from genctr.features.layout import FIRST_ID, OOV, PAD


class NegativeSampler(nn.Module):
    """forward(pos [N] long, generator) -> negatives [N, K] long, all >= FIRST_ID.

    Buffers (persistent, fixed shapes so they round-trip through a state dict):
    ``item_cate`` [n_items] (item index -> category index), ``items_by_cate`` [n_items]
    (item indices sorted by category), ``cate_start``/``cate_count`` [n_cates].
    """

    item_cate: Tensor
    items_by_cate: Tensor
    cate_start: Tensor
    cate_count: Tensor

    def __init__(
        self, n_items: int, n_cates: int, mode: str, k: int, item_cate: Tensor | None = None
    ) -> None:
        super().__init__()
        self.n_items, self.n_cates, self.mode, self.k = n_items, n_cates, mode, k
        self.register_buffer("item_cate", torch.zeros(n_items, dtype=torch.long))
        self.register_buffer("items_by_cate", torch.arange(n_items, dtype=torch.long))
        self.register_buffer("cate_start", torch.zeros(n_cates, dtype=torch.long))
        self.register_buffer("cate_count", torch.zeros(n_cates, dtype=torch.long))
        if item_cate is not None:
            self.set_item_categories(item_cate)

    @torch.no_grad()
    def set_item_categories(self, item_cate: Tensor) -> None:
        """Build the category buckets from ``item_cate`` [n_items] (index = item idx)."""
        item_cate = torch.as_tensor(item_cate, dtype=torch.long).to(self.item_cate.device)
        if item_cate.shape != (self.n_items,):
            raise DataValidationError(
                f"item_cate must have shape [n_items={self.n_items}] (one category per item index), "
                f"got {tuple(item_cate.shape)}"
            )
        if item_cate.numel() and (int(item_cate.min()) < 0 or int(item_cate.max()) >= self.n_cates):
            raise DataValidationError(f"item_cate values must lie in [0, n_cates={self.n_cates})")
        key = item_cate.clone()
        key[:FIRST_ID] = PAD  # the pad and OOV items are never negatives
        counts = torch.bincount(key, minlength=self.n_cates)  # [C]
        self.item_cate.copy_(item_cate)
        self.items_by_cate.copy_(torch.argsort(key, stable=True))
        self.cate_start.copy_(torch.cumsum(counts, 0) - counts)
        counts[PAD] = 0  # bucket 0 holds pad/OOV items and items without a category
        counts[OOV] = 0  # "same category" means nothing for the OOV category
        self.cate_count.copy_(counts)

    def log_expected_count(self, pos: Tensor) -> Tensor:
        """log(K q) [N, 1] for positives ``pos`` [N]: how often, in expectation, each negative of the
        row is drawn among the K (q = 1 / support size; rs and cs rows that fall back to uniform
        draw from the n_items - FIRST_ID real items, cs rows from their category's items)."""
        support = torch.full(pos.shape, float(self.n_items - FIRST_ID), device=pos.device)  # [N]
        if self.mode == "cs":
            count = self.cate_count[self.item_cate[pos]]  # [N]
            support = torch.where(count > 0, count.to(support.dtype), support)
        return (math.log(self.k) - torch.log(support)).unsqueeze(1)  # [N, 1]

    def forward(self, pos: Tensor, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand((pos.shape[0], self.k), generator=generator, device=pos.device)  # [N, K]
        uniform = FIRST_ID + (u * (self.n_items - FIRST_ID)).long().clamp_max(self.n_items - FIRST_ID - 1)
        if self.mode == "rs":
            return uniform  # [N, K]
        cate = self.item_cate[pos]  # [N]
        count = self.cate_count[cate].unsqueeze(1)  # [N, 1]
        offset = torch.minimum((u * count).long(), (count - 1).clamp_min(0))  # [N, K], < count
        slot = (self.cate_start[cate].unsqueeze(1) + offset).clamp_max(self.n_items - 1)  # empty buckets
        same = self.items_by_cate[slot]  # [N, K]
        return torch.where(count > 0, same, uniform)


__all__ = ["NegativeSampler"]
