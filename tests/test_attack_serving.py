"""Hostile inputs against the serving layer, replayed against real servers and the parsers.

Each case is something a hostile or careless client did to a running ``python -m
genctr.serving``: unloading the served model through KServe's repository endpoints, prices that
overflow float32, tensors nested hundreds of levels deep, connections that stall half-way
through a request, bursts past the server's capacity, and replacing the Feast SQLite store
under the running server. Every case must end cleanly: a 4xx naming the problem (or a 503 +
``Retry-After`` when shedding load, or a 408/closed connection for a stalled one), never another
5xx, the server still up and serving the same model, and predictions that follow the store the
operator materialised last.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import select
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest
from serving_fixtures import (
    ServerHandle,
    ServingArtifacts,
    candidates_for,
    known_users,
    model_server,
    serving_artifacts,
)

from genctr.errors import ConfigError
from genctr.serving.request import MAX_PRICE, Limits, parse_v1, parse_v2
from genctr.serving.server import ServeConfig

LIMITS = Limits(max_candidates=64, max_history=30)
READ_TIMEOUT = 1.0
TOKEN = "t0k3n-" + "x" * 26


def v2(inputs: list[tuple[str, str, list[int], Any]]) -> InferRequest:
    return InferRequest(model_name="ctr", infer_inputs=[
        InferInput(name=n, datatype=d, shape=s, data=x) for n, d, s, x in inputs])


def nested(depth: int, leaf: Any = 1) -> Any:
    data: Any = leaf
    for _ in range(depth):
        data = [data]
    return data


# -- parsers: prices and nesting (no server) ------------------------------------------------------

HOSTILE_PRICES = [1e300, 1e39, 3.5e38, -1.0, -1e-9, 1e6 + 1, 10**30, 2**63, float("inf"), float("nan")]


@pytest.mark.parametrize("price", HOSTILE_PRICES)
def test_v1_price_out_of_bounds_is_400_naming_field_and_index(price: float) -> None:
    body = {"instances": [{"user_id": 1, "candidates": [{"item_id": 1, "price": 2.0},
                                                        {"item_id": 2, "category_id": 3, "price": price}]}]}
    with pytest.raises(InvalidInput, match=r"instances\[0\]\.candidates\[1\]\.price must be a finite number"):
        parse_v1(body, LIMITS)


@pytest.mark.parametrize("price", HOSTILE_PRICES)
def test_v2_price_out_of_bounds_is_400_naming_input_and_index(price: float) -> None:
    req = v2([("user_id", "INT64", [1], [1]), ("item_id", "INT64", [2], [1, 2]),
              ("price", "FP64", [2], [1.5, price])])
    with pytest.raises(InvalidInput, match=r"input 'price'\[1\] must be a finite number in \[0, 1e\+06\]"):
        parse_v2(req, LIMITS)


def test_price_error_echoes_at_most_a_short_value() -> None:
    body = {"instances": [{"user_id": 1, "candidates": [{"item_id": 1, "price": 10**4000}]}]}
    with pytest.raises(InvalidInput) as err:
        parse_v1(body, LIMITS)
    assert len(str(err.value)) < 200


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(price=st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(2**70), max_value=2**70))
def test_every_accepted_price_is_finite_and_bounded_in_float32(price: float) -> None:
    body = {"instances": [{"user_id": 1, "candidates": [{"item_id": 1, "price": price}]}]}
    req2 = v2([("user_id", "INT64", [1], [1]), ("item_id", "INT64", [1], [1]), ("price", "FP64", [1], [price])])
    for parse, req in ((parse_v1, body), (parse_v2, req2)):
        try:
            got = parse(req, LIMITS).price
        except InvalidInput as exc:
            assert "price" in str(exc) and not (0 <= price <= MAX_PRICE)
            continue
        assert np.isfinite(got).all() and 0 <= float(got[0]) <= MAX_PRICE


@pytest.mark.parametrize("shape, data", [
    ([1], nested(900)), ([1], nested(2)), ([1, 1], nested(3)), ([2, 1], [[1], [[2]]]), ([2, 1], [[1, 2], [3]]),
    ([2], [1, [2]]),
])
def test_v2_data_nested_past_its_shape_is_400_without_recursion(shape: list[int], data: Any) -> None:
    req = v2([("user_id", "INT64", [1], [1]), ("item_id", "INT64", shape, data)])
    t0 = time.perf_counter()
    with pytest.raises(InvalidInput, match="input 'item_id' data"):
        parse_v2(req, LIMITS)
    assert time.perf_counter() - t0 < 0.05


def test_v2_data_of_declared_shapes_still_parses() -> None:
    req = v2([("user_id", "INT64", [1], [7]), ("item_id", "INT64", [2, 1], [[1], [2]]),
              ("price", "FP32", [2], [0.0, MAX_PRICE])])
    got = parse_v2(req, LIMITS)
    assert got.item.tolist() == [1, 2] and got.price.tolist() == [0.0, MAX_PRICE]


# -- configuration and the command line -----------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"enable_repository_api": True}, "repository token"),
    ({"enable_repository_api": True, "repository_token": "short"}, "repository token"),
    ({"enable_repository_api": True, "repository_token": "x" * 20 + "\n"}, "printable"),
    ({"host": ""}, "host"), ({"host": "bad host"}, "host"), ({"max_in_flight": -1}, "max_in_flight"),
    ({"read_timeout_s": 0}, "read_timeout_s"), ({"max_connections": 0}, "max_connections"),
    ({"enable_grpc": True}, "gRPC model load/unload"),  # KServe's gRPC repository calls have no token check
])
def test_serve_config_refuses_unsafe_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServeConfig(model_dir="m", **kwargs)


def test_serve_config_defaults_are_safe() -> None:
    cfg = ServeConfig(model_dir="m", repository_token="secret-secret-secret")
    assert (cfg.host, cfg.enable_repository_api, cfg.in_flight_limit) == ("127.0.0.1", False, 8)
    assert "secret" not in repr(cfg)


def test_cli_refuses_repository_api_without_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from genctr.serving.__main__ import config_from_args, main, parser

    monkeypatch.delenv("GENCTR_REPOSITORY_TOKEN", raising=False)
    assert main(["--model_dir", str(tmp_path), "--enable_repository_api", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: enable_repository_api needs a repository token") and "Traceback" not in err
    assert main(["--model_dir", str(tmp_path), "--enable_repository_api", "true",
                 "--repository_token_file", str(tmp_path / "missing")]) == 2
    assert "cannot read --repository_token_file" in capsys.readouterr().err
    monkeypatch.setenv("GENCTR_REPOSITORY_TOKEN", TOKEN)
    cfg = config_from_args(parser().parse_args(["--model_dir", "m", "--enable_repository_api", "true"]))
    assert cfg.repository_token == TOKEN


def test_pod_entry_point_listens_on_all_interfaces() -> None:
    from genctr.deploy.manifests import BASE, render_all
    from genctr.serving.__main__ import config_from_args, parser

    container = render_all(BASE)["serving-runtime.yaml"]["spec"]["containers"][0]
    args = parser().parse_args([a.replace("{{.Name}}", "ctr") for a in container["args"]])
    assert config_from_args(args).host == "0.0.0.0"
    assert not config_from_args(args).enable_repository_api


def test_kserve_internals_the_transport_relies_on() -> None:
    """GenCTRModelServer sets host/timeouts on ``_rest_server.config`` in ``setup_event_loop``:
    KServe must build that config (a uvicorn.Config) before calling it, and uvicorn must take a
    protocol class as ``http``. Fails when a KServe or uvicorn upgrade changes either."""
    import uvicorn
    from kserve import model_server
    from kserve.protocol.rest import server as rest

    from genctr.serving.transport import ReadTimeoutProtocol, configure_uvicorn

    start = inspect.getsource(model_server.ModelServer.start)
    assert start.index("self._rest_server = RESTServer(") < start.index("self.setup_event_loop()") \
        < start.index("asyncio.run(")
    assert "self.config = uvicorn.Config(" in inspect.getsource(rest.RESTServer.__init__)
    config = uvicorn.Config("kserve.model_server:app", host="0.0.0.0")
    configure_uvicorn(config, "127.0.0.1", 2.5, 10)
    config.load()
    assert issubclass(config.http_protocol_class, ReadTimeoutProtocol)
    assert (config.host, config.http_protocol_class.read_timeout, config.limit_concurrency) == ("127.0.0.1", 2.5, 10)


def test_load_shedder_answers_503_with_retry_after_past_the_limit() -> None:
    """ASGI level: with one slot taken, the next POST gets 503 at once; GETs pass; the slot frees."""
    import asyncio

    from genctr.serving.guard import LoadShedder

    release = asyncio.Event()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        if body == b"slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def call(shedder: LoadShedder, method: str, body: bytes) -> tuple[int, dict, bytes]:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(m: dict) -> None:
            sent.append(m)
        await shedder({"type": "http", "method": method, "path": "/v1/models/ctr:predict"}, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]

    async def scenario() -> None:
        shedder = LoadShedder(app, max_in_flight=1)
        slow = asyncio.create_task(call(shedder, "POST", b"slow"))
        await asyncio.sleep(0)
        status, headers, body = await call(shedder, "POST", b"fast")
        assert status == 503 and headers[b"retry-after"] == b"1" and b"--max_in_flight" in body
        assert (await call(shedder, "GET", b"get"))[0] == 200
        release.set()
        assert (await slow)[0] == 200 and shedder.in_flight == 0
        assert (await call(shedder, "POST", b"fast"))[0] == 200

    asyncio.run(scenario())


def test_client_errors_are_logged_in_one_line_server_errors_in_full(caplog: pytest.LogCaptureFixture) -> None:
    """A flood of bad requests must not flood the log with KServe's tracebacks."""
    import asyncio
    import logging

    from kserve.errors import generic_exception_handler, invalid_input_handler

    from genctr.serving.server import _client_errors_in_one_line

    kserve_log = logging.getLogger("kserve")
    kserve_log.addFilter(_client_errors_in_one_line)
    try:
        with caplog.at_level(logging.INFO, logger="kserve"):
            asyncio.run(invalid_input_handler(None, InvalidInput("x" * 5000)))
            asyncio.run(generic_exception_handler(None, RuntimeError("boom")))
    finally:
        kserve_log.removeFilter(_client_errors_in_one_line)
    client, server_error = caplog.records[-2:]
    assert client.levelname == "WARNING" and client.exc_info is None and len(client.getMessage()) < 250
    assert server_error.levelname == "ERROR" and server_error.exc_info is not None


