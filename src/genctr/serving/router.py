"""The user-hash router: one URL in front of the champion's and the canary's own URLs.

    genctr serve router --champion URL --canary URL --percent P [--host H --port N]
    python -m genctr.serving.router --champion URL --canary URL --percent P

A user-sticky A/B test needs every request of a user on the same arm. KServe's Knative split
(``canaryTrafficPercent``) picks an arm per HTTP request, so one user meets both; with tag
routing (annotation ``serving.kserve.io/enable-tag-routing: "true"``) each arm gets its own URL
(``prev-<name>-predictor...``: the champion, ``latest-<name>-predictor...``: the canary), and this
router sits in front of the two: it hashes the user ids of a KServe v1 request with
:func:`genctr.serving.split.assign_arms` (the one assignment function; the simulator groups users
with it too) and forwards the request unchanged to that arm's predict URL. On a cluster it is a
Deployment + Service (``manifests/ab-router/``) whose ``--percent`` follows the canary's; locally
the ``LocalDeployer`` starts it with ``--deploy_state``, and it reads arms and split from the
deployment's state file, re-read whenever the file changes (one ``stat`` per request), so a
rollout step needs no router restart. KServe's ``InferenceGraph`` (a ``Splitter`` node) would
route too, but it splits by weight, per request, not by a hash of the user: it cannot keep a
user on one arm.

What it does with a request (``POST /v1/models/<any name>:predict``, the body as KServe v1):

* every ``instances[i].user_id`` must be a 64-bit integer (else 400 naming the instance);
* the instances must all hash to one arm. A request whose users fall on both arms is **refused
  with 400** naming the users per arm: splitting it would turn one request (one CloudEvent id,
  one ``X-Request-Id``) into two, and the A/B logs key every row by that id and the instance's
  index. A client batching several users groups them by :func:`assign_arms` first;
* ``X-Request-Id`` and ``Ce-Id`` are forwarded; when the client sent no ``Ce-Id`` it is set to the
  ``X-Request-Id`` (KServe's payload logger takes the CloudEvent id, which the A/B logs key
  requests by, from ``Ce-Id``), and a request with neither gets a fresh id for both;
* the randomisation header (:data:`RANDOMISATION_HEADER`) is set to ``user``: what passes here
  is user-randomised, whatever a client claims; the other headers the payload logger copies into
  its events (:data:`genctr.monitoring.headers.METADATA_HEADERS`, e.g. the request time) pass;
* the answer is the arm's, status and body, with ``X-Genctr-Arm: champion|canary`` and the
  ``X-Request-Id``. An arm that cannot be reached is a 502, one that does not answer in
  ``timeout_s`` a 504; the router keeps serving.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

from genctr.errors import ConfigError, GenCTRError
from genctr.monitoring.headers import METADATA_HEADERS, RANDOMISATION_HEADER
from genctr.serving.split import assign_arms
from genctr.serving.state import CANARY, CHAMPION, model_name, read_state

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
CE_ID_HEADER = "Ce-Id"  # KServe's agent: the CloudEvent id of a logged request (else a random UUID)
ARM_HEADER = "X-Genctr-Arm"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DEFAULT_MAX_BODY_BYTES = 1 << 20  # the model server's own default limit


class RouteError(GenCTRError):
    """A request the router refuses: ``status`` (4xx) and a message naming the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RouterConfig:
    """Arms, split and listening address of one router.

    ``champion`` / ``canary``: the arms' own v1 predict URLs (``http(s)://host[:port]/v1/models/
    <name>:predict``); ``canary`` '' = no canary in progress (every user on the champion). Or
    ``deploy_state``: a local deployment's state file, whose arms and ``canary_percent`` are followed.
    """

    champion: str = ""
    canary: str = ""
    percent: int = 0  # 0..100: users whose bucket is below it go to the canary
    host: str = "127.0.0.1"
    port: int = 8090
    timeout_s: float = 10.0  # one forwarded call: connect, and each read
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    deploy_state: str = ""

    def __post_init__(self) -> None:
        if bool(self.deploy_state) == bool(self.champion):
            raise ConfigError("give the router either --champion (and --canary, --percent) or --deploy_state")
        if self.deploy_state:
            read_state(self.deploy_state)  # a missing or malformed file is refused now, naming it
            return
        for name in ("champion", "canary"):
            url = getattr(self, name)
            if name == "canary" and not url:
                continue
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or not parts.path.endswith(":predict"):
                raise ConfigError(f"router --{name} must be an arm's v1 predict URL "
                                  f"http(s)://host[:port]/v1/models/<name>:predict, got {url[:200]!r}")
        if type(self.percent) is not int or not 0 <= self.percent <= 100:
            raise ConfigError(f"router --percent must be an integer 0..100, got {self.percent!r}")
        if self.percent > 0 and not self.canary:
            raise ConfigError(f"router --percent {self.percent} needs a --canary URL to send that share to")
        if not 0 < self.port < 65536:
            raise ConfigError(f"router --port must be a TCP port, got {self.port}")
        if not self.timeout_s > 0 or self.max_body_bytes < 1024:
            raise ConfigError(f"router needs timeout_s > 0 and max_body_bytes >= 1024, got {self.timeout_s}, "
                              f"{self.max_body_bytes}")



