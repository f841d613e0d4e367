"""DCN-V2 cross network (Wang et al., 2021), full-rank weights."""
from __future__ import annotations

from torch import Tensor, nn


class CrossLayer(nn.Module):
    """``x_{l+1} = x0 * (W x_l + b) + x_l``: x0, xl [B, D] -> [B, D]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: Tensor, xl: Tensor) -> Tensor:
        return x0 * self.linear(xl) + xl


class CrossNet(nn.Module):
    """A stack of cross layers, all crossing with the input x0: [B, D] -> [B, D]."""

    def __init__(self, dim: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CrossLayer(dim) for _ in range(n_layers))

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x