# -- real servers ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> ServingArtifacts:
    return serving_artifacts(tmp_path_factory, spark)


@pytest.fixture(scope="module")
def served_feast(art: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A materialisation of its own, which one test replaces under the running server."""
    from genctr.features.feast_sync import materialize

    work = tmp_path_factory.mktemp("attack-feast")
    materialize(art.build, work_dir=work)
    return work


@pytest.fixture(scope="module")
def server(art: ServingArtifacts, served_feast: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerHandle]:
    log = tmp_path_factory.mktemp("attack-server") / "server.log"
    args = ["--model_dir", str(art.model), "--feast_repo", str(served_feast), "--max_candidates", "64",
            "--read_timeout_s", str(READ_TIMEOUT), "--forward_threads", "1", "--max_in_flight", "1"]
    with model_server(args, log, "ctr") as handle:
        yield handle


def predict(server: ServerHandle, user: int, cands: list[dict], history: dict | None = None) -> list[float]:
    inst: dict[str, Any] = {"user_id": user, "candidates": cands}
    if history is not None:
        inst["history"] = history
    r = requests.post(f"{server.url}/v1/models/ctr:predict", json={"instances": [inst]}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


REPOSITORY_ATTACKS = [
    ("POST", "/v2/repository/models/ctr/unload"), ("POST", "/v2/repository/models/ctr/load"),
    ("POST", "/v2//repository/models/ctr/unload"), ("POST", "/V2/Repository/models/ctr/unload"),
    ("POST", "/v2/repository/models/ctr/unload/"), ("GET", "/v2/repository/models/ctr/unload"),
    ("POST", "/v2/repository/index"), ("POST", "//v2/repository/models/ctr/unload"),
    ("POST", "/v2/repository/models/ctr%2Funload"),
]


def test_serving_port_cannot_unload_or_load(art: ServingArtifacts, server: ServerHandle) -> None:
    user, cands = known_users(art)[0], candidates_for(art, 8)
    before = predict(server, user, cands)
    for method, path in REPOSITORY_ATTACKS:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
            r = requests.request(method, server.url + path, headers=headers, timeout=10)
            assert 400 <= r.status_code < 500 and r.status_code != 200, (method, path, r.status_code, r.text)
    r = requests.post(f"{server.url}/v2/repository/models/ctr/unload", timeout=10)
    assert r.status_code == 403 and "--enable_repository_api" in r.json()["error"]
    assert requests.get(f"{server.url}/v2/models/ctr/ready", timeout=10).ok
    assert predict(server, user, cands) == before


def test_server_listens_on_loopback_only(server: ServerHandle) -> None:
    proc = psutil.Process(server.proc.pid)
    conns = proc.net_connections if hasattr(proc, "net_connections") else proc.connections  # psutil < 6
    listening = [c.laddr for c in conns(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening


PRICE_BODIES = [  # (raw JSON text of the price, where the 400 must point)
    ("1e300", "price"), ("1e39", "price"), ("-1", "price"), ("1000001", "price"),
    ("100000000000000000000000000000", "price"), ("NaN", "Unrecognized"), ("Infinity", "Unrecognized"),
]


@pytest.mark.parametrize("price, where", PRICE_BODIES)
def test_hostile_prices_over_http_are_400(server: ServerHandle, price: str, where: str) -> None:
    body = ('{"instances": [{"user_id": 1, "candidates": [{"item_id": 1, "category_id": 2, "price": '
            + price + '}]}]}').encode()
    r = requests.post(f"{server.url}/v1/models/ctr:predict", data=body,
                      headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and where in r.json()["error"], r.text
    v2_body = ('{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]},'
               '{"name": "item_id", "shape": [1], "datatype": "INT64", "data": [1]},'
               '{"name": "price", "shape": [1], "datatype": "FP64", "data": [' + price + ']}]}').encode()
    r = requests.post(f"{server.url}/v2/models/ctr/infer", data=v2_body,
                      headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("depth", [900, 5000])
def test_deeply_nested_v2_data_is_400(server: ServerHandle, depth: int) -> None:
    data = "[" * depth + "1" + "]" * depth  # as text: json.dumps itself recurses
    body = ('{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]},'
            '{"name": "item_id", "shape": [1], "datatype": "INT64", "data": ' + data + '}]}').encode()
    r = requests.post(f"{server.url}/v2/models/ctr/infer", data=body,
                      headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text[:300]
    assert server.alive()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _wait_closed(socks: list[socket.socket], until: float) -> list[socket.socket]:
    """Reads whatever the server sends on ``socks`` until each is closed by the server or
    ``until`` (monotonic) passes; returns the ones still open."""
    open_ = list(socks)
    while open_ and time.monotonic() < until:
        readable, _, _ = select.select(open_, [], [], 0.2)
        for s in readable:
            try:
                closed = not s.recv(65536)
            except OSError:  # reset by the server
                closed = True
            if closed:
                open_.remove(s)
    return open_


STALLS = [
    b"",  # connects, sends nothing
    b"POST /v1/models/ctr:predict HTTP/1.1\r\nHost: x\r\n",  # half the headers
    b"POST /v1/models/ctr:predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
    b"content-length: 1000\r\n\r\n{\"instances\": [",  # headers, then part of the body
    b"GET /v2/health/live HTTP/1.1\r\nHo",  # part of a header line
]


def test_stalled_connections_are_dropped_and_the_server_keeps_answering(art: ServingArtifacts,
                                                                        server: ServerHandle) -> None:
    user, cands = known_users(art)[0], candidates_for(art, 4)
    socks = []
    for i in range(100):
        s = _connect(server.port)
        if STALLS[i % len(STALLS)]:
            s.sendall(STALLS[i % len(STALLS)])
        socks.append(s)
    slow = _connect(server.port)  # slowloris: one byte at a time, forever
    start = time.monotonic()
    predict(server, user, cands)  # served while 101 connections stall
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    closed_slow = False
    for i in range(len(request) - 2):
        try:
            slow.sendall(request[i:i + 1])
        except OSError:
            closed_slow = True
            break
        time.sleep(0.1)
        if time.monotonic() - start > READ_TIMEOUT + 3:
            break
    open_ = _wait_closed(socks, start + READ_TIMEOUT + 5)
    for s in [*socks, slow]:
        s.close()
    assert not open_, f"{len(open_)} of 100 stalled connections still open after {READ_TIMEOUT + 5} s"
    assert closed_slow
    assert predict(server, user, cands)


def test_timed_out_request_gets_408(server: ServerHandle) -> None:
    s = _connect(server.port)
    s.sendall(STALLS[2])
    s.settimeout(READ_TIMEOUT + 5)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 408") and b"--read_timeout_s" in data


def test_a_burst_past_the_in_flight_limit_gets_503_with_retry_after(art: ServingArtifacts,
                                                                     server: ServerHandle) -> None:
    user, cands = known_users(art)[0], candidates_for(art, 60)
    body = json.dumps({"instances": [{"user_id": user, "candidates": cands}]}).encode()
    request = (b"POST /v1/models/ctr:predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(body), body))
    socks = [_connect(server.port) for _ in range(40)]
    for s in socks:  # all 40 requests arrive together; the server works on one at a time
        s.sendall(request)
    statuses: list[int] = []
    for s in socks:
        s.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        status = int(head.split(b" ", 2)[1])
        statuses.append(status)
        if status == 503:
            assert b"\r\nretry-after: 1\r\n" in head.lower()
        s.close()
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
    assert server.alive()
    assert predict(server, user, cands[:5])


def test_replaced_online_store_is_reopened(art: ServingArtifacts, served_feast: Path, server: ServerHandle,
                                           tmp_path: Path) -> None:
    """The operator deletes the SQLite store and materialises a build whose user X now has user
    Y's history: the running server must score X with Y's history, not the deleted file's."""
    from genctr.features.feast_sync import USER_VIEW, get_online_sequences, materialize

    fu = pd.read_parquet(art.build / "feast" / USER_VIEW)
    x, y = [int(u) for u in fu.sort_values("seq_len", ascending=False)["user_id"].head(2)]
    cands = candidates_for(art, 8, seed=3)
    old = predict(server, x, cands)
    seq_y = get_online_sequences(art.store, [y])[y]
    history_y = {"item_seq": list(seq_y["item_seq"]), "cate_seq": list(seq_y["cate_seq"])}
    want = predict(server, x, cands, history_y)  # X's scores with Y's history, supplied in the request
    assert not np.allclose(old, want)

    build = tmp_path / "build"
    shutil.copytree(art.build / "feast", build / "feast")
    table = fu.copy()
    row_x, row_y = table.index[table["user_id"] == x][0], table.index[table["user_id"] == y][0]
    for col in ("item_seq", "cate_seq", "seq_len"):
        table.at[row_x, col] = table.at[row_y, col]
    shutil.rmtree(build / "feast" / USER_VIEW)
    (build / "feast" / USER_VIEW).mkdir()
    table.to_parquet(build / "feast" / USER_VIEW / "part-0.parquet")
    os.unlink(served_feast / "online_store.db")
    materialize(build, work_dir=served_feast)

    deadline = time.monotonic() + 10
    got = predict(server, x, cands)
    while not np.allclose(got, want, rtol=1e-5, atol=1e-6) and time.monotonic() < deadline:
        time.sleep(0.3)
        got = predict(server, x, cands)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert math.isfinite(sum(got)) and server.alive()


def test_the_attacked_server_logged_no_tracebacks(server: ServerHandle) -> None:
    """After every attack above: the same process, alive, with no unhandled exception logged."""
    assert server.alive()
    text = server.log.read_text(errors="replace")
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


# -- the explicit option: repository API behind a token --------------------------------------------

@pytest.fixture(scope="module")
def managed_server(art: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    root = tmp_path_factory.mktemp("attack-managed")
    token = root / "token"
    token.write_text(TOKEN + "\n")
    args = ["--model_dir", str(art.model), "--enable_repository_api", "true", "--repository_token_file", str(token),
            "--forward_threads", "0"]
    with model_server(args, root / "server.log", "ctr") as handle:
        yield handle


@pytest.mark.parametrize("authorization", [None, "", "Bearer", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
                                           f"bearer {TOKEN}", TOKEN, f"Basic {TOKEN}", f"Bearer  {TOKEN}"])
def test_repository_api_needs_the_exact_token(managed_server: ServerHandle, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    r = requests.post(f"{managed_server.url}/v2/repository/models/ctr/unload", headers=headers, timeout=10)
    assert r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer", r.text
    assert requests.get(f"{managed_server.url}/v2/models/ctr/ready", timeout=10).ok


def test_repository_api_with_the_token_manages_the_model(managed_server: ServerHandle) -> None:
    r = requests.post(f"{managed_server.url}/v2/repository/models/ctr/unload",
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert requests.get(f"{managed_server.url}/v2/models/ctr/ready", timeout=10).status_code == 404
    assert managed_server.alive()
