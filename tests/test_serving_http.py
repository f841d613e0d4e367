"""A real KServe ModelServer (``python -m genctr.serving``) over HTTP on a loopback port: v1 and v2
predictions against the model called directly, validation errors as 4xx, and a hypothesis fuzz
run that must never see a 5xx and must leave the server serving."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_fixtures import (
    COLD_USER,
    NO_CLICK_USERS,
    ReferenceScorer,
    ServerHandle,
    ServingArtifacts,
    candidates_for,
    known_users,
    model_server,
    serving_artifacts,
)

pytestmark = pytest.mark.slow
MAX_CANDIDATES = 64
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> ServingArtifacts:
    return serving_artifacts(tmp_path_factory, spark)


@pytest.fixture(scope="module")
def server(art: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    args = ["--model_dir", str(art.model), "--model_name", "ctr", "--feast_repo", str(art.feast_dir),
            "--max_candidates", str(MAX_CANDIDATES), "--max_body_bytes", str(MAX_BODY)]
    with model_server(args, log, "ctr") as handle:
        yield handle


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def v1_url(server: ServerHandle) -> str:
    return f"{server.url}/v1/models/ctr:predict"


def v2_url(server: ServerHandle) -> str:
    return f"{server.url}/v2/models/ctr/infer"


def v2_body(user: int, cands: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(cands)
    return {"id": "r1", "inputs": [
        {"name": "user_id", "shape": [n], "datatype": "INT64", "data": [user] * n},
        {"name": "item_id", "shape": [n], "datatype": "INT64", "data": [c["item_id"] for c in cands]},
        {"name": "category_id", "shape": [n], "datatype": "INT64", "data": [c["category_id"] for c in cands]},
        {"name": "price", "shape": [n, 1], "datatype": "FP32", "data": [[c["price"]] for c in cands]}]}


def test_v1_and_v2_match_the_model(art: ServingArtifacts, server: ServerHandle, http: requests.Session) -> None:
    ref = ReferenceScorer(art)
    for k, user in enumerate([known_users(art)[0], NO_CLICK_USERS[0], COLD_USER]):
        cands = candidates_for(art, 16, seed=k)
        r = http.post(v1_url(server), json={"instances": [{"user_id": user, "candidates": cands}]}, timeout=30)
        assert r.status_code == 200, r.text
        want = ref(user, cands)
        np.testing.assert_allclose(r.json()["predictions"][0], want, rtol=1e-5, atol=1e-6)

        full = [{"item_id": c["item_id"], "category_id": c.get("category_id", 3), "price": c.get("price", 1.25)}
                for c in cands]
        r2 = http.post(v2_url(server), json=v2_body(user, full), timeout=30)
        assert r2.status_code == 200, r2.text
        out = r2.json()["outputs"][0]
        assert (out["name"], out["datatype"], out["shape"]) == ("pctr", "FP32", [16])
        assert r2.json()["id"] == "r1"
        np.testing.assert_allclose(out["data"], ref(user, full), rtol=1e-5, atol=1e-6)


def test_v2_metadata_documents_the_layout(server: ServerHandle, http: requests.Session) -> None:
    meta = http.get(f"{server.url}/v2/models/ctr", timeout=10).json()
    assert [i["name"] for i in meta["inputs"]] == ["user_id", "item_id", "category_id", "price"]
    assert meta["outputs"][0]["name"] == "pctr"


@pytest.mark.parametrize("body, status, message", [
    (b'{"instances": [', 400, "Unrecognized request format"),  # KServe's own JSON decoding
    (json.dumps({"instances": [{"user_id": 1}]}).encode(), 400, "missing 'candidates'"),
    (json.dumps({"instances": [{"user_id": 1.5, "candidates": [{"item_id": 1}]}]}).encode(), 400, "integer"),
    (json.dumps({"instances": [{"user_id": 1, "candidates": [{"item_id": i} for i in range(65)]}]}).encode(),
     400, "too many candidates"),
    (json.dumps({"instances": [{"user_id": 1, "candidates": [{"item_id": 1}] * 2, "x": "y" * MAX_BODY}]}).encode(),
     413, "larger than the server's limit"),
])
def test_v1_errors_are_4xx_naming_the_problem(server: ServerHandle, http: requests.Session,
                                              body: bytes, status: int, message: str) -> None:
    r = http.post(v1_url(server), data=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize("body, headers, message", [
    ({"inputs": [{"name": "item_id", "shape": [1], "datatype": "INT64", "data": [1]}]}, {}, "missing input 'user_id'"),
    ({"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]},
                 {"name": "item_id", "shape": [2], "datatype": "INT64", "data": [1, 2, 3]}]}, {}, "shape"),
    ({"inputs": []}, {"inference-header-content-length": "12"}, "binary tensor extension"),
    ({"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]},
                 {"name": "item_id", "shape": [65], "datatype": "INT64", "data": list(range(65))}]}, {}, "at most 64"),
])
def test_v2_errors_are_4xx(server: ServerHandle, http: requests.Session, body: Any, headers: dict,
                           message: str) -> None:
    r = http.post(v2_url(server), json=body, headers=headers, timeout=30)
    assert 400 <= r.status_code < 500, r.text
    assert message in r.text


# -- fuzz ------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
ids = st.integers(min_value=-(2**64), max_value=2**64) | json_values
candidate = st.fixed_dictionaries({"item_id": ids}, optional={
    "category_id": ids, "price": st.floats(allow_nan=False) | json_values, "extra": json_values})
instance = st.fixed_dictionaries({"user_id": ids, "candidates": st.lists(candidate, max_size=70) | json_values},
                                 optional={"history": json_values | st.fixed_dictionaries(
                                     {"item_seq": st.lists(ids, max_size=5), "cate_seq": st.lists(ids, max_size=5)})})
v1_bodies = st.fixed_dictionaries({"instances": st.lists(instance, max_size=3) | json_values}) | json_values
tensor = st.fixed_dictionaries({
    "name": st.sampled_from(["user_id", "item_id", "category_id", "price", "x"]) | json_values,
    "shape": st.lists(st.integers(min_value=-2, max_value=80), max_size=3) | json_values,
    "datatype": st.sampled_from(["INT64", "INT32", "UINT64", "FP32", "FP64", "BYTES", "BOOL", "FP16", "INT4"])
    | json_values,
    "data": st.lists(ids | st.floats(allow_nan=False), max_size=6) | json_values,
}, optional={"parameters": json_values})
v2_bodies = st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=5) | json_values},
                                  optional={"id": json_values, "outputs": json_values, "parameters": json_values}) \
    | json_values
raw = st.binary(max_size=300) | v1_bodies.map(lambda b: json.dumps(b)[: len(json.dumps(b)) // 2].encode())
content_types = st.sampled_from(["application/json", "text/plain", "application/octet-stream",
                                 "application/cloudevents+json", None])


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(["v1", "v2"]), body=st.one_of(v1_bodies, v2_bodies, raw), content_type=content_types)
def test_fuzz_never_5xx(server: ServerHandle, http: requests.Session, route: str, body: Any,
                        content_type: str | None) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": content_type} if content_type else {}
    r = http.post(v1_url(server) if route == "v1" else v2_url(server), data=data, headers=headers, timeout=30)
    assert r.status_code < 500, (route, data[:500], r.status_code, r.text[:500])
    assert r.status_code == 200 or r.headers.get("content-type", "").startswith("application/json")


def test_server_alive_after_the_fuzz(art: ServingArtifacts, server: ServerHandle, http: requests.Session) -> None:
    assert server.alive()
    user = known_users(art)[0]
    cands = candidates_for(art, 10)
    r = http.post(v1_url(server), json={"instances": [{"user_id": user, "candidates": cands}]}, timeout=30)
    assert r.status_code == 200
    np.testing.assert_allclose(r.json()["predictions"][0], ReferenceScorer(art)(user, cands), rtol=1e-5, atol=1e-6)
