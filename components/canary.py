"""The canary loop as pipeline steps: collect the A/B logs -> analyse and decide -> act.

The analysis and the action read live state (the logs behind an unchanged ``log_dir``, the
deployment's current split): the pipeline turns caching off for all three steps.
"""

from typing import Optional

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components.images import component


@component
def collect_logs(
    log_dir: str,
    logs: Output[Dataset],
    since_ts: int = 0,
    deployment: str = "genctr-ctr",
    policy: Optional[dict] = None,  # noqa: UP045 - KFP reads typing.Optional, not `dict | None`
    attribution_window_s: int = 86400,
    spark_master: str = "local[*]",
) -> str:
    """Read and check the A/B log tables, keep the canary's window, copy them as Parquet.

    A sink's log directory (raw_clicks/) has its clicks credited to impressions first by the Spark
    attribution join. A malformed table fails the step with the DataValidationError's message.

    Args:
        log_dir: Directory (local path or fsspec URI) with requests/, impressions/, clicks/
            ('' = $GENCTR_HOME/ab-logs/<deployment>).
        logs: The windowed tables in the same layout; metadata: counts per arm.
        since_ts: Epoch seconds the canary started; earlier traffic is dropped (0 = keep all).
        deployment: Deployment whose default log directory is read when ``log_dir`` is ''.
        policy: The decision policy (genctr CanaryPolicy fields; None = its defaults): its
            ``duplicates`` says whether a duplicated log row fails the step or is dropped, and
            ``cuped`` whether each user's pre-period totals are written too (pre_period.parquet).
        attribution_window_s: Raw clicks later than this after their impression are not credited.
        spark_master: Spark master of the attribution join: ``local[*]`` (Spark inside the pod), or a
            cluster / Connect server (``spark://``, ``sc://``) whose executors share the step's disk.
    """
    import json

    from genctr.logging_setup import setup_logging
    from genctr.monitoring.canary import load_policy
    from genctr.monitoring.collect import ab_log_dir, collect_to

    setup_logging()
    wanted = load_policy(policy)
    summary = collect_to(ab_log_dir(log_dir, deployment), since_ts, logs.path, duplicates=wanted.duplicates,
                         attribution_window_s=attribution_window_s, pre_period=wanted.cuped,
                         spark_master=spark_master)
    logs.metadata.update(summary["metadata"])
    return json.dumps(summary)


@component
def analyze_canary(
    logs: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    analysis: Output[Artifact],
    target: str = "local",
    deployment: str = "genctr-ctr",
    namespace: str = "genctr",
    kserve_env: str = "prod",
    state_dir: str = "",
    canary_percent: int = 0,
    policy: Optional[dict] = None,  # noqa: UP045 - KFP reads typing.Optional, not `dict | None`
    drift: bool = True,
    randomisation: str = "",
) -> str:
    """Uplift statistics, SRM, guardrails and drift of the running canary; return the action.

    Returns ``promote`` | ``rollback`` | ``continue`` (also ``continue`` when the deployment
    has no canary in progress: nothing to judge). A single ``Output`` parameter, because
    kfp.local resolves a ``dsl.If`` only on that.

    Args:
        logs: The collected A/B log tables.
        metrics: CTR/RPM uplift with CI bounds, SRM p-value, users and impressions per arm.
        report: HTML with the decision, its reasons, the uplift plot and the drift report.
        analysis: Directory: decision.json (genctr.monitoring.canary_record; read by the act
            step), analysis.json, arms.csv, plots, drift_arms.html.
        target: local | kserve: where the deployment runs (its split is read from there).
        deployment: Deployment / InferenceService name.
        namespace: Kubernetes namespace (kserve).
        kserve_env: Manifest defaults for kserve: dev | prod.
        state_dir: local: directory of the deployment's state file ('' = $GENCTR_HOME/deploy).
        canary_percent: The split the logs were produced under (0 = the deployment's current one).
        policy: The decision policy: genctr CanaryPolicy fields (thresholds, guardrails,
            ``duplicates``); fields left out, or None, take CanaryPolicy's defaults. Validated here.
        drift: Also write an Evidently drift report (canary vs champion impressions).
        randomisation: The A/B design: user (the user-hash router; kserve: its split is set on
            every rollout step) | request (Knative's per-request split) | '' (local: as recorded,
            user when new; kserve: request).
    """
    import os
    import shutil

    from genctr.deploy.factory import DeployTarget, make_deployer
    from genctr.logging_setup import setup_logging
    from genctr.monitoring.canary import judge, load_policy, run_page_metrics
    from genctr.monitoring.collect import read_collected, read_pre_period

    setup_logging()
    where = DeployTarget(kind=target, name=deployment, namespace=namespace, env=kserve_env, state_dir=state_dir,
                         randomisation=randomisation)
    decision = judge(read_collected(logs.path), make_deployer(where).status(), load_policy(policy), analysis.path,
                     target=target, canary_percent=canary_percent, drift=drift, pre_period=read_pre_period(logs.path))
    shutil.move(os.path.join(analysis.path, "report.html"), report.path)  # the page embeds the rest
    for key, value in run_page_metrics(decision).items():
        metrics.log_metric(key, value)
    analysis.metadata.update({"action": decision.action, "reasons": decision.reasons,
                              "canary_uri": decision.canary_uri})
    return decision.action


@component
def act_on_canary(
    analysis: Input[Artifact],
    registry_root: str = "",
    model_name: str = "genctr-ctr",
    target: str = "local",
    deployment: str = "genctr-ctr",
    namespace: str = "genctr",
    kserve_env: str = "prod",
    state_dir: str = "",
    dry_run: bool = False,
    randomisation: str = "",
) -> str:
    """Promote or roll back the judged canary; on promotion move the registry's champion too.

    Refuses to act when the deployment's canary is no longer the one that was analysed.
    Returns the result as JSON (genctr CanaryResult: action, acted, dry_run, deployment,
    canary_uri, canary_version, champion_uri, registry_champion).

    Args:
        analysis: The analyse step's directory (its decision.json).
        registry_root: Model registry root ('' = $GENCTR_HOME/registry).
        model_name: Registered model name whose champion pointer follows a promotion.
        target: local | kserve.
        deployment: Deployment / InferenceService name.
        namespace: Kubernetes namespace (kserve).
        kserve_env: Manifest defaults for kserve: dev | prod.
        state_dir: local: directory of the deployment's state file ('' = $GENCTR_HOME/deploy).
        dry_run: Log what would be done; change nothing.
        randomisation: The A/B design: user (the user-hash router; kserve: its split is set on
            every rollout step) | request (Knative's per-request split) | '' (local: as recorded,
            user when new; kserve: request).
    """
    import json

    from genctr.deploy.factory import DeployTarget, make_deployer
    from genctr.logging_setup import setup_logging
    from genctr.monitoring.canary import act
    from genctr.monitoring.canary_record import read_decision
    from genctr.paths import home
    from genctr.registry import open_registry

    setup_logging()
    where = DeployTarget(kind=target, name=deployment, namespace=namespace, env=kserve_env, state_dir=state_dir,
                         randomisation=randomisation)
    result = act(read_decision(analysis.path), make_deployer(where),
                 registry=open_registry(registry_root or str(home() / "registry")), model_name=model_name,
                 dry_run=dry_run)
    return json.dumps(result.to_dict())
