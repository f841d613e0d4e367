"""Local deployer: champion and canary as two models of ONE real KServe ModelServer process.

The split lives in a small JSON state file beside the server::

    {"name": "ctr", "champion": "/models/ctr/versions/3", "canary": "/models/ctr/versions/4",
     "canary_percent": 10, "server": {"host": "127.0.0.1", "port": 8080, "pid": 1234},
     "updated_at": "...", "events": [{"time": ..., "action": "start_canary", ...}, ...]}

The server (``python -m genctr.serving --deploy_state STATE``) serves ``<name>-champion`` and,
during a rollout, ``<name>-canary``; its :class:`StateRepository` re-reads the file when asked
to (re)load a model through KServe's repository endpoint
``POST /v2/repository/models/<model>/load``. The deployer writes the file, then asks for the
reload (or unload). Clients (the traffic simulator) split by ``canary_percent``, e.g. with
:func:`genctr.deploy.base.assign_arm`, and send each request to ``urls[arm]``.

The server is started with its repository API enabled behind a token: a random one per server
start, in ``<state>.token`` (mode 0600, beside the state file) where the server reads it
(``--repository_token_file``) and every deployer attached to the deployment finds it; the
deployer sends it as ``Authorization: Bearer``. Without the token the load/unload endpoints
answer 401, so a client of the serving port cannot change what is served.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from genctr.deploy.base import Deployer, DeploymentStatus, check_percent
from genctr.errors import ArtifactError, ConfigError
from genctr.serving.online import FeastConfig
from genctr.serving.state import ARMS, CANARY, CHAMPION, model_name, read_state, token_file, write_state, write_token

log = logging.getLogger(__name__)
MAX_EVENTS = 200


class LocalDeployer(Deployer):
    """Champion/canary on a local ModelServer (started on the first ``deploy``, or attached to).

    ``feast``: the Feast store the server reads (None: requests carry histories).
    ``port``: 0 picks a free loopback port. The server's output goes to ``<state>.log``.
    """

    def __init__(self, state_file: str | Path, name: str = "ctr", feast: FeastConfig | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, server_args: tuple[str, ...] = (),
                 start_timeout: float = 180.0) -> None:
        self.state_file = Path(state_file)
        self.name = name
        self.feast = feast
        self.host = host
        self.port = port
        self.server_args = tuple(server_args)
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen | None = None

    # -- Deployer --------------------------------------------------------------------------

    def deploy(self, model_uri: str) -> DeploymentStatus:
        _check_model(model_uri)
        if not self._server_alive():
            self._write({"name": self.name, CHAMPION: model_uri, CANARY: None, "canary_percent": 0}, "deploy",
                        uri=model_uri)
            self._start_server()
        else:
            previous = self._state()
            self._write({**previous, CHAMPION: model_uri, CANARY: None, "canary_percent": 0}, "deploy", uri=model_uri)
            if self._feast_changed(previous):
                self._restart()
            else:
                self._reload_or_restore(CHAMPION, previous)
                self._unload(CANARY, previous)
        return self.status()

    def start_canary(self, model_uri: str, percent: int) -> DeploymentStatus:
        check_percent(percent)
        _check_model(model_uri)
        self.ensure_running()
        previous = self._state()
        self._write({**previous, CANARY: model_uri, "canary_percent": percent}, "start_canary",
                    uri=model_uri, percent=percent)
        if self._feast_changed(previous):
            self._restart()  # both arms must read the newest materialisation, as they would share Redis
        elif previous.get(CANARY) != model_uri:
            self._reload_or_restore(CANARY, previous)
        return self.status()

    def promote(self) -> DeploymentStatus:
        self.ensure_running()
        previous = self._state()
        if not previous.get(CANARY):
            raise ConfigError(f"{self.name}: no canary in progress to promote")
        self._write({**previous, CHAMPION: previous[CANARY], CANARY: None, "canary_percent": 0}, "promote",
                    uri=previous[CANARY])
        self._reload_or_restore(CHAMPION, previous)
        self._unload(CANARY, previous)
        return self.status()

    def rollback(self) -> DeploymentStatus:
        self.ensure_running()
        previous = self._state()
        if not previous.get(CANARY):
            raise ConfigError(f"{self.name}: no canary in progress to roll back")
        self._write({**previous, CANARY: None, "canary_percent": 0}, "rollback", uri=previous[CANARY])
        self._unload(CANARY, previous)
        return self.status()

    def status(self) -> DeploymentStatus:
        state = self._state()
        base = self._base_url(state)
        arms = [a for a in ARMS if state.get(a)]
        urls = {a: f"{base}/v1/models/{model_name(state['name'], a)}:predict" for a in arms}
        ready = self._server_alive(state) and all(self._model_ready(state, a) for a in arms)
        return DeploymentStatus(name=state["name"], champion_uri=state[CHAMPION], canary_uri=state.get(CANARY),
                                canary_percent=int(state.get("canary_percent", 0)), ready=ready, urls=urls,
                                detail={"server": state.get("server"), "state_file": str(self.state_file),
                                        "v2_urls": {a: f"{base}/v2/models/{model_name(state['name'], a)}/infer"
                                                    for a in arms}})

    def ensure_running(self) -> None:
        """Restart the server of an existing deployment whose process is gone (e.g. after a reboot)."""
        state = self._state()
        if not self._server_alive(state):
            log.info("deployment %s: server not running, starting it on its recorded state", state["name"])
            self._start_server()

    def shutdown(self) -> None:
        """Stop the deployment's server, whoever started it (the pid recorded in the state file)."""
        self.stop()
        try:
            pid = int((self._state().get("server") or {}).get("pid") or 0)
        except ConfigError:
            return
        if pid and self._server_alive():
            import signal

            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while self._server_alive() and time.monotonic() < deadline:
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server this deployer started (a server it attached to is left running)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    # -- state -----------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return read_state(self.state_file)

    def _write(self, state: dict[str, Any], action: str, **event: Any) -> None:
        now = datetime.now(UTC).isoformat()
        events = list(state.get("events", []))[-(MAX_EVENTS - 1):]
        events.append({"time": now, "action": action, **event})
        write_state(self.state_file, {**state, "updated_at": now, "events": events})

    # -- server ----------------------------------------------------------------------------

    def _base_url(self, state: dict[str, Any]) -> str:
        server = state.get("server") or {}
        return f"http://{server.get('host', self.host)}:{server.get('port', self.port)}"

    def _server_alive(self, state: dict[str, Any] | None = None) -> bool:
        if state is None:
            if not self.state_file.exists():
                return False
            try:
                state = self._state()
            except ConfigError:
                return False
        if not (state.get("server") or {}).get("port"):
            return False
        try:
            with urllib.request.urlopen(f"{self._base_url(state)}/v2/health/live", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _feast_of(self, state: dict[str, Any]) -> FeastConfig | None:
        """This deployer's Feast config, else the one the deployment's server was started with."""
        if self.feast is not None:
            return self.feast
        recorded = state.get("feast")
        return FeastConfig(**recorded) if recorded else None

    def _feast_changed(self, state: dict[str, Any]) -> bool:
        return self.feast is not None and state.get("feast") != dataclasses.asdict(self.feast)

    def _restart(self) -> None:
        """Stop the running server and start one on the current state (used when the Feast store moves)."""
        log.info("deployment %s: restarting the server on the new Feast store", self.name)
        self.shutdown()
        self._start_server()

    def _start_server(self) -> None:
        port = self.port or _free_port(self.host)
        state = self._state()
        feast = self._feast_of(state)
        tokens = token_file(self.state_file)
        write_token(tokens)  # a new token per server start; the server reads it once
        cmd = [sys.executable, "-m", "genctr.serving", "--deploy_state", str(self.state_file),
               "--host", self.host, "--http_port", str(port), "--enable_repository_api", "true",
               "--repository_token_file", str(tokens), *(feast.cli_args() if feast else []), *self.server_args]
        log_path = self.state_file.with_suffix(".log")
        with log_path.open("ab") as out:
            # its own session and no inherited stdin: the server outlives a pipeline step that started it
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        write_state(self.state_file, {**state, "server": {"host": self.host, "port": port, "pid": self._proc.pid},
                                      "feast": dataclasses.asdict(feast) if feast else None})
        deadline = time.monotonic() + self.start_timeout
        while not self._model_ready(self._state(), CHAMPION):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log_path.read_text(errors="replace")[-3000:]
                raise ArtifactError(f"local model server did not become ready on port {port}; log {log_path}:\n{tail}")
            time.sleep(0.2)
        log.info("local model server pid %d on %s", self._proc.pid, self._base_url(self._state()))

    def _model_ready(self, state: dict[str, Any], arm: str) -> bool:
        url = f"{self._base_url(state)}/v2/models/{model_name(state['name'], arm)}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _post(self, state: dict[str, Any], path: str) -> None:
        try:
            token = token_file(self.state_file).read_text().strip()
        except OSError as exc:
            raise ArtifactError(f"deployment token {token_file(self.state_file)} is unreadable ({exc.strerror}): "
                                "restart the deployment's server (deploy() again)") from None
        req = urllib.request.Request(f"{self._base_url(state)}{path}", data=b"", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                r.read()
        except urllib.error.HTTPError as exc:
            raise ArtifactError(f"model server refused {path}: HTTP {exc.code} {exc.read()[:2000]!r}") from exc

    def _reload_or_restore(self, arm: str, previous: dict[str, Any]) -> None:
        """Ask the server to reload ``arm``; on failure put the previous state back (and reload it)."""
        state = self._state()
        try:
            self._post(state, f"/v2/repository/models/{model_name(state['name'], arm)}/load")
        except ArtifactError:
            write_state(self.state_file, previous)
            if previous.get(arm):
                self._post(previous, f"/v2/repository/models/{model_name(previous['name'], arm)}/load")
            raise

    def _unload(self, arm: str, previous: dict[str, Any]) -> None:
        if previous.get(arm) and self._model_ready(previous, arm):
            self._post(previous, f"/v2/repository/models/{model_name(previous['name'], arm)}/unload")


def _check_model(uri: str) -> None:
    from genctr.artifacts.files import read_config

    if "://" in uri:
        raise ConfigError(f"LocalDeployer serves local model directories; got {uri!r} (download it first)")
    read_config(uri)  # ArtifactError naming what is missing


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
