"""Request guard for the KServe REST server, in front of KServe's own handlers (pure ASGI).

* Size: KServe (FastAPI/uvicorn) reads whole bodies into memory and has no limit. A request
  whose ``Content-Length`` exceeds ``max_bytes`` gets HTTP 413 without being read; a chunked
  upload is cut off with 413 as soon as it passes the limit.
* The v2 binary tensor extension (``inference-header-content-length``) is refused with 400:
  KServe 0.21 parses it without validation (a bad header value or JSON part is a 500), and
  genctr's inputs are short id/price vectors for which JSON tensors are as good.

Error bodies have KServe's shape (``{"error": "..."}``).
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson

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


async def _reply(send: Send, status: int, error: str) -> None:
    body = orjson.dumps({"error": error})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
