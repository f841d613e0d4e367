"""Who scores the candidates: a KServe v1 endpoint, the world's ground truth, or chance.

Every scorer takes a :class:`ScoreBatch` (raw ids, as a client would send them) and the call's
HTTP headers (request id, randomisation, request time: what the A/B log sink reads from the
payload logger's events) and returns a :class:`ScoreResult`; the simulator calls ``score`` from
several threads at once, so scorers must be thread-safe. Client-side failures get HTTP-like
status codes that the simulation's summary counts as errors: 597 (the server answered 200 with
a body that is not one pCTR per candidate), 598 (timeout) and 599 (connection error).
"""
from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np
import orjson

from genctr.data.sources.synthetic import SyntheticWorld, UserState
from genctr.errors import ConfigError
from genctr.simulation.arms import unit_hash

log = logging.getLogger(__name__)

STATUS_OK = 200
STATUS_BAD_RESPONSE = 597
STATUS_TIMEOUT = 598
STATUS_CONNECTION_ERROR = 599


@dataclass
class ScoreBatch:
    """n requests of K candidates each, in raw ids (what goes on the wire)."""

    user_ids: np.ndarray  # (n,) int64
    item_ids: np.ndarray  # (n, K) int64
    category_ids: np.ndarray  # (n, K) int64
    prices: np.ndarray  # (n, K) float64: the advertiser's bid, sent as the model's price feature


@dataclass
class ScoreResult:
    status: int  # 200 or the failure's status
    pctr: np.ndarray | None  # (n, K) float64 when status == 200
    latency_ms: float  # client side, one figure for the whole call
    error: str = ""  # short description when status != 200


class Scorer(Protocol):
    def score(self, batch: ScoreBatch, headers: Mapping[str, str] | None = None) -> ScoreResult: ...

    def close(self) -> None: ...


def v1_body(batch: ScoreBatch) -> bytes:
    """``{"instances": [{"user_id", "candidates": [{"item_id", "category_id", "price"}, ...]}, ...]}``."""
    keys = ("item_id", "category_id", "price")
    instances = [
        {"user_id": u, "candidates": [dict(zip(keys, c, strict=True)) for c in zip(items, cates, prices, strict=True)]}
        for u, items, cates, prices in zip(batch.user_ids.tolist(), batch.item_ids.tolist(),
                                           batch.category_ids.tolist(), batch.prices.tolist(), strict=True)
    ]
    return orjson.dumps({"instances": instances})


def parse_v1_predictions(body: bytes, shape: tuple[int, int]) -> np.ndarray | None:
    """``{"predictions": [[p, ...], ...]}`` -> (n, K) float64, or None if it is not that shape."""
    try:
        preds = orjson.loads(body)["predictions"]
        out = np.asarray(preds, dtype=np.float64)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return out if out.shape == shape and np.isfinite(out).all() else None


class HttpScorer:
    """POSTs v1 requests to ``url`` over one keep-alive connection per calling thread."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"scoring URL must be http(s)://host[:port]/path, got {url!r}")
        self.url = url
        self.timeout = timeout
        self._cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port = parts.hostname, parts.port
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _post(self, body: bytes, headers: Mapping[str, str] | None) -> tuple[int, bytes]:
        conn = self._connection()
        for attempt in (0, 1):
            reused = conn.sock is not None
            try:
                conn.request("POST", self._path, body, {"Content-Type": "application/json", **(headers or {})})
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                conn.close()
                if not reused or attempt == 1:  # a kept-alive connection the server dropped: retry once
                    raise
            except BaseException:
                conn.close()  # a half-read response must not poison the next call
                raise
        raise AssertionError("unreachable")

    def score(self, batch: ScoreBatch, headers: Mapping[str, str] | None = None) -> ScoreResult:
        body = v1_body(batch)
        t0 = time.perf_counter()
        try:
            status, data = self._post(body, headers)
        except TimeoutError as exc:
            return ScoreResult(STATUS_TIMEOUT, None, _ms(t0), f"timeout after {self.timeout}s: {exc}")
        except (OSError, http.client.HTTPException) as exc:
            return ScoreResult(STATUS_CONNECTION_ERROR, None, _ms(t0), f"{type(exc).__name__}: {exc}")
        latency = _ms(t0)
        if status != STATUS_OK:
            return ScoreResult(status, None, latency, data[:500].decode(errors="replace"))
        pctr = parse_v1_predictions(data, batch.item_ids.shape)
        if pctr is None:
            return ScoreResult(STATUS_BAD_RESPONSE, None, latency,
                               f"response is not one finite pCTR per candidate: {data[:200]!r}")
        return ScoreResult(STATUS_OK, pctr, latency)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class OracleScorer:
    """The world's true click probability of an ad (at the top slot) as the pCTR: the best model possible.

    Reads ``state`` as it is when called; the simulator updates it only between waves of calls.
    """

    def __init__(self, world: SyntheticWorld, state: UserState) -> None:
        self.world = world
        self.state = state

    def score(self, batch: ScoreBatch, headers: Mapping[str, str] | None = None) -> ScoreResult:
        t0 = time.perf_counter()
        n, k = batch.item_ids.shape
        users = np.repeat(batch.user_ids - 1, k)  # raw ids are index + 1
        p = self.world.click_prob(self.state, users, batch.item_ids.reshape(-1) - 1, ad=True)
        return ScoreResult(STATUS_OK, p.reshape(n, k), _ms(t0))

    def close(self) -> None:
        pass


class RandomScorer:
    """A fixed random model: pCTR uniform in [0, ``scale``), a hash of (seed, user, item)."""

    def __init__(self, seed: int = 0, scale: float = 1.0) -> None:
        self.seed = seed
        self.scale = scale

    def score(self, batch: ScoreBatch, headers: Mapping[str, str] | None = None) -> ScoreResult:
        t0 = time.perf_counter()
        p = self.scale * unit_hash(batch.user_ids[:, None], batch.item_ids, self.seed)  # (n, K)
        return ScoreResult(STATUS_OK, p, _ms(t0))

    def close(self) -> None:
        pass


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
