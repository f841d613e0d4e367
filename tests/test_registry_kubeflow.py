"""The Kubeflow Model Registry backend: its calls to the ``model-registry`` client, recorded by the
stand-in (``tests/kubeflow_standin.py``; no Kubeflow server can run here), and a contract test
that the real client still has the methods and parameters the stand-in implements.

The interface's own contract (register, aliases, crashes, concurrency) runs on this backend in
``tests/test_registry.py``.
"""
from __future__ import annotations

import collections.abc
import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest
from kubeflow_standin import METHODS, RecordingModelRegistry
from model_registry import ModelRegistry as RealClient
from model_registry.exceptions import StoreError
from model_registry.types import ModelVersion, ModelVersionState, Pager, RegisteredModel

from genctr.errors import ArtifactError
from genctr.registry import open_registry
from genctr.registry.kubeflow_store import COMPLETE_PROP, MANIFEST_PROP, KubeflowRegistry


def _model_dir(root: Path, tag: str) -> Path:
    d = root / f"model-{tag}"
    (d / "vocab").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(os.urandom(512) + tag.encode())
    (d / "config.json").write_text(json.dumps({"backbone": "dnn", "tag": tag}))
    (d / "vocab" / "item.parquet").write_bytes(b"PAR1" + tag.encode())
    return d


def _open(tmp_path: Path, client: RecordingModelRegistry) -> KubeflowRegistry:
    registry = open_registry(f"kubeflow-mr://model-registry.kubeflow:8080?storage={tmp_path / 'bucket'}",
                             client=client)
    assert isinstance(registry, KubeflowRegistry)
    return registry


