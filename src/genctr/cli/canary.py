"""``genctr canary ...``: drive a deployment with simulated traffic, run one turn of the canary
loop, show a deployment's split. The scheduled version of ``step`` is the canary pipeline
(``genctr pipeline run --local --pipeline canary``)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import typer

from genctr.cli.errors import fail
from genctr.config import parse_assignments
from genctr.errors import ConfigError, GenCTRError

canary_app = typer.Typer(help="Canary rollouts: simulate A/B traffic, judge the canary (promote / roll back), status.",
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
    registry: str | None = typer.Option(None, help="Registry root, path or fsspec URI (default "
                                                     "$GENCTR_HOME/registry); a promotion moves its champion."),
    model_name: str = typer.Option("genctr-ctr", help="Registered model name."),
    since_ts: int | None = typer.Option(None, help="Only traffic at or after this epoch second "
                                                     "(the canary's start)."),
    policy: list[str] | None = typer.Option(None, "--policy", help="Decision policy override key=value "
                                               "(repeatable), e.g. min_users_per_arm=100."),
    out_dir: Path | None = typer.Option(None, help="Reports (default $GENCTR_HOME/canary/<deployment>)."),
    drift: bool = typer.Option(True, "--drift/--no-drift", help="Evidently drift report of the arms."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Decide and report; do not promote or roll back."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole outcome as JSON."),
) -> None:
    """One turn of the canary loop: analyse the logs, decide, promote / roll back (unless --dry-run).

    With no canary in progress the decision is CONTINUE (nothing to judge) and nothing changes."""
    from genctr.deploy.factory import make_deployer
    from genctr.monitoring.canary import load_policy, run_canary_step
    from genctr.monitoring.collect import ab_log_dir
    from genctr.paths import home
    from genctr.registry import ModelRegistry

    try:
        where = _target(target, deployment, state_dir, namespace, kserve_env)
        turn = run_canary_step(
            ab_log_dir(str(log_dir) if log_dir else "", deployment), make_deployer(where),
            load_policy(parse_policy(policy)), out_dir or home() / "canary" / deployment,
            registry=ModelRegistry(registry or str(home() / "registry")), model_name=model_name,
            since_ts=since_ts, drift=drift, dry_run=dry_run, target=where.kind)
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


__all__ = ["canary_app", "parse_policy"]
