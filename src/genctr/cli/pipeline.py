"""``genctr pipeline ...``: compile, run locally, submit and schedule the training or canary pipeline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from genctr.cli.errors import fail
from genctr.errors import GenCTRError

pipeline_app = typer.Typer(help="Kubeflow pipelines (training, canary): compile, run locally (kfp.local), submit, "
                                "schedule.", no_args_is_help=True)

PARAM_HELP = "Pipeline parameter override key=value (repeatable); `genctr pipeline params` lists them."
PIPELINE = typer.Option("training", "--pipeline", help="Which pipeline: training | canary.")


def _platform(image: str | None, train_image: str | None, node_selector: list[str] | None,
              tolerations: list[str] | None, storage_secret: str | None) -> Any:
    """Placement from GENCTR_* variables, overridden by the flags that were given."""
    from pipelines.placement import PlatformConfig, Toleration, parse_labels

    return PlatformConfig.from_env(
        image=image, train_image=train_image, storage_secret=storage_secret,
        gpu_node_selector=parse_labels(node_selector) if node_selector else None,
        gpu_tolerations=tuple(Toleration.parse(t) for t in tolerations) if tolerations else None)


IMAGE = typer.Option(None, help="CPU component image (default $GENCTR_IMAGE or ghcr.io/genctr/genctr:<version>).")
TRAIN_IMAGE = typer.Option(None, help="GPU training image (default $GENCTR_TRAIN_IMAGE or the -cuda tag).")
NODE_SELECTOR = typer.Option(None, "--gpu-node-selector",
                             help="label=value for the training pods' nodeSelector (repeatable; "
                                  "default $GENCTR_GPU_NODE_SELECTOR).")
TOLERATION = typer.Option(None, "--gpu-toleration",
                          help="key[=value][:effect] toleration for the training pods (repeatable; "
                               "default $GENCTR_GPU_TOLERATIONS).")
STORAGE_SECRET = typer.Option(None, help="Secret with object-store credentials for the registry steps "
                                         "(default $GENCTR_STORAGE_SECRET; see manifests/storage-secret.yaml).")

# how to reach the Kubeflow Pipelines API (genctr.orchestration.connection.KFPConnection)
HOST = typer.Option(..., help="Kubeflow Pipelines API URL, e.g. https://kubeflow.example.com/pipeline or "
                              "http://localhost:8080 (a port-forward of ml-pipeline-ui).")
NAMESPACE = typer.Option(None, help="Kubeflow profile namespace (multi-user installs).")
TOKEN = typer.Option(None, help="Bearer token for the API (prefer --token-file: a flag is visible to `ps`).")
TOKEN_FILE = typer.Option(None, help="File holding the bearer token, e.g. a projected ServiceAccount token.")
COOKIES = typer.Option(None, help="Cookie header for an auth proxy, e.g. 'authservice_session=...'.")
SA_TOKEN = typer.Option(None, "--sa-token-path",
                        help="In a pod: the projected ServiceAccount token used when no --token/--token-file/"
                             "--cookies is given (default $KF_PIPELINES_SA_TOKEN_PATH or "
                             "/var/run/secrets/kubeflow/pipelines/token, when it exists).")


def _connection(host: str, namespace: str | None, token: str | None, token_file: Path | None,
                cookies: str | None, sa_token_path: Path | None) -> Any:
    from genctr.orchestration.connection import KFPConnection

    return KFPConnection(host=host, namespace=namespace, token=token,
                         token_file=str(token_file) if token_file else None, cookies=cookies,
                         sa_token_path=str(sa_token_path) if sa_token_path else None)


@pipeline_app.command("params")
def params_cmd(pipeline: str = PIPELINE) -> None:
    """List the pipeline's parameters with their types and defaults."""
    from genctr.orchestration.catalog import pipeline_parameters

    try:
        params = pipeline_parameters(pipeline)
    except GenCTRError as exc:
        fail(exc)
    for name, (kind, default) in params.items():
        typer.echo(f"{name:24s} {kind:8s} {default!r}")


