"""Pure loss functions the training step calls (models only return logits)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sampled_softmax_loss(logits: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy with the true class in column 0, over rows where ``mask`` is true and at
    least one negative is left.

    logits [N, 1+K] (masked negatives are -inf), mask [N] bool -> scalar. A row whose negatives
    are all masked (every draw an accidental hit, e.g. a one-item category) has a loss of exactly
    0 whatever the model does: counting it would only shrink the mean and with it the gradient of
    every other row, so it is left out. Rows left out cannot affect the value or the gradient,
    even if they hold inf/NaN; no row left gives 0 (still differentiable).
    """
    mask = mask & (logits[:, 1:] > float("-inf")).any(dim=1)  # [N]: NaN rows count as no negative
    safe = torch.where(mask.unsqueeze(1), logits.float(), 0.0)  # [N, 1+K]: excluded rows -> 0
    nll = -F.log_softmax(safe, dim=-1)[:, 0]  # [N]
    nll = torch.where(mask, nll, 0.0)
    return nll.sum() / mask.sum().clamp_min(1)


__all__ = ["sampled_softmax_loss"]
