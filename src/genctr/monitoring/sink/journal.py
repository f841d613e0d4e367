"""The sink's write-ahead journal: every accepted event, durable before it is acknowledged.

A SQLite database (``<state_dir>/journal.sqlite``) in WAL mode with ``synchronous=FULL``: a commit
returns only once the log is fsync'ed. One row per event, keyed ``"<kind>:<id>"`` (``request:<ce-id>``,
``response:<ce-id>``, ``click:<request_id>:<item_id>:<ts>``), so a redelivered event is a primary-key
hit and never counted twice, also after a restart; keys are kept ``dedupe_ttl_s`` after their rows
are written, payloads only until then (bounded disk).

Writing rows is two-phase, so a crash never loses or doubles them: :meth:`Journal.begin_flush`
assigns the batch's events a flush number (the part files' names derive from it), the parts are
written, :meth:`Journal.end_flush` marks the events done. A flush found begun but not ended at
start-up is written again under the same names (replacing whatever the crash left), then ended.

All methods block; :class:`JournalThread` runs them on one thread and commits consecutive
:meth:`accept` calls together (group commit: one fsync for every event that arrived meanwhile).
"""
from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, payload BLOB, received REAL NOT NULL,
    flush_seq INTEGER, outcome TEXT, done INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_flush ON events(flush_seq);
