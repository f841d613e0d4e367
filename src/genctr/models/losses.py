"""Pure loss functions the training step calls (models only return logits)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sampled_softmax_loss(logits: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy with the true class in column 0, over rows where ``mask`` is true.

    logits [N, 1+K] (masked negatives may be -inf), mask [N] bool -> scalar. Rows outside the
    mask cannot affect the value or the gradient, even if they hold inf/NaN; an empty mask
    gives 0 (still differentiable).
    """
    safe = torch.where(mask.unsqueeze(1), logits.float(), 0.0)  # [N, 1+K]: excluded rows -> 0
    nll = -F.log_softmax(safe, dim=-1)[:, 0]  # [N]
    nll = torch.where(mask, nll, 0.0)
    return nll.sum() / mask.sum().clamp_min(1)


__all__ = ["sampled_softmax_loss"]
