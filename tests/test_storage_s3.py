"""Cluster-ready on the first run: the training pipeline from the cluster profile's defaults, every step
in a sandbox of its own (no local path shared between steps), all shared state on a real S3-protocol
server (moto's, on loopback); then the serving side reads its model and its Feast registry from S3 and
scores over HTTP, configured the way the KServe pod is.

What stands in for the cluster: kfp.local runs the steps as processes on this machine (artifacts pass
through its pipeline root, as the KFP launcher moves them through the pipeline root's store on a
cluster); Redis is a real redis-server on loopback instead of the in-cluster Service; the deploy step
is off (``deploy_target=none``: no Kubernetes to patch an InferenceService on) and the test does
what the pod does instead: fetch the registered model from the registry on S3 (KServe's storage
initializer copies ``storageUri`` to /mnt/models) and start ``python -m genctr.serving`` with the
pod's environment (``GENCTR_FEAST_REPO``/``CONFIG``/``ONLINE``/``REGISTRY``, the Redis connection
string, the storage Secret's AWS_* variables).

Credentials and endpoint reach every client through the environment only: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL`` (read by s3fs, by boto3
for Feast's S3 registry, by dask/pyarrow for Feast's file sources); nothing sets an endpoint in code.
"""
# no `from __future__ import annotations`: KFP reads the contract test component's annotations as types

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import s3fs
from moto_s3 import moto_s3
from serving_fixtures import model_server
from test_feast import redis_url  # noqa: F401 - the real redis-server fixture, shared

from genctr.features.feast_sync import DEFAULT_REPO_DIR, USER_VIEW
from genctr.orchestration.isolation import SANDBOX_VARS, isolated_tasks, sandboxes
from genctr.orchestration.local import LocalRun, run_local
from genctr.registry import ModelRegistry
from genctr.storage import STORAGE_ROOT_ENV, StorageLayout

pytestmark = pytest.mark.slow

BUCKET = "genctr-it"
ROOT = f"s3://{BUCKET}/prod"
MODEL = "ctr-s3"
# The smallest run that goes through every step: a tiny synthetic world, no pretraining, one epoch.
TINY = {"data_source": "synthetic", "synthetic_events": 6_000, "synthetic_users": 200, "synthetic_items": 300,
        "max_seq_len": 10, "pretrain_method": "none", "transfer": "none", "backbone": "dnn", "finetune_epochs": 1,
        "batch_size": 512, "seed": 0, "device": "cpu", "floor_auc": 0.0, "model_name": MODEL,
        "promote_without_canary": True, "deploy_target": "none"}
TASKS = {"resolve-storage", "ingest-events", "validate-events", "build-features", "validate-samples",
         "materialize-features", "pretrain", "finetune", "evaluate-and-gate", "register-model"}


@pytest.fixture(autouse=True)
def _fresh_s3_clients() -> Iterator[None]:
    """fsspec caches S3 filesystems by their arguments, not by the endpoint in the environment: a
    client made for another test's S3 server (same worker, other port) must not be reused here."""
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server as its own process on a free loopback port; the AWS_* variables point every
    client at it (and nothing else does: no Feast endpoint override, no storage root). Yields the
    endpoint URL."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("FEAST_S3_ENDPOINT_URL", STORAGE_ROOT_ENV):
            mp.delenv(var, raising=False)  # the endpoint comes from AWS_ENDPOINT_URL alone, as in the pod
        with moto_s3(tmp_path_factory.mktemp("moto"), BUCKET) as endpoint:
            yield endpoint


def test_each_task_runs_in_a_sandbox_of_its_own(tmp_path: Path) -> None:
    """Contract test of genctr.orchestration.isolation on kfp.local: each task's HOME, TMPDIR,
    GENCTR_HOME and working directory are fresh and its own (kfp.local starts every task with the
    interpreter sys.executable names when the task starts)."""
    import json

    from kfp import dsl, local

    @dsl.component(base_image="python:3.11", packages_to_install=[], install_kfp_package=False)
    def where() -> str:
        import json
        import os
        import tempfile

        return json.dumps({"cwd": os.getcwd(), "home": os.environ["HOME"], "tmp": tempfile.gettempdir(),
                           "genctr_home": os.environ["GENCTR_HOME"], "spark": os.environ["SPARK_LOCAL_DIRS"]})

    @dsl.pipeline(name="sandbox-contract")
    def two() -> None:
        where().after(where())

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "runs"),
               raise_on_error=True)
    with isolated_tasks(tmp_path / "sandboxes") as root:
        two()
    assert Path(sys.executable).name != "python-sandboxed"  # restored
    seen = [json.loads(json.loads(p.read_text())["parameterValues"]["Output"])
            for p in (tmp_path / "runs").glob("sandbox-contract-*/*/executor_output.json")]
    boxes = sandboxes(root)
    assert len(seen) == len(boxes) == 2
    for got, box in zip(sorted(seen, key=lambda g: g["cwd"]), sorted(boxes), strict=True):
        assert got["cwd"] == str(box / "work")
        assert [got[k] for k in ("home", "tmp", "genctr_home", "spark")] == \
            [str(box / SANDBOX_VARS[v]) for v in ("HOME", "TMPDIR", "GENCTR_HOME", "SPARK_LOCAL_DIRS")]


