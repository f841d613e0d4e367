"""``genctr doctor`` for real on this machine: what is present passes, what is broken fails with its fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import free_port
from test_feast import redis_url  # noqa: F401 - the real redis-server fixture (module scope)
from typer.testing import CliRunner

from genctr.cli import app
from genctr.doctor import DoctorConfig, check_redis, format_table, parse_redis_url, run_checks
from genctr.errors import ConfigError

pytestmark = pytest.mark.slow


def rows(stdout: str) -> dict[str, tuple[str, str]]:
    """check -> (status, detail) from the table; ``fix:`` lines are attached to the row above as detail."""
    out: dict[str, tuple[str, str]] = {}
    last = ""
    for line in stdout.splitlines()[1:]:
        name, rest = line[:9].strip(), line[10:]
        if name:
            status, _, detail = rest.partition("  ")
            out[name] = (status.strip(), detail.strip())
            last = name
        elif "fix:" in line:
            out[f"{last}.fix"] = ("", line.split("fix:", 1)[1].strip())
    return out


def test_doctor_passes_what_is_present_and_names_the_fix_for_what_is_not(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    bad_registry = tmp_path / "a-file" / "registry"  # under a file: cannot be created, even by root
    kfp = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(app, ["doctor", "--registry", str(bad_registry), "--kfp-host", kfp])
    assert result.exit_code == 1, result.output
    table = rows(result.stdout)
    for present in ("python", "java", "spark", "feast"):  # Java 17, pyspark, the bundled Feast repo are here
        assert table[present][0] == "ok", (present, result.stdout)
    assert "local session started" in table["spark"][1] and "Java 17" in table["java"][1]
    assert table["redis"][0] == "skip"  # the bundled Feast config is SQLite and no --redis-url was given
    assert table["registry"][0] == "FAIL" and str(bad_registry) in table["registry"][1]
    assert "fsspec URI" in table["registry.fix"][1] and "writable" in table["registry.fix"][1]
    assert table["kfp"][0] == "FAIL" and f"cannot reach Kubeflow Pipelines at {kfp}" in table["kfp"][1]
    assert "connection refused" in table["kfp"][1] and "port-forward" in table["kfp.fix"][1]
    assert not bad_registry.exists()


def test_a_writable_registry_passes_and_json_output(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["doctor", "--skip", "spark", "--skip", "java", "--registry",
                                      str(tmp_path / "reg"), "--json"])
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["registry"]["status"] == "ok" and checks["spark"]["status"] == "skip"
    assert checks["kfp"]["status"] == "skip" and checks["kfp"]["detail"] == "no --kfp-host given"
    assert list((tmp_path / "reg").iterdir()) == []  # the probe file was removed
    result = CliRunner().invoke(app, ["doctor", "--registry", "nosuchproto://bucket/reg", "--skip", "spark",
                                      "--skip", "java", "--json"])
    assert result.exit_code == 1
    registry = {c["name"]: c for c in json.loads(result.stdout)}["registry"]
    assert registry["status"] == "fail" and "nosuchproto" in registry["detail"] and registry["fix"]


def test_bad_flags_are_exit_2() -> None:
    result = CliRunner().invoke(app, ["doctor", "--skip", "gpu"])
    assert result.exit_code == 2 and "--skip: unknown check(s) ['gpu']" in result.stderr


# the noqa below: the fixture imported above, taken by name
def test_redis_is_checked_when_configured(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    ok = check_redis(DoctorConfig(redis_url=redis_url))
    assert ok.status == "ok" and "answered PING" in ok.detail
    down = check_redis(DoctorConfig(redis_url=f"127.0.0.1:{free_port()}"))
    assert down.status == "fail" and "no PING answer" in down.detail and "start Redis" in down.fix
    # the Redis variant of the Feast config names it through $GENCTR_REDIS_CONNECTION_STRING
    cfg = DoctorConfig(feast_config="feature_store.redis.yaml", skip=("python", "java", "spark", "feast", "registry",
                                                                                "kfp"))
    monkeypatch.delenv("GENCTR_REDIS_CONNECTION_STRING", raising=False)
    redis = {c.name: c for c in run_checks(cfg)}["redis"]
    assert redis.status == "fail" and "unset variable" in redis.detail
    monkeypatch.setenv("GENCTR_REDIS_CONNECTION_STRING", redis_url)
    checks = run_checks(cfg)
    assert {c.name: c.status for c in checks}["redis"] == "ok"
    assert format_table(checks)[0].split() == ["check", "status", "detail"]


def test_redis_connection_strings_parse_like_feasts() -> None:
    assert parse_redis_url("redis.svc:6380,password=p,ssl=true,db=2") == {
        "host": "redis.svc", "port": 6380, "password": "p", "ssl": True, "db": 2}
    with pytest.raises(ConfigError, match="host:port"):
        parse_redis_url("localhost")
