"""GenCTR: a conditional self-attention decoder pretrained by next-item sampled softmax.

At position t the *query* is built from the target's side information (category ``c_t`` +
position t) and the *keys/values* from the preceding items ``i_<t`` (item + category +
position). The key/value stream is shifted right by one behind a learned BOS slot, so
``scaled_dot_product_attention(is_causal=True)`` lets query t see BOS and items 0..t-1 and
never item t. Later layers (``decoder.n_layers`` > 1) are causal pre-LN self-attention blocks
over the query stream; they stay leak-free because stream position s < t only saw items < s.

With ``decoder.attention = "window"`` every layer's causal attention is a sliding window:
query t sees BOS and the ``decoder.window`` most recent items before it (later layers: the
``window`` most recent stream positions up to t), O(L window) instead of O(L^2) cells
(``layers.windowed_attention``); ``encode_target`` then gathers only those items.

With ``decoder.context = "bidirectional"`` pretraining is a cloze task instead: query t attends
BOS and every valid item but t, before and after it (one masked item per position, all positions
at once). Only the objective changes: ``encode_target``, and so fine-tuning and serving, read the
history before the target either way.

Sequences are left-aligned (oldest first, padding after ``seq_len``), so causality alone keeps
padding out of every valid position: no key-padding mask is needed. Positions are absolute
within a window of at most ``max_seq_len`` behaviours, the windows pretraining sees; see
``encode_target`` for how a full fine-tuning history is kept inside that range.

Widths: the item/category tables are ``embed_dim`` wide (the backbone's width, so parameter
sharing copies them verbatim); learned projections lift them to ``d_model``, and ``head``
projects the decoder output back to ``embed_dim`` for scoring against the (tied) item table.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genctr.errors import ConfigError
from genctr.features.layout import FIRST_ID
from genctr.models.config import ModelConfig
from genctr.models.layers import DecoderBlock, gather_dot, lookup, make_embedding, sequence_mask, used_width
from genctr.models.sampling import NegativeSampler


class GenCTR(nn.Module):
    """The pretrained generative model.

    ``item_cate`` [n_items] (category index of each item index) builds the CS negative buckets;
    it is needed for pretraining and may be omitted when the weights (buffers included) come
    from a state dict.
    """

    def __init__(self, cfg: ModelConfig, item_cate: Tensor | None = None) -> None:
        super().__init__()
        cfg.require_vocab("n_items", "n_cates")
        self.cfg = cfg
        E, dc = cfg.embed_dim, cfg.decoder
        D = dc.d_model
        self.item_embedding = make_embedding(cfg.n_items, E)  # also the output (scoring) table
        self.cate_embedding = make_embedding(cfg.n_cates, E)
        self.pos_embedding = nn.Embedding(cfg.max_seq_len, D)  # positions 0..max_seq_len-1
        nn.init.normal_(self.pos_embedding.weight, std=0.02)
        self.bos = nn.Parameter(torch.randn(D) * 0.02)  # the "nothing seen yet" key/value
        self.query_proj = nn.Linear(E, D)  # category of the target -> query stream
        self.key_proj = nn.Linear(2 * E, D)  # [item | category] of a past item -> key/value stream
        self.drop = nn.Dropout(dc.dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(D, dc.n_heads, dc.ffn_mult, dc.dropout, cross=(i == 0), attn_dropout=dc.attn_dropout)
            for i in range(dc.n_layers)
        )
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, E)  # decoder output -> predicted next-item embedding (pretraining only)
        self.sampler = NegativeSampler(cfg.n_items, cfg.n_cates, cfg.negatives, cfg.n_negatives, item_cate)

    @property
    def out_dim(self) -> int:
        """Width of ``forward``/``encode_target`` outputs (the integration feature)."""
        return self.cfg.decoder.d_model

    # -- streams -------------------------------------------------------------------------
    def _queries(self, cate: Tensor, pos: Tensor) -> Tensor:
        """cate [B, T], pos [T] or [B, T] -> query stream [B, T, D]."""
        return self.drop(self.query_proj(lookup(self.cate_embedding, cate)) + self.pos_embedding(pos))

    def _keys(self, item: Tensor, cate: Tensor, pos: Tensor | None = None) -> Tensor:
        """items [B, T] at positions ``pos`` ([T] or [B, T]; default 0..T-1) -> [BOS, items] stream [B, T+1, D]."""
        B, T = item.shape
        if pos is None:
            pos = torch.arange(T, device=item.device)
        x = torch.cat([lookup(self.item_embedding, item), lookup(self.cate_embedding, cate)], dim=-1)  # [B, T, 2E]
        x = self.key_proj(x) + self.pos_embedding(pos)  # [B, T, D]
        bos = self.bos.to(x.dtype).expand(B, 1, -1)  # [B, 1, D]
        return self.drop(torch.cat([bos, x], dim=1))  # [B, T+1, D]

    @property
    def window(self) -> int | None:
        """Items (stream positions) each query attends besides BOS, or None for full causal attention."""
        dc = self.cfg.decoder
        return dc.window if dc.attention == "window" else None

    def _check_len(self, T: int) -> None:
        if T > self.cfg.max_seq_len:
            raise ConfigError(
                f"GenCTR got sequences of length {T} but was built for at most max_seq_len = "
                f"{self.cfg.max_seq_len}; raise model.max_seq_len"
            )

    # -- public API ----------------------------------------------------------------------
    def forward(self, seq_item: Tensor, seq_cate: Tensor, seq_len: Tensor, bidirectional: bool = False) -> Tensor:
        """seq_item, seq_cate [B, T], seq_len [B] -> g [B, T, D]; g[:, t] never sees item t.

        T <= ``max_seq_len``. Rows past ``seq_len`` are 0. A windowed decoder computes only the
        first max(seq_len) columns (lifelong histories are long for few users: the rest is padding).
        ``bidirectional`` (one full-attention layer only): g[:, t] sees every valid item but t.
        """
        B, T = seq_item.shape
        self._check_len(T)
        if bidirectional:
            return self._bidirectional(seq_item, seq_cate, seq_len)
        W = self.window
        used = used_width(seq_len, T) if W is not None else T
        if used < T:  # windowed: run the columns some row uses; the rest is padding, whose output is 0
            g = self(seq_item[:, :used], seq_cate[:, :used], seq_len)  # [B, used, D]
            return F.pad(g, (0, 0, 0, T - used))  # [B, T, D]
        h = self._queries(seq_cate, torch.arange(T, device=seq_item.device))  # [B, T, D]
        kv = self._keys(seq_item[:, :-1], seq_cate[:, :-1])  # [B, T, D]: BOS, items 0..T-2
        # query t attends BOS + items < t (window: BOS, kept as a sink, + items t-W .. t-1)
        h = self.blocks[0](h, kv, is_causal=True, window=W, sink=W is not None)
        for block in self.blocks[1:]:
            h = block(h, is_causal=True, window=W)  # [B, T, D]
        g = self.ln_f(h)
        return g * sequence_mask(seq_len, T).unsqueeze(-1).to(g.dtype)

    def _bidirectional(self, seq_item: Tensor, seq_cate: Tensor, seq_len: Tensor) -> Tensor:
        """The cloze pass: query t attends BOS and items j != t, j < seq_len -> [B, T, D]."""
        B, T = seq_item.shape
        h = self._queries(seq_cate, torch.arange(T, device=seq_item.device))  # [B, T, D]
        kv = self._keys(seq_item, seq_cate)  # [B, T+1, D]: BOS, items 0..T-1 (slot j+1 = item j)
        slot = torch.arange(T + 1, device=seq_item.device)  # [T+1]
        valid = slot.view(1, 1, -1) <= seq_len.view(B, 1, 1)  # [B, 1, T+1]: BOS + real items
        not_self = slot.view(1, -1) != (torch.arange(T, device=seq_item.device) + 1).view(-1, 1)  # [T, T+1]
        h = self.blocks[0](h, kv, attn_mask=(valid & not_self).unsqueeze(1))  # mask [B, 1, T, T+1]
        g = self.ln_f(h)
        return g * sequence_mask(seq_len, T).unsqueeze(-1).to(g.dtype)

    def encode_target(
        self, hist_item: Tensor, hist_cate: Tensor, hist_len: Tensor, target_cate: Tensor
    ) -> Tensor:
        """g(history, c_target): the query from ``target_cate`` [B] at position ``hist_len`` over
        the valid history (hist_* [B, L], left-aligned) -> [B, D].

        Equals ``forward`` on the history with the target appended at position ``hist_len``.
        The target slot must be a position pretraining trains (< max_seq_len), so a history of
        max_seq_len or more behaviours keeps only its most recent max_seq_len - 1. With a
        one-layer windowed decoder only the ``window`` most recent items are gathered: O(window)
        per row, whatever L.
        """
        B = hist_item.shape[0]
        # one served user's history expanded over B candidates (stride 0): its keys are computed once and
        # the B target queries attend them as B queries of one row (the same values; not while tracing)
        shared = B > 1 and len(self.blocks) == 1 and not torch.jit.is_tracing() \
            and hist_item.stride(0) == 0 and hist_cate.stride(0) == 0 and hist_len.stride(0) == 0
        if shared:
            hist_item, hist_cate, hist_len = hist_item[:1], hist_cate[:1], hist_len[:1]  # [1, L] x2, [1]
        if len(self.blocks) > 1:  # deeper stacks need the whole query stream: run it, read one slot
            hist_item, hist_cate, hist_len = self._recent(hist_item, hist_cate, hist_len)
            seq_item = F.pad(hist_item, (0, 1))  # [B, L+1]; the target's own item is never seen
            seq_cate = F.pad(hist_cate, (0, 1)).scatter(1, hist_len.unsqueeze(1), target_cate.unsqueeze(1))
            g = self(seq_item, seq_cate, hist_len + 1)  # [B, L+1, D]
            return g.gather(1, hist_len.view(B, 1, 1).expand(B, 1, g.shape[-1])).squeeze(1)  # [B, D]
        kv, allowed, position = self._target_keys(hist_item, hist_cate, hist_len)  # [U, S, D], [U, S], [U]
        q = self._queries(target_cate.unsqueeze(1), position.expand(B).unsqueeze(1))  # [B, 1, D]; U = 1 if shared
        if shared:
            h = self.blocks[0](q.transpose(0, 1), kv, attn_mask=allowed.view(1, 1, 1, -1))  # [1, B, D]
            return self.ln_f(h).squeeze(0)  # [B, D]
        h = self.blocks[0](q, kv, attn_mask=allowed.view(B, 1, 1, -1))  # [B, 1, D]
        return self.ln_f(h).squeeze(1)  # [B, D]

    def _target_keys(self, hist_item: Tensor, hist_cate: Tensor, hist_len: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The key/value slots a target query may attend, which of them, and the query's position:
        [U, S, D], [U, S] bool, [U] (``hist_len``, less what ``_recent`` drops). Full attention:
        BOS + the (most recent max_seq_len - 1) history slots; a window W narrower than the
        history: BOS + the W items before the target, S = W + 1, gathered straight from the
        history (O(W) per row, no [U, L] copy)."""
        L, W = hist_item.shape[1], self.window
        if W is None or W >= L:
            item, cate, length = self._recent(hist_item, hist_cate, hist_len)
            kv = self._keys(item, cate)  # [U, L'+1, D]: BOS + the L' history slots
            slots = torch.arange(item.shape[1] + 1, device=hist_len.device)  # [L'+1]
            # BOS + items < length (a window W >= L reaches back to item 0 of every row: the same)
            return kv, slots.unsqueeze(0) <= length.unsqueeze(1), length  # [U, L'+1]
        drop = (hist_len - (self.cfg.max_seq_len - 1)).clamp_min(0)  # [U]: what _recent would drop
        length = hist_len - drop  # [U]: the target's position, as pretraining numbered it
        pos = length.unsqueeze(1) - W + torch.arange(W, device=hist_len.device)  # [U, W]
        seen = pos >= 0  # [U, W]: a shorter history leaves slots before its first item
        pos = pos.clamp_min(0)
        src = pos + drop.unsqueeze(1)  # [U, W]: the same items in the given history
        kv = self._keys(hist_item.gather(1, src), hist_cate.gather(1, src), pos)  # [U, W+1, D]: BOS + W
        return kv, F.pad(seen, (1, 0), value=True), length  # [U, W+1]

    def _recent(self, item: Tensor, cate: Tensor, length: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Keep the most recent ``max_seq_len - 1`` behaviours, left-aligned: [B, L] -> [B, <= P-1]."""
        keep = self.cfg.max_seq_len - 1
        if item.shape[1] <= keep:
            return item, cate, length
        drop = (length - keep).clamp_min(0)  # [B]: oldest behaviours past the window
        src = (torch.arange(keep, device=item.device) + drop.unsqueeze(1)).clamp_max(item.shape[1] - 1)
        return item.gather(1, src), cate.gather(1, src), length - drop  # [B, keep] x2, [B]

    def candidate_scores(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None, bidirectional: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Next-item scores of the true item and K sampled negatives at every position of a batch.

        batch: ``seq_item``/``seq_cate`` [B, T] long, ``seq_len`` [B] long (left-aligned).
        Returns ``scores`` [N = B*T, 1+K] (similarity / temperature; no correction, hits not
        masked), ``cand`` [N, 1+K] (column 0 = the true item t, columns 1.. = the negatives) and
        ``valid`` [N] bool (t < seq_len and item t is a real item, index >= FIRST_ID). Rows that
        are not valid hold finite garbage. ``generator`` must live on the batch's device. A
        windowed decoder scores only the first max(seq_len) columns (the rest: zeros, not valid).
        ``bidirectional``: position t is scored from every other item (``forward``), not the past.
        """
        item, cate, length = batch["seq_item"], batch["seq_cate"], batch["seq_len"]
        B, T = item.shape
        used = used_width(length, T) if self.window is not None else T
        if used < T:  # windowed: score the columns some row uses; padding rows are 0 and never valid
            cut = {"seq_item": item[:, :used], "seq_cate": cate[:, :used], "seq_len": length}
            scores, cand, valid = self.candidate_scores(cut, generator)  # [B*used, 1+K] x2, [B*used]

            def pad(x: Tensor) -> Tensor:
                return F.pad(x.view(B, used, -1), (0, 0, 0, T - used)).view(B * T, -1)  # [B*used, .] -> [N, .]
            return pad(scores), pad(cand), pad(valid.unsqueeze(-1)).squeeze(-1)
        h = self.head(self(item, cate, length, bidirectional)).reshape(B * T, -1)  # [N, E] predicted item embedding
        pos = item.reshape(B * T)  # [N]: the target of position t is item t
        valid = (sequence_mask(length, T) & (item >= FIRST_ID)).reshape(B * T)  # [N]
        neg = self.sampler(pos, generator)  # [N, K]
        cand = torch.cat([pos.unsqueeze(1), neg], dim=1)  # [N, 1+K]
        table = self.item_embedding
        # one fused gather + dot for positives and negatives; on CPU it never holds [N, 1+K, E]
        scores = gather_dot(table, cand, h.to(table.weight.dtype))  # [N, 1+K]
        if self.cfg.similarity == "cosine":
            norms = self._item_norms(cand) * h.norm(dim=-1, keepdim=True).to(scores.dtype)  # [N, 1+K]
            scores = scores / norms.clamp_min(1e-6)
        return scores / self.cfg.temperature, cand, valid

    def pretrain_logits(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Next-item sampled-softmax logits over every position of a batch of user sequences.

        batch as in :meth:`candidate_scores`. Returns ``logits`` [N = B*T, 1+K] (column 0 = the
        true item t, columns 1.. = K sampled negatives, accidental hits set to -inf; with
        ``cfg.uses_logq`` each negative minus log(K q), see ``NegativeSampler.log_expected_count``)
        and ``valid`` [N] bool. The objective's context is ``cfg.decoder.context``.
        """
        bidirectional = self.cfg.decoder.context == "bidirectional"
        scores, cand, valid = self.candidate_scores(batch, generator, bidirectional)
        return self.correct_scores(scores, cand), valid

    def correct_scores(self, scores: Tensor, cand: Tensor) -> Tensor:
        """``candidate_scores``' scores and candidates [N, 1+K] -> sampled-softmax logits [N, 1+K]:
        the log-Q correction (``cfg.uses_logq``) and accidental hits masked to -inf."""
        if self.cfg.uses_logq:
            # importance weight 1/(K q) of each sampled term of the softmax's normaliser, in log space
            correction = self.sampler.log_expected_count(cand[:, 0]).to(scores.dtype)  # [N, 1]
            scores = torch.cat([scores[:, :1], scores[:, 1:] - correction], dim=1)
        hits = F.pad(cand[:, 1:] == cand[:, :1], (1, 0))  # [N, 1+K]; column 0 never masked
        return scores.masked_fill(hits, float("-inf"))

    def _item_norms(self, cand: Tensor) -> Tensor:
        """|e(item)| of every candidate [N, 1+K]: from the table's row norms when there are more
        candidates than items (the usual case), else from the gathered rows."""
        table = self.item_embedding
        if cand.numel() > table.num_embeddings:
            return table.weight.norm(dim=-1)[cand]
        return lookup(table, cand).norm(dim=-1)


__all__ = ["GenCTR"]
