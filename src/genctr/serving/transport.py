"""The HTTP transport under KServe's REST server: bind address, read timeout, connection cap.

KServe 0.21's ``RESTServer`` builds its ``uvicorn.Config`` with ``host="0.0.0.0"`` and no way
to pass a host, a read timeout or a connection limit. :class:`GenCTRModelServer` is a
``kserve.ModelServer`` that sets them on that config after ``ModelServer.start`` has built the
REST server and before the event loop runs it (``start`` calls ``setup_event_loop`` in between;
uvicorn resolves the config when it starts serving). ``tests/test_attack_serving.py`` checks
that this order and the config attribute are still what KServe does.

uvicorn has a keep-alive timeout (idle time *between* requests) but no read timeout: a client
that connects and sends nothing, or half a request line, or headers and part of a body, keeps
its connection (and a parser and buffers) forever. :class:`ReadTimeoutProtocol` gives every
request ``read_timeout`` seconds from its first byte (for a new connection: from the connect)
to arrive completely; past it the client gets 408 (if no response has started) and the
connection is closed.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import genctr.serving._kserve  # noqa: F401 - first: KServe imported with sys.argv emptied

# isort: split
import kserve

log = logging.getLogger(__name__)

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools: uvicorn's own protocol choice, no read timeout
    HttpToolsProtocol = None  # type: ignore[assignment,misc]  # the class is optional: None without httptools

_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                     b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


if HttpToolsProtocol is not None:
    class ReadTimeoutProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a per-request deadline (``read_timeout`` seconds,
        set on a subclass by :func:`protocol_with_timeout`)."""

        read_timeout: float = 10.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn narrows it too
            super().connection_made(transport)
            self._deadline: asyncio.TimerHandle | None = None
            self._arm()  # the first request must arrive within read_timeout of the connect

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # a later request on a keep-alive connection
                self._arm()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(self.read_timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _timed_out(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or not (cycle.response_started or cycle.response_complete):
                body = (b'{"error": "request not received completely within %g s (--read_timeout_s)"}'
                        % self.read_timeout)
                self.transport.write(_TIMEOUT_RESPONSE % (len(body), body))
            if cycle is not None:
                cycle.keep_alive = False
            self.transport.close()  # the application, if it runs, sees http.disconnect
else:  # pragma: no cover - httptools ships with uvicorn[standard], a KServe dependency
    ReadTimeoutProtocol = None  # type: ignore[assignment,misc]  # the class is optional, as above


def protocol_with_timeout(read_timeout: float) -> type | None:
    """A :class:`ReadTimeoutProtocol` subclass with this deadline (None without httptools)."""
    if ReadTimeoutProtocol is None:
        return None
    return type("ReadTimeoutProtocol", (ReadTimeoutProtocol,), {"read_timeout": float(read_timeout)})


class GenCTRModelServer(kserve.ModelServer):
    """``kserve.ModelServer`` whose REST server binds ``host``, drops requests that do not
    arrive within ``read_timeout`` s, and holds at most ``max_connections`` connections
    (uvicorn answers 503 past it)."""

    def __init__(self, *, host: str, read_timeout: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.read_timeout = read_timeout
        self.max_connections = max_connections

    def setup_event_loop(self) -> None:
        # Called by ModelServer.start after it built self._rest_server, before asyncio.run.
        rest = getattr(self, "_rest_server", None)
        config = getattr(rest, "config", None)
        if config is None or not hasattr(config, "host"):
            raise RuntimeError("kserve.ModelServer.start no longer builds _rest_server.config before "
                               "setup_event_loop: genctr cannot set the bind address; refusing to serve on 0.0.0.0")
        configure_uvicorn(config, self.host, self.read_timeout, self.max_connections)
        super().setup_event_loop()


def configure_uvicorn(config: Any, host: str, read_timeout: float, max_connections: int) -> None:
    """Set the bind address, the read-timeout protocol and the connection cap on a
    not-yet-loaded ``uvicorn.Config``."""
    if getattr(config, "loaded", False):
        raise RuntimeError("uvicorn config already loaded: its host and protocol can no longer change")
    config.host = host
    config.limit_concurrency = max_connections
    protocol = protocol_with_timeout(read_timeout)
    if protocol is None:
        log.warning("httptools is not installed: no read timeout for stalled connections")
    elif config.http in ("auto", "httptools"):
        config.http = protocol
