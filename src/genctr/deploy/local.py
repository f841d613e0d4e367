"""Local deployer: champion and canary as two models of ONE real KServe ModelServer process.

The split lives in a small JSON state file beside the server::

    {"name": "ctr", "champion": "/models/ctr/versions/3", "canary": "/models/ctr/versions/4",
     "canary_percent": 10, "server": {"host": "127.0.0.1", "port": 8080, "pid": 1234},
     "updated_at": "...", "events": [{"time": ..., "action": "start_canary", ...}, ...]}

The server (``python -m genctr.serving --deploy_state STATE``) serves ``<name>-champion`` and,
during a rollout, ``<name>-canary``; its :class:`StateRepository` re-reads the file when asked
to (re)load a model through KServe's repository endpoint
``POST /v2/repository/models/<model>/load``. The deployer writes the file, then asks for the
reload (or unload).

Randomisation (``randomisation``, recorded in the file): ``"user"`` (the default) starts the
user-hash router (:mod:`genctr.serving.router`, ``--deploy_state``: it follows the file's arms
and split) in front of the server, as the router in front of KServe's tag-routed arm URLs on a
cluster; clients send everything to ``urls["router"]``. ``"request"``: no router; clients split
each request by ``canary_percent`` themselves (what Knative does on a cluster) and send it to
``urls[arm]``. With ``logger_url`` the server runs the payload logger
(:mod:`genctr.serving.payload_logger`, ``--logger_endpoint by_model``: the champion's events say
``endpoint: default``, the canary's ``canary``), the local stand-in for KServe's agent, posting
every scoring call's CloudEvents to the A/B log sink at that URL.

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

from genctr.deploy.base import ROUTER, Deployer, DeploymentStatus, check_percent  # ROUTER: the state file key too
from genctr.errors import ArtifactError, ConfigError
from genctr.serving.online import FeastConfig
from genctr.serving.state import (
    ARMS,
    CANARY,
    CHAMPION,
    DEFAULT_RANDOMISATION,
    RANDOMISATIONS,
    model_name,
    read_state,
    token_file,
    write_state,
    write_token,
)

log = logging.getLogger(__name__)
MAX_EVENTS = 200


class LocalDeployer(Deployer):
    """Champion/canary on a local ModelServer (started on the first ``deploy``, or attached to).

    ``feast``: the Feast store the server reads (None: requests carry histories).
    ``port``: 0 picks a free loopback port. The server's output goes to ``<state>.log``, the
    router's to ``<state>.router.log``. ``logger_url``: the A/B log sink the server's payload
    logger posts to; ``randomisation``: ``"user"`` | ``"request"`` (module docstring). For both,
    '' keeps what the deployment recorded (a deployer attaching to a running deployment changes
    nothing); a new value restarts the server (logger) or starts / stops the router.
    """

    def __init__(self, state_file: str | Path, name: str = "ctr", feast: FeastConfig | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, server_args: tuple[str, ...] = (),
                 start_timeout: float = 180.0, logger_url: str = "", randomisation: str = "") -> None:
        if randomisation and randomisation not in RANDOMISATIONS:
            raise ConfigError(f"randomisation must be one of {list(RANDOMISATIONS)} (or '' to keep the "
                              f"deployment's), got {randomisation!r}")
        if logger_url and not logger_url.startswith(("http://", "https://")):
            raise ConfigError(f"logger_url must be the A/B log sink's http(s)://host:port/ URL, got {logger_url!r}")
        self.state_file = Path(state_file)
        self.name = name
        self.feast = feast
        self.host = host
        self.port = port
        self.server_args = tuple(server_args)
        self.start_timeout = start_timeout
        self.logger_url = logger_url
        self.randomisation = randomisation
        self._proc: subprocess.Popen | None = None
        self._router: subprocess.Popen | None = None

    # -- Deployer --------------------------------------------------------------------------

    def deploy(self, model_uri: str) -> DeploymentStatus:
        _check_model(model_uri)
        if not self._server_alive():
            kept = {k: v for k, v in self._recorded().items() if k in ("logger", "randomisation", ROUTER)}
            self._write({"name": self.name, CHAMPION: model_uri, CANARY: None, "canary_percent": 0, **kept}, "deploy",
                        uri=model_uri)
            self._start_server()
        else:
            previous = self._state()
            self._write({**previous, CHAMPION: model_uri, CANARY: None, "canary_percent": 0}, "deploy", uri=model_uri)
            if self._settings_changed(previous):
                self._restart()
            else:
                self._reload_or_restore(CHAMPION, previous)
                self._unload(CANARY, previous)
                self._ensure_router()
        return self.status()

    def start_canary(self, model_uri: str, percent: int) -> DeploymentStatus:
        check_percent(percent)
        _check_model(model_uri)
        self.ensure_running()
        previous = self._state()
        self._write({**previous, CANARY: model_uri, "canary_percent": percent}, "start_canary",
                    uri=model_uri, percent=percent)
        if self._settings_changed(previous):
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
        randomisation = _randomisation(state)
        if randomisation == "user" and state.get(ROUTER):
            urls[ROUTER] = f"{_url(state[ROUTER])}/v1/models/{state['name']}:predict"
            ready = ready and self._router_alive(state)
        return DeploymentStatus(name=state["name"], champion_uri=state[CHAMPION], canary_uri=state.get(CANARY),
                                canary_percent=int(state.get("canary_percent", 0)), ready=ready, urls=urls,
                                randomisation=randomisation,
                                detail={"server": state.get("server"), "router": state.get(ROUTER),
                                        "logger": state.get("logger"), "state_file": str(self.state_file),
                                        "v2_urls": {a: f"{base}/v2/models/{model_name(state['name'], a)}/infer"
                                                    for a in arms}})

    def ensure_running(self) -> None:
        """Start the server of an existing deployment whose process is gone (e.g. after a reboot), or
        restart it when this deployer brings another payload-logger URL; start / stop the router as
        the randomisation design asks."""
        state = self._state()
        if not self._server_alive(state):
            log.info("deployment %s: server not running, starting it on its recorded state", state["name"])
            self._start_server()
        elif self._settings_changed(state):
            self._restart()
        else:
            self._ensure_router()

    def use_logger(self, url: str) -> None:
        """Have the deployment's payload logger post to the A/B log sink at ``url`` (restarts the server
        if it logged elsewhere, or not at all)."""
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"logger URL must be the A/B log sink's http(s)://host:port/, got {url!r}")
        self.logger_url = url
        self.ensure_running()

    def shutdown(self) -> None:
        """Stop the deployment's server and router, whoever started them (the pids in the state file)."""
        self.stop()
        try:
            state = self._state()
        except ConfigError:
            return
        self._stop_router(state)
        self._stop_server()

    def _stop_server(self) -> None:
        """Stop the deployment's server (this deployer's process, else the recorded pid); the router,
        which follows the state file, stays up for the next one."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
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
        """Stop the server and router this deployer started (ones it attached to are left running)."""
        for proc in (self._router, self._proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._proc = self._router = None

    # -- state -----------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return read_state(self.state_file)

    def _recorded(self) -> dict[str, Any]:
        """The state file's contents if it is a valid one, else nothing (a first deploy, or a broken file)."""
        try:
            return self._state() if self.state_file.exists() else {}
        except ConfigError:
            return {}

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

    def _logger_of(self, state: dict[str, Any]) -> dict[str, str] | None:
        """This deployer's payload-logger target, else the one the deployment's server runs with."""
        return {"url": self.logger_url, "mode": "all"} if self.logger_url else state.get("logger")

    def _settings_changed(self, state: dict[str, Any]) -> bool:
        """Does the server need a restart: another Feast store or another payload-logger target?"""
        return self._feast_changed(state) or state.get("logger") != self._logger_of(state)

    def _restart(self) -> None:
        """Stop the running server and start one on the current state (a new Feast store or logger target)."""
        log.info("deployment %s: restarting the server on its new settings", self.name)
        self._stop_server()
        self._start_server()

    def _start_server(self) -> None:
        port = self.port or _free_port(self.host)
        state = self._state()
        feast = self._feast_of(state)
        tokens = token_file(self.state_file)
        write_token(tokens)  # a new token per server start; the server reads it once
        logger = self._logger_of(state)
        logging_args = ["--logger_url", logger["url"], "--logger_mode", logger.get("mode", "all"),
                        "--logger_endpoint", "by_model", "--logger_service", state["name"]] if logger else []
        cmd = [sys.executable, "-m", "genctr.serving", "--deploy_state", str(self.state_file),
               "--host", self.host, "--http_port", str(port), "--enable_repository_api", "true",
               "--repository_token_file", str(tokens), *(feast.cli_args() if feast else []), *logging_args,
               *self.server_args]
        log_path = self.state_file.with_suffix(".log")
        with log_path.open("ab") as out:
            # its own session and no inherited stdin: the server outlives a pipeline step that started it
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        write_state(self.state_file, {**state, "server": {"host": self.host, "port": port, "pid": self._proc.pid},
                                      "feast": dataclasses.asdict(feast) if feast else None, "logger": logger,
                                      "randomisation": self.randomisation or _randomisation(state)})
        deadline = time.monotonic() + self.start_timeout
        while not self._model_ready(self._state(), CHAMPION):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log_path.read_text(errors="replace")[-3000:]
                raise ArtifactError(f"local model server did not become ready on port {port}; log {log_path}:\n{tail}")
            time.sleep(0.2)
        log.info("local model server pid %d on %s%s", self._proc.pid, self._base_url(self._state()),
                 f" (payload logger -> {logger['url']})" if logger else "")
        self._ensure_router()

    # -- the user-hash router ----------------------------------------------------------------

    def _ensure_router(self) -> None:
        """Record the randomisation design; run the router for ``user``, none for ``request``."""
        state = self._state()
        design = self.randomisation or _randomisation(state)
        if state.get("randomisation") != design:
            write_state(self.state_file, {**state, "randomisation": design})
            state = self._state()
        if design == "request":
            self._stop_router(state)
        elif not self._router_alive(state):
            self._start_router(state)

    def _router_alive(self, state: dict[str, Any]) -> bool:
        entry = state.get(ROUTER) or {}
        if not entry.get("port"):
            return False
        try:
            with urllib.request.urlopen(f"{_url(entry)}/v2/health/live", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _start_router(self, state: dict[str, Any]) -> None:
        port = int((state.get(ROUTER) or {}).get("port") or 0) or _free_port(self.host)  # a stable URL
        cmd = [sys.executable, "-m", "genctr.serving.router", "--deploy_state", str(self.state_file),
               "--host", self.host, "--port", str(port)]
        log_path = self.state_file.with_suffix(".router.log")
        with log_path.open("ab") as out:
            self._router = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        write_state(self.state_file, {**state, ROUTER: {"host": self.host, "port": port, "pid": self._router.pid}})
        deadline = time.monotonic() + min(self.start_timeout, 120.0)
        while not self._router_alive(self._state()):
            if self._router.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise ArtifactError(f"the user-hash router did not start on port {port}; log {log_path}:\n{tail}")
            time.sleep(0.2)
        log.info("user-hash router pid %d on %s (following %s)", self._router.pid, _url(state.get(ROUTER) or
                                                                                         {"host": self.host,
                                                                                          "port": port}),
                 self.state_file)

    def _stop_router(self, state: dict[str, Any]) -> None:
        """Stop the deployment's router (the pid the state file records) and forget it."""
        import signal

        entry = state.get(ROUTER) or {}
        pid = int(entry.get("pid") or 0)
        if pid and self._router_alive(state):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 30
            while self._router_alive(state) and time.monotonic() < deadline:
                time.sleep(0.2)
        if self._router is not None and self._router.pid == pid:
            self._router.wait(timeout=30)
            self._router = None

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


def _randomisation(state: dict[str, Any]) -> str:
    return str(state.get("randomisation") or DEFAULT_RANDOMISATION)


def _url(entry: dict[str, Any]) -> str:
    return f"http://{entry.get('host', '127.0.0.1')}:{entry.get('port')}"


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
