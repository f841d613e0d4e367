"""The training pipeline end to end through kfp.local (SubprocessRunner, this interpreter).

The same pipeline function a cluster runs: every step is a subprocess running the
component's shipped source, artifacts live under a temporary pipeline root. Tests skip
until the library functions they need exist, and say which.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from genctr import workflow
from genctr.orchestration.local import LocalRun, PipelineRunError, run_local
from genctr.registry import ModelRegistry

pytestmark = pytest.mark.slow

FULL = ("export_events", "validate_events", "build_features", "validate_samples", "materialize", "pretrain",
        "finetune", "evaluate_gate", "register")


# Tiny but learnable: the synthetic world's clicks depend on the user's recent behaviour.
TINY = {"data_source": "synthetic", "synthetic_events": 20_000, "synthetic_users": 400, "synthetic_items": 800,
        "max_seq_len": 20, "pretrain_method": "genctr", "backbone": "dnn", "transfer": "share",
        "pretrain_epochs": 1, "finetune_epochs": 1, "batch_size": 512, "seed": 0, "device": "cpu",
        # a step budget (which replaces pretrain_epochs) and half the labels: the run form reaches the loops
        "pretrain_max_steps": 12, "pretrain_batch_size": 128, "pretrain_patience": 0, "label_fraction": 0.5,
        "floor_auc": 0.5, "model_name": "e2e", "promote_without_canary": True, "deploy_target": "none"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """GENCTR_HOME for this module (the steps' subprocesses inherit it)."""
    path = tmp_path_factory.mktemp("genctr-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENCTR_HOME", str(path))
        yield path


def metadata(run: LocalRun, task: str, artifact: str) -> dict[str, Any]:
    return run.outputs[task]["artifacts"][artifact]["artifacts"][0]["metadata"]


def canonical_events(n: int = 500) -> pd.DataFrame:
    t0 = 1_700_000_000
    return pd.DataFrame({"request_id": range(n), "user_id": [i % 50 for i in range(n)],
                         "item_id": [i % 70 for i in range(n)], "category_id": [i % 7 for i in range(n)],
                         "event_time": [t0 + 60 * i for i in range(n)], "clicked": [int(i % 5 == 0) for i in range(n)]})


@pytest.fixture(scope="module")
def tiny(spark_connect: str, home: Path) -> dict[str, Any]:
    """TINY, its feature build on the session's warm Spark Connect server, which shares this
    machine's disk (every run of this module uses the same values: cached steps are reused only
    for identical inputs)."""
    return {**TINY, "spark_master": spark_connect, "spark_build_uri": str(home / "spark-builds")}


@pytest.fixture(scope="module")
def first_run(home: Path, tiny: dict[str, Any]) -> tuple[LocalRun, Path]:
    registry = home / "registry"
    run = run_local({**tiny, "registry_root": str(registry)}, home / "runs", enable_caching=True)
    return run, registry


def test_end_to_end_registers_a_model_with_metrics_and_a_decision(first_run: tuple[LocalRun, Path],
                                                                   home: Path) -> None:
    run, registry = first_run
    decision = run.decision
    assert decision is not None and decision["passed"] is True and decision["champion"] is None
    assert run.registered_version == "1"
    reg = ModelRegistry(registry)
    assert reg.list_versions("e2e") == [1] and reg.champion("e2e") == 1
    assert reg.get("e2e", 1).metadata["gate"]["passed"] is True

    assert {"auc", "logloss", "gauc"} <= set(metadata(run, "finetune", "metrics"))
    pretrained = metadata(run, "pretrain", "metrics")
    assert pretrained["pretrain_steps"] == 12  # the budget, in steps, whatever pretrain_epochs says
    assert "pretrain_heldout_loss" in pretrained
    gate_metrics = metadata(run, "evaluate-and-gate", "metrics")
    assert gate_metrics["candidate_auc"] >= 0.5 and gate_metrics["passed"] == 1.0
    assert metadata(run, "evaluate-and-gate", "candidate_roc")["confidenceMetrics"]
    assert run.gate_report is not None and "<html" in run.gate_report.read_text().lower()
    for task in ("validate-events", "validate-samples"):
        assert run.artifact_path(task, "report_html").is_file(), f"{task} kept no GX report"
    assert (run.artifact_path("finetune", "model") / "model.safetensors").is_file()
    assert (run.artifact_path("pretrain", "pretrained") / "model.safetensors").is_file()
    assert run.artifact_path("materialize-features", "feast_repo").is_dir()
    # the laptop's storage root is $GENCTR_HOME: the Feast registry and the run's build derive from it
    storage = run.outputs["resolve-storage"]["parameterValues"]
    assert storage["root"] == str(home) and storage["registry"] == str(registry)
    assert storage["feast_registry"] == str(home / "feast" / "sqlite" / "registry.db")
    assert (home / "feast" / "sqlite" / "registry.db").is_file()
    assert storage["build"].startswith(str(home / "builds") + "/")
    assert any((Path(storage["build"]) / "feast" / "user_behavior_seq").glob("*.parquet"))


def test_an_identical_candidate_is_rejected_and_the_champion_stays(first_run: tuple[LocalRun, Path],
                                                                  home: Path, tiny: dict[str, Any]) -> None:
    _, registry = first_run
    # Cached data and training steps: the same candidate again; the gate and register never come from cache.
    run = run_local({**tiny, "registry_root": str(registry)}, home / "runs", enable_caching=True)
    decision = run.decision
    assert decision is not None and decision["passed"] is False and decision["champion"] is not None
    assert "register-model" not in run.outputs and run.registered_version is None
    reg = ModelRegistry(registry)
    assert reg.list_versions("e2e") == [1] and reg.champion("e2e") == 1


def test_a_worse_candidate_is_rejected_and_the_champion_stays(first_run: tuple[LocalRun, Path], home: Path,
                                                              tiny: dict[str, Any]) -> None:
    _, registry = first_run
    champion_auc = ModelRegistry(registry).get("e2e", 1).metadata["gate"]["candidate"]["auc"]
    # Same data and pretraining (cached); fine-tuning barely moves from its random init.
    run = run_local({**tiny, "registry_root": str(registry), "finetune_lr": 1e-7}, home / "runs",
                    enable_caching=True)
    decision = run.decision
    assert decision is not None and decision["passed"] is False
    assert decision["candidate"]["auc"] < champion_auc
    assert decision["champion"]["auc"] == pytest.approx(champion_auc)  # the champion, rescored on the same rows
    assert run.registered_version is None
    reg = ModelRegistry(registry)
    assert reg.list_versions("e2e") == [1] and reg.champion("e2e") == 1


def test_bad_data_stops_at_the_gx_step_and_nothing_is_registered(home: Path, tmp_path: Path) -> None:
    events = canonical_events()
    events["clicked"] = 1  # every impression a click: valid schema, implausible click rate
    path = tmp_path / "events_all_clicks.parquet"
    events.to_parquet(path, index=False)
    registry = tmp_path / "registry"
    with pytest.raises(PipelineRunError) as err:
        run_local({"data_source": "events", "data_path": str(path), "registry_root": str(registry),
                   "model_name": "bad"}, tmp_path / "runs")
    exc = err.value
    assert exc.failed_task == "validate-events"
    assert exc.report_path and "click_rate" in Path(exc.report_path).read_text()
    run_dir = Path(exc.run_dir)
    assert not (run_dir / "build-features").exists() and not (run_dir / "register-model").exists()
    assert ModelRegistry(registry).names() == []


def test_a_label_outside_0_1_stops_at_ingest_and_nothing_is_registered(home: Path, tmp_path: Path) -> None:
    events = canonical_events()
    events.loc[3, "clicked"] = 2
    path = tmp_path / "events_label2.csv"
    events.to_csv(path, index=False)
    registry = tmp_path / "registry"
    with pytest.raises(PipelineRunError) as err:
        run_local({"data_source": "events", "data_path": str(path), "registry_root": str(registry),
                   "model_name": "bad"}, tmp_path / "runs")
    assert err.value.failed_task == "ingest-events"  # the canonical schema check runs while reading the file
    assert not (Path(err.value.run_dir) / "validate-events").exists()
    assert ModelRegistry(registry).names() == []


def test_unknown_parameter_fails_before_anything_runs(tmp_path: Path) -> None:
    from genctr.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown pipeline parameter"):
        run_local({"epochs": 3}, tmp_path / "runs")
    assert not any((tmp_path / "runs").glob("genctr-training-*"))



def test_deploy_step_serves_the_first_model_and_a_later_one_as_canary(first_run: tuple[LocalRun, Path],
                                                                       home: Path, tmp_path: Path,
                                                                       tiny: dict[str, Any]) -> None:
    import requests

    from genctr.deploy.factory import DeployTarget, make_deployer

    registry = tmp_path / "registry"
    target = DeployTarget(kind="local", name="e2e-serve", state_dir=str(tmp_path / "deploy"))
    # Cached data and training steps; a fresh registry: the gate passes on the floor, then deploy.
    run = run_local({**tiny, "registry_root": str(registry), "promote_without_canary": False,
                     "deploy_target": "local", "deployment": target.name}, home / "runs", enable_caching=True)
    deployer = make_deployer(dataclasses.replace(target, state_dir=str(home / "deploy")))
    try:
        assert run.deployment is not None and run.deployment["action"] == "deploy"
        reg = ModelRegistry(registry)
        assert reg.champion("e2e") == 1  # the first deployed model becomes the champion
        status = deployer.status()
        assert status.ready and status.canary_uri is None and status.champion_uri == reg.get("e2e", 1).uri
        # the server outlived the pipeline step that started it, and scores from the materialised Feast store
        body = {"instances": [{"user_id": 1, "candidates": [{"item_id": 1}, {"item_id": 2, "category_id": 1}]}]}
        r = requests.post(status.urls["champion"], json=body, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"][0]) == 2
        # a second registered version goes out as a canary at the configured share
        v2 = reg.register(reg.get("e2e", 1).path, "e2e")
        result = workflow.deploy_model(str(registry), "e2e", v2, 25,
                                       dataclasses.replace(target, state_dir=str(home / "deploy")))
        assert result.summary["action"] == "start_canary" and result.summary["canary_percent"] == 25
        status = deployer.status()
        assert status.canary_uri == reg.get("e2e", v2).uri and set(status.urls) == {"champion", "canary", "router"}
        assert reg.champion("e2e") == 1  # the canary loop, not the deploy step, moves the champion
        assert requests.post(status.urls["canary"], json=body, timeout=30).status_code == 200
    finally:
        deployer.shutdown()
    assert not deployer.status().ready
