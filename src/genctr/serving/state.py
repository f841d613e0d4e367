"""A local deployment's state file: what the deployer writes and the server's repository reads.

::

    {"name": "ctr", "champion": "/models/ctr/versions/3", "canary": "/models/ctr/versions/4",
     "canary_percent": 10, "server": {"host": "127.0.0.1", "port": 8080, "pid": 1234},
     "randomisation": "user", "router": {"host": "127.0.0.1", "port": 8090, "pid": 1240},
     "logger": {"url": "http://127.0.0.1:9000/", "mode": "all"},
     "updated_at": "...", "events": [{"time": ..., "action": "start_canary", ...}, ...]}

``randomisation`` is the deployment's design: ``"user"`` (user-sticky: clients go through the
user-hash router recorded under ``router``) or ``"request"`` (split per request, as Knative's
``canaryTrafficPercent``); a file without it is ``"user"``. ``logger``: where the server's payload
logger sends its CloudEvents (null: no logging).

The server serves ``<name>-champion`` and, during a rollout, ``<name>-canary``; the token beside
the file (``<state>.token``, owner-readable only) is the bearer token of the server's
repository API, which the deployer calls to swap models.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from genctr.atomic import atomic_path, write_json
from genctr.errors import ConfigError, describe
from genctr.monitoring.logs import RANDOMISATION_UNITS

CHAMPION, CANARY = "champion", "canary"
ARMS = (CHAMPION, CANARY)
RANDOMISATIONS = RANDOMISATION_UNITS  # ("user", "request"): the design the deployment splits traffic by
DEFAULT_RANDOMISATION = "user"  # a state file that does not say: the local deployment's design before it could
LOGGER_MODES = ("all", "request", "response")  # as KServe's spec.predictor.logger.mode


def model_name(name: str, arm: str) -> str:
    return f"{name}-{arm}"


def read_state(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"deployment state {p} does not exist: deploy() a champion first")
    try:
        state = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"deployment state {p} is not valid JSON: {exc}") from exc
    if not isinstance(state, dict) or not state.get("name") or not state.get(CHAMPION):
        raise ConfigError(f"deployment state {p} lacks 'name' or 'champion'")
    return check_state(state, p)


def token_file(state_file: str | Path) -> Path:
    """Where the deployment's repository API token lives (beside the state file)."""
    return Path(state_file).with_suffix(".token")


def write_token(path: Path) -> str:
    """A fresh random token, written owner-readable only and atomically (unique temp + replace)."""
    token = secrets.token_urlsafe(32)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
    return token


def write_state(path: str | Path, state: dict[str, Any]) -> None:
    """Atomic replace: the server never reads a half-written file."""
    write_json(path, state)


def check_state(state: dict[str, Any], source: Any) -> dict[str, Any]:
    """Return a local deployment's state (the parsed JSON file ``source``) after checking its values.

    ``name``/``champion``: non-empty strings; ``canary``: a non-empty string or null;
    ``canary_percent``: an integer 0..100 (0 without a canary); ``server`` and ``router``: null or
    an object whose ``host`` is a string and ``port``/``pid`` integers; ``randomisation``: one of
    :data:`RANDOMISATIONS` (absent: ``"user"``); ``logger``: null or ``{"url": "http(s)://...",
    "mode": "all" | "request" | "response"}``; ``events``: a list. A hand-edited file that breaks any
    of these is a ConfigError naming the key, never a crash later.
    """
    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"deployment state {source}: {key!r} must be {what}, got {describe(state.get(key))}; "
                           "fix the file or deploy() again")

    def is_int(v: Any) -> bool:
        return type(v) is int  # not bool, not a float such as 50.0

    for key in ("name", CHAMPION):
        if not isinstance(state.get(key), str) or not state[key].strip():
            raise bad(key, "a non-empty string")
    canary = state.get(CANARY)
    if canary is not None and (not isinstance(canary, str) or not canary.strip()):
        raise bad(CANARY, "a non-empty string or null")
    percent = state.get("canary_percent", 0)
    if not is_int(percent) or not 0 <= percent <= 100:
        raise bad("canary_percent", "an integer 0..100")
    if canary is None and percent != 0:
        raise bad("canary_percent", "0 while no canary is deployed")
    for process in ("server", "router"):
        entry = state.get(process)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise bad(process, "an object with host, port and pid, or null")
        for key, ok in (("host", lambda v: isinstance(v, str)), ("port", is_int), ("pid", is_int)):
            if key in entry and entry[key] is not None and not ok(entry[key]):
                raise ConfigError(f"deployment state {source}: {process}.{key} must be "
                                  f"{'a string' if key == 'host' else 'an integer'}, got {describe(entry[key])}")
    if state.get("randomisation", DEFAULT_RANDOMISATION) not in RANDOMISATIONS:
        raise bad("randomisation", f"one of {list(RANDOMISATIONS)}")
    logger = state.get("logger")
    if logger is not None:
        url = logger.get("url") if isinstance(logger, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise bad("logger", 'null or an object {"url": "http(s)://host:port/", "mode": ...}')
        if logger.get("mode", "all") not in LOGGER_MODES:
            raise ConfigError(f"deployment state {source}: logger.mode must be one of {list(LOGGER_MODES)}, "
                              f"got {describe(logger.get('mode'))}")
    if not isinstance(state.get("events", []), list):
        raise bad("events", "a list")
    return state
