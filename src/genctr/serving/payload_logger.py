"""The local stand-in for KServe's inference logger: every scoring call as two CloudEvents to the sink.

On a cluster nothing here runs: ``spec.predictor.logger`` (``{url, mode: all, metadataHeaders}``)
makes KServe inject its agent sidecar, which posts a request and a response CloudEvent per scoring
call to the A/B log sink (:mod:`genctr.monitoring.sink`). Locally there is no sidecar, so this ASGI
middleware on the model server's own app does the agent's job, with the same events
(:func:`genctr.monitoring.cloudevents_codec.encode_request_event` / ``encode_response_event``):

* for ``POST /v1/models/<m>:predict`` and ``POST /v2/models/<m>/infer`` only (the agent also skips
  probes; health, metadata and repository calls are not scoring calls);
* the CloudEvent id is the call's ``Ce-Id`` header, else a new UUID (as the agent: clients that
  want to join clicks later send ``Ce-Id``; the user-hash router sets it from ``X-Request-Id``);
* ``mode`` ``all``: the request event (queued before the model runs, whatever it answers) and,
  when the model answered 200, the response event; ``request`` / ``response``: only that one;
* ``metadata``: the listed request headers (:data:`genctr.monitoring.headers.METADATA_HEADERS` by
  default), both events; ``endpoint``: ``default``, ``canary``, or ``by_model`` for the local
  deployment's one server of both arms (model ``<name>-canary`` -> ``canary``, else ``default``;
  the InferenceService name is then ``<name>``);
* ``ce-time``: when the request arrived / the response was complete (the agent stamps its send
  time; here a retried event keeps its time, so it is byte-identical and the sink's latency is
  the server's).

Delivery never touches the scoring response: the middleware only puts the captured bytes on a
bounded in-memory queue, and one sender thread encodes and POSTs them over a keep-alive
connection, in order, retrying each event until the sink acknowledges it with 2xx: connection
errors, timeouts, 5xx, 408 and 429 are retried with exponential backoff (``Retry-After`` honoured
up to ``backoff_max_s``), so a sink killed with SIGKILL and restarted loses nothing it
acknowledged, and its dedupe by (type, ce-id) keeps a redelivered event from counting twice.
Other 4xx answers (the sink refusing a malformed event) are final: dropped, counted, logged.

When the queue is full (the sink has been down for ``queue_size`` events) new events are
**dropped and counted** (``genctr_payload_logger_dropped_total{reason="queue_full"}``; logged at
the 1st, 2nd, 4th ... drop); a call whose request event was dropped loses its response event
too, so the sink never sees half a pair. The queue lives in the server's memory: a *server*
killed with SIGKILL loses what it held (the agent's queue is in memory too); at a normal
shutdown the sender keeps delivering for up to ``drain_s``. Counters (sent, retries, dropped,
pending) are Prometheus metrics on the server's ``/metrics``; :func:`wait_delivered` polls them.
"""
from __future__ import annotations

import atexit
import http.client
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from genctr.errors import ConfigError
from genctr.monitoring.cloudevents_codec import encode_request_event, encode_response_event
from genctr.monitoring.headers import METADATA_HEADERS

log = logging.getLogger(__name__)

MODES = ("all", "request", "response")  # KServe's spec.predictor.logger.mode
ENDPOINTS = ("default", "canary", "by_model")
CANARY_SUFFIX, CHAMPION_SUFFIX = "-canary", "-champion"  # genctr.serving.state.model_name(<name>, arm)
_SCORING_PATH = re.compile(r"^/v1/models/([^/]+):predict$|^/v2/models/([^/]+)/infer$")
_RETRY_STATUSES = {408, 429}
_STOP = object()


