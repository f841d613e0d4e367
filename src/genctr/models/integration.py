"""The GenCTR integration feature, brought to the scale of the backbone's other inputs.

The decoder's output is a LayerNorm output: about 1 per dimension (a row norm of ~8 over 64
dims), while the embeddings it is concatenated with start at 0.02 per dimension and stay
below ~0.1 after pretraining (a row norm of ~0.7 over the 81 other dims of a DNN's x0).
Concatenated raw, it is ~10x louder than everything else, and the first layer of the tower
(Xavier-initialised for inputs of one scale) starts out seeing little but the decoder.
:class:`IntegrationScale` RMS-normalises each row and multiplies it by one learned scalar,
initialised to the per-dim RMS of the backbone's own embedding tables.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from genctr.models.layers.embedding import EMBED_INIT_STD

RMS_EPS = 1e-6  # keeps an all-zero row (never produced by a LayerNorm with a bias) finite


class IntegrationScale(nn.Module):
    """g [B, D] -> scale * g / rms(g) [B, D], rms over the D dims of each row.

    ``scale`` (a learned scalar, state-dict key ``scale``) starts at ``init_scale``: the feature's
    per-dim RMS at initialisation, whatever the pretrained LayerNorm's gain.
    """

    def __init__(self, init_scale: float = EMBED_INIT_STD) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    def forward(self, g: Tensor) -> Tensor:
        rms = g.float().pow(2).mean(dim=-1, keepdim=True).add(RMS_EPS).sqrt()  # [B, 1], float32 under autocast
        return g * (self.scale / rms).to(g.dtype)  # [B, D]


@torch.no_grad()
def embedding_rms(tables: Iterable[nn.Embedding]) -> float:
    """Per-dim RMS of the tables' non-zero rows, each table weighted equally (each fills one slot
    of x0, whatever its row count); the padding row and other all-zero rows are left out."""
    mean_squares = []
    for table in tables:
        w = table.weight.float()  # [V, E]
        live = w.abs().sum(dim=1) > 0  # [V]
        if bool(live.any()):
            mean_squares.append(w[live].pow(2).mean())
    if not mean_squares:
        return EMBED_INIT_STD
    return float(torch.stack(mean_squares).mean().sqrt())


__all__ = ["IntegrationScale", "embedding_rms"]
