"""The sink's logic, apart from HTTP: accept events durably, pair them, buffer rows, write parts.

Life of a scoring call (both events carry its id)::

    request event  -> checked -> journaled (ack) -> waits for its response (pending_requests)
    response event -> checked -> journaled (ack) -> paired: requests + impressions rows -> buffer
    buffer full (flush_rows) or old (flush_seconds) -> part files -> journal: events done

Events of one call may arrive in either order (the agent sends them from a worker pool). A request
still alone after ``pairing_timeout_s`` is written with status 504 (:mod:`genctr.monitoring.sink.rows`);
a response alone that long is dropped and counted (``rejected{reason="orphan_response"}``); a
response for a request already written as failed is refused with 409. Everything in memory here
is rebuilt from the journal at start-up (:meth:`LogSink.start`), so a crash loses nothing
acknowledged and doubles nothing written.

All methods run on the event loop's thread (no locks); journal and part writes go to threads.
"""
from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd

from genctr.errors import DataValidationError
from genctr.monitoring.clicks import RAW_CLICKS, check_clicks
from genctr.monitoring.cloudevents_codec import EventError, InferenceEvent
from genctr.monitoring.headers import RANDOMISATION_HEADER, REQUEST_TIME_HEADER
from genctr.monitoring.logs import RANDOMISATION_UNITS
from genctr.monitoring.sink.arms import ArmResolver
from genctr.monitoring.sink.config import SinkConfig
from genctr.monitoring.sink.journal import DUPLICATE, LATE, NEW, Journal, JournalThread, Record
from genctr.monitoring.sink.metrics import SinkMetrics
from genctr.monitoring.sink.parts import PartWriter
from genctr.monitoring.sink.payload import check_pair, parse_request, parse_response
from genctr.monitoring.sink.rows import (
    STATUS_NO_RESPONSE,
    LoggedRequest,
    LoggedResponse,
    paired_rows,
    request_rows,
)

log = logging.getLogger(__name__)
TABLES = ("requests", "impressions", RAW_CLICKS)
MIN_TS, FUTURE_SLACK_S = 631_152_000, 3_600  # ad request times: 1990-01-01 .. now + 1 h


class Backpressure(Exception):
    """The buffer is full because parts cannot be written: the client should retry later (503)."""