class Routes:
    """The arms' URLs and the split: fixed by the config, or followed in a deployment's state file."""

    def __init__(self, cfg: RouterConfig) -> None:
        self.cfg = cfg
        self._stamp: tuple[int, int] | None = None
        self._routes = ({CHAMPION: cfg.champion, **({CANARY: cfg.canary} if cfg.canary else {})}, cfg.percent)

    def current(self) -> tuple[dict[str, str], int]:
        """``({arm: predict URL}, canary percent)``; the state file is re-read when it was replaced."""
        if self.cfg.deploy_state:
            st = os.stat(self.cfg.deploy_state)  # written by atomic replace: a new file, a new stamp
            stamp = (st.st_mtime_ns, st.st_ino)
            if stamp != self._stamp:
                self._routes = state_routes(Path(self.cfg.deploy_state))
                self._stamp = stamp
        return self._routes


def state_routes(path: Path) -> tuple[dict[str, str], int]:
    """A local deployment's arms (its server's model URLs) and canary percent."""
    state = read_state(path)
    server = state.get("server") or {}
    base = f"http://{server.get('host', '127.0.0.1')}:{server.get('port', 0)}"
    arms = [CHAMPION, *([CANARY] if state.get(CANARY) else [])]
    urls = {arm: f"{base}/v1/models/{model_name(state['name'], arm)}:predict" for arm in arms}
    return urls, int(state.get("canary_percent", 0)) if CANARY in urls else 0


def user_ids(body: bytes) -> np.ndarray:
    """(N,) int64: the ``user_id`` of each instance of a v1 body; RouteError 400 naming what is wrong."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RouteError(400, f"request body is not valid JSON: {exc}") from None
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise RouteError(400, "request body must be a KServe v1 object with a non-empty 'instances' list")
    ids = [inst.get("user_id") if isinstance(inst, dict) else None for inst in instances]
    for i, u in enumerate(ids):  # type(u) is int: JSON integers only (bool is an int subclass, refused)
        if type(u) is not int or not INT64_MIN <= u <= INT64_MAX:
            raise RouteError(400, f"instances[{i}].user_id must be a 64-bit integer (the router assigns "
                                  f"arms by user), got {str(u)[:40] if u is not None else 'nothing'}")
    return np.asarray(ids, np.int64)


def route(body: bytes, percent: int) -> str:
    """The arm of a v1 request: all its users' arm, or RouteError 400 if they fall on both."""
    users = user_ids(body)
    if percent <= 0:
        return CHAMPION
    canary = assign_arms(users, percent)  # (N,) bool
    if canary.all():
        return CANARY
    if not canary.any():
        return CHAMPION
    raise RouteError(400, f"the request's users fall on both arms at {percent} % canary (champion: "
                          f"{users[~canary][:5].tolist()}, canary: {users[canary][:5].tolist()}): send one "
                          "request per user, or group users by genctr.deploy.base.assign_arms before batching")


def forward_headers(headers: Any) -> dict[str, str]:
    """The headers an arm gets: content type, the request ids (``Ce-Id`` follows ``X-Request-Id``), the
    logged metadata headers, and ``user`` as the randomisation."""
    request_id = headers.get(REQUEST_ID_HEADER) or headers.get(CE_ID_HEADER) or uuid.uuid4().hex
    passed = {name: headers[name] for name in METADATA_HEADERS if headers.get(name) is not None}
    return {"Content-Type": headers.get("Content-Type") or "application/json", REQUEST_ID_HEADER: request_id,
            CE_ID_HEADER: headers.get(CE_ID_HEADER) or request_id, **passed, RANDOMISATION_HEADER: "user"}


