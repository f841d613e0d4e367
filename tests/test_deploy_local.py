"""LocalDeployer: champion and canary as two models of one real local ModelServer; the split in a
JSON state file; promote/rollback swap models in the running process. In front of it the user-hash
router (user-sticky design), beside it the payload logger that stands in for KServe's agent."""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import requests
from conftest import free_port
from serving_fixtures import ReferenceScorer, ServingArtifacts, candidates_for, known_users, serving_artifacts

from genctr.deploy import CANARY, CHAMPION
from genctr.deploy.base import assign_arm, assign_arms
from genctr.deploy.local import LocalDeployer
from genctr.errors import ArtifactError, ConfigError
from genctr.serving.online import FeastConfig
from genctr.serving.payload_logger import Captured, EventEmitter, PayloadLoggerConfig
from genctr.serving.router import RouteError, RouterConfig, forward_headers, route
from genctr.serving.state import check_state
from genctr.simulation import LocalSink


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> ServingArtifacts:
    return serving_artifacts(tmp_path_factory, spark)


@pytest.fixture(scope="module")
def deployer(art: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployer]:
    d = LocalDeployer(tmp_path_factory.mktemp("deploy") / "state.json", name="ctr",
                      feast=FeastConfig(str(art.feast_dir)))
    try:
        yield d
    finally:
        d.shutdown()


