"""Registration of a candidate that passed the gate."""

from kfp.dsl import Artifact, Input, Model

from components.images import component


@component
def register_model(
    candidate: Input[Model],
    decision: Input[Artifact],
    registry_root: str = "",
    model_name: str = "genctr-ctr",
    set_champion: bool = False,
    pipeline_run: str = "",
) -> str:
    """Copy the candidate into the registry as the next version; return the version.

    Args:
        candidate: Model directory that passed the gate.
        decision: The gate's decision.json, stored in the version's metadata.
        registry_root: Model registry root (local path or fsspec URI; '' = <storage root>/registry,
            the root from $GENCTR_STORAGE_ROOT or $GENCTR_HOME).
        model_name: Registered model name.
        set_champion: Move the champion pointer now (no canary) instead of after a canary.
        pipeline_run: The KFP run that produced the model (provenance).
    """
    import json

    from genctr import workflow
    from genctr.logging_setup import setup_logging
    from genctr.storage import storage_layout

    setup_logging()
    with open(decision.path) as f:
        metadata = {"gate": json.load(f), "pipeline_run": pipeline_run, "candidate": dict(candidate.metadata)}
    result = workflow.register(candidate.path, registry_root or storage_layout().registry, model_name,
                               metadata=metadata, set_champion=set_champion)
    return str(result.summary["version"])

