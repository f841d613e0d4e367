"""Deployment of a registered model: champion on the first run, canary afterwards."""

from kfp.dsl import Artifact, Input, Markdown, Output

from components.images import component


@component
def deploy_model(
    feast: Input[Artifact],
    summary: Output[Markdown],
    version: str,
    canary_percent: int = 10,
    registry_root: str = "",
    model_name: str = "genctr-ctr",
    target: str = "local",
    deployment: str = "genctr-ctr",
    namespace: str = "genctr",
    kserve_env: str = "prod",
    randomisation: str = "",
) -> str:
    """Serve the registered ``version``: the first model as champion, later ones as a canary.

    Args:
        feast: The materialised Feast repo (the local server reads its online store).
        summary: What was rolled out, as Markdown for the run page.
        version: Registered version (the register step's output).
        canary_percent: Traffic share of a new canary (1..99).
        registry_root: Model registry root ('' = <storage root>/registry, the root from
            $GENCTR_STORAGE_ROOT or $GENCTR_HOME).
        model_name: Registered model name.
        target: local (ModelServer on this machine) | kserve (InferenceService, Knative mode).
        deployment: Deployment / InferenceService name.
        namespace: Kubernetes namespace (kserve).
        kserve_env: Manifest defaults for kserve: dev | prod.
        randomisation: The A/B design: user (the user-hash router; kserve: its split is set on
            every rollout step) | request (Knative's per-request split) | '' (local: as recorded,
            user when new; kserve: request).
    """
    import json

    from genctr import workflow
    from genctr.deploy.factory import DeployTarget
    from genctr.logging_setup import setup_logging
    from genctr.storage import storage_layout

    setup_logging()
    result = workflow.deploy_model(
        registry_root or storage_layout().registry, model_name, int(version), canary_percent,
        DeployTarget(kind=target, name=deployment, namespace=namespace, env=kserve_env, feast_repo=feast.path,
                     randomisation=randomisation))
    with open(summary.path, "w") as f:
        f.write(f"# Deployment `{deployment}` ({target})\n\n```json\n{json.dumps(result.summary, indent=2)}\n```\n")
    return json.dumps(result.summary)
