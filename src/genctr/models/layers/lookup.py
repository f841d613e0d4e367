"""Embedding look-ups with a fast CPU backward, and a fused gather-and-dot for sampled softmax.

On CPU ``nn.Embedding``'s dense backward walks every index once per thread with a per-row
TensorIterator: for the [B, L] history look-ups and the [N, 1+K] candidate gathers of
pretraining it costs several times the forward. ``index_add_`` accumulates the same rows in
one pass (about 2x faster here), so :func:`lookup` uses it on CPU; on other devices, and when
no gradient is needed, it is ``F.embedding`` unchanged. Values are identical; gradients agree
up to float summation order (both are deterministic run to run). :func:`weighted_bag` does the
same for a weighted embedding bag (a history's masked mean).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_ROWS = 2048  # below this the built-in backward is as fast and the autograd.Function overhead shows
CHUNK_ROWS = 8192  # gather_dot: rows per chunk, so the [rows, 1+K, E] gather stays in cache


class _CPULookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, idx: Tensor, padding_idx: int) -> Tensor:
        ctx.save_for_backward(idx)
        ctx.rows, ctx.padding_idx = weight.shape[0], padding_idx
        return weight.index_select(0, idx.reshape(-1)).view(*idx.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor):
        (idx,) = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gw = torch.zeros(ctx.rows, g.shape[1], dtype=g.dtype, device=g.device).index_add_(0, idx.reshape(-1), g)
        if ctx.padding_idx >= 0:
            gw[ctx.padding_idx] = 0  # nn.Embedding(padding_idx=...) never updates the pad row
        return gw, None, None


def _fast_path(weight: Tensor, idx: Tensor) -> bool:
    return (weight.device.type == "cpu" and weight.requires_grad and torch.is_grad_enabled()
            and idx.numel() >= MIN_ROWS and weight.dtype in (torch.float32, torch.float64))


def lookup(table: nn.Embedding, idx: Tensor) -> Tensor:
    """``table(idx)``: idx [...] long -> [..., dim], with the fast CPU backward for large look-ups."""
    if _fast_path(table.weight, idx) and table.max_norm is None and not table.sparse:
        pad = -1 if table.padding_idx is None else int(table.padding_idx)
        return _CPULookup.apply(table.weight, idx, pad)
    return table(idx)


class _GatherDot(torch.autograd.Function):
    """logits[n, j] = <weight[idx[n, j]], h[n]>, chunked over n; nothing [N, J, E] is kept."""

    @staticmethod
    def forward(ctx, weight: Tensor, idx: Tensor, h: Tensor, padding_idx: int) -> Tensor:
        ctx.save_for_backward(weight, idx, h)
        ctx.padding_idx = padding_idx
        out = torch.empty(idx.shape, dtype=h.dtype, device=h.device)
        for s in range(0, idx.shape[0], CHUNK_ROWS):
            w = weight.index_select(0, idx[s:s + CHUNK_ROWS].reshape(-1)).view(*idx[s:s + CHUNK_ROWS].shape, -1)
            torch.matmul(w, h[s:s + CHUNK_ROWS].unsqueeze(-1), out=out[s:s + CHUNK_ROWS].unsqueeze(-1))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, idx, h = ctx.saved_tensors
        gw = torch.zeros_like(weight) if ctx.needs_input_grad[0] else None
        gh = torch.empty_like(h) if ctx.needs_input_grad[2] else None
        for s in range(0, idx.shape[0], CHUNK_ROWS):
            i, g = idx[s:s + CHUNK_ROWS], grad[s:s + CHUNK_ROWS]  # [n, J]
            if gh is not None:
                w = weight.index_select(0, i.reshape(-1)).view(*i.shape, -1)  # [n, J, E]
                torch.matmul(g.unsqueeze(1), w, out=gh[s:s + CHUNK_ROWS].unsqueeze(1))  # [n, 1, E]
            if gw is not None:
                src = g.unsqueeze(-1) * h[s:s + CHUNK_ROWS].unsqueeze(1)  # [n, J, E]
                gw.index_add_(0, i.reshape(-1), src.reshape(-1, src.shape[-1]))
        if gw is not None and ctx.padding_idx >= 0:
            gw[ctx.padding_idx] = 0
        return gw, None, gh, None


class _WeightedBag(torch.autograd.Function):
    """out[b] = sum_l w[b, l] weight[idx[b, l]]; the backward adds rows with ``index_add_``."""

    @staticmethod
    def forward(ctx, weight: Tensor, idx: Tensor, w: Tensor, padding_idx: int) -> Tensor:
        ctx.save_for_backward(idx, w)
        ctx.rows, ctx.padding_idx = weight.shape[0], padding_idx
        return F.embedding_bag(idx, weight, mode="sum", per_sample_weights=w,
                               padding_idx=None if padding_idx < 0 else padding_idx)  # [B, E]

    @staticmethod
    def backward(ctx, grad: Tensor):
        idx, w = ctx.saved_tensors
        src = (w.unsqueeze(-1) * grad.unsqueeze(1)).reshape(-1, grad.shape[-1])  # [B*L, E]: one row per slot
        gw = torch.zeros(ctx.rows, grad.shape[-1], dtype=grad.dtype, device=grad.device).index_add_(
            0, idx.reshape(-1), src)
        if ctx.padding_idx >= 0:
            gw[ctx.padding_idx] = 0
        return gw, None, None, None


def weighted_bag(table: nn.Embedding, idx: Tensor, w: Tensor) -> Tensor:
    """``sum_l w[b, l] * table(idx[b, l])``: idx [B, L] long, w [B, L] (no gradient) -> [B, E].

    ``F.embedding_bag`` forward; on CPU (float32, gradient needed) the backward accumulates rows
    with ``index_add_`` instead of embedding_bag's, which sorts all B*L indices first: at L = 2000
    that sort was a quarter of a SIM fine-tuning step. The pad row gets no gradient.
    """
    pad = -1 if table.padding_idx is None else int(table.padding_idx)
    if _fast_path(table.weight, idx) and not w.requires_grad and table.max_norm is None:
        return _WeightedBag.apply(table.weight, idx, w.to(table.weight.dtype), pad)
    return F.embedding_bag(idx, table.weight, mode="sum", per_sample_weights=w.to(table.weight.dtype),
                           padding_idx=table.padding_idx)


def gather_dot(table: nn.Embedding, idx: Tensor, h: Tensor) -> Tensor:
    """``(table(idx) * h.unsqueeze(1)).sum(-1)``: idx [N, J] long, h [N, E] -> [N, J].

    The candidate scores of a sampled softmax. On CPU (float32, gradient needed) the gather,
    the dot and their backward run in cache-sized chunks without materialising [N, J, E];
    elsewhere it is the plain gather + batched matmul. The pad row gets no gradient.
    """
    if _fast_path(table.weight, idx) and h.dtype == table.weight.dtype and table.max_norm is None:
        pad = -1 if table.padding_idx is None else int(table.padding_idx)
        return _GatherDot.apply(table.weight, idx, h, pad)
    w = table(idx)  # [N, J, E]
    return torch.bmm(w, h.unsqueeze(-1).to(w.dtype)).squeeze(-1)


__all__ = ["gather_dot", "lookup", "weighted_bag"]
