"""The labelled share of the training impressions (``TrainConfig.label_fraction``).

The premise both methods rest on is that behaviour far exceeds labelled CTR data. To test it,
fine-tuning (and DGenCTR pretraining's label field) sees only a seeded fraction f of the
training impressions, drawn by impression or by user, while pretraining keeps every
training-period behaviour and every sample's history stays the complete behaviour log: only
which impressions carry a usable label changes, never what came before them.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from genctr.training.data import Split

LABEL_STREAM = 0x1ABE1  # second word of the draw's seed: the subset depends on the seed only


def labelled_rows(split: Split, fraction: float, unit: str, seed: int) -> Tensor:
    """Sorted row indices (K,) long, on the split's device, of the impressions whose labels are used.

    ``unit`` "impression": round(f N) impressions drawn without replacement; "user": every
    impression of round(f U) users drawn without replacement. At least one is always kept;
    f = 1 keeps every row.
    """
    n = len(split)
    device = split.label.device
    if fraction >= 1.0 or n == 0:
        return torch.arange(n, device=device)
    rng = np.random.default_rng([seed, LABEL_STREAM])
    if unit == "impression":
        keep = rng.permutation(n)[: max(1, round(fraction * n))]
    elif unit == "user":
        users = np.unique(split.user_raw)
        chosen = users[rng.permutation(len(users))[: max(1, round(fraction * len(users)))]]
        keep = np.flatnonzero(np.isin(split.user_raw, chosen))
    else:
        raise ValueError(f"label sampling unit must be 'impression' or 'user', got {unit!r}")
    return torch.as_tensor(np.sort(keep), device=device, dtype=torch.long)


def label_known(split: Split, fraction: float, unit: str, seed: int) -> Tensor | None:
    """(N,) bool: the row's label is in the labelled share; None when every label is."""
    if fraction >= 1.0:
        return None
    known = torch.zeros(len(split), dtype=torch.bool, device=split.label.device)
    known[labelled_rows(split, fraction, unit, seed)] = True
    return known


__all__ = ["LABEL_STREAM", "label_known", "labelled_rows"]
