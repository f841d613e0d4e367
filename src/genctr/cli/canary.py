"""``genctr canary ...``: drive a deployment with simulated traffic, run one turn of the canary
loop, show a deployment's split, serve the A/B log sink, import clicks. The scheduled version of
``step`` is the canary pipeline (``genctr pipeline run --local --pipeline canary``)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import typer

from genctr.cli.errors import fail
from genctr.config import parse_assignments
from genctr.errors import ConfigError, GenCTRError

canary_app = typer.Typer(help="Canary rollouts: simulate A/B traffic, judge the canary (promote / roll back), status; "
                         "the A/B log sink and click import.",
                         no_args_is_help=True)

TARGET = typer.Option("local", "--target", help="Where the deployment runs: local | kserve.")
DEPLOYMENT = typer.Option("genctr-ctr", help="Deployment / InferenceService name.")
STATE_DIR = typer.Option(None, help="local: directory of the deployment's state file (default $GENCTR_HOME/deploy).")
NAMESPACE = typer.Option("genctr", help="kserve: namespace of the InferenceService.")
KSERVE_ENV = typer.Option("prod", help="kserve: manifest defaults, dev | prod.")
LOG_DIR = typer.Option(None, help="A/B log directory (default $GENCTR_HOME/ab-logs/<deployment>).")


def _target(kind: str, deployment: str, state_dir: Path | None, namespace: str, kserve_env: str) -> Any:
    from genctr.deploy.factory import DeployTarget

    return DeployTarget(kind=kind, name=deployment, namespace=namespace, env=kserve_env,
                        state_dir=str(state_dir) if state_dir else "")


def parse_policy(pairs: list[str] | None) -> dict[str, Any]:
    """``["min_users_per_arm=100", ...]`` -> CanaryPolicy overrides typed like its fields, range-checked."""
    from genctr.monitoring.decision import CanaryPolicy

    out = parse_assignments(CanaryPolicy, pairs, "policy")
    CanaryPolicy.from_dict(out)  # range checks now, with the policy's own messages
    return out


@canary_app.command("simulate")
def simulate_cmd(
    target: str = TARGET,
    deployment: str = DEPLOYMENT,
    state_dir: Path | None = STATE_DIR,
    namespace: str = NAMESPACE,
    kserve_env: str = KSERVE_ENV,
    n_users: int = typer.Option(2_000, help="Synthetic world: users (as the models' training data)."),
    n_items: int = typer.Option(5_000, help="Synthetic world: items."),
    n_cates: int = typer.Option(50, help="Synthetic world: categories."),
    world_seed: int = typer.Option(0, help="Synthetic world: seed of the training data."),
    train_events: int = typer.Option(200_000, help="Events the models were trained on: the world resumes after them."),
    n_requests: int = typer.Option(10_000, help="Ad requests (auctions) to simulate."),
    candidates: int = typer.Option(20, help="Ads scored per request."),
    slots: int = typer.Option(3, help="Ads shown per request."),
    concurrency: int = typer.Option(2, help="Scoring calls in flight at once."),
    seed: int = typer.Option(0, help="Traffic seed (users, candidates, clicks)."),
    srm_skew: float = typer.Option(0.0, help="Share of champion users forced onto the canary (an SRM on purpose)."),
    log_dir: Path | None = LOG_DIR,
    summary: Path | None = typer.Option(None, help="Also write the summary JSON here."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Send simulated ad traffic through the deployment's champion/canary split; append A/B logs."""
    from genctr.data.sources.synthetic import SyntheticConfig
    from genctr.deploy.factory import make_deployer
    from genctr.monitoring.collect import ab_log_dir
    from genctr.simulation import SimulationConfig, simulate_deployment

    try:
        world = SyntheticConfig(n_users=n_users, n_items=n_items, n_cates=n_cates, seed=world_seed)
        cfg = SimulationConfig(n_requests=n_requests, candidates_per_request=candidates, slots=slots,
                               concurrency=concurrency, seed=seed, srm_skew=srm_skew, progress=progress)
        if train_events < 1:
            raise ConfigError(f"--train-events must be positive, got {train_events}")
        deployer = make_deployer(_target(target, deployment, state_dir, namespace, kserve_env))
        logs = ab_log_dir(str(log_dir) if log_dir else "", deployment)
        result = simulate_deployment(deployer, world, train_events, cfg, logs, summary)
    except GenCTRError as exc:
        fail(exc)
    typer.echo(json.dumps(result.to_dict(), indent=2, default=str))


