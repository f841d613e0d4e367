"""Model registry on a local path and memory://, including crashes mid-registration."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from genctr.errors import ArtifactError, ConfigError
from genctr.registry import COMPLETE, ModelRegistry, check_model_dir


def _model_dir(root: Path, tag: str) -> Path:
    d = root / f"model-{tag}"
    (d / "vocab").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(os.urandom(2048) + tag.encode())
    (d / "config.json").write_text(json.dumps({"backbone": "dnn", "tag": tag}))
    (d / "vocab" / "item.parquet").write_bytes(b"PAR1" + tag.encode())
    return d


@pytest.fixture(params=["local", "memory"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ModelRegistry:
    if request.param == "local":
        return ModelRegistry(tmp_path / "registry")
    return ModelRegistry(f"memory://genctr-test-{uuid.uuid4().hex}")


def test_register_list_get_and_champion(registry: ModelRegistry, tmp_path: Path) -> None:
    v1 = registry.register(_model_dir(tmp_path, "a"), "ctr", {"auc": 0.71})
    v2 = registry.register(_model_dir(tmp_path, "b"), "ctr", {"auc": 0.73})
    assert (v1, v2) == (1, 2) and registry.list_versions("ctr") == [1, 2] and registry.names() == ["ctr"]
    mv = registry.get("ctr", 2)
    assert mv.metadata == {"auc": 0.73} and set(mv.files) == {"model.safetensors", "config.json",
                                                                "vocab/item.parquet"}
    assert registry.fs.cat_file(f"{mv.path}/config.json") == (tmp_path / "model-b" / "config.json").read_bytes()
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
    registry.fs.pipe_file(f"{registry.get('ctr', v).path}/model.safetensors", b"tampered")
    with pytest.raises(ArtifactError, match="hash"):
        registry.set_champion("ctr", v)
    assert registry.champion("ctr") is None


def test_a_registry_copy_never_arrives_complete(registry: ModelRegistry, tmp_path: Path) -> None:
    src = _model_dir(tmp_path, "a")
    (src / COMPLETE).write_text('{"stale": true}')  # e.g. a directory downloaded from a registry
    v = registry.register(src, "ctr")
    assert COMPLETE not in registry.get("ctr", v).files


def _crash_in_process(registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Make register fail mid-copy or between the move and the _COMPLETE marker."""
    if where == "copy":
        real = ModelRegistry._copy_file
        calls = {"n": 0}

        def copy_file(self, src_fs, src, dest):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("disk full")
            return real(self, src_fs, src, dest)

        monkeypatch.setattr(ModelRegistry, "_copy_file", copy_file)
    else:
        real_write = ModelRegistry._write_json

        def write_json(self, path, obj):
            if path.endswith(COMPLETE):
                raise OSError("connection reset")
            return real_write(self, path, obj)

        monkeypatch.setattr(ModelRegistry, "_write_json", write_json)


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
    assert registry.register(_model_dir(tmp_path, "c"), "ctr") == 2  # the failed attempt cleaned up


def test_crash_while_moving_the_pointer_keeps_the_old_pointer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    from genctr.registry import COMPLETE, ModelRegistry

    real = ModelRegistry._write_json
    def write_json(self, path, obj):
        if path.endswith(COMPLETE):
            os._exit(9)  # hard kill: no except/finally, no cleanup
        return real(self, path, obj)
    ModelRegistry._write_json = write_json
    ModelRegistry(sys.argv[1]).register(sys.argv[2], "ctr")
    """
)


def test_hard_kill_between_model_write_and_pointer_move(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    registry = ModelRegistry(root)
    registry.register(_model_dir(tmp_path, "a"), "ctr")
    registry.set_champion("ctr", 1)
    proc = subprocess.run([sys.executable, "-c", _HARD_CRASH, str(root), str(_model_dir(tmp_path, "b"))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    half = root / "ctr" / "versions" / "2"
    assert (half / "model.safetensors").exists() and not (half / COMPLETE).exists()  # written, not complete
    assert registry.champion("ctr") == 1 and registry.list_versions("ctr") == [1]
    with pytest.raises(ArtifactError, match="incomplete"):
        registry.set_champion("ctr", 2)
    with pytest.raises(ArtifactError, match="incomplete"):
        registry.get("ctr", 2)
    assert registry.register(_model_dir(tmp_path, "c"), "ctr") == 3  # the half-written number is skipped
    assert registry.purge_incomplete("ctr") == [str(half)] and not half.exists()
    assert registry.list_versions("ctr") == [1, 3] and registry.champion("ctr") == 1
