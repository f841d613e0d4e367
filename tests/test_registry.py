"""The model registry contract on every backend, including crashes mid-registration.

Backends: a local path and ``memory://`` (the fsspec store), a real MLflow server (SQLite backend
store, local artifact store) that this module starts on a free loopback port and stops at the end,
and the Kubeflow Model Registry store over its recording client stand-in (no Kubeflow server can run
here; ``tests/kubeflow_standin.py``). Tests that are about one backend's layout say so.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
import requests
from conftest import free_port
from kubeflow_standin import RecordingModelRegistry

from genctr.errors import ArtifactError, ConfigError
from genctr.registry import COMPLETE, FsspecRegistry, ModelRegistry, check_model_dir, open_registry
from genctr.registry.kubeflow_store import KubeflowRegistry
from genctr.registry.mlflow_store import COMPLETE_TAG, MlflowRegistry

BACKENDS = ["local", "memory", "mlflow", "kubeflow"]


def _model_dir(root: Path, tag: str) -> Path:
    d = root / f"model-{tag}"
    (d / "vocab").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(os.urandom(2048) + tag.encode())
    (d / "config.json").write_text(json.dumps({"backbone": "dnn", "tag": tag}))
    (d / "vocab" / "item.parquet").write_bytes(b"PAR1" + tag.encode())
    return d


# ----------------------------------------------------------------------------- the MLflow server
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``mlflow server`` on a free loopback port: SQLite backend store, artifacts proxied to a directory."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    artifacts = root / "artifacts"
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
           "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner process: not used here
    with open(root / "server.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}: {(root / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after 180 s: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"url": url, "artifacts": artifacts, "port": port,
               "uri": f"mlflow+{url}?artifacts_destination={artifacts.as_uri()}"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: it and its uvicorn worker
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _fresh_mlflow(server: dict[str, Any]) -> MlflowRegistry:
    """The shared server emptied of models, and an experiment of this test's own."""
    reg = open_registry(f"{server['uri']}&experiment=t-{uuid.uuid4().hex[:12]}")
    assert isinstance(reg, MlflowRegistry)
    for model in reg.client.search_registered_models():
        reg.client.delete_registered_model(model.name)  # versions, tags and aliases go with it
    return reg


@pytest.fixture(params=BACKENDS)
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ModelRegistry:
    if request.param == "local":
        return ModelRegistry(tmp_path / "registry")
    if request.param == "memory":
        return ModelRegistry(f"memory://genctr-test-{uuid.uuid4().hex}")
    if request.param == "kubeflow":
        return open_registry(f"kubeflow-mr://mr.test:8080?storage={tmp_path / 'storage'}",
                             client=RecordingModelRegistry())
    return _fresh_mlflow(request.getfixturevalue("mlflow_server"))


def _stored(mv: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and directory behind a version's ``uri`` (what KServe would read)."""
    fs, path = fsspec.core.url_to_fs(mv.uri)
    return fs, path.rstrip("/")


# ----------------------------------------------------------------------------- the contract
def test_register_list_get_and_champion(registry: ModelRegistry, tmp_path: Path) -> None:
    v1 = registry.register(_model_dir(tmp_path, "a"), "ctr", {"auc": 0.71})
    v2 = registry.register(_model_dir(tmp_path, "b"), "ctr", {"auc": 0.73})
    assert (v1, v2) == (1, 2) and registry.list_versions("ctr") == [1, 2] and registry.names() == ["ctr"]
    mv = registry.get("ctr", 2)
    assert mv.metadata == {"auc": 0.73} and set(mv.files) == {"model.safetensors", "config.json",
                                                                "vocab/item.parquet"}
    fs, path = _stored(mv)
    assert fs.cat_file(f"{path}/config.json") == (tmp_path / "model-b" / "config.json").read_bytes()
    assert registry.champion("ctr") is None and registry.history("ctr") == []
    with pytest.raises(ArtifactError, match="no champion"):
        registry.get("ctr")
    registry.set_champion("ctr", 1, reason="first model")
    registry.set_champion("ctr", 2, reason="gate passed")
    registry.set_champion("ctr", 2)  # not a move: no history entry
    assert registry.champion("ctr") == 2 and registry.get("ctr").version == 2
    assert [(h["from"], h["to"], h["reason"]) for h in registry.history("ctr")] == [
        (None, 1, "first model"), (1, 2, "gate passed")]
    out = registry.download("ctr", 1, tmp_path / "dl")
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "model-a" / "model.safetensors").read_bytes()


