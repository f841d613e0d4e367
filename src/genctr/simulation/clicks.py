"""The simulated click tracker: clicks reported to the A/B log sink's ``POST /clicks``.

A click is ``{"request_id": f"{call_id}.{instance}", "item_id": raw id, "ts": epoch seconds}``: the
id the sink gives the ad request (the scoring call's ``Ce-Id`` and the instance's index, see
:mod:`genctr.monitoring.sink.rows`), the ad's item and the click time. One POST per wave of
traffic, a JSON array; the sink takes a batch whole or not at all and dedupes a redelivered one,
so a batch is retried with backoff until the sink acknowledges it (2xx): a sink restarted in
the middle of a run loses no click and counts none twice. A 4xx is the simulator's own fault
(a malformed batch) and raises.
"""
from __future__ import annotations

import http.client
import logging
import time
from urllib.parse import urlsplit

import numpy as np
import orjson

from genctr.errors import ConfigError, GenCTRError

log = logging.getLogger(__name__)
_RETRY_STATUSES = {408, 429}


class ClickSender:
    """POSTs click batches to ``url`` over one keep-alive connection (one caller thread)."""

    def __init__(self, url: str, timeout: float = 10.0, give_up_s: float = 300.0, backoff_max_s: float = 2.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"clicks URL must be the sink's http(s)://host:port/clicks, got {url!r}")
        self.url = url
        self.timeout = timeout
        self.give_up_s = give_up_s
        self.backoff_max_s = backoff_max_s
        self._cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port = parts.hostname, parts.port
        self._path = parts.path or "/clicks"
        self._conn: http.client.HTTPConnection | None = None
        self.sent = 0  # clicks the sink acknowledged
        self.retries = 0

    def send(self, request_ids: np.ndarray, item_ids: np.ndarray, ts: np.ndarray) -> None:
        """Report (C,) clicks; blocks until the sink acknowledged them (or ``give_up_s`` passed: raises)."""
        if len(request_ids) == 0:
            return
        body = orjson.dumps([{"request_id": r, "item_id": i, "ts": t} for r, i, t in
                             zip(request_ids.tolist(), item_ids.tolist(), ts.tolist(), strict=True)])
        deadline = time.monotonic() + self.give_up_s
        delay = 0.05
        while True:
            status, detail = self._post(body)
            if 200 <= status < 300:
                self.sent += len(request_ids)
                return
            if 400 <= status < 500 and status not in _RETRY_STATUSES:
                raise GenCTRError(f"the sink refused {len(request_ids)} clicks: HTTP {status} {detail}")
            self.retries += 1
            if self.retries == 1 or self.retries % 50 == 0:
                log.warning("clicks not acknowledged by %s (%s); retrying", self.url,
                            f"HTTP {status} {detail}" if status else detail)
            if time.monotonic() + delay > deadline:
                raise GenCTRError(f"the sink at {self.url} did not acknowledge clicks for {self.give_up_s:.0f} s "
                                  f"(last: {f'HTTP {status} {detail}' if status else detail}): is it running?")
            time.sleep(delay)
            delay = min(self.backoff_max_s, delay * 2)

    def _post(self, body: bytes) -> tuple[int, str]:
        """One POST: ``(status, detail)``; status 0 when the connection failed or timed out."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = self._cls(self._host, self._port, timeout=self.timeout)
            reused = self._conn.sock is not None
            try:
                self._conn.request("POST", self._path, body, {"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                return resp.status, resp.read()[:300].decode(errors="replace")
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
                self.close()
                if not reused or attempt == 1:  # only a kept-alive connection the server dropped is retried at once
                    return 0, type(exc).__name__
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                return 0, f"{type(exc).__name__}: {exc}"[:200]
        return 0, "unreachable"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


__all__ = ["ClickSender"]
