"""The canary loop as pipeline steps: collect the A/B logs -> analyse and decide -> act.

The analysis and the action read live state (the logs behind an unchanged ``log_dir``, the
deployment's current split): the pipeline turns caching off for all three steps.
"""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components.images import component


@component
def collect_logs(
    log_dir: str,
    logs: Output[Dataset],
    since_ts: int = 0,
    deployment: str = "genctr-ctr",
) -> str:
    """Read and check the A/B log tables, keep the canary's window, copy them as Parquet.

    A malformed table fails the step with the DataValidationError's message (table, column).

    Args:
        log_dir: Directory (local path or fsspec URI) with requests/, impressions/, clicks/
            ('' = $GENCTR_HOME/ab-logs/<deployment>).
        logs: The windowed tables in the same layout; metadata: counts per arm.
        since_ts: Epoch seconds the canary started; earlier traffic is dropped (0 = keep all).
        deployment: Deployment whose default log directory is read when ``log_dir`` is ''.
    """
    import json

    from genctr import workflow
    from genctr.logging_setup import setup_logging

    setup_logging()
    result = workflow.collect_canary_logs(workflow.ab_log_dir(log_dir, deployment), since_ts, logs.path)
    logs.metadata.update(result.summary["metadata"])
    return json.dumps(result.summary)


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
    alpha: float = 0.05,
    min_users_per_arm: int = 200,
    min_impressions_per_arm: int = 2_000,
    ctr_uplift_threshold: float = 0.0,
    rpm_must_not_be_worse: bool = True,
    srm_alpha: float = 0.001,
    max_error_rate: float = 0.01,
    max_p99_latency_ms: float = 200.0,
    drift: bool = True,
) -> str:
    """Uplift statistics, SRM, guardrails and drift of the running canary; return the action.

    Returns ``promote`` | ``rollback`` | ``continue`` (also ``continue`` when the deployment
    has no canary in progress: nothing to judge). A single ``Output`` parameter, because
    kfp.local resolves a ``dsl.If`` only on that.

    Args:
        logs: The collected A/B log tables.
        metrics: CTR/RPM uplift with CI bounds, SRM p-value, users and impressions per arm.
        report: HTML with the decision, its reasons, the uplift plot and the drift report.
        analysis: Directory: decision.json (read by the act step), analysis.json, arms.csv,
            plots, drift_arms.html.
        target: local | kserve: where the deployment runs (its split is read from there).
        deployment: Deployment / InferenceService name.
        namespace: Kubernetes namespace (kserve).
        kserve_env: Manifest defaults for kserve: dev | prod.
        state_dir: local: directory of the deployment's state file ('' = $GENCTR_HOME/deploy).
        canary_percent: The split the logs were produced under (0 = the deployment's current one).
        alpha, min_users_per_arm, min_impressions_per_arm, ctr_uplift_threshold, rpm_must_not_be_worse,
            srm_alpha, max_error_rate, max_p99_latency_ms: The decision policy (genctr CanaryPolicy).
        drift: Also write an Evidently drift report (canary vs champion impressions).
    """
    import os
    import shutil

    from genctr import workflow
    from genctr.deploy.factory import DeployTarget
    from genctr.logging_setup import setup_logging

    setup_logging()
    policy = {"alpha": alpha, "min_users_per_arm": min_users_per_arm,
              "min_impressions_per_arm": min_impressions_per_arm, "ctr_uplift_threshold": ctr_uplift_threshold,
              "rpm_must_not_be_worse": rpm_must_not_be_worse, "srm_alpha": srm_alpha,
              "max_error_rate": max_error_rate, "max_p99_latency_ms": max_p99_latency_ms}
    target_ = DeployTarget(kind=target, name=deployment, namespace=namespace, env=kserve_env, state_dir=state_dir)
    result = workflow.analyze_canary(logs.path, policy, analysis.path, target_, canary_percent=canary_percent,
                                     drift=drift)
    shutil.move(os.path.join(analysis.path, "report.html"), report.path)  # the page embeds the rest
    for key, value in result.summary["metrics"].items():
        metrics.log_metric(key, value)
    s = result.summary
    analysis.metadata.update({"action": s["action"], "reasons": s["reasons"], "canary_uri": s["canary_uri"]})
    return str(s["action"])


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
) -> str:
    """Promote or roll back the judged canary; on promotion move the registry's champion too.

    Refuses to act when the deployment's canary is no longer the one that was analysed.
    Returns a JSON summary (action, acted, canary and champion URIs, registry champion).

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
    """
    import json

    from genctr import workflow
    from genctr.deploy.factory import DeployTarget
    from genctr.logging_setup import setup_logging
    from genctr.paths import home

    setup_logging()
    target_ = DeployTarget(kind=target, name=deployment, namespace=namespace, env=kserve_env, state_dir=state_dir)
    result = workflow.act_on_canary(analysis.path, registry_root or str(home() / "registry"), model_name, target_,
                                    dry_run=dry_run)
    return json.dumps(result.summary)
