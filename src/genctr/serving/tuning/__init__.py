"""Serving performance tuning, fenced off: every switch that makes the server faster without
changing what it answers lives here, behind one :class:`~genctr.serving.server.ServeConfig` flag
each (and a ``python -m genctr.serving`` option of the same name).

=================  ==================  ===========================================  =====================
flag               module              what it relies on                            guarded by
=================  ==================  ===========================================  =====================
``fast_v1``        :mod:`.fastpath`    KServe's ``V1Endpoints.predict`` DataPlane   test_kserve_contract
                                       sequence; the app's exception handlers
``log_requests``   :mod:`.timing`      KServe adding timing_asgi's middleware;      test_kserve_contract
(off = tuned)                          Starlette building its stack lazily
``keep_heap``      :mod:`.heap`        glibc ``mallopt`` (through ctypes)           glibc check at call
``event_loop``     :mod:`.event_loop`  ``ModelServer.start`` calling asyncio.run     test_kserve_contract
``jit``            :mod:`.torchscript` ``torch.jit.trace/freeze`` reproducing the   checked at each load
                                       eager logits (else the eager model serves)
=================  ==================  ===========================================  =====================

Each is switchable, and tests/test_serving_tuning.py serves the same requests with each one
off and all on: the responses (status, body, content type) are byte-identical, except ``jit``,
whose pCTRs agree within the float rounding its check at load allows. ``kserve`` is pinned to
the tested minor version in pyproject.toml.
"""
from __future__ import annotations

from typing import Any

from genctr.serving.tuning.event_loop import choose_event_loop, install_event_loop
from genctr.serving.tuning.heap import keep_heap_thresholds
from genctr.serving.tuning.torchscript import traced_or_eager

__all__ = ["choose_event_loop", "install_event_loop", "keep_heap_thresholds", "traced_or_eager", "tune_app"]


def tune_app(app: Any, dataplane: Any, *, fast_v1: bool, log_requests: bool) -> None:
    """The tunings of KServe's REST app; call before adding any other middleware (the short v1
    route must be the innermost, just outside KServe's own stack)."""
    if fast_v1:
        from genctr.serving.tuning.fastpath import FastV1Predict

        app.add_middleware(FastV1Predict, dataplane=dataplane, exception_handlers=app.exception_handlers)
    if not log_requests:
        from genctr.serving.tuning.timing import without_timing_middleware

        without_timing_middleware(app)