def test_canary_alias(registry: ModelRegistry, tmp_path: Path) -> None:
    for tag in "ab":
        registry.register(_model_dir(tmp_path, tag), "ctr")
    registry.set_champion("ctr", 1)
    assert registry.canary("ctr") is None
    registry.set_canary("ctr", 2)
    assert registry.canary("ctr") == 2 and registry.champion("ctr") == 1
    registry.clear_canary("ctr")
    registry.clear_canary("ctr")  # nothing to clear: no error
    assert registry.canary("ctr") is None and registry.champion("ctr") == 1
    registry.set_canary("ctr", 2)
    registry.set_champion("ctr", 2, reason="canary promoted")  # the promoted canary is the champion now
    assert registry.champion("ctr") == 2 and registry.canary("ctr") is None
    with pytest.raises(ArtifactError, match="does not exist"):
        registry.set_canary("ctr", 9)
    assert registry.canary("ctr") is None
    assert [h["to"] for h in registry.history("ctr")] == [1, 2]  # canary moves are not champion history


def test_registry_refuses_bad_input(registry: ModelRegistry, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="model.safetensors"):
        registry.register(bad, "ctr")
    (bad / "model.safetensors").write_bytes(b"x")
    (bad / "config.json").write_text("[1, 2")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        check_model_dir(bad)
    with pytest.raises(ConfigError):
        registry.register(_model_dir(tmp_path, "a"), "../escape")
    with pytest.raises(ConfigError, match="JSON"):
        registry.register(_model_dir(tmp_path, "b"), "ctr", {"x": object()})
    with pytest.raises(ArtifactError, match="does not exist"):
        registry.set_champion("ctr", 7)
    assert registry.list_versions("ctr") == []


def test_verify_catches_a_changed_file(registry: ModelRegistry, tmp_path: Path) -> None:
    v = registry.register(_model_dir(tmp_path, "a"), "ctr")
    fs, path = _stored(registry.get("ctr", v))
    fs.pipe_file(f"{path}/model.safetensors", b"tampered")  # in storage, behind the registry's back
    with pytest.raises(ArtifactError, match="hash"):
        registry.set_champion("ctr", v)
    assert registry.champion("ctr") is None
    with pytest.raises(ArtifactError, match="hash"):
        registry.download("ctr", v, tmp_path / "dl")
    assert not (tmp_path / "dl").exists()  # nothing half-written


def test_a_registry_copy_never_arrives_complete(registry: ModelRegistry, tmp_path: Path) -> None:
    src = _model_dir(tmp_path, "a")
    (src / COMPLETE).write_text('{"stale": true}')  # e.g. a directory downloaded from a registry
    v = registry.register(src, "ctr")
    assert COMPLETE not in registry.get("ctr", v).files


