"""Feature embeddings: one table per categorical field, row 0 is padding (zero, no gradient)."""
from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from genctr.features.layout import PAD
from genctr.models.layers.lookup import lookup

EMBED_INIT_STD = 0.02  # small init: embeddings feed MLPs directly


def make_embedding(n: int, dim: int) -> nn.Embedding:
    """An ``n x dim`` table with ``padding_idx=PAD`` and a small normal init (pad row stays 0)."""
    table = nn.Embedding(n, dim, padding_idx=PAD)
    nn.init.normal_(table.weight, std=EMBED_INIT_STD)
    with torch.no_grad():
        table.weight[PAD].zero_()
    return table


class FeatureEmbedding(nn.Module):
    """Named embedding tables of one width.

    ``vocab_sizes`` maps a field name to its table size (largest index + 1). State-dict keys
    are ``tables.<field>.weight``.
    """

    def __init__(self, vocab_sizes: dict[str, int], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.tables = nn.ModuleDict({name: make_embedding(n, dim) for name, n in vocab_sizes.items()})

    def __getitem__(self, name: str) -> nn.Embedding:
        return cast(nn.Embedding, self.tables[name])  # every table comes from make_embedding

    def forward(self, name: str, idx: Tensor) -> Tensor:
        """idx [...] long -> [..., dim]."""
        return lookup(cast(nn.Embedding, self.tables[name]), idx)  # every table comes from make_embedding
