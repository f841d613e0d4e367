"""HTTP in front of :class:`~genctr.monitoring.sink.service.LogSink` (a Starlette app for uvicorn).

    POST /          one KServe logger CloudEvent (binary or structured mode)
                    200 {"status": "accepted" | "duplicate"} once journaled (durable)
                    4xx {"error", "reason"}: 400 malformed, 409 late response, 413 too large,
                    415 wrong content type; 503 + Retry-After while parts cannot be written
    POST /clicks    a JSON array or NDJSON of {"request_id", "item_id", "ts"}: all or nothing
                    200 {"accepted": n, "duplicates": m}; 400 naming the bad rows
    GET  /metrics   Prometheus text (genctr.monitoring.sink.metrics)
    GET  /healthz   200 {"status": "ok", ...} once the journal is replayed (503 before)

An acknowledgement is sent only after the event's journal commit; a refused event leaves no trace
but its counter. Nothing a client sends can stop the server: every refusal is a response.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from genctr.errors import DataValidationError
from genctr.monitoring.clicks import parse_click_body
from genctr.monitoring.cloudevents_codec import EventError, decode_event
from genctr.monitoring.sink.metrics import CONTENT_TYPE
from genctr.monitoring.sink.service import Backpressure, LogSink

log = logging.getLogger(__name__)


class TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (before it is all read) beyond ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _headers(request: Request) -> dict[str, str]:
    """Header values as UTF-8 text (ASGI hands them over as latin-1)."""
    return {k: v.encode("latin-1").decode("utf-8", errors="replace") for k, v in request.headers.items()}


def _error(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "reason": reason}, status_code=status)


def create_app(sink: LogSink) -> Starlette:
    """The ASGI app; its lifespan starts and stops ``sink``."""
    limit = sink.cfg.max_body_bytes

    def too_large() -> JSONResponse:
        sink.metrics.rejected.labels("too_large").inc()
        return _error(413, "too_large", f"request body is over {limit} bytes (the sink's --max-body-bytes)")

    def busy(exc: Backpressure) -> JSONResponse:
        resp = _error(503, "backpressure", str(exc))
        resp.headers["Retry-After"] = "5"
        return resp

    async def event(request: Request) -> Response:
        if not sink.ready:
            return _error(503, "starting", "the sink is replaying its journal: retry shortly")
        try:
            body = await _body(request, limit)
            decoded = decode_event(_headers(request), body)
        except TooLarge:
            return too_large()
        except EventError as exc:
            sink.metrics.rejected.labels(exc.reason).inc()
            return _error(exc.status, exc.reason, str(exc))
        except ClientDisconnect:
            return Response(status_code=499)
        try:
            status = await sink.accept_event(decoded)
        except EventError as exc:  # counted by the sink
            return _error(exc.status, exc.reason, str(exc))
        except Backpressure as exc:
            return busy(exc)
        return JSONResponse({"status": status})

    async def clicks(request: Request) -> Response:
        if not sink.ready:
            return _error(503, "starting", "the sink is replaying its journal: retry shortly")
        try:
            body = await _body(request, limit)
            result = await sink.accept_clicks(parse_click_body(body))
        except TooLarge:
            return too_large()
        except DataValidationError as exc:
            return _error(400, "click_schema", str(exc))
        except Backpressure as exc:
            return busy(exc)
        except ClientDisconnect:
            return Response(status_code=499)
        return JSONResponse(result)

    async def metrics(request: Request) -> Response:
        return Response(sink.metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        health: dict[str, Any] = sink.health()
        return JSONResponse(health, status_code=200 if sink.ready else 503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sink.start()
        try:
            yield
        finally:
            await sink.stop()

    return Starlette(routes=[Route("/", event, methods=["POST"]), Route("/clicks", clicks, methods=["POST"]),
                             Route("/metrics", metrics, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])],
                     lifespan=lifespan)


__all__ = ["create_app"]