@canary_app.command("step")
def step_cmd(
    log_dir: Path | None = LOG_DIR,
    target: str = TARGET,
    deployment: str = DEPLOYMENT,
    state_dir: Path | None = STATE_DIR,
    namespace: str = NAMESPACE,
    kserve_env: str = KSERVE_ENV,
    registry: str | None = typer.Option(None, help="Registry: path, fsspec URI, mlflow+http://HOST:PORT or "
                                                     "kubeflow-mr://HOST:PORT?storage=URI (default "
                                                     "$GENCTR_HOME/registry); a promotion moves its champion."),
    model_name: str = typer.Option("genctr-ctr", help="Registered model name."),
    since_ts: int | None = typer.Option(None, help="Only traffic at or after this epoch second "
                                                     "(the canary's start)."),
    policy: list[str] | None = typer.Option(None, "--policy", help="Decision policy override key=value "
                                               "(repeatable), e.g. min_users_per_arm=100."),
    out_dir: Path | None = typer.Option(None, help="Reports (default $GENCTR_HOME/canary/<deployment>)."),
    drift: bool = typer.Option(True, "--drift/--no-drift", help="Evidently drift report of the arms."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Decide and report; do not promote or roll back."),
    spark_master: str = typer.Option("local[*]", help="Spark master of the click attribution: local[N], or a "
                                                      "cluster / Spark Connect server sharing this disk."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole outcome as JSON."),
) -> None:
    """One turn of the canary loop: analyse the logs, decide, promote / roll back (unless --dry-run).

    With no canary in progress the decision is CONTINUE (nothing to judge) and nothing changes."""
    from genctr.deploy.factory import make_deployer
    from genctr.monitoring.canary import load_policy, run_canary_step
    from genctr.monitoring.collect import ab_log_dir
    from genctr.paths import home
    from genctr.registry import open_registry

    try:
        where = _target(target, deployment, state_dir, namespace, kserve_env)
        turn = run_canary_step(
            ab_log_dir(str(log_dir) if log_dir else "", deployment), make_deployer(where),
            load_policy(parse_policy(policy)), out_dir or home() / "canary" / deployment,
            registry=open_registry(registry or str(home() / "registry")), model_name=model_name,
            since_ts=since_ts, drift=drift, dry_run=dry_run, target=where.kind, spark_master=spark_master)
    except GenCTRError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(turn.to_dict(), indent=2, allow_nan=False))
        return
    decision, result = turn.decision, turn.result
    typer.echo(f"decision: {decision.action.upper()}{' (dry run)' if dry_run else ''}")
    for reason in decision.reasons:
        typer.echo(f"  - {reason}")
    version = f" (v{result.canary_version})" if result.canary_version is not None else ""
    typer.echo(f"canary: {decision.canary_uri}{version}")
    typer.echo(f"acted: {result.acted}; champion: {result.champion_uri}")
    for name, path in turn.paths.items():
        typer.echo(f"{name}: {path}")


@canary_app.command("sink")
def sink_cmd(
    out: str = typer.Option(..., "--out", help="A/B log directory: local path or fsspec URI "
                            "(s3://<bucket>/ab-logs/<deployment>)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 in a pod)."),
    port: int = typer.Option(8080, help="HTTP port."),
    state_dir: str = typer.Option("", help="Local directory of the write-ahead journal (default <out>/.sink; "
                                           "required when --out is a URI: a persistent volume in a pod)."),
    flush_rows: int = typer.Option(5_000, help="Write a part file once this many rows are buffered ..."),
    flush_seconds: float = typer.Option(30.0, help="... or once the oldest buffered row is this old."),
    max_buffer_rows: int = typer.Option(200_000, help="Rows held while parts cannot be written; beyond it "
                                                      "new events get 503 + Retry-After."),
    pairing_timeout_s: float = typer.Option(60.0, help="A request without its response after this long is "
                                                       "logged as failed (status 504)."),
    dedupe_ttl_s: float = typer.Option(7 * 86_400.0, help="How long seen event ids are remembered."),
    max_body_bytes: int = typer.Option(1 << 20, help="Largest accepted POST body (413 beyond)."),
    max_candidates: int = typer.Option(1_000, help="Most candidates per scoring request."),
    slots: int = typer.Option(3, help="K: ads shown per ad request (the auction's slots)."),
    reserve_price: float = typer.Option(0.0, help="The auction's reserve price."),
    default_randomisation: str = typer.Option("request", help="Unit of calls without the "
                                                               "X-Genctr-Randomisation header: request | user."),
    service: str = typer.Option("", help="Accept only events of this InferenceService ('' = any)."),
    sink_id: str = typer.Option("", help="Name of this sink's part files ('' = an id kept in the journal)."),
    isvc: str = typer.Option("", help="NAMESPACE/NAME: name arms by model URI from this InferenceService's "
                                      "champion/canary annotations (KServe canaryTrafficPercent)."),
    champion_uri: str = typer.Option("", help="Fixed champion model URI (instead of --isvc)."),
    canary_uri: str = typer.Option("", help="Fixed canary model URI (with --champion-uri)."),
) -> None:
    """Serve the A/B log sink: KServe inference-logger CloudEvents on POST /, clicks on POST /clicks,
    /metrics and /healthz; appends requests, impressions and raw_clicks under --out. Runs until
    SIGTERM / Ctrl-C, then writes what it buffers."""
    from genctr.monitoring.sink import SinkConfig, model_map, serve_sink

    try:
        cfg = SinkConfig(out=out, host=host, port=port, state_dir=state_dir, flush_rows=flush_rows,
                         flush_seconds=flush_seconds, max_buffer_rows=max_buffer_rows,
                         pairing_timeout_s=pairing_timeout_s, dedupe_ttl_s=dedupe_ttl_s,
                         max_body_bytes=max_body_bytes, max_candidates=max_candidates, slots=slots,
                         reserve_price=reserve_price, default_randomisation=default_randomisation,
                         service=service, sink_id=sink_id)
        models = model_map(isvc, champion_uri, canary_uri)
    except GenCTRError as exc:
        fail(exc)
    serve_sink(cfg, models)


clicks_app = typer.Typer(help="Raw clicks of the A/B logs: import a click file.", no_args_is_help=True)
canary_app.add_typer(clicks_app, name="clicks")


@clicks_app.command("import")
def clicks_import_cmd(
    file: Path = typer.Argument(..., help="Clicks: .csv, .json (array), .jsonl/.ndjson or .parquet with "
                                          "request_id, item_id, ts (epoch seconds)."),
    out: str = typer.Option(..., "--out", help="A/B log directory (path or fsspec URI); appended to raw_clicks/."),
) -> None:
    """Append a file of clicks to the A/B logs' raw_clicks table (all rows or none; bad rows are named).
    Importing the same file again replaces its part instead of doubling its clicks."""
    from genctr.monitoring.clicks import import_clicks

    try:
        result = import_clicks(file, out)
    except GenCTRError as exc:
        fail(exc)
    typer.echo(json.dumps(result, indent=2))


@canary_app.command("status")
def status_cmd(
    target: str = TARGET,
    deployment: str = DEPLOYMENT,
    state_dir: Path | None = STATE_DIR,
    namespace: str = NAMESPACE,
    kserve_env: str = KSERVE_ENV,
) -> None:
    """The deployment's champion, canary, split, readiness and URLs as JSON."""
    from genctr.deploy.factory import make_deployer

    try:
        status = make_deployer(_target(target, deployment, state_dir, namespace, kserve_env)).status()
    except GenCTRError as exc:
        fail(exc)
    typer.echo(json.dumps(dataclasses.asdict(status), indent=2, default=str))


__all__ = ["canary_app", "clicks_app", "parse_policy"]