@pipeline_app.command("compile")
def compile_cmd(
    out: Path | None = typer.Option(None, help="Output YAML path (default <pipeline>_pipeline.yaml)."),
    pipeline: str = PIPELINE,
    image: str | None = IMAGE,
    train_image: str | None = TRAIN_IMAGE,
    gpu_node_selector: list[str] | None = NODE_SELECTOR,
    gpu_toleration: list[str] | None = TOLERATION,
    storage_secret: str | None = STORAGE_SECRET,
    profile: str = typer.Option("local", help="Run-form defaults: local (laptop) | cluster (kserve, Redis, "
                                             "storage_root required; genctr.orchestration.profiles)."),
) -> None:
    """Compile a pipeline to a YAML package for Kubeflow Pipelines."""
    from genctr.orchestration.catalog import compile_pipeline

    try:
        platform = _platform(image, train_image, gpu_node_selector, gpu_toleration, storage_secret)
        typer.echo(str(compile_pipeline(out or Path(f"{pipeline}_pipeline.yaml"), platform, pipeline, profile)))
    except GenCTRError as exc:
        fail(exc)


@pipeline_app.command("run")
def run_cmd(
    local: bool = typer.Option(False, "--local", help="Run here through kfp.local (required: clusters use `submit`)."),
    pipeline: str = PIPELINE,
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    pipeline_root: Path | None = typer.Option(None, help="Where runs write (default $GENCTR_HOME/pipeline-runs)."),
    cache: bool = typer.Option(False, "--cache/--no-cache",
                               help="Reuse outputs of identical earlier local tasks (steps reading live state "
                                    "always run)."),
    executor_log: Path | None = typer.Option(None, help="File for kfp.local's output, every step's logs "
                                                        "(default PIPELINE_ROOT/logs/<pipeline>-<time>.log)."),
) -> None:
    """Run a pipeline end to end on this machine (the same pipeline function a cluster runs).

    The steps' own output goes to the executor log file, whose path is printed; stdout carries the result.
    """
    from genctr.orchestration.catalog import parse_params
    from genctr.orchestration.local import run_local
    from genctr.paths import home

    if not local:
        fail(GenCTRError("only --local runs start here; use `genctr pipeline submit --host URL` for a cluster"))
    try:
        run = run_local(parse_params(param, pipeline), pipeline_root or home() / "pipeline-runs", enable_caching=cache,
                        pipeline=pipeline, log_file=executor_log)
    except GenCTRError as exc:
        fail(exc)
    typer.echo(f"run directory: {run.run_dir}")
    typer.echo(f"executor log: {run.log_path}")
    if pipeline == "canary":
        _echo_canary(run)
        return
    decision = run.decision or {}
    typer.echo(f"gate: {'PASSED' if decision.get('passed') else 'FAILED'}: {decision.get('reason', '?')}")
    typer.echo(f"gate report: {run.gate_report}")
    typer.echo(f"registered version: {run.registered_version or '- (not registered)'}")


def _echo_canary(run: Any) -> None:
    decision = run.canary_decision or {}
    typer.echo(f"canary decision: {str(run.canary_action).upper()}")
    for reason in decision.get("reasons", []):
        typer.echo(f"  - {reason}")
    typer.echo(f"canary report: {run.canary_report}")
    acted = run.canary_acted
    if acted is None:
        typer.echo("acted: - (nothing to do)")
    else:
        typer.echo(f"acted: {acted['acted']}{' (dry run)' if acted['dry_run'] else ''}; "
                   f"champion {acted['champion_uri']}")


