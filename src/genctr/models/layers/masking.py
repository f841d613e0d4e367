"""Masks and masked pooling for left-aligned, right-padded behaviour sequences."""
from __future__ import annotations

import torch
from torch import Tensor


def sequence_mask(lengths: Tensor, max_len: int) -> Tensor:
    """``mask[b, t] = t < lengths[b]``: lengths [B] long -> [B, max_len] bool."""
    positions = torch.arange(max_len, device=lengths.device)  # [L]
    return positions.unsqueeze(0) < lengths.unsqueeze(1)  # [B, L]


def used_width(lengths: Tensor, width: int) -> int:
    """Columns of a left-aligned [B, width] batch that some row uses: max(lengths) within
    [1, width]. One host sync; ``width`` while tracing (a traced graph must not bake it in)."""
    if torch.jit.is_tracing() or lengths.numel() == 0:
        return width
    return max(1, min(width, int(lengths.max())))


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` [B, L, D] over positions where ``mask`` [B, L] is true; 0 for empty rows."""
    m = mask.unsqueeze(-1).to(x.dtype)  # [B, L, 1]
    total = (x * m).sum(dim=1)  # [B, D]
    count = m.sum(dim=1).clamp_min(1.0)  # [B, 1]
    return total / count