def _crash_in_process(registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Make register fail mid-copy or when it writes the completion record (every backend's last write)."""
    cls = type(registry)
    if where == "copy":
        real = cls._copy_file
        calls = {"n": 0}

        def copy_file(self, src_fs, src, dest_fs, dest):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("disk full")
            return real(self, src_fs, src, dest_fs, dest)

        monkeypatch.setattr(cls, "_copy_file", copy_file)
    else:
        def write_marker(self, *args):
            raise OSError("connection reset")

        monkeypatch.setattr(cls, "_write_marker", write_marker)


@pytest.mark.parametrize("where", ["copy", "marker"])
def test_crash_during_register_leaves_champion_on_old_version(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    registry.register(_model_dir(tmp_path, "a"), "ctr")
    registry.set_champion("ctr", 1)
    with monkeypatch.context() as m:
        _crash_in_process(registry, m, where)
        with pytest.raises(OSError):
            registry.register(_model_dir(tmp_path, "b"), "ctr")
    assert registry.champion("ctr") == 1 and registry.list_versions("ctr") == [1]
    with pytest.raises(ArtifactError):
        registry.set_champion("ctr", 2)
    assert registry.champion("ctr") == 1
    # The failed attempt cleaned up. MLflow and Kubeflow Model Registry never hand out a version number
    # twice, even once its version is deleted (archived): a crash after the number was drawn skips it.
    numbered = where == "marker" and isinstance(registry, (MlflowRegistry, KubeflowRegistry))
    assert registry.register(_model_dir(tmp_path, "c"), "ctr") == (3 if numbered else 2)


def test_crash_while_moving_the_pointer_keeps_the_old_pointer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # fsspec store on a local path only: the pointer file's temp + rename is what is interrupted
    registry = ModelRegistry(tmp_path / "registry")
    for tag in "ab":
        registry.register(_model_dir(tmp_path, tag), "ctr")
    registry.set_champion("ctr", 1)

    def boom(src: str, dst: str) -> None:
        raise OSError("killed during rename")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", boom)
        with pytest.raises(OSError):
            registry.set_champion("ctr", 2)
    assert registry.champion("ctr") == 1 and len(registry.history("ctr")) == 1
    assert not list((tmp_path / "registry" / "ctr").glob("champion.json.tmp-*"))


_HARD_CRASH = textwrap.dedent(
    """
    import os, sys
    from genctr.registry import open_registry

    registry = open_registry(sys.argv[1])
    def write_marker(self, *args):
        os._exit(9)  # hard kill right before the completion record: no except/finally, no cleanup
    type(registry)._write_marker = write_marker
    registry.register(sys.argv[2], "ctr")
    """
)


@pytest.mark.parametrize("backend", ["local", "mlflow"])  # separate processes: not memory:// or the stand-in
def test_hard_kill_between_model_write_and_pointer_move(tmp_path: Path, request: pytest.FixtureRequest,
                                                        backend: str) -> None:
    if backend == "local":
        root = str(tmp_path / "registry")
        registry: ModelRegistry = ModelRegistry(root)
    else:
        registry = _fresh_mlflow(request.getfixturevalue("mlflow_server"))
        root = registry.uri
    registry.register(_model_dir(tmp_path, "a"), "ctr")
    registry.set_champion("ctr", 1)
    proc = subprocess.run([sys.executable, "-c", _HARD_CRASH, root, str(_model_dir(tmp_path, "b"))],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 9, proc.stderr
    if isinstance(registry, FsspecRegistry):
        half = str(Path(root) / "ctr" / "versions" / "2")
        assert (Path(half) / "model.safetensors").exists() and not (Path(half) / COMPLETE).exists()  # written
    else:
        assert isinstance(registry, MlflowRegistry)
        mv = registry.client.get_model_version("ctr", "2")  # MLflow has the version, its files, no completion
        assert COMPLETE_TAG not in mv.tags
        assert (Path(registry._storage_uri(mv.source)) / "model.safetensors").exists()
        half = "models:/ctr/2"
    assert registry.champion("ctr") == 1 and registry.list_versions("ctr") == [1]
    with pytest.raises(ArtifactError, match="incomplete"):
        registry.set_champion("ctr", 2)
    with pytest.raises(ArtifactError, match="incomplete"):
        registry.get("ctr", 2)
    assert registry.register(_model_dir(tmp_path, "c"), "ctr") == 3  # the half-written number is skipped
    assert registry.purge_incomplete("ctr") == [half]
    if isinstance(registry, FsspecRegistry):
        assert not Path(half).exists()
    else:
        with pytest.raises(ArtifactError, match="does not exist"):
            registry.get("ctr", 2)
    assert registry.list_versions("ctr") == [1, 3] and registry.champion("ctr") == 1


@pytest.mark.parametrize("backend", ["local", "mlflow", "kubeflow"])  # object stores assume one writer per name
def test_concurrent_writers_get_distinct_complete_versions(tmp_path: Path, request: pytest.FixtureRequest,
                                                           backend: str) -> None:
    if backend == "local":
        registry: ModelRegistry = ModelRegistry(tmp_path / "registry")
    elif backend == "kubeflow":
        registry = open_registry(f"kubeflow-mr://mr.test:8080?storage={tmp_path / 'storage'}",
                                 client=RecordingModelRegistry())
    else:
        registry = _fresh_mlflow(request.getfixturevalue("mlflow_server"))
    sources = {tag: _model_dir(tmp_path, tag) for tag in "abcd"}
    got: dict[str, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(sources))

    def write(tag: str) -> None:
        try:
            start.wait()
            got[tag] = registry.register(sources[tag], "ctr", {"tag": tag})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(tag,)) for tag in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(got.values()) == [1, 2, 3, 4] and registry.list_versions("ctr") == [1, 2, 3, 4]
    for tag, version in got.items():  # each number holds its own writer's files, intact
        mv = registry.verify("ctr", version)
        fs, path = _stored(mv)
        assert mv.metadata == {"tag": tag}
        assert fs.cat_file(f"{path}/model.safetensors") == (sources[tag] / "model.safetensors").read_bytes()


# ----------------------------------------------------------------------------- choosing a backend
def test_open_registry_chooses_by_uri(tmp_path: Path) -> None:
    assert type(ModelRegistry(tmp_path / "r")) is FsspecRegistry  # ModelRegistry(uri) is open_registry(uri)
    assert type(open_registry(f"file://{tmp_path}/r")) is FsspecRegistry
    kf = open_registry(f"kubeflow-mr://mr.test:8080?storage={tmp_path}/s&author=ci", client=RecordingModelRegistry())
    assert isinstance(kf, KubeflowRegistry) and kf.storage_root == f"{tmp_path}/s"
    with pytest.raises(ConfigError, match="storage"):
        open_registry("kubeflow-mr://mr.test:8080", client=RecordingModelRegistry())
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['bucket'\]"):
        open_registry("mlflow+http://127.0.0.1:5000?bucket=x")
    with pytest.raises(ConfigError, match="unknown scheme"):
        open_registry("mlflow+ftp://host:21")
    with pytest.raises(ConfigError, match="HOST"):
        open_registry("mlflow+http://")
    with pytest.raises(ConfigError, match="non-empty"):
        open_registry("")


def test_every_backend_implements_the_interface() -> None:
    unimplemented = [m for m, f in vars(ModelRegistry).items() if callable(f) and _raises_not_implemented(f)]
    assert {"_register", "_get", "_files", "_alias", "_set_alias", "_move_champion", "_write_marker",
            "names", "list_versions", "history", "purge_incomplete"} <= set(unimplemented)
    for backend in (FsspecRegistry, MlflowRegistry, KubeflowRegistry):
        missing = [m for m in unimplemented if vars(backend).get(m) is None]
        assert not missing, (backend.__name__, missing)


def _raises_not_implemented(f: Any) -> bool:
    import inspect

    try:
        return "raise NotImplementedError" in inspect.getsource(f)
    except (OSError, TypeError):
        return False


# ----------------------------------------------------------------------------- MLflow as its users see it
def test_mlflow_version_run_and_aliases_as_mlflow_shows_them(mlflow_server: dict[str, Any], tmp_path: Path) -> None:
    registry = _fresh_mlflow(mlflow_server)
    gate = {"passed": True, "reason": "beats the champion", "candidate": {"auc": 0.74, "logloss": 0.41},
            "champion": {"auc": 0.72, "logloss": 0.43}, "delong": {"z": 2.5, "p_value": 0.006},
            "config": {"min_auc_gain": 0.001, "alpha": 0.05}, "champion_version": 1,
            "roc": {"candidate": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}}}
    metadata = {"gate": gate, "pipeline_run": "run-42", "candidate": {"backbone": "dcnv2_ta", "test_auc": 0.74}}
    registry.register(_model_dir(tmp_path, "a"), "ctr")
    version = registry.register(_model_dir(tmp_path, "b"), "ctr", metadata)
    registry.set_champion("ctr", version, reason="gate passed")
    registry.set_canary("ctr", 1)
    client = registry.client  # MLflow's own client: what the MLflow UI shows
    mv = client.get_model_version_by_alias("ctr", "champion")
    assert mv.version == str(version) and client.get_model_version_by_alias("ctr", "canary").version == "1"
    run = client.get_run(mv.run_id)
    assert mv.source == f"{run.info.artifact_uri}/model" and mv.tags[COMPLETE_TAG] == registry.get("ctr").sha256
    assert run.data.metrics["gate.candidate.auc"] == 0.74 and run.data.metrics["gate.delong.p_value"] == 0.006
    assert run.data.metrics["candidate.test_auc"] == 0.74 and "gate.config.alpha" not in run.data.metrics
    assert run.data.params["gate.config.min_auc_gain"] == "0.001" and run.data.params["gate.champion_version"] == "1"
    assert run.data.params["candidate.backbone"] == "dcnv2_ta" and run.data.params["pipeline_run"] == "run-42"
    assert not [k for k in {**run.data.params, **run.data.metrics} if k.startswith("gate.roc")]  # lists: manifest only
    assert registry.get("ctr").metadata == metadata  # whole, from the manifest
    assert sorted(f.path for f in client.list_artifacts(mv.run_id, "model")) == [
        "model/config.json", "model/model.safetensors", "model/vocab"]
    # uri: the artifact store's copy (here the server's --artifacts-destination), what KServe reads
    uri = Path(registry.get("ctr").uri)
    assert uri.is_relative_to(mlflow_server["artifacts"])
    assert (uri / "config.json").read_bytes() == (tmp_path / "model-b" / "config.json").read_bytes()


def test_mlflow_without_artifacts_destination_keeps_the_proxy_uri(mlflow_server: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    _fresh_mlflow(mlflow_server).register(_model_dir(tmp_path, "a"), "ctr")
    registry = open_registry(f"mlflow+{mlflow_server['url']}")  # no artifacts_destination: the server proxies
    mv = registry.get("ctr", 1)
    assert mv.uri.startswith("mlflow-artifacts:/") and mv.uri == mv.path
    out = registry.download("ctr", 1, tmp_path / "dl")  # still readable through the server
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "model-a" / "model.safetensors").read_bytes()


def test_cli_takes_an_mlflow_registry(mlflow_server: dict[str, Any], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from genctr.cli import app

    _fresh_mlflow(mlflow_server)
    result = CliRunner().invoke(app, ["serve", "--registry", mlflow_server["uri"], "--name", "ctr"])
    assert result.exit_code == 2, result.output
    assert "no champion" in result.output and "Traceback" not in result.output
    for command in (["serve"], ["evaluate"], ["canary", "step"]):
        text = " ".join(CliRunner().invoke(app, [*command, "--help"], terminal_width=200).output.split())
        assert "mlflow+http" in text and "kubeflow-mr://" in text, (command, text)


def test_mlflow_server_down_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = open_registry(f"mlflow+http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's client retries for minutes by default
    with pytest.raises(ArtifactError, match="MLflow registry http://127.0.0.1"):
        registry.champion("ctr")