@dataclass
class Batch:
    """Rows waiting for one part per table, and the journal keys (with outcomes) they come from."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {t: [] for t in TABLES})
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)  # ce-ids written as failed in this batch
    oldest: float | None = None

    @property
    def n_rows(self) -> int:
        return sum(len(v) for v in self.rows.values())

    def add(self, table: str, rows: list[dict[str, Any]], outcomes: list[tuple[str, str]], now: float) -> None:
        self.rows[table].extend(rows)
        self.outcomes.extend(outcomes)
        if self.oldest is None:
            self.oldest = now


class LogSink:
    """The sink's state machine; :mod:`genctr.monitoring.sink.app` puts HTTP in front of it."""

    def __init__(self, cfg: SinkConfig, arms: ArmResolver | None = None) -> None:
        self.cfg = cfg
        self.arms = arms or ArmResolver()
        self.metrics = SinkMetrics()
        self.writer = PartWriter(cfg.out)
        self.journal: JournalThread | None = None
        self.sink_id = ""
        self.pending_requests: OrderedDict[str, tuple[LoggedRequest, float]] = OrderedDict()
        self.pending_responses: OrderedDict[str, tuple[LoggedResponse, float]] = OrderedDict()
        self.expired_unwritten: set[str] = set()
        self.batch = Batch()
        self.retry: list[tuple[int, str, Batch]] = []  # begun flushes whose part write failed
        self._flush_lock = asyncio.Lock()
        self._writing = 0  # rows of the batch being written right now
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the journal, finish interrupted flushes, replay unwritten events, start the timers."""
        journal = Journal(self.cfg.journal_dir)
        self.journal = JournalThread(journal)
        self.sink_id = await self.journal.call(journal.sink_id, self.cfg.sink_id)
        for seq, name, events in await self.journal.call(journal.open_flushes):
            batch = self._rebuild(events)
            log.info("finishing flush %d (%s) left open by the last run: %d rows", seq, name, batch.n_rows)
            await self._write(seq, name, batch)
        replayed = await self.journal.call(journal.pending)
        for _key, kind, payload, received in replayed:
            self._replay(kind, payload, received)
        self.expire(time.time())
        self._gauges()
        log.info("A/B log sink %s writing %s: replayed %d journaled events (%d requests and %d responses "
                 "waiting for their pair)", self.sink_id, self.cfg.out, len(replayed), len(self.pending_requests),
                 len(self.pending_responses))
        self._tasks = [asyncio.create_task(self._timer())]
        self.ready = True

    async def stop(self) -> None:
        """Write what is buffered (pairs still open stay journaled for the next start) and close."""
        self.ready = False
        async with self._flush_lock:  # a timer flush half-way through its parts finishes first, not cancelled
            for task in self._tasks:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.flush(force=True)
        finally:
            if self.journal is not None:
                self.journal.stop()

    # ------------------------------------------------------------------ events
    def check_event(self, event: InferenceEvent, received: float) -> LoggedRequest | LoggedResponse:
        """Everything about one event that needs no journal: arm, service, body schema, pairing shape."""
        if self.cfg.service and event.service != self.cfg.service:
            raise EventError("unknown_service", f"event of InferenceService {event.service[:80]!r}; this sink "
                             f"logs {self.cfg.service!r} only")
        arm = self.arms.resolve(event)
        sent = event.time if event.time is not None else received
        if event.kind == "request":
            req = LoggedRequest(event.id, arm, self._randomisation(event), self._request_ts(event, sent), sent,
                                parse_request(event.data, self.cfg.max_candidates))
            waiting = self.pending_responses.get(event.id)
            if waiting is not None:
                check_pair(req.instances, waiting[0].predictions)
            return req
        if event.id in self.expired_unwritten:
            raise self._late(event.id)
        resp = LoggedResponse(event.id, arm, sent, parse_response(event.data))
        waiting_req = self.pending_requests.get(event.id)
        if waiting_req is not None:
            check_pair(waiting_req[0].instances, resp.predictions)
        return resp

    async def accept_event(self, event: InferenceEvent) -> str:
        """Check, journal and apply one event: ``accepted`` | ``duplicate``; EventError / Backpressure."""
        received = time.time()
        try:
            logged = self.check_event(event, received)
        except EventError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            raise
        self._room()
        assert self.journal is not None
        kind = event.kind
        record = Record(f"{kind}:{event.id}", kind, orjson.dumps(logged.to_json()), received)
        (result,) = await self._journal_accept([record])
        if result == DUPLICATE:
            self.metrics.duplicate.labels(kind).inc()
            return "duplicate"
        if result == LATE:
            self.metrics.rejected.labels("late_response").inc()
            raise self._late(event.id)
        assert result == NEW
        self.metrics.accepted.labels(kind, logged.arm).inc()
        try:
            self._apply(logged, received)
        except EventError as exc:  # the pair changed while journaling (its other half just arrived)
            self.metrics.rejected.labels(exc.reason).inc()
            await self.journal.call(self.journal.journal.mark, [record.key], "invalid")
            raise
        self._gauges()
        return "accepted"

    async def accept_clicks(self, rows: list[Any]) -> dict[str, int]:
        """Check (all or nothing), journal and buffer raw clicks: ``{"accepted": n, "duplicates": m}``."""
        try:
            df = check_clicks(rows)
        except DataValidationError:
            self.metrics.rejected.labels("click_schema").inc()
            raise
        self._room()
        assert self.journal is not None
        now = time.time()
        clicks = df.to_dict("records")
        records = [Record(f"click:{c['request_id']}:{c['item_id']}:{c['ts']}", "click", orjson.dumps(c), now)
                   for c in clicks]
        results = await self._journal_accept(records)
        new = [(c, r.key) for c, r, res in zip(clicks, records, results, strict=True) if res == NEW]
        dup = len(records) - len(new)
        if new:
            self.batch.add(RAW_CLICKS, [c for c, _ in new], [(k, "click") for _, k in new], now)
            self.metrics.accepted.labels("click", "").inc(len(new))
        if dup:
            self.metrics.duplicate.labels("click").inc(dup)
        self._gauges()
        return {"accepted": len(new), "duplicates": dup}

    # ------------------------------------------------------------------ pairing
    def _apply(self, logged: LoggedRequest | LoggedResponse, received: float) -> None:
        if isinstance(logged, LoggedRequest):
            waiting = self.pending_responses.get(logged.ce_id)
            if waiting is None:
                self.pending_requests[logged.ce_id] = (logged, received)
                return
            check_pair(logged.instances, waiting[0].predictions)
            del self.pending_responses[logged.ce_id]
            self._pair(logged, waiting[0], received)
            return
        waiting_req = self.pending_requests.get(logged.ce_id)
        if waiting_req is None:
            self.pending_responses[logged.ce_id] = (logged, received)
            return
        check_pair(waiting_req[0].instances, logged.predictions)
        del self.pending_requests[logged.ce_id]
        self._pair(waiting_req[0], logged, received)

    def _pair(self, req: LoggedRequest, resp: LoggedResponse, now: float) -> None:
        reqs, imps = paired_rows(req, resp, self.cfg.slots, self.cfg.reserve_price)
        keys = [(f"request:{req.ce_id}", "paired"), (f"response:{req.ce_id}", "paired")]
        self.batch.add("requests", reqs, keys, now)
        self.batch.rows["impressions"].extend(imps)

    def _replay(self, kind: str, payload: bytes, received: float) -> None:
        data = orjson.loads(payload)
        if kind == "click":
            self.batch.add(RAW_CLICKS, [data], [(f"click:{data['request_id']}:{data['item_id']}:{data['ts']}",
                                                 "click")], received)
            return
        logged = LoggedRequest.from_json(data) if kind == "request" else LoggedResponse.from_json(data)
        try:
            self._apply(logged, received)
        except EventError as exc:  # cannot happen for pairs checked at arrival; never stop a start-up for it
            log.error("journaled %s %s no longer pairs (%s): left out", kind, logged.ce_id, exc)

    def expire(self, now: float) -> None:
        """Requests and responses alone for longer than the pairing timeout."""
        limit = now - self.cfg.pairing_timeout_s
        while self.pending_requests:
            ce_id, (req, received) = next(iter(self.pending_requests.items()))
            if received > limit:
                break
            del self.pending_requests[ce_id]
            rows = request_rows(req, STATUS_NO_RESPONSE, self.cfg.pairing_timeout_s * 1000.0)
            self.batch.add("requests", rows, [(f"request:{ce_id}", "expired")], now)
            self.batch.expired.append(ce_id)
            self.expired_unwritten.add(ce_id)
            self.metrics.expired.inc()
        orphans = []
        while self.pending_responses:
            ce_id, (_, received) = next(iter(self.pending_responses.items()))
            if received > limit:
                break
            del self.pending_responses[ce_id]
            orphans.append(f"response:{ce_id}")
        if orphans and self.journal is not None:
            self.metrics.rejected.labels("orphan_response").inc(len(orphans))
            log.warning("%d response event(s) without a request within %.0f s: dropped", len(orphans),
                        self.cfg.pairing_timeout_s)
            asyncio.get_running_loop().create_task(
                self.journal.call(self.journal.journal.mark, orphans, "orphan"))

    # ------------------------------------------------------------------ writing parts
    async def flush(self, force: bool = False) -> int:
        """Write the buffered rows as one part per table (``force``: whatever is there); rows written."""
        async with self._flush_lock:
            written = 0
            for seq, name, batch in list(self.retry):
                written += await self._write(seq, name, batch)
            now = time.time()
            due = self.batch.n_rows >= self.cfg.flush_rows or (
                self.batch.oldest is not None and now - self.batch.oldest >= self.cfg.flush_seconds)
            if self.batch.n_rows and (force or due):
                batch, self.batch = self.batch, Batch()
                self._writing = batch.n_rows  # still counted as buffered until its parts exist
                assert self.journal is not None
                try:
                    seq, name = await self.journal.call(self.journal.journal.begin_flush, self.sink_id,
                                                        batch.outcomes, now)
                    written += await self._write(seq, name, batch)
                finally:
                    self._writing = 0
            self._gauges()
            return written

    async def _write(self, seq: int, name: str, batch: Batch) -> int:
        loop = asyncio.get_running_loop()
        try:
            for table, rows in batch.rows.items():
                if rows:
                    await loop.run_in_executor(None, self.writer.write, table, name, pd.DataFrame(rows))
        except Exception as exc:  # noqa: BLE001 - the store may be down: keep the batch, retry next tick
            self.metrics.flush_failures.inc()
            log.error("writing part %s to %s failed (%s): kept, retrying", name, self.cfg.out, exc)
            if all(s != seq for s, _, _ in self.retry):
                self.retry.append((seq, name, batch))
            return 0
        assert self.journal is not None
        await self.journal.call(self.journal.journal.end_flush, seq)
        self.retry = [r for r in self.retry if r[0] != seq]
        self.expired_unwritten.difference_update(batch.expired)
        for table, rows in batch.rows.items():
            if rows:
                self.metrics.rows.labels(table).inc(len(rows))
                self.metrics.parts.labels(table).inc()
        log.info("wrote %s: %s", name, {t: len(r) for t, r in batch.rows.items() if r})
        return batch.n_rows

    def _rebuild(self, events: list[tuple[str, str, bytes, str]]) -> Batch:
        """The rows of a journaled flush, from its events and their recorded outcomes."""
        batch = Batch()
        responses = {k.split(":", 1)[1]: LoggedResponse.from_json(orjson.loads(p))
                     for k, kind, p, _ in events if kind == "response"}
        now = time.time()
        for key, kind, payload, outcome in events:
            data = orjson.loads(payload)
            if kind == "click":
                batch.add(RAW_CLICKS, [data], [(key, outcome)], now)
            elif kind == "request" and outcome == "expired":
                req = LoggedRequest.from_json(data)
                batch.add("requests", request_rows(req, STATUS_NO_RESPONSE, self.cfg.pairing_timeout_s * 1000.0),
                          [(key, outcome)], now)
                batch.expired.append(req.ce_id)
            elif kind == "request":
                req = LoggedRequest.from_json(data)
                reqs, imps = paired_rows(req, responses[req.ce_id], self.cfg.slots, self.cfg.reserve_price)
                batch.add("requests", reqs, [(key, outcome)], now)
                batch.rows["impressions"].extend(imps)
        return batch

    # ------------------------------------------------------------------ helpers
    async def _journal_accept(self, records: list[Record]) -> list[str]:
        """Journal ``records``; a journal that cannot commit (disk full, I/O error) is a 503, not a 500."""
        assert self.journal is not None
        try:
            return await self.journal.accept(records)
        except sqlite3.Error as exc:
            self.metrics.rejected.labels("journal").inc(len(records))
            log.error("journal %s cannot commit: %s", self.cfg.journal_dir, exc)
            raise Backpressure(f"the sink's journal cannot commit ({exc}): nothing was acknowledged; retry") from exc

    async def _timer(self) -> None:
        tick = min(0.5, self.cfg.flush_seconds / 2, self.cfg.pairing_timeout_s / 4)
        last_prune = time.time()
        while True:
            await asyncio.sleep(tick)
            try:
                now = time.time()
                self.expire(now)
                await self.flush()
                if now - last_prune > 600 and self.journal is not None:
                    last_prune = now
                    await self.journal.call(self.journal.journal.prune, now - self.cfg.dedupe_ttl_s)
            except Exception:  # noqa: BLE001 - the timer must survive any one failure
                log.exception("sink timer tick failed")

    def buffered_rows(self) -> int:
        """Rows accepted and not yet in part files (buffered, being written, or waiting for a retry)."""
        return self.batch.n_rows + self._writing + sum(b.n_rows for _, _, b in self.retry)

    def _room(self) -> None:
        held = self.buffered_rows()
        if held >= self.cfg.max_buffer_rows:
            self.metrics.rejected.labels("backpressure").inc()
            raise Backpressure(f"{held} rows wait for {self.cfg.out}, which is not accepting parts: retry later")

    def _gauges(self) -> None:
        self.metrics.buffer_rows.set(self.buffered_rows())
        self.metrics.pending.labels("request").set(len(self.pending_requests))
        self.metrics.pending.labels("response").set(len(self.pending_responses))

    def _late(self, ce_id: str) -> EventError:
        return EventError("late_response", f"response {ce_id[:80]!r} arrived after the pairing timeout "
                          f"({self.cfg.pairing_timeout_s:g} s): its request was logged as failed (504)", 409)

    def _randomisation(self, event: InferenceEvent) -> str:
        value = event.header(RANDOMISATION_HEADER)
        if value is None:
            return self.cfg.default_randomisation
        if value not in RANDOMISATION_UNITS:
            raise EventError("metadata", f"header {RANDOMISATION_HEADER} must be one of {list(RANDOMISATION_UNITS)}, "
                             f"got {value[:40]!r}")
        return value

    def _request_ts(self, event: InferenceEvent, sent: float) -> int:
        value = event.header(REQUEST_TIME_HEADER)
        if value is None:
            return int(sent)
        try:
            ts = float(value)
        except ValueError:
            ts = math.nan
        if not (math.isfinite(ts) and MIN_TS <= ts <= time.time() + FUTURE_SLACK_S):
            raise EventError("metadata", f"header {REQUEST_TIME_HEADER} must be epoch seconds in [1990-01-01, "
                             f"now + 1 h], got {value[:40]!r}")
        return int(ts)

    def health(self) -> dict[str, Any]:
        return {"status": "ok" if self.ready else "starting", "sink_id": self.sink_id, "out": self.cfg.out,
                "buffer_rows": self.buffered_rows(), "pending_requests": len(self.pending_requests),
                "pending_responses": len(self.pending_responses), "retrying_parts": len(self.retry)}


__all__ = ["Backpressure", "LogSink"]
