"""The KServe predictor: Feast online lookup + one batched forward pass per request.

Per request (see :mod:`genctr.serving.request` for the v1 and v2 layouts):

1. parse and validate (HTTP 400 naming the problem);
2. one Feast lookup for the request's users (their behaviour sequences) and, only for
   candidates that came without ``category_id``/``price``, their item features;
3. raw ids -> indices through the artifact's vocabularies (vectorised; unknown -> OOV);
4. one forward pass over all N candidates: a single user's history is a [1, W] tensor
   *expanded* (stride 0) to [N, W], not copied per candidate. W = the longest history in
   the request (<= L): padding columns past every row's length are masked out by the
   models anyway, so dropping them changes no score and saves the attention work.
   Target-attention models run N x W above ``ATTENTION_CHUNK_CELLS`` as a few row chunks
   (cache-sized activations; rows are independent, so the scores are the same);
5. pCTR = sigmoid(logit), in input order.

Cold-start users (nothing in Feast) score with an empty history and the OOV user row.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import kserve
import numpy as np
import torch
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from genctr.artifacts.files import check_vocab_fits, read_config
from genctr.artifacts.kinds import CTR_KINDS
from genctr.artifacts.load import load_model, max_seq_len_of
from genctr.errors import ArtifactError, describe
from genctr.features.layout import OOV
from genctr.serving.online import FeastConfig, OnlineFeatures
from genctr.serving.request import OUTPUT, Limits, ScoringRequest, parse_v1, parse_v2
from genctr.serving.vocab import IdIndex, load_vocabularies

# Target-attention models: at most this many (candidate, history position) cells per forward
# call, so the [rows, W, H] attention activations (~2 MB at H = 64) stay cache-sized: 100
# candidates x W = 200 run as 3 calls, ~15 % less CPU per request than one; W = 50 stays one call.
ATTENTION_CHUNK_CELLS = 8192

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


class CTRPredictor(kserve.Model):
    """A genctr CTR model artifact behind KServe's v1 and v2 protocols.

    ``feast``: a :class:`FeastConfig` (opened in ``load()``), an open ``FeatureStore``, or
    ``None`` (no feature store: every v1 instance must carry ``history`` and every
    candidate its ``category_id`` and ``price``: the predictor half of a transformer layout).
    ``forward_threads`` > 0 runs batch building and the forward pass on that many worker
    threads (torch releases the GIL), so one process uses more than one core under load.
    ``jit``: trace and freeze the model with TorchScript at load (about 35 % less CPU per
    forward here: no Python between ops, fused linear+ReLU); the traced model is checked
    against the eager one on several batch shapes and dropped (with a warning) if they differ.
    """

    def __init__(self, name: str, model_dir: str | Path, feast: FeastConfig | FeatureStore | None = None,
                 *, limits: Limits = Limits(), device: str = "cpu", forward_threads: int = 0,
                 jit: bool = False) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.feast = feast
        self.limits = limits
        self.device = torch.device(device)
        self.model: torch.nn.Module | None = None
        self.vocab: dict[str, IdIndex] = {}
        self.online: OnlineFeatures | None = None
        self.max_seq_len = 0
        self.forward_threads = forward_threads
        self.jit = jit
        self._pool: ThreadPoolExecutor | None = None
        self._chunk_cells = 0
        self.ready = False

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> bool:
        """Weights, vocabularies and the Feast reader, once; then ``ready``."""
        if self.ready:
            return True
        kind = read_config(self.model_dir).get("kind")
        if kind not in CTR_KINDS:
            raise ArtifactError(f"{self.model_dir / 'config.json'} names a {describe(kind, raw=True)} model; "
                                f"serving needs a fine-tuned CTR model (one of {CTR_KINDS}, "
                                f"from `genctr train finetune`)")
        model = load_model(self.model_dir, self.device)
        vocab = load_vocabularies(self.model_dir)
        check_vocab_fits(self.model_dir, {k: v.size for k, v in vocab.items()}, model)
        if self.feast is not None:
            store = self.feast.open() if isinstance(self.feast, FeastConfig) else self.feast
            self.online = OnlineFeatures(store)
        max_seq_len = max_seq_len_of(self.model_dir)
        self._chunk_cells = ATTENTION_CHUNK_CELLS if _has_target_attention(model) else 0
        if self.jit:
            model = traced_or_eager(model, {k: v.size for k, v in vocab.items()}, max_seq_len, self.device)
        self.model, self.vocab, self.max_seq_len = model, vocab, max_seq_len
        if self.forward_threads > 0:
            self._pool = ThreadPoolExecutor(self.forward_threads, thread_name_prefix=f"{self.name}-forward")
        self.ready = True
        log.info("loaded %s (%s, L=%d) from %s; feast: %s", self.name, kind, self.max_seq_len,
                 self.model_dir, "on" if self.online else "off (histories in requests)")
        return self.ready

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.model, self.online, self._pool, self.ready = None, None, None, False

    # -- KServe handlers -------------------------------------------------------------------

    async def predict(self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict[str, Any] | InferResponse:
        if isinstance(payload, InferRequest):
            req = parse_v2(payload, self.limits)
            pctr = await self._score_async(req)
            out = InferOutput(name=OUTPUT, shape=[len(pctr)], datatype="FP32")
            out.set_data_from_numpy(pctr, binary_data=False)
            return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out])
        req = parse_v1(payload, self.limits)
        pctr = (await self._score_async(req)).tolist()
        bounds = np.cumsum([0, *req.sizes])
        return {"predictions": [pctr[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]}

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "user_id", "datatype": "INT64", "shape": [-1]},
                {"name": "item_id", "datatype": "INT64", "shape": [-1]},
                {"name": "category_id", "datatype": "INT64", "shape": [-1], "optional": True},
                {"name": "price", "datatype": "FP32", "shape": [-1], "optional": True}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": OUTPUT, "datatype": "FP32", "shape": [-1]}]

    # -- scoring ---------------------------------------------------------------------------

    def score(self, req: ScoringRequest) -> np.ndarray:
        """pCTR [N] float32 of a validated request, in row order."""
        return self._forward(self.batch(req))

    async def _score_async(self, req: ScoringRequest) -> np.ndarray:
        """``score`` with the batch build and forward pass on the worker pool (if any): the
        Feast read stays on the event loop, torch releases the GIL, so a second core can
        parse and answer other requests meanwhile."""
        if self._pool is None:
            return self.score(req)
        fetched = self._fetch(req)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self._forward(self._batch(req, *fetched)))

    def _forward(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        model = self.model
        if model is None:
            raise InferenceError(f"model {self.name} is not loaded")
        n, width = batch["hist_item"].shape
        chunks = -(-n * width // self._chunk_cells) if self._chunk_cells else 1  # ceil
        with torch.inference_mode():
            if chunks <= 1:
                logits = model(batch)  # [N]
            else:  # rows are independent: the same scores, from equal row chunks
                step = -(-n // chunks)
                logits = torch.cat([model({k: v[i:i + step] for k, v in batch.items()}) for i in range(0, n, step)])
        return torch.sigmoid(logits.float()).cpu().numpy()

    def batch(self, req: ScoringRequest) -> dict[str, torch.Tensor]:
        """The models' batch dict (see genctr.training.data) for ``req``, on the device."""
        return self._batch(req, *self._fetch(req))

    def _batch(self, req: ScoringRequest, histories: list[tuple[np.ndarray, np.ndarray]],
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

    def _fetch(self, req: ScoringRequest) -> tuple[list[tuple[np.ndarray, np.ndarray]], ItemFeatures | None]:
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


def example_batch(n: int, width: int, sizes: dict[str, int], device: torch.device, gen: torch.Generator,
                  shared: bool = True) -> dict[str, torch.Tensor]:
    """A random valid batch (ids < vocabulary sizes); ``shared``: one user's history expanded."""
    def ids(size: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(2, max(3, size), shape, generator=gen)

    rows = 1 if shared else n
    lengths = torch.randint(0, width + 1, (rows,), generator=gen)
    hist = {"hist_item": ids(sizes["item"], (rows, width)), "hist_cate": ids(sizes["category"], (rows, width))}
    hist = {k: v.masked_fill(torch.arange(width) >= lengths[:, None], 0) for k, v in hist.items()}
    batch = {"item": ids(sizes["item"], (n,)), "cate": ids(sizes["category"], (n,)),
             "price": torch.rand(n, generator=gen) * 10, "user": ids(sizes["user"], (rows,)).expand(n),
             "hist_item": hist["hist_item"].expand(n, width), "hist_cate": hist["hist_cate"].expand(n, width),
             "hist_len": lengths.expand(n)}
    return {k: v.to(device) for k, v in batch.items()}


def traced_or_eager(model: torch.nn.Module, sizes: dict[str, int], max_seq_len: int,
                    device: torch.device) -> torch.nn.Module:
    """TorchScript-trace and freeze ``model`` for inference, if it reproduces the eager model on
    batches of other shapes (N, history width, shared/unshared rows); else ``model`` unchanged."""
    import warnings

    gen = torch.Generator().manual_seed(0)
    example = example_batch(8, max_seq_len, sizes, device, gen)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python
            traced = torch.jit.trace(model, (example,), strict=False, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            worst = 0.0
            for n, width, shared in ((1, 1, True), (100, max_seq_len, True), (37, max(1, max_seq_len // 2), True),
                                     (5, max_seq_len, False), (64, 1, False)):
                batch = example_batch(n, width, sizes, device, gen, shared)
                worst = max(worst, float((frozen(batch) - model(batch)).abs().max()))
    except Exception as exc:  # broad on purpose: any tracing failure means: serve the eager model
        log.warning("TorchScript trace failed (%s: %s); serving the eager model", type(exc).__name__, exc)
        return model
    if worst > 1e-4:
        log.warning("TorchScript trace differs from the eager model by %.2g; serving the eager model", worst)
        return model
    log.info("serving a TorchScript-frozen model (max |traced - eager| logit difference %.1g)", worst)
    return frozen


def _has_target_attention(model: torch.nn.Module) -> bool:
    from genctr.models.layers import TargetAttention

    return any(isinstance(m, TargetAttention) for m in model.modules())


@dataclass
class ItemFeatures:
    """Feast item features of sorted unique raw ``item_id`` [M]."""

    item_id: np.ndarray  # int64, sorted
    category_id: np.ndarray  # int64 raw, valid where found
    found: np.ndarray  # bool
    price: np.ndarray  # float32, NaN when unknown
