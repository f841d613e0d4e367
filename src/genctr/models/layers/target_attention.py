"""DIN target attention (Zhou et al., 2018): raw (un-normalised) weights, padding weighted 0."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from genctr.models.layers.mlp import MLP


class TargetAttention(nn.Module):
    """Pool a behaviour sequence by its relevance to the target.

    ``w_t = MLP([t, s_t, t - s_t, t * s_t])``; the weights are *not* softmax-normalised (DIN
    keeps the intensity of interest), but positions where ``mask`` is false get weight exactly
    0, so padding contributes nothing whatever its ids or embeddings.

    forward(target [B, D], seq [B, L, D], mask [B, L] bool) -> [B, D]
    """

    def __init__(self, dim: int, hidden_dims: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.score = MLP(4 * dim, hidden_dims, dropout, output_dim=1)

    def forward(self, target: Tensor, seq: Tensor, mask: Tensor) -> Tensor:
        t = target.unsqueeze(1).expand_as(seq)  # [B, L, D]
        w = self.score(torch.cat([t, seq, t - seq, t * seq], dim=-1)).squeeze(-1)  # [B, L]
        w = w.masked_fill(~mask, 0.0)
        return torch.bmm(w.unsqueeze(1), seq).squeeze(1)  # [B, 1, L] @ [B, L, D] -> [B, D]
