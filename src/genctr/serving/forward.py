"""The forward pass of a served model: inference mode, row chunks for target attention, sigmoid.

Target-attention models run more than ``ATTENTION_CHUNK_CELLS`` (candidate, attended behaviour)
cells as a few row chunks (cache-sized activations; rows are independent, so the scores are the
same). A cell is one row of the attention MLP: N x W for full target attention over a history
W wide, N x min(W, K) for SIM (``model.attention = "sim"``, ``sim_top_k`` = K, read from the
eager model the artifact's config built), so 100 candidates at L = 2000, K = 64 stay one call.
"""
from __future__ import annotations

import numpy as np
import torch

# Target-attention models: at most this many (candidate, history position) cells per forward
# call, so the [rows, W, H] attention activations (~2 MB at H = 64) stay cache-sized: 100
# candidates x W = 200 run as 3 calls, ~15 % less CPU per request than one; W = 50 stays one call.
ATTENTION_CHUNK_CELLS = 8192


def has_target_attention(model: torch.nn.Module) -> bool:
    from genctr.models.layers import TargetAttention

    return any(isinstance(m, TargetAttention) for m in model.modules())


def attention_top_k(model: torch.nn.Module) -> int | None:
    """K of an eager model whose target attention attends the SIM top-K behaviours; None for full
    target attention, none at all, or a TorchScript model (whose modules are opaque)."""
    from genctr.models.backbones import InputArch

    return next((m.top_k for m in model.modules() if isinstance(m, InputArch) and m.top_k is not None), None)


class Forward:
    """``model`` (eager or TorchScript-frozen) as a function: batch dict -> pCTR [N] float32.

    ``top_k``: behaviours each candidate's target attention attends (SIM), default: read from
    ``model`` (:func:`attention_top_k`); None counts the whole history width.
    """

    def __init__(self, model: torch.nn.Module, chunk_cells: int | None = None, top_k: int | None = None) -> None:
        self.model = model
        # 0 = never chunk; by default only target-attention models are chunked
        self.chunk_cells = (ATTENTION_CHUNK_CELLS if has_target_attention(model) else 0) if chunk_cells is None \
            else chunk_cells
        self.top_k = attention_top_k(model) if top_k is None else top_k

    def __call__(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        model = self.model
        n, width = batch["hist_item"].shape
        attended = width if self.top_k is None else min(width, self.top_k)  # MLP cells per candidate
        chunks = -(-n * attended // self.chunk_cells) if self.chunk_cells else 1  # ceil
        with torch.inference_mode():
            if chunks <= 1:
                logits = model(batch)  # [N]
            else:  # rows are independent: the same scores, from equal row chunks
                step = -(-n // chunks)
                logits = torch.cat([model({k: v[i:i + step] for k, v in batch.items()}) for i in range(0, n, step)])
        return torch.sigmoid(logits.float()).cpu().numpy()
