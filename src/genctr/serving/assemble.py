"""Raw ids of a scoring request -> the models' batch dict: one Feast lookup, vocabularies, histories.

* histories: a slot's own (from the request) or its Feast sequence, the last L, left-aligned,
  0-padded to W = the longest in the request (<= L): padding columns past every row's length
  are masked out by the models, so dropping them changes no score and saves attention work;
* a single user's history is a [1, W] tensor *expanded* (stride 0) to [N, W], not copied per
  candidate;
* candidates' category / price: from the request where given, else Feast's item features
  (unknown item -> OOV, price 0); raw ids -> indices through the artifact's vocabularies
  (vectorised; unknown -> OOV).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import genctr.serving._kserve  # noqa: F401 - first: KServe imported with sys.argv emptied

# isort: split
import numpy as np
import torch
from kserve.errors import InferenceError, InvalidInput

from genctr.features.layout import OOV
from genctr.serving.online import OnlineFeatures
from genctr.serving.request import ScoringRequest
from genctr.serving.vocab import IdIndex


@dataclass
class ItemFeatures:
    """Feast item features of sorted unique raw ``item_id`` [M]."""

    item_id: np.ndarray  # int64, sorted
    category_id: np.ndarray  # int64 raw, valid where found
    found: np.ndarray  # bool
    price: np.ndarray  # float32, NaN when unknown


class BatchAssembler:
    """Builds the batch of a validated request for one loaded model artifact.

    ``online`` is None without a feature store: then every slot must carry its history and every
    candidate its ``category_id`` and ``price`` (HTTP 400 otherwise).
    """

    def __init__(self, vocab: dict[str, IdIndex], online: OnlineFeatures | None, max_seq_len: int,
                 device: torch.device) -> None:
        self.vocab = vocab
        self.online = online
        self.max_seq_len = max_seq_len
        self.device = device

    def __call__(self, req: ScoringRequest) -> dict[str, torch.Tensor]:
        """The models' batch dict (see genctr.training.data) for ``req``, on the device."""
        return self.build(req, *self.fetch(req))

    def build(self, req: ScoringRequest, histories: list[tuple[np.ndarray, np.ndarray]],
               item_feats: ItemFeatures | None) -> dict[str, torch.Tensor]:
        hist_item, hist_cate, hist_len = self._histories(histories)  # [U, W], [U, W], [U]
        cate, price = self._item_features(req, item_feats)  # [N], [N]
        users = self.vocab["user"].lookup(np.array([s.user_id for s in req.slots], np.int64))  # [U]
        n, dev = len(req), self.device

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(x).to(dev)

        if len(req.slots) == 1:  # one user: broadcast its row, no per-candidate copy
            w = hist_item.shape[1]
            per_user = {"user": t(users).expand(n), "hist_item": t(hist_item).expand(n, w),
                        "hist_cate": t(hist_cate).expand(n, w), "hist_len": t(hist_len).expand(n)}
        else:
            rows = t(req.row_slot)
            per_user = {"user": t(users)[rows], "hist_item": t(hist_item)[rows],
                        "hist_cate": t(hist_cate)[rows], "hist_len": t(hist_len)[rows]}
        return {"item": t(self.vocab["item"].lookup(req.item)), "cate": t(cate), "price": t(price), **per_user}

    def fetch(self, req: ScoringRequest) -> tuple[list[tuple[np.ndarray, np.ndarray]], ItemFeatures | None]:
        """One Feast lookup: sequences of the slots without a request history, and features of
        the items some candidate lacks. Returns raw histories per slot and the item features."""
        need = [i for i, s in enumerate(req.slots) if s.history is None]
        missing = ~(req.cate_given & req.price_given)  # [N]
        items = np.unique(req.item[missing]) if missing.any() else None
        histories = [s.history for s in req.slots]
        if not need and items is None:  # cast: no slot lacks a history
            return cast("list[tuple[np.ndarray, np.ndarray]]", histories), None
        if self.online is None:
            what = ("'history' ({'item_seq': [...], 'cate_seq': [...]}) with every instance" if need
                    else "'category_id' and 'price' with every candidate")
            raise InvalidInput(f"this predictor runs without a feature store: send {what}")
        try:
            seqs, (cate, found, price) = self.online.lookup(
                [req.slots[i].user_id for i in need], [] if items is None else items.tolist())
        except Exception as exc:  # the online store is down or misconfigured: not the client's fault
            raise InferenceError(f"Feast online read failed: {type(exc).__name__}: {exc}") from exc
        for i, h in zip(need, seqs, strict=True):
            histories[i] = h
        filled = cast("list[tuple[np.ndarray, np.ndarray]]", histories)  # each None slot was in need: now set
        return filled, (None if items is None else ItemFeatures(items, cate, found, price))

    def _histories(self, raw: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw per-slot histories -> left-aligned indices [U, W] (last L, oldest first, 0-padded), lengths [U]."""
        L = self.max_seq_len
        recent = [(items[-L:], cates[-L:]) for items, cates in raw]
        lengths = np.array([len(items) for items, _ in recent], np.int64)
        width = max(1, int(lengths.max()))
        hist_item = np.zeros((len(recent), width), np.int64)
        hist_cate = np.zeros((len(recent), width), np.int64)
        mask = np.arange(width)[None, :] < lengths[:, None]  # [U, W]; row-major = concatenation order
        hist_item[mask] = self.vocab["item"].lookup(np.concatenate([i for i, _ in recent]))
        hist_cate[mask] = self.vocab["category"].lookup(np.concatenate([c for _, c in recent]))
        return hist_item, hist_cate, lengths

    def _item_features(self, req: ScoringRequest, feats: ItemFeatures | None) -> tuple[np.ndarray, np.ndarray]:
        """Category indices [N] and prices [N]; missing ones from Feast (unknown item -> OOV, price 0)."""
        cate = np.where(req.cate_given, self.vocab["category"].lookup(req.cate), OOV).astype(np.int64)
        price = req.price.astype(np.float32, copy=True)
        if feats is not None:
            pos = np.searchsorted(feats.item_id, req.item)  # rows whose item was looked up
            pos = np.minimum(pos, len(feats.item_id) - 1)
            f_cate = np.where(feats.found, self.vocab["category"].lookup(feats.category_id), OOV)
            take_cate = ~req.cate_given
            cate[take_cate] = f_cate[pos[take_cate]]
            take_price = ~req.price_given
            price[take_price] = np.nan_to_num(feats.price[pos[take_price]], nan=0.0)
        return cate, price