def build_app(cfg: RouterConfig) -> Any:
    """The router's ASGI app (Starlette); one pooled keep-alive HTTP client to the arms."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    routes = Routes(cfg)
    client = httpx.AsyncClient(timeout=cfg.timeout_s, limits=httpx.Limits(max_keepalive_connections=32))
    failures: dict[tuple[str, str], int] = {}

    def error(status: int, message: str, request_id: str = "") -> Response:
        return JSONResponse({"error": message}, status, headers={REQUEST_ID_HEADER: request_id} if request_id else None)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise RouteError(413, f"request body of {declared} bytes is over the router's {cfg.max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cfg.max_body_bytes:
                raise RouteError(413, f"request body is over the router's {cfg.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(request: Request) -> Response:
        headers = forward_headers(request.headers)
        rid = headers[REQUEST_ID_HEADER]
        try:
            urls, percent = routes.current()
        except (OSError, GenCTRError) as exc:  # the deployment's state file is gone or broken
            return error(503, f"the router cannot read its deployment's arms: {str(exc)[:300]}", rid)
        try:
            body = await read_body(request)
            arm = route(body, percent)
        except RouteError as exc:
            return error(exc.status, str(exc), rid)
        try:
            upstream = await client.post(urls[arm], content=body, headers=headers)
        except httpx.TimeoutException as exc:
            _count(failures, arm, "timeout", exc)
            return error(504, f"the {arm} arm did not answer within {cfg.timeout_s} s", rid)
        except httpx.HTTPError as exc:
            _count(failures, arm, type(exc).__name__, exc)
            return error(502, f"the {arm} arm cannot be reached ({type(exc).__name__})", rid)
        return Response(upstream.content, upstream.status_code, media_type=upstream.headers.get("content-type"),
                        headers={ARM_HEADER: arm, REQUEST_ID_HEADER: rid})

    async def live(_: Request) -> Response:
        try:
            urls, percent = routes.current()
        except (OSError, GenCTRError) as exc:
            return error(503, f"the router cannot read its deployment's arms: {str(exc)[:300]}")
        return JSONResponse({"live": True, "arms": urls, "percent": percent})

    async def not_found(request: Request, _: Exception) -> Response:
        return error(404, f"no route {request.method} {request.url.path[:200]}: the router answers "
                          "POST /v1/models/<name>:predict and GET /v2/health/live")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(routes=[Route("/v1/models/{model}:predict", predict, methods=["POST"]),
                             Route("/v2/health/live", live), Route("/v2/health/ready", live)],
                     exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan)


def _count(failures: dict[tuple[str, str], int], arm: str, kind: str, exc: Exception) -> None:
    """Log the 1st, 10th, 100th ... failure of a kind: a dead arm must not flood the log."""
    n = failures[(arm, kind)] = failures.get((arm, kind), 0) + 1
    if n & (n - 1) == 0 or n % 1000 == 0:
        log.warning("%s arm: %s (%d so far): %s", arm, kind, n, str(exc)[:200])


def serve_router(cfg: RouterConfig) -> None:
    """Serve until SIGTERM/SIGINT (blocking)."""
    import uvicorn

    urls, percent = Routes(cfg).current()
    log.info("routing users to champion %s and canary %s at %d %% on http://%s:%d%s", urls[CHAMPION],
             urls.get(CANARY, "(none)"), percent, cfg.host, cfg.port,
             f" (following {cfg.deploy_state})" if cfg.deploy_state else "")
    uvicorn.run(build_app(cfg), host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                timeout_keep_alive=65)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m genctr.serving.router", allow_abbrev=False,
                                description="User-sticky A/B router in front of a champion and a canary URL.")
    p.add_argument("--champion", default="", help="The champion's v1 predict URL.")
    p.add_argument("--canary", default="", help="The canary's v1 predict URL ('' = no canary).")
    p.add_argument("--percent", type=int, default=0, help="Share of users (0..100) on the canary.")
    p.add_argument("--host", default="127.0.0.1", help="Interface to listen on (a pod passes 0.0.0.0).")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--timeout_s", "--timeout-s", dest="timeout_s", type=float, default=10.0,
                   help="Seconds an arm has to answer (else 504).")
    p.add_argument("--deploy_state", "--deploy-state", dest="deploy_state", default="",
                   help="Follow a LocalDeployer state file's arms and split instead of --champion/--canary/--percent.")
    return p


def main(argv: list[str] | None = None) -> int:
    from genctr.logging_setup import setup_logging

    args = parser().parse_args(argv)
    setup_logging()
    try:
        serve_router(RouterConfig(champion=args.champion, canary=args.canary, percent=args.percent, host=args.host,
                                  port=args.port, timeout_s=args.timeout_s, deploy_state=args.deploy_state))
    except GenCTRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
