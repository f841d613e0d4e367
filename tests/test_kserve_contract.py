"""Contract tests on the KServe internals the serving tuning rests on (kserve is pinned to its
tested minor version; these fail first when an upgrade moves what the code relies on).

* ``genctr.serving.tuning.fastpath`` repeats ``V1Endpoints.predict``'s DataPlane calls without
  FastAPI's routing: the handler must still be exactly that sequence, with those keywords.
* ``genctr.serving.server`` and ``genctr.serving.tuning`` add middleware to
  ``kserve.model_server.app`` (built at import) and leave timing_asgi's middleware out of the
  stack it builds on the first request.
* ``genctr.serving.tuning.event_loop`` installs uvloop's policy because ``ModelServer.start``
  runs ``asyncio.run`` (which would ignore uvicorn's loop setting).
* ``genctr.serving._kserve`` empties ``sys.argv`` while kserve parses it at import.
"""
from __future__ import annotations

import inspect
import re

from genctr.serving._kserve import import_kserve

import_kserve()

from kserve import model_server  # noqa: E402 - after import_kserve()
from kserve.protocol.dataplane import DataPlane  # noqa: E402 - after import_kserve()
from kserve.protocol.rest.v1_endpoints import V1Endpoints  # noqa: E402 - after import_kserve()


def _calls(source: str) -> list[str]:
    return re.findall(r"dataplane\.(model_ready|decode|infer|encode)\(", source)


def test_v1_predict_is_the_dataplane_sequence_the_fast_path_repeats() -> None:
    from genctr.serving.tuning import fastpath

    kserve_calls = _calls(inspect.getsource(V1Endpoints.predict))
    ours = _calls(inspect.getsource(fastpath))
    assert kserve_calls == ["model_ready", "decode", "infer", "encode"]
    assert ours == kserve_calls  # same steps, same order
    params = {m: set(inspect.signature(getattr(DataPlane, m)).parameters) for m in kserve_calls}
    assert {"model_name", "disable_predictor_health_check"} <= params["model_ready"]
    assert {"body", "headers"} <= params["decode"]
    assert {"model_name", "request", "headers"} <= params["infer"]
    assert {"model_name", "response", "headers", "req_attributes"} <= params["encode"]
    assert inspect.iscoroutinefunction(DataPlane.model_ready) and inspect.iscoroutinefunction(DataPlane.infer)


def test_the_rest_app_is_a_module_level_starlette_app_with_a_lazily_built_stack() -> None:
    from starlette.applications import Starlette

    app = model_server.app
    assert isinstance(app, Starlette)
    assert hasattr(app, "user_middleware") and callable(app.build_middleware_stack)
    assert callable(app.add_middleware) and isinstance(app.exception_handlers, dict)


def test_kserve_still_adds_timing_middleware_by_its_class() -> None:
    from kserve.protocol.rest import server as rest
    from timing_asgi import TimingMiddleware  # what tuning.timing.without_timing_middleware filters out

    assert "TimingMiddleware" in inspect.getsource(rest)
    assert inspect.isclass(TimingMiddleware)


def test_kserve_parses_sys_argv_at_import() -> None:
    # the reason import_kserve() exists: drop this guard once the import-time parse is gone
    source = inspect.getsource(model_server)
    assert "parse_known_args()" in source or "parse_args()" in source


def test_model_server_start_runs_asyncio_run() -> None:
    # why tuning.install_event_loop sets the policy instead of uvicorn's loop option
    source = inspect.getsource(model_server.ModelServer.start)
    assert "asyncio.run(" in source


def test_kserve_logging_exports_the_format_the_server_logs_in() -> None:
    # genctr.serving.__main__.log_like_kserve formats genctr's lines with these
    from kserve.logging import KSERVE_LOG_CONFIG, KSERVE_LOGGER_DATE_FORMAT, KSERVE_LOGGER_FORMAT

    assert "%(message)s" in KSERVE_LOGGER_FORMAT and isinstance(KSERVE_LOGGER_DATE_FORMAT, str)
    assert KSERVE_LOG_CONFIG["disable_existing_loggers"] is False  # so the genctr logger keeps its handler
