"""Sliding-window causal attention in chunks: O(T * window) score cells instead of O(T^2).

Query t of a stream of T slots attends the key slots s with ``t - window < s <= t`` (itself and
the ``window - 1`` before it) and, with ``sink``, slot 0 as well, always (the decoder's BOS: a
query whose window holds nothing relevant can still attend "nothing seen yet"). With
``window >= T`` that is exactly causal attention.

Chunked formulation: the T queries are cut into nC = ceil(T / C) chunks of C = window queries.
Every key a query of chunk j may see lies in chunk j or chunk j - 1, so chunk j attends one
block of 2C keys (slots (j-1)C .. (j+1)C - 1; chunk 0's previous block is zero padding), and
one band mask [nC, C, 2C] (plus the sink column) says which of them each query sees. The
chunks become the batch dimension of one ``scaled_dot_product_attention`` call, with batch and
heads folded into its head dimension, so the small mask broadcasts instead of being copied per
row. Memory, B rows, H heads, head width hd (Tp = nC C, the padded length):

    queries     [nC, B*H, C, hd]        = the input (a copy)
    key blocks  [nC, B*H, 2C + 1, hd]   ~ 2x the keys (overlapping blocks, by one unfold)
    mask        [nC, 1, C, 2C + 1]      bool, T (2C + 1) bytes: shared by every row and head
    scores      [nC, B*H, C, 2C + 1]    = B H Tp (2 window + 1) floats, if the kernel builds them

against B H T^2 score floats for full attention on the math kernel (B = 32, H = 2, T = 2000,
window = 64: 66 MB instead of 1 GB). Half of each block is masked (the cost of one mask for
every chunk): the work is ~2x the W T cells that matter, and still linear in T.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def window_mask(T: int, window: int, sink: bool, device: torch.device | None = None) -> Tensor:
    """Which key of its block each query may attend: [nC, C, sink + 2C] bool, C = min(window, T).

    Column 0 is the sink (slot 0) when ``sink``; then the block's 2C slots. Slots before 0 (the
    padding left of chunk 0) are never allowed; with ``sink`` neither is slot 0 inside the block
    (it already has its own column). Every row allows at least one key (the query's own slot or
    the sink), so padded query rows past T stay finite.
    """
    C = min(window, T)
    nC = -(-T // C)  # ceil
    t = torch.arange(nC * C, device=device).view(nC, C, 1)  # query slots
    s = (torch.arange(nC, device=device).view(nC, 1, 1) - 1) * C + torch.arange(2 * C, device=device)  # [nC, 1, 2C]
    band = (s > t - window) & (s <= t) & (s >= int(sink))  # [nC, C, 2C]
    if not sink:
        return band
    return torch.cat([torch.ones(nC, C, 1, dtype=torch.bool, device=device), band], dim=-1)  # [nC, C, 1 + 2C]


def windowed_causal_attention(q: Tensor, k: Tensor, v: Tensor, window: int, *, sink: bool = False,
                              dropout_p: float = 0.0) -> Tensor:
    """q, k, v [B, H, T, hd] (one stream: query t and key t are the same slot) -> [B, H, T, hd].

    Query t sees key slots ``(t - window, t]`` and, with ``sink``, slot 0. Softmax scale
    1/sqrt(hd), as ``scaled_dot_product_attention``'s default.
    """
    B, H, T, hd = q.shape
    C = min(window, T)
    nC = -(-T // C)
    Tp = nC * C
    mask = window_mask(T, window, sink, q.device).unsqueeze(1)  # [nC, 1, C, K]: broadcasts over B*H

    def blocks(x: Tensor) -> Tensor:
        """[B, H, T, hd] -> the 2C-slot key block of every chunk, [nC, B*H, 2C (+1 sink), hd]."""
        padded = F.pad(x, (0, 0, C, Tp - T))  # [B, H, C + Tp, hd]: C slots of left padding
        win = padded.unfold(2, 2 * C, C)  # [B, H, nC, hd, 2C]: a view, blocks overlap by C
        win = win.permute(2, 0, 1, 4, 3).reshape(nC, B * H, 2 * C, hd)  # [nC, B*H, 2C, hd]
        if not sink:
            return win
        first = x[:, :, :1].reshape(1, B * H, 1, hd).expand(nC, -1, -1, -1)  # [nC, B*H, 1, hd]: slot 0
        return torch.cat([first, win], dim=2)  # [nC, B*H, 1 + 2C, hd]

    qc = F.pad(q, (0, 0, 0, Tp - T)).view(B, H, nC, C, hd)  # [B, H, nC, C, hd]
    qc = qc.permute(2, 0, 1, 3, 4).reshape(nC, B * H, C, hd)  # [nC, B*H, C, hd]
    y = F.scaled_dot_product_attention(qc, blocks(k), blocks(v), attn_mask=mask, dropout_p=dropout_p)
    y = y.view(nC, B, H, C, hd).permute(1, 2, 0, 3, 4).reshape(B, H, Tp, hd)  # [B, H, Tp, hd]
    return y[:, :, :T]  # [B, H, T, hd]


def attention_cells(T: int, window: int | None, sink: bool = True) -> int:
    """Score cells one head of one sequence computes: T^2 for full attention (``window`` None),
    else the chunks' nC C (sink + 2C). A cost model for benchmarks and tests."""
    if window is None:
        return T * T
    C = min(window, T)
    return -(-T // C) * C * (int(sink) + 2 * C)


__all__ = ["attention_cells", "window_mask", "windowed_causal_attention"]