# ----------------------------------------------------------------------------- the client's API, pinned
@pytest.mark.parametrize("method", METHODS)
def test_the_real_client_has_what_the_stand_in_implements(method: str) -> None:
    real = inspect.signature(getattr(RealClient, method))
    ours = inspect.signature(getattr(RecordingModelRegistry, method))
    real_params = real.parameters
    for name, p in ours.parameters.items():
        assert name in real_params, f"model_registry.ModelRegistry.{method} has no parameter {name!r}"
        assert real_params[name].kind == p.kind, (method, name, real_params[name].kind, p.kind)
        required = p.default is inspect.Parameter.empty
        assert (real_params[name].default is inspect.Parameter.empty) == required, (method, name)
    extra_required = [n for n, p in real_params.items() if n not in ours.parameters
                      and p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert not extra_required, f"model_registry.ModelRegistry.{method} now requires {extra_required}"


def test_the_real_client_returns_what_genctr_reads() -> None:
    hints = {m: str(inspect.signature(getattr(RealClient, m)).return_annotation) for m in METHODS}
    assert hints["register_model"] == "RegisteredModel"
    assert hints["get_registered_model"] == "RegisteredModel | None"
    assert hints["get_model_version"] == "ModelVersion | None"
    assert hints["get_model_artifact"] == "ModelArtifact | None"
    assert hints["get_model_versions"] == "Pager[ModelVersion]"  # the stand-in returns a list: both iterate
    assert issubclass(Pager, collections.abc.Iterator)
    for cls, fields in ((RegisteredModel, {"id", "name", "custom_properties", "state"}),
                        (ModelVersion, {"id", "name", "custom_properties", "state", "registered_model_id"})):
        assert fields <= set(cls.model_fields), cls
    assert {s.name for s in ModelVersionState} == {"LIVE", "ARCHIVED"}


# ----------------------------------------------------------------------------- what genctr sends
def test_register_stores_files_then_records_then_completes_last(tmp_path: Path) -> None:
    client = RecordingModelRegistry()
    registry = _open(tmp_path, client)
    version = registry.register(_model_dir(tmp_path, "a"), "ctr", {"gate": {"passed": True}})
    assert version == 1
    (args, kwargs), = client.called("register_model")
    name, uri = args
    assert name == "ctr" and kwargs["version"] == "1" and kwargs["model_format_name"] == "genctr"
    assert Path(uri).parent.parent == tmp_path / "bucket" / "ctr" and Path(uri).name == "model"
    assert (Path(uri) / "config.json").read_bytes() == (tmp_path / "model-a" / "config.json").read_bytes()
    assert COMPLETE_PROP not in kwargs["metadata"] and Path(kwargs["metadata"][MANIFEST_PROP]).is_file()
    last = client.calls[-1]  # the completion: the last write of register
    assert last[0] == "update" and isinstance(last[1][0], ModelVersion)
    assert last[1][0].custom_properties[COMPLETE_PROP] == registry.get("ctr", 1).sha256
    mv = registry.get("ctr", 1)
    assert mv.uri == uri and mv.metadata == {"gate": {"passed": True}}  # KServe's storageUri: the stored files


def test_aliases_are_registered_model_properties_moved_in_one_update(tmp_path: Path) -> None:
    client = RecordingModelRegistry()
    registry = _open(tmp_path, client)
    for tag in "ab":
        registry.register(_model_dir(tmp_path, tag), "ctr")
    registry.set_champion("ctr", 1, reason="first")
    registry.set_canary("ctr", 2)
    n = len(client.calls)
    registry.set_champion("ctr", 2, reason="canary promoted")
    updates = [args[0] for args, _ in client.called("update")[-2:]]
    champion_move = updates[0]
    assert isinstance(champion_move, RegisteredModel)
    props = champion_move.custom_properties
    assert props["genctr_champion"] == 2  # alias and history entry in the same update
    history = [json.loads(v) for k, v in sorted(props.items()) if k.startswith("genctr_history_")]
    assert [(h["from"], h["to"], h["reason"]) for h in history] == [(None, 1, "first"), (1, 2, "canary promoted")]
    assert updates[1].custom_properties["genctr_canary"] == 0  # then the promoted canary's alias is cleared
    assert len([c for c in client.calls[n:] if c[0] == "update"]) == 2
    assert registry.champion("ctr") == 2 and registry.canary("ctr") is None


def test_a_crash_before_completion_leaves_an_incomplete_version_that_purge_archives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = RecordingModelRegistry()
    registry = _open(tmp_path, client)
    registry.register(_model_dir(tmp_path, "a"), "ctr")
    registry.set_champion("ctr", 1)
    with monkeypatch.context() as m:  # the process dies after register_model, before the completion update
        m.setattr(KubeflowRegistry, "_write_marker", lambda self, *a: (_ for _ in ()).throw(SystemExit(9)))
        m.setattr(KubeflowRegistry, "_discard", lambda self, *a: None)  # a hard kill cleans nothing
        with pytest.raises(SystemExit):
            registry.register(_model_dir(tmp_path, "b"), "ctr")
    half = client.get_model_version("ctr", "2")
    assert half is not None and COMPLETE_PROP not in half.custom_properties
    assert registry.list_versions("ctr") == [1] and registry.champion("ctr") == 1
    with pytest.raises(ArtifactError, match="incomplete"):
        registry.set_champion("ctr", 2)
    orphan = tmp_path / "bucket" / "ctr" / "copied-then-crashed"  # a crash before register_model
    (orphan / "model").mkdir(parents=True)
    stored = Path(client.get_model_artifact("ctr", "2").uri).parent
    assert sorted(registry.purge_incomplete("ctr")) == sorted([str(stored), str(orphan)])
    assert client.get_model_version("ctr", "2").state == ModelVersionState.ARCHIVED  # no delete in the registry
    assert not stored.exists() and not orphan.exists()
    assert registry.register(_model_dir(tmp_path, "c"), "ctr") == 3 and registry.list_versions("ctr") == [1, 3]
    registry.verify("ctr", 1)  # the complete version's files were kept


def test_a_version_number_taken_meanwhile_is_skipped(tmp_path: Path) -> None:
    class Racing(RecordingModelRegistry):
        """Another writer registers version 2 between genctr's look and its write."""

        raced = False

        # the ignore below: a stand-in narrower than the client's signature
        def register_model(self, name: str, uri: str, **kwargs: Any) -> RegisteredModel:  # type: ignore[override]
            if kwargs["version"] == "2" and not self.raced:
                self.raced = True
                super().register_model(name, "s3://elsewhere/model", **{**kwargs, "metadata": {}})
            return super().register_model(name, uri, **kwargs)

    client = Racing()
    registry = _open(tmp_path, client)
    registry.register(_model_dir(tmp_path, "a"), "ctr")
    assert registry.register(_model_dir(tmp_path, "b"), "ctr") == 3
    assert [k["version"] for _, k in client.called("register_model")] == ["1", "2", "2", "3"]
    assert registry.list_versions("ctr") == [1, 3]  # the other writer's version is not a complete genctr one


def test_a_client_failure_is_not_mistaken_for_a_lost_race(tmp_path: Path) -> None:
    class Failing(RecordingModelRegistry):
        # the ignore below: a stand-in narrower than the client's signature
        def register_model(self, name: str, uri: str, **kwargs: Any) -> RegisteredModel:  # type: ignore[override]
            raise StoreError("server said no")

    registry = _open(tmp_path, Failing())
    with pytest.raises(StoreError, match="server said no"):
        registry.register(_model_dir(tmp_path, "a"), "ctr")
    assert not list((tmp_path / "bucket" / "ctr").iterdir())  # the copied files were removed


def test_unreachable_server_is_a_clear_error() -> None:
    from conftest import free_port

    with pytest.raises(ArtifactError, match="cannot reach Kubeflow Model Registry"):
        open_registry(f"kubeflow-mr://127.0.0.1:{free_port()}?storage=memory://mr-test")
