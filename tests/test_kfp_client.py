"""Reaching Kubeflow Pipelines: credentials -> kfp.Client's arguments, and one-line errors.

There is no Kubeflow Pipelines API server here: the client is a recording stand-in of ``kfp.Client``
(it records its constructor's keyword arguments and every call), and a contract test checks the
real ``kfp.Client`` accepts every keyword genctr passed to the stand-in. Errors are real HTTP: a
closed loopback port (nothing listens) and a tiny local HTTP server answering 401 or the health JSON.
"""
from __future__ import annotations

import http.server
import inspect
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_port
from typer.testing import CliRunner

from genctr.cli import app
from genctr.errors import ConfigError
from genctr.orchestration import remote
from genctr.orchestration.connection import KFPConnection, KFPConnectionError, probe

HOST = "https://kfp.test/pipeline"


class RecordingClient:
    """Stands in for kfp.Client: records the constructor's keyword arguments and each call."""

    instances: list[RecordingClient] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[str, dict[str, Any]]] = []
        RecordingClient.instances.append(self)

    def create_run_from_pipeline_package(self, pipeline_file: str, **kw: Any) -> Any:
        name = next(yaml.safe_load_all(Path(pipeline_file).read_text()))["pipelineInfo"]["name"]
        self.calls.append(("create_run_from_pipeline_package", {"pipeline_file": pipeline_file, **kw,
                                                                "_pipeline": name}))
        return type("Run", (), {"run_id": "run-1"})()

    def create_experiment(self, name: str, **kw: Any) -> Any:
        self.calls.append(("create_experiment", {"name": name, **kw}))
        return type("Experiment", (), {"experiment_id": "exp-1"})()

    def create_recurring_run(self, **kw: Any) -> Any:
        name = next(yaml.safe_load_all(Path(kw["pipeline_package_path"]).read_text()))["pipelineInfo"]["name"]
        self.calls.append(("create_recurring_run", {**kw, "_pipeline": name}))
        return type("Job", (), {"recurring_run_id": "job-1"})()


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[RecordingClient]:
    import kfp

    RecordingClient.instances = []
    monkeypatch.setattr(kfp, "Client", RecordingClient)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-such-token"))  # not in a pod
    return RecordingClient


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled training pipeline for every submit here (compiling is the slow part)."""
    from genctr.orchestration.catalog import compile_pipeline

    return compile_pipeline(tmp_path_factory.mktemp("pkg") / "training.yaml")


def last(recording: type[RecordingClient]) -> RecordingClient:
    assert recording.instances, "kfp.Client was never constructed"
    return recording.instances[-1]


# --------------------------------------------------------------------------------------- credentials
def test_a_token_and_a_namespace_reach_the_client_and_the_run(recording: type[RecordingClient],
                                                              package: Path) -> None:
    conn = KFPConnection(host=HOST + "/", namespace="team-a", token=" tok-1 ")
    assert remote.submit(conn, {"finetune_epochs": "2"}, "exp", package=package) == "run-1"
    client = last(recording)
    assert client.kwargs == {"host": HOST, "namespace": "team-a", "existing_token": "tok-1"}
    (name, call), = client.calls
    assert name == "create_run_from_pipeline_package" and call["namespace"] == "team-a"
    assert call["arguments"] == {"finetune_epochs": 2} and call["_pipeline"] == "genctr-training"


def test_a_token_file_and_cookies(recording: type[RecordingClient], package: Path, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok-from-file\n")
    remote.submit(KFPConnection(host=HOST, token_file=str(tmp_path / "token"), cookies="authservice_session=s1"),
                  {}, package=package)
    assert last(recording).kwargs == {"host": HOST, "existing_token": "tok-from-file",
                                      "cookies": "authservice_session=s1"}
    remote.submit(KFPConnection(host=HOST, cookies="authservice_session=s2"), {}, package=package)
    assert last(recording).kwargs == {"host": HOST, "cookies": "authservice_session=s2"}  # no token, no SA


def test_in_a_pod_the_projected_service_account_token_is_used(recording: type[RecordingClient], package: Path,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kfp.client import ServiceAccountTokenVolumeCredentials
    from kfp_server_api import Configuration

    token = tmp_path / "sa-token"
    token.write_text("projected-sa-token")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))  # Kubeflow's PodDefault sets this
    remote.submit(KFPConnection(host=HOST), {}, package=package)
    kwargs = last(recording).kwargs
    assert set(kwargs) == {"host", "credentials"}
    assert isinstance(kwargs["credentials"], ServiceAccountTokenVolumeCredentials)
    config = Configuration()
    kwargs["credentials"].refresh_api_key_hook(config)  # what kfp calls before each request
    assert config.api_key["authorization"] == "projected-sa-token"
    token.write_text("rotated-by-the-kubelet")
    kwargs["credentials"].refresh_api_key_hook(config)
    assert config.api_key["authorization"] == "rotated-by-the-kubelet"
    # an explicit token wins over the pod's
    remote.submit(KFPConnection(host=HOST, token="mine"), {}, package=package)
    assert last(recording).kwargs == {"host": HOST, "existing_token": "mine"}


def test_no_credentials_means_only_the_host(recording: type[RecordingClient], package: Path) -> None:
    remote.submit(HOST, {}, package=package)
    assert last(recording).kwargs == {"host": HOST}


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"host": "kfp.example.com"}, r"not an http\(s\) URL"), ({"host": ""}, "give the Kubeflow Pipelines host URL"),
    ({"host": HOST, "token": "a", "token_file": "/f"}, "not both"),
])
def test_bad_connection_settings_are_refused(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        KFPConnection(**kwargs)


def test_cli_flags_build_the_connection(recording: type[RecordingClient], package: Path, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("cli-token")
    result = CliRunner().invoke(app, ["pipeline", "submit", "--host", HOST, "--namespace", "team-b", "--token-file",
                                      str(tmp_path / "token"), "--cookies", "c=1", "--package", str(package)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1]) == {"run_id": "run-1", "host": HOST}
    assert last(recording).kwargs == {"host": HOST, "namespace": "team-b", "existing_token": "cli-token",
                                      "cookies": "c=1"}
    for args, needle in ((["--token-file", str(tmp_path / "missing")], "cannot read --token-file"),
                         (["--token", "a", "--token-file", str(tmp_path / "token")], "not both")):
        result = CliRunner().invoke(app, ["pipeline", "submit", "--host", HOST, *args, "--package", str(package)])
        assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.output, result.output


# --------------------------------------------------------------------------------------- schedule
def test_schedule_as_the_readme_writes_it_gets_a_default_name(recording: type[RecordingClient],
                                                              package: Path) -> None:
    result = CliRunner().invoke(app, ["pipeline", "schedule", "--host", HOST, "--cron", "0 0 3 * * *",
                                      "--package", str(package)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["name"] == "genctr-training-recurring"
    calls = dict(last(recording).calls)
    job = calls["create_recurring_run"]
    assert job["job_name"] == "genctr-training-recurring" and job["cron_expression"] == "0 0 3 * * *"
    assert job["experiment_id"] == "exp-1" and job["enable_caching"] is False and job["_pipeline"] == "genctr-training"
    result = CliRunner().invoke(app, ["pipeline", "schedule", "--host", HOST, "--package", str(package)])
    assert result.exit_code == 2 and "give --cron" in result.stderr


# --------------------------------------------------------------------------------------- the contract
def test_the_real_kfp_client_accepts_every_keyword_genctr_passes(recording: type[RecordingClient], package: Path,
                                                                 tmp_path: Path) -> None:
    import kfp.client
    from kfp.client import Client

    (tmp_path / "token").write_text("t")
    remote.submit(KFPConnection(host=HOST, namespace="ns", token_file=str(tmp_path / "token"), cookies="c=1"),
                  {}, run_name="r", enable_caching=True, service_account="sa", package=package)
    remote.schedule(KFPConnection(host=HOST, namespace="ns", token="t"), "0 0 * * * *", {}, "n",
                    service_account="sa", package=package)
    (tmp_path / "sa").write_text("t")
    remote.submit(KFPConnection(host=HOST, sa_token_path=str(tmp_path / "sa")), {}, package=package)
    constructed = set().union(*(c.kwargs for c in recording.instances))
    assert {"host", "namespace", "existing_token", "cookies", "credentials"} <= constructed
    assert constructed <= set(inspect.signature(Client.__init__).parameters)
    for client in recording.instances:
        for method, kwargs in client.calls:
            accepted = set(inspect.signature(getattr(Client, method)).parameters)
            passed = {k for k in kwargs if not k.startswith("_")}
            assert passed <= accepted, (method, sorted(passed - accepted))
    # the in-pod token convention genctr reads, and the credentials class's path argument
    assert kfp.client.KF_PIPELINES_SA_TOKEN_ENV == "KF_PIPELINES_SA_TOKEN_PATH"
    assert kfp.client.KF_PIPELINES_SA_TOKEN_PATH == "/var/run/secrets/kubeflow/pipelines/token"
    assert "path" in inspect.signature(kfp.client.ServiceAccountTokenVolumeCredentials.__init__).parameters


# --------------------------------------------------------------------------------------- real HTTP errors
class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    body = b'{"commit_sha": "x", "tag_name": "2.5.0", "multi_user": false}'
    seen: list[dict[str, str]] = []

    def _answer(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = _answer  # noqa: N815 - http.server's handler names

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[tuple[str, type[_Handler]]]:
    """A real HTTP server on loopback whose answer (status, body) a test sets."""
    handler = type("Handler", (_Handler,), {"status": 200, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_host_is_one_line_naming_it(package: Path) -> None:
    port = free_port()  # nothing listens there: a real connection attempt is refused
    host = f"http://127.0.0.1:{port}"
    for extra in ([], ["--namespace", "team"]):  # without a namespace kfp.Client() itself checks the host
        result = CliRunner().invoke(app, ["pipeline", "submit", "--host", host, "--package", str(package), *extra])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith(f"error: cannot reach Kubeflow Pipelines at {host} (127.0.0.1:{port}: "
                                    "connection refused); check the host URL"), result.stderr
        assert "Traceback" not in result.output and "MaxRetryError" not in result.output
    with pytest.raises(KFPConnectionError, match="connection refused") as err:
        probe(KFPConnection(host=host), timeout_s=2)
    assert "port-forward" in err.value.fix


def test_a_refusing_host_names_the_credentials_to_give(api_server: tuple[str, type[_Handler]],
                                                       package: Path) -> None:
    url, handler = api_server
    handler.status, handler.body = 401, b'{"error": "unauthenticated"}'
    conn = KFPConnection(host=url, namespace="team", token="bad-token")
    with pytest.raises(KFPConnectionError, match=r"refused to create a run: HTTP 401.*credentials used: token") as err:
        remote.submit(conn, {}, package=package)
    assert "--token-file" in err.value.fix
    assert handler.seen[-1]["authorization"] == "Bearer bad-token"  # the real client sent the token
    with pytest.raises(KFPConnectionError, match="refused to answer its health check: HTTP 401"):
        probe(conn, timeout_s=5)
    handler.status, handler.body = 200, b'{"multi_user": true}'
    assert probe(conn, timeout_s=5) == {"multi_user": True}
    assert handler.seen[-1]["authorization"] == "Bearer bad-token"
    handler.body = b"<html>login</html>"
    with pytest.raises(KFPConnectionError, match="not the Pipelines API"):
        probe(conn, timeout_s=5)
