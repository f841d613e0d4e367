"""``genctr serve``: run the KServe predictor locally (the same server a pod runs); ``genctr serve
router``: the user-hash A/B router in front of a champion and a canary URL (:mod:`genctr.serving.router`)."""
from __future__ import annotations

from pathlib import Path

import typer

from genctr.cli.errors import fail
from genctr.errors import GenCTRError

serve_app = typer.Typer(help="Serve a model over HTTP (KServe v1 and v2) with Feast online behaviour sequences; "
                             "`genctr serve router`: the user-hash A/B router.")


@serve_app.callback(invoke_without_command=True)
def serve_cmd(
    ctx: typer.Context,
    model_dir: Path | None = typer.Option(None, help="Model artifact directory (default: the registry's champion)."),
    registry: str | None = typer.Option(None, help="Registry: local path, fsspec URI, mlflow+http://HOST:PORT or "
                                                     "kubeflow-mr://HOST:PORT?storage=URI "
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
    if ctx.invoked_subcommand is not None:
        return  # `genctr serve router ...`
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
    from genctr.registry import open_registry

    reg = open_registry(registry or str(home() / "registry"))
    mv = reg.get(name, version)
    if "://" not in mv.uri:
        return mv.uri
    return str(reg.download(name, mv.version, home() / "serving-cache" / name / str(mv.version)))


@serve_app.command("router")
def router_cmd(
    champion: str = typer.Option("", help="The champion's v1 predict URL, http(s)://HOST/v1/models/NAME:predict "
                                          "(on a cluster: the prev- tag URL of the InferenceService)."),
    canary: str = typer.Option("", help="The canary's v1 predict URL ('' = no canary; on a cluster the latest- "
                                        "tag URL)."),
    percent: int = typer.Option(0, help="Share of users (0..100) on the canary, by a stable hash of the user id."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8090, help="HTTP port."),
    timeout_s: float = typer.Option(10.0, help="Seconds an arm has to answer (else 504)."),
    deploy_state: Path | None = typer.Option(None, help="Follow a local deployment's state file (its arms and "
                                                          "split) instead of --champion/--canary/--percent."),
) -> None:
    """User-sticky A/B: each user's requests go to one arm (a request whose users fall on both arms: 400)."""
    from genctr.serving.router import RouterConfig, serve_router

    try:
        cfg = RouterConfig(champion=champion, canary=canary, percent=percent, host=host, port=port,
                           timeout_s=timeout_s, deploy_state=str(deploy_state) if deploy_state else "")
    except GenCTRError as exc:
        fail(exc)
    serve_router(cfg)


__all__ = ["router_cmd", "serve_app", "serve_cmd"]