@pipeline_app.command("submit")
def submit_cmd(
    host: str = HOST,
    pipeline: str = PIPELINE,
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    experiment: str = typer.Option("genctr", help="Experiment to file the run under."),
    run_name: str | None = typer.Option(None, help="Run name shown in the UI."),
    namespace: str | None = NAMESPACE,
    token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE,
    cookies: str | None = COOKIES,
    sa_token_path: Path | None = SA_TOKEN,
    cache: bool | None = typer.Option(None, "--cache/--no-cache",
                                         help="Force caching on/off for every step (default: per step)."),
    service_account: str | None = typer.Option(None, help="Service account of the run's pods "
                                                             "(manifests/rbac-pipeline-runner.yaml)."),
    package: Path | None = typer.Option(None, help="A compiled YAML to submit instead of compiling now."),
) -> None:
    """Start one run of a pipeline on a Kubeflow Pipelines cluster."""
    from genctr.orchestration.catalog import parse_params
    from genctr.orchestration.remote import submit

    try:
        conn = _connection(host, namespace, token, token_file, cookies, sa_token_path)
        run_id = submit(conn, parse_params(param, pipeline), experiment, run_name=run_name,
                        enable_caching=cache, service_account=service_account, package=package, pipeline=pipeline)
    except GenCTRError as exc:
        fail(exc)
    typer.echo(json.dumps({"run_id": run_id, "host": host}))


@pipeline_app.command("schedule")
def schedule_cmd(
    host: str = HOST,
    pipeline: str | None = typer.Option(None, "--pipeline",
                                           help="Which pipeline: training | canary (default: the file's "
                                                "`pipeline:` key, else training)."),
    cron: str | None = typer.Option(None, help="6-field cron, seconds first: '0 0 3 * * *' = daily 03:00."),
    name: str | None = typer.Option(None, help="Recurring run name (default: the file's `name:`, else "
                                                  "<pipeline name>-recurring, e.g. genctr-training-recurring)."),
    file: Path | None = typer.Option(None, "--file", "-f",
                                        help="Recurring-run definition YAML (manifests/recurring-run.yaml, "
                                             "recurring-run-canary.yaml); flags override it."),
    param: list[str] | None = typer.Option(None, "--param", "-p", help=PARAM_HELP),
    experiment: str | None = typer.Option(None, help="Experiment (default genctr)."),
    namespace: str | None = NAMESPACE,
    token: str | None = TOKEN,
    token_file: Path | None = TOKEN_FILE,
    cookies: str | None = COOKIES,
    sa_token_path: Path | None = SA_TOKEN,
    cache: bool | None = typer.Option(None, "--cache/--no-cache",
                                         help="Caching for scheduled runs (default off: new data, same URI)."),
    max_concurrency: int | None = typer.Option(None, help="Runs allowed at once (default 1)."),
    service_account: str | None = typer.Option(None, help="Service account of the runs' pods."),
    package: Path | None = typer.Option(None, help="A compiled YAML to schedule instead of compiling now."),
) -> None:
    """Create a recurring run of a pipeline (Kubeflow cron: 6 fields, seconds first)."""
    from genctr.orchestration.catalog import parse_params
    from genctr.orchestration.remote import default_schedule_name, load_schedule_file, schedule

    try:
        spec: dict[str, Any] = load_schedule_file(file, pipeline) if file else {"pipeline": pipeline or "training"}
        flags = {"cron": cron, "name": name, "experiment": experiment, "enable_caching": cache,
                 "max_concurrency": max_concurrency, "service_account": service_account}
        spec.update({k: v for k, v in flags.items() if v is not None})
        spec["params"] = {**spec.get("params", {}), **parse_params(param, spec["pipeline"])}
        if not spec.get("cron"):
            raise GenCTRError("give --cron (6 fields, seconds first: '0 0 3 * * *' = daily 03:00) or a --file "
                              "that sets it")
        conn = _connection(host, namespace, token, token_file, cookies, sa_token_path)
        job_name = spec.pop("name", None) or default_schedule_name(spec["pipeline"])
        job_id = schedule(conn, spec.pop("cron"), spec.pop("params"), job_name, package=package, **spec)
    except GenCTRError as exc:
        fail(exc)
    typer.echo(json.dumps({"recurring_run_id": job_id, "name": job_name, "host": host}))


__all__ = ["pipeline_app"]
