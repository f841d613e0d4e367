"""Start a KServe ModelServer with genctr predictors: one model, or a champion + canary pair.

``serve(ServeConfig(...))`` is what ``python -m genctr.serving`` and ``genctr serve`` run:
it loads the model(s) once, installs the request-size limit, and blocks in
``kserve.ModelServer.start``. Two modes:

* ``model_dir``: one :class:`CTRPredictor` named ``model_name``;
* ``deploy_state``: the models of a :class:`genctr.deploy.local.LocalDeployer` state file
  (``<name>-champion`` and, during a canary, ``<name>-canary``), re-read on
  ``POST /v2/repository/models/<model>/load`` so the deployer can swap them while serving.

The repository endpoints (load/unload) are refused (403) unless ``enable_repository_api`` is
set, and then need ``Authorization: Bearer <repository_token>``. The server binds ``host``
(loopback unless told otherwise; the pod entry point passes 0.0.0.0).

Latency budget: an accepted request of the reference workload (100 candidates, dcnv2_ta,
L = 50, 2 cores) answers within 100 ms at p99. The server keeps it under overload by admitting
at most ``max_in_flight`` inference requests (default 4 per forward thread: ~3 ms of CPU each,
so a full house drains in ~15-30 ms) and answering the rest 503 + ``Retry-After`` at once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from genctr.errors import ConfigError
from genctr.serving.online import FeastConfig
from genctr.serving.payload_logger import PayloadLoggerConfig
from genctr.serving.request import Limits

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: ~10k candidates of JSON; far above --max_candidates
IN_FLIGHT_PER_FORWARD_THREAD = 4  # default max_in_flight = this x max(1, forward_threads)
LATENCY_BUDGET_MS = 100  # p99 of accepted requests, reference workload (see the module docstring)


@dataclass
class ServeConfig:
    """Everything ``serve`` needs; exactly one of ``model_dir`` / ``deploy_state``."""

    model_dir: str = ""  # a model artifact directory (KServe mounts storageUri at /mnt/models)
    deploy_state: str = ""  # or: a LocalDeployer state file (champion + canary)
    model_name: str = "ctr"  # the URL name: /v1/models/<model_name>:predict
    host: str = "127.0.0.1"  # bind address: loopback locally; the pod entry point passes 0.0.0.0
    http_port: int = 8080
    grpc_port: int = 8081
    enable_grpc: bool = False  # the v2 gRPC endpoint (KServe's default port 8081)
    feast: FeastConfig | None = None  # None: no feature store (histories must come in requests)
    limits: Limits = field(default_factory=Limits)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    torch_threads: int = 1  # intra-op threads per forward pass
    forward_threads: int = 2  # forward passes in flight at once (worker threads); 0 = on the event loop
    jit: bool = True  # TorchScript-freeze the model at load (tuning.torchscript; checked against eager)
    device: str = "cpu"
    log_requests: bool = False  # uvicorn access log + KServe per-request latency line
    event_loop: str = "auto"  # auto (uvloop if installed and no gRPC) | uvloop | asyncio (tuning.event_loop)
    # the tunings (genctr.serving.tuning: each switchable, same responses on and off)
    fast_v1: bool = True  # POST /v1/models/<name>:predict straight to KServe's DataPlane (tuning.fastpath)
    keep_heap: bool = True  # fixed glibc malloc thresholds: no page faults per forward pass (tuning.heap)
    # POST /v2/repository/models/<name>/load|unload: 403 unless enabled, then Bearer-token only
    enable_repository_api: bool = False
    repository_token: str = field(default="", repr=False)  # >= 16 characters when enabled; never logged
    # Overload: inference requests worked on at once (0 = IN_FLIGHT_PER_FORWARD_THREAD x
    # max(1, forward_threads)); past it 503 + Retry-After, so accepted ones stay within
    # LATENCY_BUDGET_MS (p99, reference workload).
    max_in_flight: int = 0
    read_timeout_s: float = 10.0  # a request must arrive completely within this (slow/stalled clients: 408)
    keep_alive_s: int = 65  # idle keep-alive connections closed after this (longer than a proxy's idle timeout)
    max_connections: int = 1024  # open connections at most (uvicorn answers 503 past it)
    # KServe's inference logger stand-in: CloudEvents of every scoring call to a sink (None: off)
    payload_logger: PayloadLoggerConfig | None = None

    def __post_init__(self) -> None:
        if bool(self.model_dir) == bool(self.deploy_state):
            raise ConfigError("give exactly one of --model_dir and --deploy_state")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.torch_threads < 1 or self.forward_threads < 0:
            raise ConfigError(f"need torch_threads >= 1 and forward_threads >= 0, got {self.torch_threads}, "
                              f"{self.forward_threads}")
        if self.event_loop not in ("auto", "uvloop", "asyncio"):
            raise ConfigError(f"event_loop must be auto, uvloop or asyncio, got {self.event_loop!r}")
        for name in ("http_port", "grpc_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ConfigError(f"{name} must be a TCP port, got {getattr(self, name)}")
        if not self.host or len(self.host) > 253 or any(c.isspace() for c in self.host):
            raise ConfigError(f"host must be an interface address such as 127.0.0.1 or 0.0.0.0, got {self.host[:60]!r}")
        if self.enable_repository_api and len(self.repository_token) < 16:
            raise ConfigError("enable_repository_api needs a repository token of >= 16 characters "
                              "(--repository_token_file or GENCTR_REPOSITORY_TOKEN)")
        if self.enable_grpc and not self.enable_repository_api:
            # KServe's gRPC servicer always offers RepositoryModelLoad/Unload, with no token check:
            # opening it is opening a way to change what is served
            raise ConfigError("enable_grpc opens KServe's gRPC model load/unload calls (no token check): "
                              "give --enable_repository_api with a token too, or serve over HTTP only")
        if self.repository_token and not self.repository_token.isprintable():
            raise ConfigError("the repository token must be printable characters (no newlines)")
        if self.max_in_flight < 0 or self.max_connections < 1:
            raise ConfigError(f"need max_in_flight >= 0 and max_connections >= 1, got {self.max_in_flight}, "
                              f"{self.max_connections}")
        if not 0 < self.read_timeout_s <= 3600 or not 0 < self.keep_alive_s <= 3600:
            raise ConfigError(f"read_timeout_s and keep_alive_s must be in (0, 3600] seconds, got "
                              f"{self.read_timeout_s}, {self.keep_alive_s}")

    @property
    def in_flight_limit(self) -> int:
        """``max_in_flight``, or its default from ``forward_threads``."""
        return self.max_in_flight or IN_FLIGHT_PER_FORWARD_THREAD * max(1, self.forward_threads)


def build_models(cfg: ServeConfig) -> tuple[list, object | None]:
    """The loaded predictors (and, in deploy-state mode, the repository that reloads them)."""
    from genctr.serving.predictor import CTRPredictor

    if cfg.model_dir:
        model = CTRPredictor(cfg.model_name, cfg.model_dir, cfg.feast, limits=cfg.limits, device=cfg.device,
                             forward_threads=cfg.forward_threads, jit=cfg.jit)
        model.load()
        return [model], None
    from genctr.serving.repository import StateRepository

    repo = StateRepository(cfg.deploy_state, cfg.feast, limits=cfg.limits, device=cfg.device,
                           forward_threads=cfg.forward_threads, jit=cfg.jit)
    return repo.load_all(), repo


def serve(cfg: ServeConfig) -> None:
    """Load, then serve HTTP on ``cfg.host``:``cfg.http_port`` until SIGTERM/SIGINT (blocking)."""
    from kserve import model_server

    from genctr.serving import tuning
    from genctr.serving.guard import LoadShedder, RepositoryGuard, RequestGuard
    from genctr.serving.transport import GenCTRModelServer

    heap_kept = cfg.keep_heap and tuning.keep_heap_thresholds()
    torch.set_num_threads(cfg.torch_threads)
    models, repo = build_models(cfg)
    loop = tuning.choose_event_loop(cfg.event_loop, cfg.enable_grpc)
    server = GenCTRModelServer(host=cfg.host, read_timeout=cfg.read_timeout_s, max_connections=cfg.max_connections,
                               http_port=cfg.http_port, grpc_port=cfg.grpc_port, enable_grpc=cfg.enable_grpc,
                               enable_latency_logging=cfg.log_requests, registered_models=repo, event_loop=loop,
                               timeout_keep_alive=cfg.keep_alive_s)
    # KServe builds its FastAPI app at import (kserve.model_server.app) and adds its own
    # middleware when the server starts; ours goes on the same app, first (the last added is
    # the outermost). Outermost first: repository guard (nothing read), size guard, payload
    # logger (if on), load shedder (reads the bounded body, then admits or sheds), the v1 short
    # route, KServe.
    app = model_server.app
    tuning.tune_app(app, server.dataplane, fast_v1=cfg.fast_v1, log_requests=cfg.log_requests)
    app.add_middleware(LoadShedder, max_in_flight=cfg.in_flight_limit)
    if cfg.payload_logger is not None:  # where KServe's agent sits on a cluster: sees shed calls, not oversized ones
        from genctr.serving import payload_logger

        payload_logger.install(app, cfg.payload_logger)
    app.add_middleware(RequestGuard, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RepositoryGuard, enabled=cfg.enable_repository_api, token=cfg.repository_token)
    if cfg.enable_grpc:  # allowed only with the repository API on (ServeConfig), said once more here
        log.warning("--enable_grpc: the gRPC port (all interfaces) offers KServe's model load/unload calls "
                    "without the token; expose it only on a trusted network")
    logging.getLogger("kserve").addFilter(_client_errors_in_one_line)
    if not cfg.log_requests:  # per-request lines: uvicorn's access log, KServe's timing trace
        for name in ("uvicorn.access", "kserve.trace"):  # (after ModelServer(): it configures logging)
            logging.getLogger(name).disabled = True
    tuning.install_event_loop(loop)
    log.info("tuning: fast_v1=%s keep_heap=%s event_loop=%s per_request_logging=%s jit=%s",
             _on(cfg.fast_v1), _on(heap_kept), loop, _on(cfg.log_requests), _on(cfg.jit))
    log.info("serving %s on http://%s:%d (%s event loop; %d requests in flight at most; repository API %s)",
             [m.name for m in models], cfg.host, cfg.http_port, loop, cfg.in_flight_limit,
             "on (token)" if cfg.enable_repository_api else "off")
    server.start(models)


def _on(flag: bool) -> str:
    return "on" if flag else "off"


_CLIENT_ERROR_HANDLERS = {"invalid_input_handler": 400, "model_not_found_handler": 404}


def _client_errors_in_one_line(record: logging.LogRecord) -> bool:
    """KServe logs every 400/404 at ERROR with the full traceback (~2 KB per bad request: a
    client could flood the log). Those become one WARNING line with the (cut) message; server
    errors keep their tracebacks."""
    status = _CLIENT_ERROR_HANDLERS.get(record.funcName)
    if status is not None and record.exc_info:
        exc = record.exc_info[1]
        record.msg, record.args = "HTTP %d %s: %.200s", (status, type(exc).__name__, exc)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


