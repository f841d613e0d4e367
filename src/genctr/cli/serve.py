"""``genctr serve``: run the KServe predictor locally (the same server a pod runs)."""
from __future__ import annotations

from pathlib import Path

import typer

from genctr.cli.errors import fail
from genctr.errors import GenCTRError


def serve_cmd(
    model_dir: Path | None = typer.Option(None, help="Model artifact directory (default: the registry's champion)."),
    registry: str | None = typer.Option(None, help="Registry root, local path or fsspec URI "
                                                     "(default $GENCTR_HOME/registry)."),
    name: str = typer.Option("ctr", help="Registered model name (with --registry)."),
    version: int | None = typer.Option(None, help="Registered version (default: the champion)."),
    feast_repo: Path | None = typer.Option(None, help="Directory with the serving feature_store.yaml "
                                                         "(a `features materialize` work dir); none = "
                                                         "requests carry their histories."),
    online: str = typer.Option("", help="Online store override: '' (as in the file) | sqlite | redis."),
    redis_url: str = typer.Option("", help="Redis host:port[,password=...] with --online redis."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8080, help="HTTP port."),
    model_name: str = typer.Option("ctr", help="URL name: /v1/models/<name>:predict."),
    max_candidates: int = typer.Option(1000, help="Most candidates per request (HTTP 400 beyond)."),
    torch_threads: int = typer.Option(1, help="Intra-op threads of one forward pass."),
    log_requests: bool = typer.Option(False, help="Access log with per-request latency."),
    max_in_flight: int = typer.Option(0, help="Inference requests worked on at once; more get 503 + Retry-After "
                                             "(0: 4 per forward thread)."),
) -> None:
    """Serve a model over HTTP (KServe v1 and v2) with Feast online behaviour sequences."""
    from genctr.serving.__main__ import main as serving_main

    try:
        model = str(model_dir) if model_dir else _champion_dir(registry, name, version)
    except GenCTRError as exc:
        fail(exc)
    argv = ["--model_dir", model, "--model_name", model_name, "--host", host, "--http_port", str(port),
            "--max_in_flight", str(max_in_flight),
            "--max_candidates", str(max_candidates), "--torch_threads", str(torch_threads),
            "--log_requests", str(log_requests).lower()]
    if feast_repo:
        argv += ["--feast_repo", str(feast_repo), "--feast_online", online]
        if redis_url:
            argv += ["--redis_url", redis_url]
    raise typer.Exit(code=serving_main(argv))


def _champion_dir(registry: str | None, name: str, version: int | None) -> str:
    """A local directory of the registered version (downloaded first when the registry is remote)."""
    from genctr.paths import home
    from genctr.registry import ModelRegistry

    reg = ModelRegistry(registry or str(home() / "registry"))
    mv = reg.get(name, version)
    if "://" not in mv.uri:
        return mv.uri
    return str(reg.download(name, mv.version, home() / "serving-cache" / name / str(mv.version)))


__all__ = ["serve_cmd"]
