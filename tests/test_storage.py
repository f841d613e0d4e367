"""genctr.storage: one root, every shared location derived from it, and the errors that name the fix."""
from __future__ import annotations

from pathlib import Path

import pytest

from genctr.errors import ConfigError
from genctr.storage import STORAGE_ROOT_ENV, StorageLayout, resolve_root, run_locations, storage_layout


def test_every_location_derives_from_one_object_store_root() -> None:
    lay = StorageLayout("s3://bucket/genctr/")
    assert lay.root == "s3://bucket/genctr" and lay.is_remote
    assert lay.registry == "s3://bucket/genctr/registry"
    assert lay.feast_registry("redis") == "s3://bucket/genctr/feast/redis/registry.db"
    assert lay.feast_registry("sqlite") == "s3://bucket/genctr/feast/sqlite/registry.db"
    assert lay.build("run-1") == "s3://bucket/genctr/builds/run-1"
    assert lay.ab_logs("genctr-ctr") == "s3://bucket/genctr/ab-logs/genctr-ctr"  # where the A/B log sink writes
    assert lay.reports("run-1") == "s3://bucket/genctr/reports/run-1"


def test_a_local_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lay = StorageLayout("shared")
    assert lay.root == str(tmp_path / "shared") and not lay.is_remote
    assert lay.registry == str(tmp_path / "shared" / "registry")
    assert StorageLayout(f"file://{tmp_path}/x").root == str(tmp_path / "x")


def test_the_root_comes_from_the_value_then_the_environment_then_genctr_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENCTR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    assert resolve_root("") == str(tmp_path / "home")
    monkeypatch.setenv(STORAGE_ROOT_ENV, "s3://env-bucket/x")
    assert resolve_root("") == "s3://env-bucket/x"
    assert resolve_root("s3://param/y") == "s3://param/y"
    assert storage_layout("").registry == "s3://env-bucket/x/registry"


def test_a_required_root_that_is_unset_names_both_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"storage_root.*GENCTR_STORAGE_ROOT"):
        resolve_root("  ", required=True)


@pytest.mark.parametrize("root, fix", [("", "non-empty"), ("s3://", "names no bucket"), ("s3:///x", "names no bucket"),
                                       ("s3://b/x?versionId=1", "query"), ("s3://b/my dir", "whitespace")])
def test_bad_roots_are_config_errors(root: str, fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        StorageLayout(root)


@pytest.mark.parametrize("run_id", ["", "..", "a/b", "../etc"])
def test_a_run_id_or_deployment_is_one_path_segment(run_id: str) -> None:
    lay = StorageLayout("s3://b/r")
    with pytest.raises(ConfigError, match="one path segment"):
        lay.build(run_id)
    with pytest.raises(ConfigError, match="one path segment"):
        lay.ab_logs(run_id)
    with pytest.raises(ConfigError, match="online store"):
        lay.feast_registry("cassandra")


def test_run_locations_keep_explicit_overrides(tmp_path: Path) -> None:
    where = run_locations(str(tmp_path / "root"), run_id="r7", online_store="redis", deployment="ctr",
                          registry_root="s3://elsewhere/registry", log_dir="")
    assert where == {"root": str(tmp_path / "root"), "registry": "s3://elsewhere/registry",
                     "feast_registry": str(tmp_path / "root" / "feast" / "redis" / "registry.db"),
                     "build": str(tmp_path / "root" / "builds" / "r7"),
                     "ab_logs": str(tmp_path / "root" / "ab-logs" / "ctr"),
                     "reports": str(tmp_path / "root" / "reports" / "r7")}
    assert (tmp_path / "root").is_dir()  # checked usable (made) before the run goes on


def test_an_unreachable_local_root_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot be created"):
        run_locations(str(tmp_path / "file" / "root"), run_id="r1")