# the noqa below: the fixture imported above, taken by name
@pytest.fixture(scope="module")
def cluster_run(s3: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
                ) -> Iterator[dict[str, Any]]:
    """ONE training run from the cluster profile's defaults, storage on S3, every task sandboxed."""
    base = tmp_path_factory.mktemp("cluster-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENCTR_HOME", str(base / "test-process-home"))  # must stay empty: no task may fall back to it
        t0 = time.perf_counter()
        with isolated_tasks(base / "sandboxes") as boxes:
            run = run_local({**TINY, "storage_root": ROOT, "redis_url": redis_url}, base / "runs", profile="cluster")
        wall = time.perf_counter() - t0
        print(f"cluster-profile kfp.local run over S3: {wall:.1f} s (load {os.getloadavg()})")
        yield {"run": run, "boxes": boxes, "base": base, "wall": wall}


def _storage(run: LocalRun) -> dict[str, str]:
    return run.outputs["resolve-storage"]["parameterValues"]


def test_every_step_ran_sandboxed_and_nothing_was_left_pod_local(cluster_run: dict[str, Any]) -> None:
    run: LocalRun = cluster_run["run"]
    assert set(run.outputs) == TASKS
    boxes = sandboxes(cluster_run["boxes"])
    assert len(boxes) == len(TASKS)  # one fresh sandbox per step, none reused
    for box in boxes:  # no step wrote genctr state into its own (pod-local) GENCTR_HOME
        assert list((box / "genctr-home").iterdir()) == [], box
    assert not (cluster_run["base"] / "test-process-home").exists()


def test_registry_feast_registry_and_build_are_on_s3(cluster_run: dict[str, Any]) -> None:
    import fsspec
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    run: LocalRun = cluster_run["run"]
    where = _storage(run)
    lay = StorageLayout(ROOT)
    run_id = where["build"].rsplit("/", 1)[1]
    assert where == {"root": ROOT, "registry": lay.registry, "feast_registry": lay.feast_registry("redis"),
                     "build": lay.build(run_id), "ab_logs": lay.ab_logs("genctr-ctr"), "reports": lay.reports(run_id)}
    # the model: registered on S3 by the register step, the champion the gate of the next run reads
    reg = ModelRegistry(lay.registry)
    assert reg.list_versions(MODEL) == [1] and reg.champion(MODEL) == 1
    assert reg.get(MODEL, 1).uri.startswith(f"{lay.registry}/{MODEL}/versions/1")
    assert run.registered_version == "1"
    # Feast: the registry file of the Redis store on S3, its sources the build's tables published on S3
    fs = fsspec.filesystem("s3")
    assert fs.isfile(lay.feast_registry("redis")) and not fs.exists(lay.feast_registry("sqlite"))
    config = RepoConfig(project="genctr", provider="local", registry={"registry_type": "file",
                                                                      "path": lay.feast_registry("redis")},
                        online_store={"type": "redis", "connection_string": "unused:1"},
                        entity_key_serialization_version=3)
    view = FeatureStore(config=config).get_feature_view(USER_VIEW)
    assert view.batch_source.path == f"{lay.build(run_id)}/feast/{USER_VIEW}"
    assert view.most_recent_end_time is not None  # materialised through Feast: its interval is recorded
    assert fs.find(f"{lay.build(run_id)}/feast/{USER_VIEW}")
    meta = run.outputs["materialize-features"]["artifacts"]["feast_repo"]["artifacts"][0]["metadata"]
    assert meta["online"] == "redis" and meta["registry"] == lay.feast_registry("redis")


# the noqa below: the fixture imported above, taken by name
def test_serving_reads_its_model_and_feast_registry_from_s3(cluster_run: dict[str, Any], redis_url: str,  # noqa: F811
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run: LocalRun = cluster_run["run"]
    lay = StorageLayout(ROOT)
    model_dir = ModelRegistry(lay.registry).download(MODEL, None, tmp_path / "mnt-models")  # the storage initializer
    # the pod's environment (manifests/kserve: ServingRuntime + InferenceService)
    monkeypatch.setenv("GENCTR_FEAST_REPO", str(DEFAULT_REPO_DIR))
    monkeypatch.setenv("GENCTR_FEAST_CONFIG", "feature_store.redis.yaml")
    monkeypatch.setenv("GENCTR_FEAST_ONLINE", "redis")
    monkeypatch.setenv("GENCTR_FEAST_REGISTRY", lay.feast_registry("redis"))
    monkeypatch.setenv("GENCTR_REDIS_CONNECTION_STRING", redis_url)
    table = pd.read_parquet(f"{_storage(run)['build']}/feast/{USER_VIEW}")
    user = table[table["seq_len"] >= 3].iloc[0]
    candidates = [{"item_id": int(i)} for i in user["item_seq"][:3]]  # category and price from Feast too
    stored = {"item_seq": [int(x) for x in user["item_seq"]], "cate_seq": [int(x) for x in user["cate_seq"]]}
    body = {"instances": [{"user_id": int(user["user_id"]), "candidates": candidates},
                          {"user_id": int(user["user_id"]), "candidates": candidates, "history": stored},
                          {"user_id": int(user["user_id"]), "candidates": candidates,
                           "history": {"item_seq": [], "cate_seq": []}}]}
    with model_server(["--model_dir", str(model_dir), "--model_name", "ctr"], tmp_path / "server.log", "ctr") as srv:
        r = requests.post(f"{srv.url}/v1/models/ctr:predict", json=body, timeout=30)
    assert r.status_code == 200, r.text
    from_feast, given, empty = r.json()["predictions"]
    assert from_feast == pytest.approx(given, abs=1e-6)  # Feast (Redis, S3 registry) served the stored sequence
    assert from_feast != pytest.approx(empty, abs=1e-6)  # ... and the history matters to the score