CREATE INDEX IF NOT EXISTS events_open ON events(done, flush_seq);
CREATE TABLE IF NOT EXISTS flushes (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
    state TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
NEW, DUPLICATE, LATE = "new", "duplicate", "late"


@dataclass(frozen=True)
class Record:
    """One event to journal: ``payload`` is the checked event as compact JSON (what replay needs)."""

    key: str
    kind: str  # "request" | "response" | "click"
    payload: bytes
    received: float


class Journal:
    """The journal database (blocking calls; one thread at a time)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "journal.sqlite"
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # in WAL mode: fsync the log at every commit
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def sink_id(self, wanted: str) -> str:
        """The id in this sink's part names: ``wanted``, else the one chosen at first start (kept)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'sink_id'").fetchone()
        if wanted:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('sink_id', ?)", (wanted,))
            return wanted
        if row:
            return str(row[0])
        chosen = uuid.uuid4().hex[:12]
        self.db.execute("INSERT INTO meta VALUES ('sink_id', ?)", (chosen,))
        return chosen

    def accept(self, batches: list[list[Record]]) -> list[list[str]]:
        """Insert every record of every batch in one transaction: ``new`` | ``duplicate`` | ``late`` each.

        ``late``: a response whose request already timed out (it is not stored)."""
        out: list[list[str]] = []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for records in batches:
                results = []
                for r in records:
                    if r.kind == "response":
                        req = self.db.execute("SELECT outcome FROM events WHERE key = ?",
                                              ("request:" + r.key.split(":", 1)[1],)).fetchone()
                        if req is not None and req[0] == "expired":
                            results.append(LATE)
                            continue
                    cur = self.db.execute("INSERT OR IGNORE INTO events (key, kind, payload, received) "
                                          "VALUES (?, ?, ?, ?)", (r.key, r.kind, r.payload, r.received))
                    results.append(NEW if cur.rowcount == 1 else DUPLICATE)
                out.append(results)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return out

    def mark(self, keys: list[str], outcome: str) -> None:
        """Close events that produce no rows (an orphan response, an invalid pairing)."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("UPDATE events SET done = 1, payload = NULL, outcome = ? WHERE key = ?",
                            [(outcome, k) for k in keys])
        self.db.execute("COMMIT")

    def begin_flush(self, prefix: str, outcomes: list[tuple[str, str]], now: float) -> tuple[int, str]:
        """Number a batch: ``(seq, part name)``; its events get the number and their outcome."""
        self.db.execute("BEGIN IMMEDIATE")
        cur = self.db.execute("INSERT INTO flushes (name, state, created) VALUES ('', 'writing', ?)", (now,))
        seq = int(cur.lastrowid or 0)
        name = f"part-{prefix}-{seq:012d}.parquet"
        self.db.execute("UPDATE flushes SET name = ? WHERE seq = ?", (name, seq))
        self.db.executemany("UPDATE events SET flush_seq = ?, outcome = ? WHERE key = ?",
                            [(seq, outcome, key) for key, outcome in outcomes])
        self.db.execute("COMMIT")
        return seq, name

    def end_flush(self, seq: int) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("UPDATE events SET done = 1, payload = NULL WHERE flush_seq = ?", (seq,))
        self.db.execute("UPDATE flushes SET state = 'done' WHERE seq = ?", (seq,))
        self.db.execute("COMMIT")

    def open_flushes(self) -> list[tuple[int, str, list[tuple[str, str, bytes, str]]]]:
        """Flushes begun and not ended: ``(seq, name, [(key, kind, payload, outcome), ...])``."""
        out = []
        for seq, name in self.db.execute("SELECT seq, name FROM flushes WHERE state = 'writing' ORDER BY seq"
                                         ).fetchall():
            rows = self.db.execute("SELECT key, kind, payload, outcome FROM events WHERE flush_seq = ? "
                                   "ORDER BY rowid", (seq,)).fetchall()
            out.append((int(seq), str(name), [(k, kd, bytes(p), o) for k, kd, p, o in rows]))
        return out

    def pending(self) -> list[tuple[str, str, bytes, float]]:
        """Accepted events not yet in any flush, in arrival order: ``(key, kind, payload, received)``."""
        rows = self.db.execute("SELECT key, kind, payload, received FROM events WHERE done = 0 AND flush_seq IS NULL "
                               "ORDER BY rowid").fetchall()
        return [(k, kd, bytes(p), float(t)) for k, kd, p, t in rows]

    def prune(self, before: float) -> int:
        """Forget done events received before ``before`` (their ids stop being deduplicated)."""
        cur = self.db.execute("DELETE FROM events WHERE done = 1 AND received < ?", (before,))
        self.db.execute("DELETE FROM flushes WHERE state = 'done' AND created < ?", (before,))
        return int(cur.rowcount)

    def counts(self) -> dict[str, int]:
        open_events, = self.db.execute("SELECT COUNT(*) FROM events WHERE done = 0").fetchone()
        known, = self.db.execute("SELECT COUNT(*) FROM events").fetchone()
        return {"open_events": int(open_events), "known_events": int(known)}


class JournalThread:
    """Runs a :class:`Journal` on its own thread; ``await`` its methods from the event loop."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._queue: queue.Queue[tuple[str, Any, Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="sink-journal", daemon=True)
        self._thread.start()

    async def accept(self, records: list[Record]) -> list[str]:
        fut: Future[Any] = Future()
        self._queue.put(("accept", records, fut))
        return await asyncio.wrap_future(fut)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        fut: Future[Any] = Future()
        self._queue.put(("call", (fn, args), fut))
        result: T = await asyncio.wrap_future(fut)
        return result

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        self.journal.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while item is not None:  # take whatever else is waiting: one commit for all the accepts
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
            accepts = [b for b in batch if b is not None and b[0] == "accept"]
            if accepts:
                try:
                    results = self.journal.accept([records for _, records, _ in accepts])
                    for (_, _, fut), res in zip(accepts, results, strict=True):
                        fut.set_result(res)
                except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                    for _, _, fut in accepts:
                        fut.set_exception(exc)
            for b in batch:
                if b is None:
                    return
                if b[0] == "call":
                    fn, args = b[1]
                    fut = b[2]
                    try:
                        fut.set_result(fn(*args))
                    except BaseException as exc:  # noqa: BLE001 - handed to the batch's waiting request
                        fut.set_exception(exc)


__all__ = ["DUPLICATE", "LATE", "NEW", "Journal", "JournalThread", "Record"]
