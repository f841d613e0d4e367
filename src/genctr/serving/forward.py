"""The forward pass of a served model: inference mode, row chunks for target attention, sigmoid.

Target-attention models run N x W above ``ATTENTION_CHUNK_CELLS`` as a few row chunks
(cache-sized activations; rows are independent, so the scores are the same).
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


class Forward:
    """``model`` (eager or TorchScript-frozen) as a function: batch dict -> pCTR [N] float32."""

    def __init__(self, model: torch.nn.Module, chunk_cells: int | None = None) -> None:
        self.model = model
        # 0 = never chunk; by default only target-attention models are chunked
        self.chunk_cells = (ATTENTION_CHUNK_CELLS if has_target_attention(model) else 0) if chunk_cells is None \
            else chunk_cells

    def __call__(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        model = self.model
        n, width = batch["hist_item"].shape
        chunks = -(-n * width // self.chunk_cells) if self.chunk_cells else 1  # ceil
        with torch.inference_mode():
            if chunks <= 1:
                logits = model(batch)  # [N]
            else:  # rows are independent: the same scores, from equal row chunks
                step = -(-n // chunks)
                logits = torch.cat([model({k: v[i:i + step] for k, v in batch.items()}) for i in range(0, n, step)])
        return torch.sigmoid(logits.float()).cpu().numpy()