@dataclass
class PayloadLoggerConfig:
    """Where the events go and what they say; the fields are ``python -m genctr.serving --logger_*``."""

    url: str  # the sink: http(s)://host:port/path
    mode: str = "all"  # all | request | response
    endpoint: str = "default"  # default | canary | by_model (the local deployment's server of both arms)
    service: str = ""  # ce-inferenceservicename ('' = from the model name)
    namespace: str = "genctr"
    component: str = "predictor"
    metadata_headers: tuple[str, ...] = METADATA_HEADERS  # request headers copied into ce-metadata
    queue_size: int = 10_000  # events held while the sink is slow or down; more are dropped and counted
    timeout_s: float = 5.0  # one POST to the sink: connecting, and each read
    backoff_initial_s: float = 0.05  # first retry delay; doubles per failed attempt ...
    backoff_max_s: float = 5.0  # ... up to this
    drain_s: float = 10.0  # at shutdown: keep delivering what is queued for this long

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--logger_url must be the sink's http(s)://host:port/ URL, got {self.url[:200]!r}")
        if self.mode not in MODES:
            raise ConfigError(f"--logger_mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.endpoint not in ENDPOINTS:
            raise ConfigError(f"--logger_endpoint must be one of {list(ENDPOINTS)}, got {self.endpoint!r}")
        if type(self.queue_size) is not int or self.queue_size < 1:
            raise ConfigError(f"--logger_queue_size must be a positive integer, got {self.queue_size!r}")
        if not (self.timeout_s > 0 and 0 < self.backoff_initial_s <= self.backoff_max_s and self.drain_s >= 0):
            raise ConfigError("payload logger needs timeout_s > 0, 0 < backoff_initial_s <= backoff_max_s and "
                              f"drain_s >= 0, got {self.timeout_s}, {self.backoff_initial_s}, {self.backoff_max_s}, "
                              f"{self.drain_s}")

    def identity(self, model: str) -> tuple[str, str]:
        """``(inferenceservicename, endpoint)`` of a call to ``model``."""
        if self.endpoint != "by_model":
            return self.service or model, self.endpoint
        for suffix, endpoint in ((CANARY_SUFFIX, "canary"), (CHAMPION_SUFFIX, "default")):
            if model.endswith(suffix):
                return self.service or model[: -len(suffix)], endpoint
        return self.service or model, "default"


@dataclass
class Captured:
    """One event's raw material, as captured on the event loop (encoded later on the sender thread)."""

    kind: str  # "request" | "response"
    ce_id: str
    body: bytes
    content_type: str
    metadata: dict[str, list[str]]
    service: str
    endpoint: str
    time: float  # epoch seconds


@dataclass
class EmitterCounts:
    sent: dict[str, int] = field(default_factory=lambda: {"request": 0, "response": 0})
    dropped: dict[str, int] = field(default_factory=lambda: {"queue_full": 0, "rejected": 0, "shutdown": 0})
    retries: int = 0


class EventEmitter:
    """The bounded queue and its sender thread (module docstring); ``put`` never blocks."""

    def __init__(self, cfg: PayloadLoggerConfig, registry: Any = None) -> None:
        self.cfg = cfg
        self.counts = EmitterCounts()
        self._queue: queue.Queue[Any] = queue.Queue(cfg.queue_size)
        self._lock = threading.Lock()
        self._outstanding = 0  # queued or being delivered: not acknowledged, rejected or given up yet
        self._stopping = threading.Event()
        self._deadline = float("inf")
        parts = urlsplit(cfg.url)
        self._conn_args = (parts.hostname or "", parts.port)
        self._https = parts.scheme == "https"
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="payload-logger", daemon=True)
        self._thread.start()
        if registry is not None:
            registry.register(_Collector(self))

    @property
    def pending(self) -> int:
        """Events not acknowledged yet: queued plus the one being delivered."""
        return self._outstanding

    def put(self, event: Captured) -> bool:
        """Queue ``event``; False (dropped and counted) when the queue is full or the emitter is closing."""
        if self._stopping.is_set():
            self.drop("shutdown", event)
            return False
        with self._lock:  # counted before it is visible to the sender, so pending never reads 0 early
            self._outstanding += 1
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self._outstanding -= 1
            self.drop("queue_full", event)
            return False
        return True

    def close(self, drain_s: float | None = None) -> None:
        """Stop taking events; deliver what is queued for up to ``drain_s`` (default the config's), then give up."""
        drain = self.cfg.drain_s if drain_s is None else drain_s
        self._deadline = time.monotonic() + drain
        self._stopping.set()
        self._thread.join(drain + self.cfg.timeout_s + 1.0)
        left = self.pending
        if left:
            with self._lock:
                self.counts.dropped["shutdown"] += left
            log.warning("payload logger: %d event(s) not delivered to %s within %.0f s of shutdown", left,
                        self.cfg.url, drain)

    # -- sender thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            try:
                delivered = self._deliver(item)
            except Exception:  # noqa: BLE001 - the sender must outlive any one event
                log.exception("payload logger: event %s lost to an unexpected error", item.ce_id)
                delivered = True  # lost, not pending: it will not be retried
            if delivered:  # an event given up at shutdown stays pending: close() counts it
                with self._lock:
                    self._outstanding -= 1

    def _deliver(self, ev: Captured) -> bool:
        """Until the sink acknowledges (True) or refuses (True, dropped); False: given up at shutdown."""
        encode = encode_request_event if ev.kind == "request" else encode_response_event
        headers, body = encode(ev.ce_id, ev.body, service=ev.service, namespace=self.cfg.namespace,
                               endpoint=ev.endpoint, component=self.cfg.component, metadata=ev.metadata,
                               time=ev.time, content_type=ev.content_type)
        delay = self.cfg.backoff_initial_s
        attempt = 0
        while True:
            status, detail, retry_after = self._post(headers, body)
            if 200 <= status < 300:
                with self._lock:
                    self.counts.sent[ev.kind] += 1
                return True
            if 400 <= status < 500 and status not in _RETRY_STATUSES:
                self.drop("rejected", ev, f"HTTP {status}: {detail}")
                return True
            attempt += 1
            with self._lock:
                self.counts.retries += 1
            if attempt == 1 or attempt % 100 == 0:
                log.warning("payload logger: %s event %s not acknowledged (%s); retrying (attempt %d)", ev.kind,
                            ev.ce_id, f"HTTP {status}: {detail}" if status else detail, attempt)
            wait = min(self.cfg.backoff_max_s, max(delay, retry_after))
            if self._stopping.is_set() and time.monotonic() + wait > self._deadline:
                return False
            time.sleep(wait)
            delay = min(self.cfg.backoff_max_s, delay * 2)

    def _post(self, headers: dict[str, str], body: bytes) -> tuple[int, str, float]:
        """One POST: ``(status, detail, retry_after_s)``; status 0 for a connection failure or timeout."""
        for attempt in (0, 1):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request("POST", self._path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                retry_after = resp.getheader("Retry-After") or ""
                return resp.status, data[:300].decode(errors="replace"), \
                    float(retry_after) if retry_after.isdigit() else 0.0
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
                self._reset()
                if not reused or attempt == 1:  # a fresh connection failed, or the retry did
                    return 0, f"{type(exc).__name__}", 0.0
            except (OSError, http.client.HTTPException) as exc:
                self._reset()
                return 0, f"{type(exc).__name__}: {exc}"[:200], 0.0
        return 0, "unreachable", 0.0

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._conn_args[0], self._conn_args[1], timeout=self.cfg.timeout_s)
        return self._conn

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def drop(self, reason: str, ev: Captured, detail: str = "") -> None:
        """Count (and log at the 1st, 2nd, 4th ...) an event given up for ``reason``."""
        with self._lock:
            self.counts.dropped[reason] += 1
            n = self.counts.dropped[reason]
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th ...: visible, never a flood
            log.warning("payload logger: dropped %s event %s (%s%s); %d dropped for this reason so far", ev.kind,
                        ev.ce_id, reason, f": {detail}" if detail else "", n)


