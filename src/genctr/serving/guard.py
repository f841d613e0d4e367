"""Request guards for the KServe REST server, in front of KServe's own handlers (pure ASGI).

:class:`RequestGuard` (sizes and formats):

* Size: KServe (FastAPI/uvicorn) reads whole bodies into memory and has no limit. A request
  whose ``Content-Length`` exceeds ``max_bytes`` gets HTTP 413 without being read; a chunked
  upload is cut off with 413 as soon as it passes the limit. Sizing: one user with 100
  candidates and a request-supplied history of 2,000 behaviours (lifelong L = 2000) is 35 kB of
  v1 JSON with 6-digit ids, 64 kB with 19-digit ones, so the server's 1 MiB default carries
  16-30 such users a request; histories read from Feast add nothing to the body.
* The v2 binary tensor extension (``inference-header-content-length``) is refused with 400:
  KServe 0.21 parses it without validation (a bad header value or JSON part is a 500), and
  genctr's inputs are short id/price vectors for which JSON tensors are as good.


:class:`RepositoryGuard`: KServe's model-repository endpoints
(``POST /v2/repository/models/<name>/load|unload``) change what the server serves. Off by
default (403); with ``enabled`` they need ``Authorization: Bearer <token>`` (401 otherwise).

:class:`LoadShedder`: at most ``max_in_flight`` inference requests (POSTs) are worked on at
once; past that a request gets 503 with ``Retry-After`` at once instead of queueing, so the
accepted ones keep their latency. A request counts from when its body has arrived, so slow
uploads do not hold slots (the read timeout drops them).

Error bodies have KServe's shape (``{"error": "..."}``).
"""
from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


BINARY_HEADER = b"inference-header-content-length"


class RequestGuard:
    """ASGI middleware: bodies over ``max_bytes`` -> 413; malformed Content-Length or the binary
    tensor extension -> 400."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if BINARY_HEADER in headers:
            await _reply(send, 400, "the v2 binary tensor extension (inference-header-content-length) is not "
                                    "supported by this predictor: send JSON tensors")
            return
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _reply(send, 400, f"invalid Content-Length header {length[:40]!r}")
                return
            if int(length) > self.max_bytes:
                await _reply(send, 413, self._message(int(length)))
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, self._message(seen))

    def _message(self, size: int) -> str:
        return (f"request body of {size} bytes is larger than the server's limit of {self.max_bytes} bytes "
                "(--max_body_bytes)")


# Every path Starlette could route to a repository endpoint: case as sent, repeated slashes.
REPOSITORY_PATH = re.compile(r"/+v2/+repository(/|$)", re.IGNORECASE)


def is_repository_path(path: str) -> bool:
    return REPOSITORY_PATH.match(path) is not None


class RepositoryGuard:
    """ASGI middleware: ``/v2/repository/...`` -> 403 unless ``enabled``; then 401 without
    ``Authorization: Bearer <token>`` (compared in constant time)."""

    def __init__(self, app: ASGIApp, enabled: bool, token: str = "") -> None:
        if enabled and not token:
            raise ValueError("RepositoryGuard: enabling the repository API needs a token")
        self.app = app
        self.enabled = enabled
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_repository_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if not self.enabled:
            await _reply(send, 403, "the model repository API (load/unload) is disabled on this server; start it "
                                    "with --enable_repository_api and a token (--repository_token_file or "
                                    "GENCTR_REPOSITORY_TOKEN) to manage models over HTTP")
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not hmac.compare_digest(given, self._expected):
            log.warning("refused a repository request without the right token: %s %s from %s",
                        scope.get("method"), scope.get("path", "")[:200], (scope.get("client") or ("?",))[0])
            await _reply(send, 401, "the model repository API needs 'Authorization: Bearer <token>' with the "
                                    "server's repository token", [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class LoadShedder:
    """ASGI middleware: at most ``max_in_flight`` POST requests in the application at once;
    the next gets 503 + ``Retry-After: retry_after_s`` without queueing. GETs (health,
    readiness, metadata, metrics) and repository calls are never shed.

    The body is read first (the size guard outside bounds it), then the request is admitted or
    shed, so a slot is held only while the server works on the request."""

    def __init__(self, app: ASGIApp, max_in_flight: int, retry_after_s: int = 1) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after_s).encode()
        self.in_flight = 0  # one event loop: no lock needed
        self.shed = 0  # requests answered 503 since start

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or is_repository_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        if self.in_flight >= self.max_in_flight:
            self.shed += 1
            if self.shed & (self.shed - 1) == 0:  # 1st, 2nd, 4th, 8th, ...: a log line, not a flood
                log.warning("overloaded: %d requests in flight (--max_in_flight); %d shed with 503 so far",
                            self.in_flight, self.shed)
            await _reply(send, 503, f"server overloaded: {self.in_flight} requests in flight (--max_in_flight "
                                    f"{self.max_in_flight}); retry after {self.retry_after.decode()} s",
                         [(b"retry-after", self.retry_after)])
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect when the client goes

        self.in_flight += 1
        try:
            await self.app(scope, replay, send)
        finally:
            self.in_flight -= 1


async def _reply(send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps({"error": error})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