def scores(url: str, user: int, cands: list[dict[str, Any]]) -> list[float]:
    r = requests.post(url, json={"instances": [{"user_id": user, "candidates": cands}]}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


@pytest.mark.slow
def test_canary_rollout_promote_and_rollback(art: ServingArtifacts, deployer: LocalDeployer, tmp_path: Path) -> None:
    a, b = str(art.model), str(art.model_b)
    user, cands = known_users(art)[0], candidates_for(art, 10)
    want_a, want_b = ReferenceScorer(art, art.model)(user, cands), ReferenceScorer(art, art.model_b)(user, cands)
    assert not np.allclose(want_a, want_b)  # two different models

    st = deployer.deploy(a)
    assert (st.champion_uri, st.canary_uri, st.canary_percent, st.ready) == (a, None, 0, True)
    assert st.randomisation == "user" and "router" in st.urls  # user-sticky unless asked otherwise
    pid, router_pid = st.detail["server"]["pid"], st.detail["router"]["pid"]
    np.testing.assert_allclose(scores(st.urls[CHAMPION], user, cands), want_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores(st.urls["router"], user, cands), want_a, rtol=1e-5, atol=1e-6)

    st = deployer.start_canary(b, 10)
    assert (st.champion_uri, st.canary_uri, st.canary_percent, st.ready) == (a, b, 10, True)
    np.testing.assert_allclose(scores(st.urls[CANARY], user, cands), want_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores(st.urls[CHAMPION], user, cands), want_a, rtol=1e-5, atol=1e-6)
    saved = json.loads(deployer.state_file.read_text())
    assert (saved["champion"], saved["canary"], saved["canary_percent"]) == (a, b, 10)
    assert [e["action"] for e in saved["events"]] == ["deploy", "start_canary"]

    st = deployer.start_canary(b, 50)
    assert st.canary_percent == 50
    # through the router each user gets its own arm's answer: the one the hash names, at the new split
    for u in range(1, 41):
        arm = assign_arm(u, 50)
        r = requests.post(st.urls["router"], json={"instances": [{"user_id": u, "candidates": cands}]},
                          headers={"X-Request-Id": f"t-{u}"}, timeout=30)
        assert r.status_code == 200 and r.headers["X-Genctr-Arm"] == arm and r.headers["X-Request-Id"] == f"t-{u}"
        assert r.json()["predictions"][0] == scores(st.urls[arm], u, cands)
    mixed = [u for u in range(1, 41) if assign_arm(u, 50) == CHAMPION][:1] + \
            [u for u in range(1, 41) if assign_arm(u, 50) == CANARY][:1]
    r = requests.post(st.urls["router"], json={"instances": [{"user_id": u, "candidates": cands} for u in mixed]},
                      timeout=30)
    assert r.status_code == 400 and "both arms" in r.json()["error"] and "assign_arms" in r.json()["error"]

    broken = tmp_path / "broken"  # passes the artifact check, fails to load in the server
    shutil.copytree(art.model_b, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="refused"):
        deployer.start_canary(str(broken), 20)
    st = deployer.status()
    assert (st.canary_uri, st.canary_percent, st.ready) == (b, 50, True)  # previous state restored
    np.testing.assert_allclose(scores(st.urls[CANARY], user, cands), want_b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ArtifactError):
        deployer.start_canary(str(tmp_path / "missing"), 20)  # refused before touching the state

    st = deployer.promote()
    assert (st.champion_uri, st.canary_uri, st.canary_percent, st.ready) == (b, None, 0, True)
    np.testing.assert_allclose(scores(st.urls[CHAMPION], user, cands), want_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores(st.urls["router"], user, cands), want_b, rtol=1e-5, atol=1e-6)
    gone = requests.post(st.urls[CHAMPION].replace(CHAMPION, CANARY), json={"instances": []}, timeout=10)
    assert gone.status_code == 404  # the canary model was unloaded

    deployer.start_canary(a, 20)
    st = deployer.rollback()
    assert (st.champion_uri, st.canary_uri, st.canary_percent, st.ready) == (b, None, 0, True)
    assert CANARY not in st.urls
    np.testing.assert_allclose(scores(st.urls[CHAMPION], user, cands), want_b, rtol=1e-5, atol=1e-6)
    everyone = [u for u in range(1, 41)]  # no canary: the router sends any batch to the champion
    r = requests.post(st.urls["router"], json={"instances": [{"user_id": u, "candidates": cands} for u in everyone]},
                      timeout=30)
    assert r.status_code == 200 and r.headers["X-Genctr-Arm"] == CHAMPION
    assert (st.detail["server"]["pid"], st.detail["router"]["pid"]) == (pid, router_pid)  # one of each throughout
    with pytest.raises(ConfigError, match="no canary"):
        deployer.promote()
    with pytest.raises(ConfigError, match="1..99"):
        deployer.start_canary(a, 100)


@pytest.mark.slow
def test_a_second_deployer_attaches_and_switches_the_design(art: ServingArtifacts, deployer: LocalDeployer) -> None:
    other = LocalDeployer(deployer.state_file, name="ctr")
    st = other.status()
    assert st.ready and st.champion_uri == str(art.model_b)
    st = other.start_canary(str(art.model), 5)
    assert deployer.status().canary_percent == 5
    other.rollback()
    other.stop()  # did not start the server: leaves it running
    assert deployer.status().ready

    by_request = LocalDeployer(deployer.state_file, name="ctr", randomisation="request")
    by_request.ensure_running()  # no server restart: only the router goes
    st = deployer.status()
    assert st.randomisation == "request" and "router" not in st.urls and st.ready
    router = json.loads(deployer.state_file.read_text())["router"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{router['port']}/v2/health/live", timeout=5)
    LocalDeployer(deployer.state_file, name="ctr", randomisation="user").ensure_running()
    st = deployer.status()
    assert st.randomisation == "user" and st.ready
    assert st.urls["router"].startswith(f"http://127.0.0.1:{router['port']}/")  # back on the same address


@pytest.mark.slow
def test_the_emitter_retries_until_the_sink_is_up_and_counts_what_it_drops(tmp_path: Path) -> None:
    port = free_port()
    cfg = PayloadLoggerConfig(url=f"http://127.0.0.1:{port}/", queue_size=4, backoff_initial_s=0.05,
                              backoff_max_s=0.2, service="ctr")
    emitter = EventEmitter(cfg)

    def call(i: int, kind: str) -> Captured:
        if kind == "request":
            body = {"instances": [{"user_id": i, "candidates": [{"item_id": 7, "category_id": 3, "price": 1.5},
                                                                 {"item_id": 8, "category_id": 3, "price": 0.5}]}]}
        else:
            body = {"predictions": [[0.25, 0.5]]}
        return Captured(kind, f"call-{i}", orjson.dumps(body), "application/json", {}, "ctr", "default", time.time())

    try:
        queued = [emitter.put(call(i, kind)) for i in range(5) for kind in ("request", "response")]  # sink down
        assert sum(queued) in (cfg.queue_size, cfg.queue_size + 1)  # the queue, plus the one being retried
        assert emitter.counts.dropped["queue_full"] == len(queued) - sum(queued)
        assert emitter.pending == sum(queued)
        time.sleep(0.5)
        assert emitter.counts.retries > 0 and sum(emitter.counts.sent.values()) == 0
        with LocalSink(tmp_path / "logs", port=port) as sink:
            deadline = time.monotonic() + 60
            while emitter.pending and time.monotonic() < deadline:
                time.sleep(0.05)
            assert emitter.pending == 0 and sum(emitter.counts.sent.values()) == sum(queued)  # none lost
            retries = emitter.counts.retries
            bad = Captured("request", "bad", b"{}", "text/plain", {}, "ctr", "default", time.time())
            assert emitter.put(bad)
            while emitter.pending and time.monotonic() < deadline:
                time.sleep(0.05)
            # refused by the sink (415): dropped and counted at once, never retried
            assert emitter.counts.dropped["rejected"] == 1 and emitter.counts.retries == retries
            health = requests.get(f"{sink.url}healthz", timeout=5).json()
            assert health["status"] == "ok"
    finally:
        emitter.close(drain_s=0)


# -- the pieces, without servers ---------------------------------------------------------------

def v1(users: list[Any]) -> bytes:
    return json.dumps({"instances": [{"user_id": u, "candidates": [{"item_id": 1}]} for u in users]}).encode()


def test_the_router_routes_whole_requests_by_the_users_hash() -> None:
    users = list(range(1, 200))
    canary = assign_arms(np.array(users), 30)
    on_canary = [u for u, c in zip(users, canary, strict=True) if c]
    on_champion = [u for u, c in zip(users, canary, strict=True) if not c]
    assert route(v1(on_canary[:5]), 30) == CANARY and route(v1(on_champion[:5]), 30) == CHAMPION
    assert route(v1(on_canary[:5]), 0) == CHAMPION  # no canary share: nothing to hash
    with pytest.raises(RouteError, match="both arms") as err:
        route(v1([on_champion[0], on_canary[0]]), 30)
    assert err.value.status == 400 and str(on_canary[0]) in str(err.value)
    for body, needle in ((b"{", "not valid JSON"), (orjson.dumps({"instances": []}), "non-empty 'instances'"),
                         (v1([1, "2"]), r"instances\[1\].user_id must be a 64-bit integer"),
                         (v1([True]), "64-bit integer"), (v1([2**64]), "64-bit integer")):
        with pytest.raises(RouteError, match=needle):
            route(body, 30)
    # ids: X-Request-Id wins and becomes the Ce-Id KServe's logger keys events by; the design is "user"
    h = forward_headers({"X-Request-Id": "r1", "X-Genctr-Randomisation": "request", "X-Genctr-Request-Time": "5"})
    assert (h["Ce-Id"], h["X-Request-Id"], h["X-Genctr-Randomisation"], h["X-Genctr-Request-Time"]) == \
           ("r1", "r1", "user", "5")
    assert forward_headers({"Ce-Id": "c1"})["X-Request-Id"] == "c1"
    fresh = forward_headers({})
    assert fresh["Ce-Id"] == fresh["X-Request-Id"] and len(fresh["Ce-Id"]) == 32


@pytest.mark.parametrize("kwargs, needle", [
    ({}, "either --champion"), ({"champion": "ctr:predict"}, "predict URL"),
    ({"champion": "http://h/v1/models/a:predict", "percent": 10}, "needs a --canary"),
    ({"champion": "http://h/v1/models/a:predict", "canary": "http://h/v1/models/b", "percent": 10}, "--canary"),
    ({"champion": "http://h/v1/models/a:predict", "percent": 101}, "0..100"),
    ({"deploy_state": "/nonexistent/state.json"}, "does not exist"),
])
def test_router_config_errors_name_the_flag(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        RouterConfig(**kwargs)


@pytest.mark.parametrize("kwargs, needle", [
    ({"url": "localhost:9000"}, "--logger_url"), ({"url": "http://h/", "mode": "everything"}, "--logger_mode"),
    ({"url": "http://h/", "endpoint": "blue"}, "--logger_endpoint"), ({"url": "http://h/", "queue_size": 0},
                                                                       "--logger_queue_size"),
    ({"url": "http://h/", "backoff_initial_s": 5.0, "backoff_max_s": 1.0}, "backoff"),
])
def test_payload_logger_config_errors_name_the_flag(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        PayloadLoggerConfig(**kwargs)


def test_the_payload_logger_names_service_and_endpoint_as_the_agent_would() -> None:
    by_model = PayloadLoggerConfig(url="http://h/", endpoint="by_model")
    assert by_model.identity("genctr-demo-canary") == ("genctr-demo", "canary")
    assert by_model.identity("genctr-demo-champion") == ("genctr-demo", "default")
    assert by_model.identity("ctr") == ("ctr", "default")
    assert PayloadLoggerConfig(url="http://h/", endpoint="canary", service="isvc").identity("m") == ("isvc", "canary")


@pytest.mark.parametrize("patch, key", [({"randomisation": "users"}, "randomisation"),
                                        ({"router": {"port": "8090"}}, "router.port"),
                                        ({"logger": {"url": "ftp://x"}}, "logger"),
                                        ({"logger": {"url": "http://x/", "mode": "some"}}, "logger.mode")])
def test_a_hand_edited_state_names_the_new_keys(patch: dict[str, Any], key: str) -> None:
    state = {"name": "ctr", "champion": "/m/1", "canary": None, "canary_percent": 0, **patch}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_state(state, "state.json")
    assert check_state({"name": "ctr", "champion": "/m/1", "randomisation": "request",
                        "logger": {"url": "http://127.0.0.1:1/", "mode": "all"}}, "s")["randomisation"] == "request"
