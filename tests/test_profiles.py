"""Compile profiles: the run form's defaults per profile, in the compiled YAML, and a cluster-profile run
without a storage root failing at its first step with a message that names the fix."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from genctr.cli.pipeline import pipeline_app
from genctr.errors import ConfigError
from genctr.orchestration.profiles import CLUSTER_REDIS, Profile, get_profile
from genctr.storage import STORAGE_ROOT_ENV


def compile_cli(tmp_path: Path, pipeline: str, profile: str) -> dict[str, Any]:
    out = tmp_path / f"{pipeline}-{profile}.yaml"
    result = CliRunner().invoke(pipeline_app, ["compile", "--pipeline", pipeline, "--profile", profile,
                                               "--out", str(out)])
    assert result.exit_code == 0, result.output
    return next(yaml.safe_load_all(out.read_text()))


def defaults(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v.get("defaultValue") for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}


def storage_required(spec: dict[str, Any]) -> bool:
    task = spec["root"]["dag"]["tasks"]["resolve-storage"]
    return bool(task["inputs"]["parameters"]["required"]["runtimeValue"]["constant"])


def test_training_pipeline_defaults_per_profile(tmp_path: Path) -> None:
    local, cluster = (compile_cli(tmp_path, "training", p) for p in ("local", "cluster"))
    lo, cl = defaults(local), defaults(cluster)
    assert (lo["deploy_target"], lo["online_store"], lo["redis_url"]) == ("local", "sqlite", "localhost:6379")
    assert (cl["deploy_target"], cl["online_store"], cl["redis_url"]) == ("kserve", "redis", CLUSTER_REDIS)
    assert lo["storage_root"] == cl["storage_root"] == "" and "registry_root" in cl
    assert not storage_required(local) and storage_required(cluster)
    # only the profile's parameters differ; the DAG is the same
    assert {k for k in lo if lo[k] != cl[k]} == {"deploy_target", "online_store", "redis_url"}
    assert set(local["root"]["dag"]["tasks"]) == set(cluster["root"]["dag"]["tasks"])


def test_canary_pipeline_defaults_per_profile(tmp_path: Path) -> None:
    local, cluster = (compile_cli(tmp_path, "canary", p) for p in ("local", "cluster"))
    assert defaults(local)["deploy_target"] == "local" and defaults(cluster)["deploy_target"] == "kserve"
    assert defaults(cluster)["storage_root"] == "" and defaults(cluster)["log_dir"] == ""
    assert not storage_required(local) and storage_required(cluster)


def test_an_unknown_profile_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(pipeline_app, ["compile", "--profile", "laptop", "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 2 and "unknown profile 'laptop'" in result.output
    with pytest.raises(ConfigError, match="unknown training pipeline parameter"):
        from pipelines.training_pipeline import build_pipeline

        build_pipeline(profile=Profile("typo", defaults={"training": {"deploy_targt": "kserve"}}))
    assert get_profile("cluster").defaults_for("nope") == {}


@pytest.mark.slow
def test_a_cluster_run_without_a_storage_root_fails_at_its_first_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    from genctr.orchestration.local import PipelineRunError, run_local

    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    monkeypatch.setenv("GENCTR_HOME", str(tmp_path / "home"))
    with pytest.raises(PipelineRunError) as err:
        run_local({"data_source": "synthetic", "synthetic_events": 1000}, tmp_path / "runs", profile="cluster")
    assert err.value.failed_task == "resolve-storage"
    out, errs = capfd.readouterr()
    log_path = getattr(err.value, "log_path", None)  # the step's output: in the run's log file or on stdout
    told = str(err.value) + out + errs + (Path(log_path).read_text() if log_path else "")
    assert "ConfigError: no storage root: set the pipeline parameter storage_root" in told
    assert STORAGE_ROOT_ENV in told
    run_dir = Path(err.value.run_dir or "")
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["resolve-storage"]  # nothing else ran
    assert not (tmp_path / "home" / "registry").exists()
