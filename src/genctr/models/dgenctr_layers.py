"""The three named parts of DGenCTR: field embedding, denoiser, scoring heads.

Parameter-name prefixes are the transfer groups (see ``dgenctr.transfer``):
``embedding.`` (value tables, per-field [MASK] and type vectors, sequence pooling),
``denoiser.`` (timestep embedding, transformer encoder, final norm), ``heads.`` (G_k).
"""
from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genctr.models.dgenctr_config import FIELDS, N_FIELDS, DGenCTRConfig
from genctr.models.layers.lookup import lookup

TABLE_FIELDS = ("user", "item", "cate", "price", "label")  # fields looked up in a table
INIT_STD = 0.02
# The label rows start as one shared random vector plus per-value noise of this relative size, so
# cos(G, e(1)) - cos(G, e(0)) ~ 0 for any head output G: p(y | ...) starts at 1/2 (a label loss of
# log 2 and a CTR logit of ~0), not at a random bias of ~sqrt(2/d)/τ (1.8 logits at d = 64, τ = 0.1).
LABEL_INIT_SPREAD = 0.05


class SeqPool(nn.Module):
    """Target attention over the behaviour sequence; one pooled vector per query.

    query [B, Q, d], hist [B, L, d] (behaviour embeddings, left-aligned), hist_len [B]
    -> [B, Q, d]. Positions >= hist_len are masked; an empty history gives the learned
    ``empty`` vector (so it is a distinct, scoreable value rather than zeros).
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.empty = nn.Parameter(torch.randn(d) * INIT_STD)

    def forward(self, query: Tensor, hist: Tensor, hist_len: Tensor) -> Tensor:
        d, L = hist.shape[-1], hist.shape[1]
        valid = torch.arange(L, device=hist.device)[None, :] < hist_len[:, None]  # (B, L)
        empty = ~valid.any(dim=1)  # (B,)
        scores = torch.einsum("bqd,bld->bql", self.q(query), self.k(hist)) / math.sqrt(d)
        keep = (valid | empty[:, None])[:, None, :]  # empty rows keep all: avoids NaN, replaced below
        attn = scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)  # (B, Q, L)
        pooled = attn @ self.v(hist)  # (B, Q, d)
        return torch.where(empty[:, None, None], self.empty.to(pooled.dtype), pooled)


class FieldEmbedding(nn.Module):
    """Field values -> vectors, and (possibly masked) vectors -> field tokens."""

    price_boundaries: Tensor

    def __init__(self, cfg: DGenCTRConfig, vocab: dict[str, int]) -> None:
        super().__init__()
        d = cfg.embed_dim
        tables = {
            name: nn.Embedding(vocab[name], d, padding_idx=None if name == "label" else 0)
            for name in TABLE_FIELDS
        }
        for table in tables.values():
            nn.init.normal_(table.weight, std=INIT_STD)
            if table.padding_idx is not None:
                with torch.no_grad():
                    table.weight[table.padding_idx].zero_()
        with torch.no_grad():  # see LABEL_INIT_SPREAD
            label = tables["label"].weight  # (2, d)
            label.copy_(label[:1] + LABEL_INIT_SPREAD * label)
        self.tables = nn.ModuleDict(tables)
        self.mask = nn.Parameter(torch.randn(N_FIELDS, d) * INIT_STD)  # per-field [MASK]
        self.field_type = nn.Parameter(torch.randn(N_FIELDS, d) * INIT_STD)  # slot identity, no order
        self.seq_pool = SeqPool(d)
        self.register_buffer(
            "price_boundaries", torch.tensor(cfg.price_boundaries, dtype=torch.float32), persistent=False
        )

    def price_bucket(self, price: Tensor) -> Tensor:
        """Price [B] float -> price vocabulary index [B]: 1 = unknown, 2 + bucket otherwise."""
        known = torch.isfinite(price) & (price > 0)
        bucket = torch.bucketize(price.float().nan_to_num(0.0), self.price_boundaries) + 2
        return torch.where(known, bucket, torch.ones_like(bucket))

    def value_ids(self, batch: dict[str, Tensor], with_label: bool) -> dict[str, Tensor]:
        """Vocabulary index [B] of each table field (the label only when ``with_label``)."""
        ids = {
            "user": batch["user"].long(),
            "item": batch["item"].long(),
            "cate": batch["cate"].long(),
            "price": self.price_bucket(batch["price"]),
        }
        if with_label:
            ids["label"] = batch["label"].long()
        return ids

    def label_table(self) -> Tensor:
        """The label field's value embeddings [2, d]: row y is e(y)."""
        return cast(nn.Embedding, self.tables["label"]).weight  # every table is an nn.Embedding (__init__)

    def lookup(self, ids: dict[str, Tensor]) -> dict[str, Tensor]:
        return {name: self.tables[name](idx) for name, idx in ids.items()}  # each (B, d)

    def pool(self, batch: dict[str, Tensor], query: Tensor) -> Tensor:
        """Pool the history against query [B, Q, d] (target item + cate vectors) -> [B, Q, d]."""
        # cast: every table is an nn.Embedding (__init__)
        hist = (lookup(cast(nn.Embedding, self.tables["item"]), batch["hist_item"].long())
                + lookup(cast(nn.Embedding, self.tables["cate"]), batch["hist_cate"].long()))
        return self.seq_pool(query, hist, batch["hist_len"].long())

    def tokens(self, values: Tensor, masked: Tensor) -> Tensor:
        """values [B, F, d] in FIELDS order, masked [B, F] -> tokens [B, F, d]."""
        x = torch.where(masked[..., None], self.mask.to(values.dtype), values)
        return x + self.field_type


