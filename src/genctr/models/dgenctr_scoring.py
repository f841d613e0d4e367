"""DGenCTR's per-field scoring: the candidates each field's softmax runs over, and its loss.

A field whose vocabulary has at most ``cfg.full_softmax_vocab`` rows (the label, the price
buckets, a coarse category) is scored against every value of its table, the padding row
excepted: a full softmax. A larger field (user, item, a fine category, and the pooled
sequence, which has no table) is scored against the values of the other samples in the
batch, in-batch copies of the true value excepted (they are not negatives).

Both kinds are stacked into one (F, B, C) tensor, C = max(B, largest full vocabulary),
columns past a field's candidates -inf, with ``targets`` (F, B) naming the true column: the
sample's own index for in-batch fields, its value for full-vocabulary ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SEQ_DUP_TOL = 1e-5  # pooled sequence targets whose cosine is within this of 1 count as equal


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """[..., n, d] x [..., m, d] -> [..., n, m] cosines, in float32 even under autocast
    (bf16 would blur scores that are then scaled by 1/τ)."""
    with torch.autocast(device_type=a.device.type, enabled=False):
        return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).transpose(-1, -2)


def in_batch_logits(out: Tensor, targets: Tensor, same: Tensor, temperature: float) -> Tensor:
    """out, targets [..., B, d] (head outputs, true-value vectors), same [..., B, B] bool (sample j
    carries sample i's value) -> [..., B, B] logits; the true value is column i, its copies j != i
    are -inf."""
    bsz = out.shape[-2]
    off_diag = ~torch.eye(bsz, dtype=torch.bool, device=out.device)
    return (cosine(out, targets) / temperature).masked_fill(same & off_diag, float("-inf"))


def full_vocab_logits(out: Tensor, table: nn.Embedding, ids: Tensor, temperature: float) -> Tensor:
    """out [B, d], ids [B] (true values) -> [B, V] logits against every row of ``table``; the
    padding row is no candidate (unless it is the true value, which real data never has)."""
    logits = cosine(out, table.weight) / temperature  # [B, V]
    if table.padding_idx is None:
        return logits
    cols = torch.arange(table.num_embeddings, device=out.device)  # [V]
    pad = (cols == table.padding_idx)[None, :] & (ids[:, None] != table.padding_idx)  # [B, V]
    return logits.masked_fill(pad, float("-inf"))


def same_sequence(seq_target: Tensor) -> Tensor:
    """[B, d] pooled sequence targets -> [B, B] bool: equal up to SEQ_DUP_TOL in cosine."""
    z = F.normalize(seq_target.detach().float(), dim=-1)
    return (z @ z.T) > 1.0 - SEQ_DUP_TOL


def stack_fields(per_field: list[Tensor], fill: float = float("-inf")) -> Tensor:
    """F tensors [B, C_k] -> [F, B, max C_k], right-padded with ``fill`` (never a candidate)."""
    width = max(t.shape[1] for t in per_field)
    return torch.stack([F.pad(t, (0, width - t.shape[1]), value=fill) for t in per_field])


def field_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """(F, B, C) logits, (F, B) target columns -> (F, B) cross-entropy (float32)."""
    n_fields, bsz, width = logits.shape
    ce = F.cross_entropy(logits.float().reshape(n_fields * bsz, width), targets.reshape(-1), reduction="none")
    return ce.view(n_fields, bsz)


def dgenctr_loss(logits: Tensor, targets: Tensor, target_mask: Tensor, weights: Tensor) -> Tensor:
    """Scalar pretraining loss: Σ_k,i weights[k, i] · CE(logits[k, i], targets[k, i]) over target_mask.

    logits (F, B, C), targets (F, B) long; fields off ``target_mask`` get neither loss nor
    gradient.
    """
    ce = field_cross_entropy(logits, targets)
    return (torch.where(target_mask, ce, torch.zeros_like(ce)) * weights).sum()


def field_losses(logits: Tensor, targets: Tensor, target_mask: Tensor) -> Tensor:
    """(F,) mean cross-entropy of each field over the samples where it is a target (NaN where
    none is): the per-field diagnostic, e.g. the label's loss (log 2 at initialisation)."""
    ce = torch.where(target_mask, field_cross_entropy(logits, targets), 0.0)  # (F, B)
    n = target_mask.sum(dim=1)  # (F,)
    return torch.where(n > 0, ce.sum(dim=1) / n.clamp_min(1), float("nan"))


__all__ = [
    "SEQ_DUP_TOL",
    "cosine",
    "dgenctr_loss",
    "field_cross_entropy",
    "field_losses",
    "full_vocab_logits",
    "in_batch_logits",
    "same_sequence",
    "stack_fields",
]
