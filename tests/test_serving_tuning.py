"""Each serving tuning (genctr.serving.tuning) switched off, one at a time, answers the same
requests exactly as the fully tuned server: same status, content type and body bytes. The one
exception is ``jit``: the TorchScript-frozen graph rounds floats differently, so its pCTRs are
compared within what its check at load admits (|logit difference| <= MAX_LOGIT_DIFF, hence
|pCTR difference| <= MAX_LOGIT_DIFF / 4), and everything else about the response must match.

Servers are real ``python -m genctr.serving`` processes on loopback ports, started together.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import pytest
import requests
from serving_fixtures import (
    COLD_USER,
    ServerHandle,
    ServingArtifacts,
    candidates_for,
    known_users,
    model_server,
    serving_artifacts,
)

from genctr.serving.tuning.torchscript import MAX_LOGIT_DIFF

pytestmark = pytest.mark.slow

# flag -> the value that turns the tuning off (the defaults turn every one on)
OFF = {"fast_v1": "false", "jit": "false", "keep_heap": "false", "event_loop": "asyncio", "log_requests": "true"}


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> ServingArtifacts:
    return serving_artifacts(tmp_path_factory, spark)


@pytest.fixture(scope="module")
def servers(art: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerHandle]]:
    """"tuned" (all defaults) and one server per flag with only that tuning off."""
    logs = tmp_path_factory.mktemp("tuning")
    base = ["--model_dir", str(art.model), "--model_name", "ctr", "--feast_repo", str(art.feast_dir),
            "--max_candidates", "64", "--max_body_bytes", str(64 * 1024)]
    variants = {"tuned": base, **{flag: [*base, f"--{flag}", value] for flag, value in OFF.items()}}
    with ExitStack() as stack, ThreadPoolExecutor(len(variants)) as pool:
        started = {name: pool.submit(stack.enter_context, model_server(args, logs / f"{name}.log", "ctr"))
                   for name, args in variants.items()}
        yield {name: f.result() for name, f in started.items()}


def requests_to_send(art: ServingArtifacts) -> list[tuple[str, str, bytes | None, dict[str, str]]]:
    """(method, path, body, headers): valid v1/v2 calls, client errors, metadata and health."""
    users = [*known_users(art), COLD_USER]
    cands = candidates_for(art, n=12, seed=3)
    full = [{"item_id": c["item_id"], "category_id": c.get("category_id", 1), "price": c.get("price", 1.0)}
            for c in cands]
    js = {"content-type": "application/json"}
    v1 = "/v1/models/ctr:predict"
    out: list[tuple[str, str, bytes | None, dict[str, str]]] = [
        ("POST", v1, json.dumps({"instances": [{"user_id": u, "candidates": cands} for u in users]}).encode(), js),
        ("POST", v1, json.dumps({"instances": [{"user_id": users[0], "candidates": cands[:1]}]}).encode(), js),
        ("POST", v1, json.dumps({"instances": [{"user_id": users[0], "candidates": [{"item_id": "x"}]}]}).encode(),
         js),
        ("POST", v1, json.dumps({"instances": [{"user_id": 1, "candidates": [{"item_id": 1, "colour": 2}]}]}).encode(),
         js),
        ("POST", v1, b"{not json", js),
        ("POST", v1, json.dumps({"instances": [{"user_id": 1, "candidates": [{"item_id": 1}] * 65}]}).encode(), js),
        ("POST", "/v1/models/nope:predict", b'{"instances": []}', js),
        ("POST", "/v2/models/ctr/infer", json.dumps({"id": "t1", "inputs": [
            {"name": "user_id", "shape": [len(full)], "datatype": "INT64", "data": [users[0]] * len(full)},
            {"name": "item_id", "shape": [len(full)], "datatype": "INT64", "data": [c["item_id"] for c in full]},
            {"name": "category_id", "shape": [len(full)], "datatype": "INT64",
             "data": [c["category_id"] for c in full]},
            {"name": "price", "shape": [len(full)], "datatype": "FP32", "data": [c["price"] for c in full]},
        ]}).encode(), js),
        ("POST", "/v2/models/ctr/infer", json.dumps({"inputs": [
            {"name": "item_id", "shape": [1], "datatype": "INT64", "data": [1]}]}).encode(), js),
        ("GET", "/v2/models/ctr", None, {}),
        ("GET", "/v2/models/ctr/ready", None, {}),
        ("GET", "/v2/health/ready", None, {}),
        ("GET", "/v1/models/ctr", None, {}),
    ]
    return out


def answer(server: ServerHandle, call: tuple[str, str, bytes | None, dict[str, str]]) -> tuple[int, str, bytes]:
    method, path, body, headers = call
    r = requests.request(method, server.url + path, data=body, headers=headers, timeout=30)
    return r.status_code, r.headers.get("content-type", ""), r.content


def numbers_apart(a: Any, b: Any) -> float:
    """Largest |a - b| over the numbers of two JSON values of the same shape (inf if shapes differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf")
        return max((numbers_apart(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return float("inf")
        return max((numbers_apart(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            else float("inf")
    return 0.0 if a == b else float("inf")


@pytest.mark.parametrize("flag", [f for f in OFF if f != "jit"])
def test_each_tuning_off_answers_byte_identically(flag: str, servers: dict[str, ServerHandle],
                                                  art: ServingArtifacts) -> None:
    calls = requests_to_send(art)
    tuned = [answer(servers["tuned"], c) for c in calls]
    off = [answer(servers[flag], c) for c in calls]
    assert [t[0] for t in tuned][:2] == [200, 200] and 400 in [t[0] for t in tuned]  # the set covers both
    for call, a, b in zip(calls, tuned, off, strict=True):
        assert a == b, f"--{flag} {OFF[flag]} changed {call[0]} {call[1]}: {a} vs {b}"


def test_jit_off_answers_the_same_within_its_load_check(servers: dict[str, ServerHandle],
                                                        art: ServingArtifacts) -> None:
    calls = requests_to_send(art)
    worst = 0.0
    for call in calls:
        (s1, t1, b1), (s2, t2, b2) = answer(servers["tuned"], call), answer(servers["jit"], call)
        assert (s1, t1) == (s2, t2), call[1]
        if s1 != 200 or not t1.startswith("application/json"):
            assert b1 == b2, call[1]
            continue
        worst = max(worst, numbers_apart(json.loads(b1), json.loads(b2)))
    assert worst <= MAX_LOGIT_DIFF / 4, worst
    # and the tuned server really serves the frozen graph (else this test compares eager to eager)
    log = servers["tuned"].log.read_text(errors="replace")
    assert "serving a TorchScript-frozen model" in log
    assert "serving a TorchScript-frozen model" not in servers["jit"].log.read_text(errors="replace")


def test_the_tunings_are_really_switched(servers: dict[str, ServerHandle]) -> None:
    """Each off-switch took effect in its server (so the identities above are not vacuous)."""
    def tuning_line(name: str) -> str:
        lines = [x for x in servers[name].log.read_text(errors="replace").splitlines() if "tuning: " in x]
        assert len(lines) == 1, name
        return lines[0].split("tuning: ", 1)[1]

    assert tuning_line("tuned") == "fast_v1=on keep_heap=on event_loop=uvloop per_request_logging=off jit=on"
    assert "fast_v1=off keep_heap=on" in tuning_line("fast_v1")
    assert "keep_heap=off event_loop=uvloop" in tuning_line("keep_heap")
    assert "event_loop=asyncio" in tuning_line("event_loop")
    assert "per_request_logging=on" in tuning_line("log_requests")
    assert tuning_line("jit").endswith("jit=off")
