"""A plain feed-forward tower: (Linear -> ReLU -> Dropout) per hidden width."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """[..., in_dim] -> [..., dims[-1]]; ``out_dim`` is the output width.

    With ``output_dim`` set, a final bias-carrying Linear without activation is appended (e.g.
    1 for a logit or an attention score).
    """

    def __init__(
        self, in_dim: int, dims: Sequence[int], dropout: float = 0.0, output_dim: int | None = None
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for d in dims:
            layers += [nn.Linear(width, d), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = d
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim))
            width = output_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
