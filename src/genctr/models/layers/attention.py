"""Multi-head attention on fused kernels and the pre-LN decoder block built from it."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from genctr.models.layers.windowed_attention import windowed_causal_attention


class MultiHeadAttention(nn.Module):
    """Queries from ``x_q`` [B, Tq, D], keys/values from ``x_kv`` [B, Tk, D] -> [B, Tq, D].

    Uses ``F.scaled_dot_product_attention`` so flash / memory-efficient kernels apply.
    ``attn_mask`` (bool, True = may attend) broadcasts to [B, H, Tq, Tk]. ``dropout`` applies
    to the output projection and, unless ``attn_dropout`` is given, to the attention weights.
    On CPU, attention-weight dropout rules out the fused kernel (PyTorch then builds the
    [B, H, Tq, Tk] matrix): ``attn_dropout=0`` keeps it fused.

    ``window`` (with ``is_causal``, Tq == Tk): sliding-window causal attention, query t over key
    slots (t - window, t] (and slot 0 with ``sink``), in O(T window) cells; see
    :func:`~genctr.models.layers.windowed_attention.windowed_causal_attention`.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, attn_dropout: float | None = None) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout if attn_dropout is None else attn_dropout  # on the attention weights
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.resid_drop = nn.Dropout(dropout)

    def forward(
        self, x_q: Tensor, x_kv: Tensor, *, is_causal: bool = False, attn_mask: Tensor | None = None,
        window: int | None = None, sink: bool = False,
    ) -> Tensor:
        B, Tq, D = x_q.shape
        Tk, H = x_kv.shape[1], self.n_heads
        q = self.q_proj(x_q).view(B, Tq, H, D // H).transpose(1, 2)  # [B, H, Tq, hd]
        k, v = self.kv_proj(x_kv).split(D, dim=-1)  # [B, Tk, D] each
        k = k.view(B, Tk, H, D // H).transpose(1, 2)  # [B, H, Tk, hd]
        v = v.view(B, Tk, H, D // H).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        if window is not None:
            if not is_causal or attn_mask is not None or Tq != Tk:
                raise ValueError("windowed attention is causal over one stream: is_causal=True, no attn_mask, Tq == Tk")
            y = windowed_causal_attention(q, k, v, window, sink=sink, dropout_p=p)  # [B, H, Tq, hd]
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                               dropout_p=p)  # [B, H, Tq, hd]
        y = y.transpose(1, 2).reshape(B, Tq, D)  # [B, Tq, D]
        return self.resid_drop(self.out_proj(y))


class DecoderBlock(nn.Module):
    """Pre-LN block: ``h += Attn(LN(h), LN(kv)); h += FFN(LN(h))`` -> [B, T, D].

    ``cross=True``: queries from the stream ``h``, keys/values from a separate ``kv`` stream.
    ``cross=False``: self-attention over ``h`` (``kv`` must be None).
    ``window``/``sink`` pass to :class:`MultiHeadAttention` (sliding-window causal attention).
    """

    def __init__(self, d_model: int, n_heads: int, ffn_mult: int, dropout: float, cross: bool,
                 attn_dropout: float | None = None) -> None:
        super().__init__()
        self.cross = cross
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_kv = nn.LayerNorm(d_model) if cross else None
        self.attn = MultiHeadAttention(d_model, n_heads, dropout, attn_dropout)
        self.ln_ffn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_mult * d_model),
            nn.GELU(),
            nn.Linear(ffn_mult * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(
        self, h: Tensor, kv: Tensor | None = None, *, is_causal: bool = False,
        attn_mask: Tensor | None = None, window: int | None = None, sink: bool = False,
    ) -> Tensor:
        if self.cross != (kv is not None):
            raise ValueError("DecoderBlock: pass kv exactly when the block was built with cross=True")
        q = self.ln_q(h)
        src = self.ln_kv(kv) if self.ln_kv is not None and kv is not None else q
        h = h + self.attn(q, src, is_causal=is_causal, attn_mask=attn_mask, window=window, sink=sink)
        return h + self.ffn(self.ln_ffn(h))
