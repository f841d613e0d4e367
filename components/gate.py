"""Champion gate: candidate vs the registry's champion on the same test rows."""

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.images import component


@component
def evaluate_and_gate(
    build: Input[Dataset],
    candidate: Input[Model],
    metrics: Output[Metrics],
    candidate_roc: Output[ClassificationMetrics],
    champion_roc: Output[ClassificationMetrics],
    report: Output[HTML],
    decision: Output[Artifact],
    registry_root: str = "",
    model_name: str = "genctr-ctr",
    min_auc_gain: float = 0.001,
    alpha: float = 0.05,
    floor_auc: float = 0.55,
) -> bool:
    """Score candidate and champion on the test split; pass only on a significant AUC gain.

    Passes iff candidate AUC - champion AUC > ``min_auc_gain`` and DeLong's one-sided
    p < ``alpha``; with no champion yet, iff the candidate's AUC >= ``floor_auc``.
    Returns ``passed`` (the pipeline's condition; a single output, see pipelines/).

    Args:
        build: Feature build directory (its test split).
        candidate: The fine-tuned model directory.
        metrics: ``candidate_auc|logloss|gauc`` and ``champion_*`` (when there is one), ``passed``.
        candidate_roc: ROC curve of the candidate.
        champion_roc: ROC curve of the champion on the same rows (empty for a first model).
        report: HTML report with both curves and the decision.
        decision: decision.json (passed, reason, metrics, DeLong result, thresholds).
        registry_root: Model registry root (local path or fsspec URI; '' = $GENCTR_HOME/registry).
        model_name: Registered model name whose champion is the baseline.
        min_auc_gain, alpha, floor_auc: Gate thresholds (genctr GateConfig).
    """
    import os
    import shutil
    import tempfile

    from genctr import workflow
    from genctr.logging_setup import setup_logging
    from genctr.paths import home

    setup_logging()
    gate = {"min_auc_gain": min_auc_gain, "alpha": alpha, "floor_auc": floor_auc}
    with tempfile.TemporaryDirectory(prefix="gate-") as out_dir:  # removed once copied to the artifacts
        result = workflow.evaluate_gate(build.path, candidate.path, registry_root or str(home() / "registry"),
                                        model_name, gate=gate, out_dir=out_dir)
        shutil.copyfile(os.path.join(out_dir, "report.html"), report.path)
        shutil.copyfile(os.path.join(out_dir, "decision.json"), decision.path)
    s = result.summary
    for who, roc_artifact in (("candidate", candidate_roc), ("champion", champion_roc)):
        if s[who] is None:  # first model: no champion
            continue
        for key in ("auc", "logloss", "gauc"):
            metrics.log_metric(f"{who}_{key}", float(s[who][key]))
        roc = s["roc"][who]
        roc_artifact.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    metrics.log_metric("passed", float(s["passed"]))
    decision.metadata.update({"passed": bool(s["passed"]), "reason": s["reason"]})
    return bool(s["passed"])