class _Collector:
    """The emitter's counts as Prometheus metrics (a custom collector: values read at scrape time)."""

    def __init__(self, emitter: EventEmitter) -> None:
        self.emitter = emitter

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.emitter.counts
        sent = CounterMetricFamily("genctr_payload_logger_sent", "Events the sink acknowledged", labels=["type"])
        for kind, n in c.sent.items():
            sent.add_metric([kind], n)
        dropped = CounterMetricFamily("genctr_payload_logger_dropped", "Events given up on", labels=["reason"])
        for reason, n in c.dropped.items():
            dropped.add_metric([reason], n)
        yield sent
        yield dropped
        yield CounterMetricFamily("genctr_payload_logger_retries", "Failed delivery attempts", value=c.retries)
        yield GaugeMetricFamily("genctr_payload_logger_pending", "Events not acknowledged yet",
                                value=self.emitter.pending)


class PayloadLogger:
    """ASGI middleware: captures scoring calls and hands them to an :class:`EventEmitter`."""

    def __init__(self, app: Any, emitter: EventEmitter) -> None:
        self.app = app
        self.emitter = emitter
        self.cfg = emitter.cfg
        self._wanted = [name.lower().encode("latin-1") for name in self.cfg.metadata_headers]

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        match = _SCORING_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        service, endpoint = self.cfg.identity(match.group(1) or match.group(2))
        headers = scope.get("headers") or []
        ce_id, content_type, metadata = self._read_headers(headers)
        body, more = bytearray(), True  # the size guard outside this middleware bounds it
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing was scored
                await self.app(scope, _replay(b"", message, receive), send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        data = bytes(body)
        logged = True
        if self.cfg.mode in ("all", "request"):
            logged = self.emitter.put(Captured("request", ce_id, data, content_type, metadata, service, endpoint,
                                               time.time()))
        status, chunks = 0, []

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, _replay(data, None, receive), capture)
        if status == 200 and self.cfg.mode in ("all", "response"):
            if logged:  # a request event that was dropped takes its response with it: no half pairs
                self.emitter.put(Captured("response", ce_id, b"".join(chunks), content_type, metadata, service,
                                          endpoint, time.time()))
            else:
                self.emitter.drop("queue_full", Captured("response", ce_id, b"", "", {}, service, endpoint, 0.0))

    def _read_headers(self, headers: list[tuple[bytes, bytes]]) -> tuple[str, str, dict[str, list[str]]]:
        ce_id, content_type = "", ""
        metadata: dict[str, list[str]] = {}
        for key, value in headers:
            if key == b"ce-id":
                ce_id = value.decode("latin-1")
            elif key == b"content-type":
                content_type = value.decode("latin-1")
            elif key in self._wanted:
                name = self.cfg.metadata_headers[self._wanted.index(key)]
                metadata.setdefault(name, []).append(value.decode("latin-1"))
        return ce_id or str(uuid.uuid4()), content_type, metadata


