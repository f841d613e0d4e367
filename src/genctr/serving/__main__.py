"""``python -m genctr.serving``: parse flags, load the model(s) once, start KServe's ModelServer.

    python -m genctr.serving --model_dir MODEL --feast_repo FEAST_WORK_DIR --http_port 8080
    python -m genctr.serving --deploy_state STATE.json --feast_repo ...   # LocalDeployer's server

KServe's own flags (``--http_port``, ``--grpc_port``, ``--enable_grpc``, ``--model_name``, ...)
are accepted too. Feast flags default to environment variables so a pod spec can set them
(``GENCTR_FEAST_REPO``, ``GENCTR_FEAST_CONFIG``, ``GENCTR_FEAST_ONLINE``,
``GENCTR_FEAST_REGISTRY``, ``GENCTR_REDIS_CONNECTION_STRING``).
"""
from __future__ import annotations

import argparse
import os
import sys

from genctr.errors import GenCTRError
from genctr.serving.request import Limits
from genctr.serving.server import DEFAULT_MAX_BODY_BYTES, ServeConfig, serve


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parser() -> argparse.ArgumentParser:
    from kserve import model_server

    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m genctr.serving", parents=[model_server.parser],
                                description="Serve a genctr CTR model with KServe (Feast online features).")
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
    p.add_argument("--max_history", type=int, default=1000, help="Longest request-supplied history.")
    p.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help="Largest request body (HTTP 413 beyond).")
    p.add_argument("--torch_threads", type=int, default=int(env("GENCTR_TORCH_THREADS", "1")))
    p.add_argument("--device", default="cpu")
    p.add_argument("--log_requests", type=_bool, default=False, help="Access log + per-request latency log.")
    p.set_defaults(enable_grpc=False, model_name="ctr")  # KServe: gRPC on (8081), name "model"
    return p


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    from genctr.serving.online import FeastConfig

    feast = None
    if args.feast_repo:
        feast = FeastConfig(repo_path=args.feast_repo, config_file=args.feast_config, online=args.feast_online,
                            redis_url=args.redis_url, registry=args.feast_registry)
    return ServeConfig(
        model_dir=args.model_dir, deploy_state=args.deploy_state, model_name=args.model_name,
        http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=args.enable_grpc, feast=feast,
        limits=Limits(max_candidates=args.max_candidates, max_history=args.max_history),
        max_body_bytes=args.max_body_bytes, torch_threads=args.torch_threads, device=args.device,
        log_requests=args.log_requests)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        serve(config_from_args(args))
    except GenCTRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