class Denoiser(nn.Module):
    """Bidirectional transformer over a set of tokens plus a timestep embedding.

    tokens [B, N, d], t [B] in 1..T -> [B, N, d]. No positional encoding and no
    attention mask: permuting the tokens permutes the output the same way.
    """

    def __init__(self, cfg: DGenCTRConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.time = nn.Embedding(cfg.timesteps, d)
        nn.init.normal_(self.time.weight, std=INIT_STD)
        layer = nn.TransformerEncoderLayer(
            d, cfg.n_heads, dim_feedforward=cfg.ffn_mult * d, dropout=cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    def forward(self, tokens: Tensor, t: Tensor) -> Tensor:
        x = tokens + self.time(t - 1)[:, None, :]  # same step embedding on every token
        return self.norm(self.encoder(x))


class ScoringHeads(nn.Module):
    """G_k: one 2-layer MLP per field, run as one batched einsum.

    Weights are stacked along a leading head axis K = N_FIELDS (feature-specific) or 1
    (shared), so both variants have the same parameter names. h [B, N, d] with
    ``fields`` (indices into FIELDS, length N; default all) -> [B, N, d].
    """

    def __init__(self, cfg: DGenCTRConfig) -> None:
        super().__init__()
        d, hid = cfg.embed_dim, cfg.head_hidden
        k = N_FIELDS if cfg.feature_specific_heads else 1
        self.w1 = nn.Parameter(torch.empty(k, d, hid).uniform_(-1, 1) / math.sqrt(d))
        self.b1 = nn.Parameter(torch.zeros(k, hid))
        self.w2 = nn.Parameter(torch.empty(k, hid, d).uniform_(-1, 1) / math.sqrt(hid))
        self.b2 = nn.Parameter(torch.zeros(k, d))

    def forward(self, h: Tensor, fields: list[int] | None = None) -> Tensor:
        if self.w1.shape[0] == 1:
            idx = [0] * h.shape[1]
        else:
            idx = list(range(len(FIELDS))) if fields is None else fields
        w1, b1, w2, b2 = self.w1[idx], self.b1[idx], self.w2[idx], self.b2[idx]  # (N, ...)
        z = F.gelu(torch.einsum("bnd,ndh->bnh", h, w1) + b1)
        return torch.einsum("bnh,nhd->bnd", z, w2) + b2


__all__ = ["SeqPool", "FieldEmbedding", "Denoiser", "ScoringHeads", "TABLE_FIELDS"]
