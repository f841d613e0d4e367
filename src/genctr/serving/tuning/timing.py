"""Leave KServe's per-request timing middleware out when per-request logging is off
(``ServeConfig.log_requests`` false). Its only output is the ``kserve.trace`` log, so the
responses are the same with it or without it."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp


def without_timing_middleware(app: Starlette) -> None:
    """Leave timing_asgi's ``TimingMiddleware`` out of the app's middleware stack.

    KServe's REST server always adds it; per request it calls ``getrusage`` twice (summed over
    every thread of the process) and formats two log lines for ``kserve.trace``, its only
    output, which is disabled when per-request logging is off. Starlette builds the stack on
    the first ASGI call (the lifespan startup), after KServe has added its middleware, so the
    filter runs then; if KServe stops adding it, nothing changes."""
    try:
        from timing_asgi import TimingMiddleware
    except ImportError:
        return
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        kept = [m for m in app.user_middleware if m.cls is not TimingMiddleware]
        app.user_middleware = kept
        return build()

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]  # this one app, on purpose