def _replay(body: bytes, first: dict[str, Any] | None, receive: Callable[..., Any]) -> Callable[..., Any]:
    """A ``receive`` that hands the app the already-read body (or ``first``), then the real one."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return first if first is not None else {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install(app: Any, cfg: PayloadLoggerConfig) -> EventEmitter:
    """Put the payload logger on the model server's ``app`` (its metrics on KServe's ``/metrics``)."""
    from prometheus_client import REGISTRY

    emitter = EventEmitter(cfg, registry=REGISTRY)
    app.add_middleware(PayloadLogger, emitter=emitter)
    atexit.register(emitter.close)  # a normal shutdown drains the queue (SIGKILL cannot)
    log.info("payload logger: %s events of every scoring call to %s (endpoint %s, queue %d)", cfg.mode, cfg.url,
             cfg.endpoint, cfg.queue_size)
    return emitter


# -- command line (python -m genctr.serving) ----------------------------------------------------

def add_arguments(p: Any) -> None:
    """The ``--logger_*`` flags (KServe's ``spec.predictor.logger`` fields, for the local server)."""
    p.add_argument("--logger_url", "--logger-url", dest="logger_url", default="",
                   help="Send KServe inference-logger CloudEvents of every scoring call here (the A/B log "
                        "sink); '' = off. On a cluster KServe's agent does this (spec.predictor.logger).")
    p.add_argument("--logger_mode", "--logger-mode", dest="logger_mode", default="all", choices=list(MODES))
    p.add_argument("--logger_endpoint", "--logger-endpoint", dest="logger_endpoint", default="default",
                   choices=list(ENDPOINTS), help="ce-endpoint of the events: default | canary | by_model "
                   "(<name>-canary models: canary; the local deployment's server of both arms).")
    p.add_argument("--logger_service", "--logger-service", dest="logger_service", default="",
                   help="ce-inferenceservicename ('' = the model name, without -champion/-canary for by_model).")
    p.add_argument("--logger_queue_size", "--logger-queue-size", dest="logger_queue_size", type=int,
                   default=10_000, help="Events held while the sink is down; more are dropped and counted.")


def config_from_args(args: Any) -> PayloadLoggerConfig | None:
    if not args.logger_url:
        return None
    return PayloadLoggerConfig(url=args.logger_url, mode=args.logger_mode, endpoint=args.logger_endpoint,
                               service=args.logger_service, queue_size=args.logger_queue_size)


# -- waiting for delivery (a client of the local deployment) ------------------------------------

def logger_metrics(base_url: str, timeout: float = 5.0) -> dict[str, float]:
    """The payload logger's samples on the server's ``/metrics``: ``{"sent_total{type=request}": n, ...,
    "pending": n}`` (empty: the server runs none)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base_url.rstrip('/')}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    prefix = "genctr_payload_logger_"
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples if family.name.startswith(prefix) else []:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[sample.name[len(prefix):] + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def pending_events(base_url: str, timeout: float = 5.0) -> int | None:
    """Events the server at ``base_url`` has not delivered yet (its ``/metrics``); None: no payload logger."""
    pending = logger_metrics(base_url, timeout).get("pending")
    return None if pending is None else int(pending)


def wait_delivered(base_url: str, timeout_s: float = 120.0, poll_s: float = 0.2) -> bool:
    """Block until the server's payload logger has delivered everything it holds (True), or ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            left = pending_events(base_url)
        except OSError:
            left = -1  # the server is busy or restarting: ask again
        if left is None or left == 0:
            return True
        if time.monotonic() > deadline:
            log.warning("payload logger of %s still holds %d event(s) after %.0f s", base_url, left, timeout_s)
            return False
        time.sleep(poll_s)


__all__ = ["ENDPOINTS", "MODES", "Captured", "EventEmitter", "PayloadLogger", "PayloadLoggerConfig",
           "add_arguments", "config_from_args", "install", "logger_metrics", "pending_events", "wait_delivered"]
