"""``python -m genctr.serving``: parse flags, load the model(s) once, start KServe's ModelServer.

    python -m genctr.serving --model_dir MODEL --feast_repo FEAST_WORK_DIR --http_port 8080
    python -m genctr.serving --deploy_state STATE.json --feast_repo ...   # LocalDeployer's server

The flags are genctr's own (KServe's import-time argument parsing is bypassed, see
``genctr.serving._kserve``); the server ones keep KServe's names. Feast flags default to
environment variables so a pod spec can set them
(``GENCTR_FEAST_REPO``, ``GENCTR_FEAST_CONFIG``, ``GENCTR_FEAST_ONLINE``,
``GENCTR_FEAST_REGISTRY``, ``GENCTR_REDIS_CONNECTION_STRING``). The model-repository API
(load/unload over HTTP) is off unless ``--enable_repository_api true``; its token comes from
``--repository_token_file`` or ``GENCTR_REPOSITORY_TOKEN`` (never from the command line, where
``ps`` shows it).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from genctr.errors import ConfigError, GenCTRError
from genctr.serving import payload_logger
from genctr.serving.request import Limits
from genctr.serving.server import DEFAULT_MAX_BODY_BYTES, IN_FLIGHT_PER_FORWARD_THREAD, ServeConfig, serve

TOKEN_ENV = "GENCTR_REPOSITORY_TOKEN"


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m genctr.serving", allow_abbrev=False,
                                description="Serve a genctr CTR model with KServe (Feast online features).")
    p.add_argument("--model_name", default="ctr", help="URL name: /v1/models/<name>:predict, /v2/models/<name>/infer.")
    p.add_argument("--host", default=env("GENCTR_HOST", "127.0.0.1"),
                   help="Interface to listen on (127.0.0.1 = this machine only; a pod passes 0.0.0.0).")
    p.add_argument("--http_port", type=int, default=8080)
    p.add_argument("--grpc_port", type=int, default=8081)
    p.add_argument("--enable_grpc", type=_bool, default=False, help="Also serve v2 over gRPC on --grpc_port.")
    p.add_argument("--model_dir", default=env("GENCTR_MODEL_DIR", ""),
                   help="Model artifact directory (KServe mounts storageUri at /mnt/models).")
    p.add_argument("--deploy_state", default="", help="LocalDeployer state file: serve champion + canary.")
    p.add_argument("--feast_repo", default=env("GENCTR_FEAST_REPO", ""),
                   help="Directory with the feature_store.yaml ('' = no feature store).")
    p.add_argument("--feast_config", default=env("GENCTR_FEAST_CONFIG", "feature_store.yaml"),
                   help="feature_store.yaml file name inside --feast_repo (or an absolute path).")
    p.add_argument("--feast_online", default=env("GENCTR_FEAST_ONLINE", ""), choices=["", "sqlite", "redis"],
                   help="Override the online store type ('' = as in the config file).")
    p.add_argument("--redis_url", default=env("GENCTR_REDIS_CONNECTION_STRING", ""),
                   help="Redis connection string host:port[,password=...] for --feast_online redis.")
    p.add_argument("--feast_registry", default=env("GENCTR_FEAST_REGISTRY", ""),
                   help="Override the Feast registry path/URI (e.g. s3://bucket/registry.db).")
    p.add_argument("--max_candidates", type=int, default=int(env("GENCTR_MAX_CANDIDATES", "1000")),
                   help="Most candidates scored per request (HTTP 400 beyond).")
    p.add_argument("--max_history", type=int, default=2000, help="Longest request-supplied history.")
    p.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help="Largest request body (HTTP 413 beyond).")
    p.add_argument("--torch_threads", type=int, default=int(env("GENCTR_TORCH_THREADS", "1")),
                   help="Intra-op threads of one forward pass.")
    p.add_argument("--forward_threads", type=int, default=int(env("GENCTR_FORWARD_THREADS", "2")),
                   help="Forward passes in flight at once on worker threads (0 = on the event loop).")
    p.add_argument("--jit", type=_bool, default=True,
                   help="TorchScript-freeze the model at load (verified against eager; falls back if it differs).")
    p.add_argument("--device", default="cpu")
    p.add_argument("--log_requests", type=_bool, default=False, help="Access log + per-request latency log.")
    p.add_argument("--event_loop", "--event-loop", dest="event_loop", default="auto",
                   choices=["auto", "uvloop", "asyncio"],
                   help="Event loop (auto: uvloop if installed, asyncio with --enable_grpc).")
    p.add_argument("--keep_heap", type=_bool, default=True,
                   help="Fixed glibc malloc thresholds so freed tensor buffers stay in the heap (no page faults "
                        "per forward pass); ignored where MALLOC_*_/GLIBC_TUNABLES are set.")
    p.add_argument("--fast_v1", type=_bool, default=True,
                   help="Answer POST /v1/models/<name>:predict through KServe's DataPlane without FastAPI's "
                        "routing (same responses; see genctr.serving.tuning).")
    p.add_argument("--enable_repository_api", type=_bool, default=False,
                   help="Serve KServe's POST /v2/repository/models/<name>/load|unload (off: 403), behind "
                        f"'Authorization: Bearer <token>' (token from --repository_token_file or ${TOKEN_ENV}).")
    p.add_argument("--repository_token_file", default="",
                   help="File holding the repository API token (one line, >= 16 characters).")
    p.add_argument("--max_in_flight", type=int, default=int(env("GENCTR_MAX_IN_FLIGHT", "0")),
                   help="Inference requests worked on at once; more get 503 + Retry-After "
                        f"(0 = {IN_FLIGHT_PER_FORWARD_THREAD} x --forward_threads).")
    p.add_argument("--read_timeout_s", type=float, default=10.0,
                   help="A request must arrive completely within this many seconds (else 408, connection closed).")
    p.add_argument("--keep_alive_s", type=int, default=65, help="Idle keep-alive connections closed after this.")
    p.add_argument("--max_connections", type=int, default=1024, help="Open connections at most (503 past it).")
    payload_logger.add_arguments(p)
    return p


def repository_token(args: argparse.Namespace) -> str:
    """The token from ``--repository_token_file``, else ``$GENCTR_REPOSITORY_TOKEN`` ('' if neither)."""
    if args.repository_token_file:
        path = Path(args.repository_token_file)
        try:
            return path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read --repository_token_file {str(path)[:200]}: {exc.__class__.__name__}") \
                from None
    return os.environ.get(TOKEN_ENV, "").strip()


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    from genctr.serving.online import FeastConfig

    feast = None
    if args.feast_repo:
        feast = FeastConfig(repo_path=args.feast_repo, config_file=args.feast_config, online=args.feast_online,
                            redis_url=args.redis_url, registry=args.feast_registry)
    return ServeConfig(
        model_dir=args.model_dir, deploy_state=args.deploy_state, model_name=args.model_name,
        host=args.host, http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=args.enable_grpc, feast=feast,
        limits=Limits(max_candidates=args.max_candidates, max_history=args.max_history),
        max_body_bytes=args.max_body_bytes, torch_threads=args.torch_threads,
        forward_threads=args.forward_threads, jit=args.jit, device=args.device,
        log_requests=args.log_requests, event_loop=args.event_loop, fast_v1=args.fast_v1,
        keep_heap=args.keep_heap, enable_repository_api=args.enable_repository_api,
        repository_token=repository_token(args) if args.enable_repository_api else "",
        max_in_flight=args.max_in_flight, read_timeout_s=args.read_timeout_s, keep_alive_s=args.keep_alive_s,
        max_connections=args.max_connections, payload_logger=payload_logger.config_from_args(args))


def log_like_kserve() -> None:
    """genctr's own lines (model loading, the tuning in effect, warnings) on stderr in KServe's
    format: KServe configures only its own loggers, so without this they would be lost."""
    import logging

    from kserve.logging import KSERVE_LOGGER_DATE_FORMAT, KSERVE_LOGGER_FORMAT

    from genctr.logging_setup import StderrHandler

    handler = StderrHandler()  # sys.stderr at each write: it may be swapped (a test runner) and closed
    handler.setFormatter(logging.Formatter(KSERVE_LOGGER_FORMAT, KSERVE_LOGGER_DATE_FORMAT))
    logger = logging.getLogger("genctr")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        serve(config_from_args(args))
    except GenCTRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    log_like_kserve()  # the process is the server (`genctr serve` has configured logging already)
    sys.exit(main())
