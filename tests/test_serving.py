"""genctr.serving without a server: vocabulary lookup, request validation, and CTRPredictor
load()/predict() against the model called directly (the sklearnserver test pattern)."""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest
from serving_fixtures import (
    COLD_USER,
    NO_CLICK_USERS,
    ReferenceScorer,
    ServingArtifacts,
    candidates_for,
    known_users,
    serving_artifacts,
)

from genctr.errors import ArtifactError, ConfigError
from genctr.features.layout import OOV
from genctr.serving.guard import RequestGuard
from genctr.serving.online import FeastConfig
from genctr.serving.predictor import CTRPredictor
from genctr.serving.request import Limits, parse_v1, parse_v2
from genctr.serving.tuning import traced_or_eager
from genctr.serving.vocab import IdIndex

LIMITS = Limits(max_candidates=50, max_history=30)


def v2(inputs: list[tuple[str, str, list[int], list[Any]]]) -> InferRequest:
    return InferRequest(model_name="ctr", infer_inputs=[
        InferInput(name=n, datatype=d, shape=s, data=x) for n, d, s, x in inputs])


# -- unit: vocabularies and parsing (no artifacts) ------------------------------------------------

def test_id_index_maps_known_ids_and_sends_unknown_to_oov() -> None:
    idx = IdIndex(np.array([50, 7, 3]), np.array([4, 2, 3]), "item")
    got = idx.lookup(np.array([7, 3, 50, 8, -1, 2**62, 3]))
    assert got.tolist() == [2, 3, 4, OOV, OOV, OOV, 3]
    assert idx.size == 5
    assert IdIndex(np.zeros(0), np.zeros(0)).lookup(np.array([1, 2])).tolist() == [OOV, OOV]
    with pytest.raises(ArtifactError, match="several"):
        IdIndex(np.array([1, 1]), np.array([2, 3]))


def test_parse_v1_groups_users_and_keeps_order() -> None:
    req = parse_v1({"instances": [
        {"user_id": 5, "candidates": [{"item_id": 1, "category_id": 2, "price": 3}, {"item_id": 9}]},
        {"user_id": 6, "candidates": [{"item_id": 4, "price": 0.5}]},
        {"user_id": 5, "candidates": [{"item_id": 7, "category_id": None}]},
    ]}, LIMITS)
    assert [s.user_id for s in req.slots] == [5, 6]
    assert req.row_slot.tolist() == [0, 0, 1, 0]
    assert req.item.tolist() == [1, 9, 4, 7]
    assert req.cate_given.tolist() == [True, False, False, False]
    assert req.price_given.tolist() == [True, False, True, False]
    assert req.sizes == [2, 1, 1]
    assert parse_v1(b'{"instances": [{"user_id": 1, "candidates": [{"item_id": 2}]}]}', LIMITS).item.tolist() == [2]


@pytest.mark.parametrize("body, message", [
    ({"instances": [{"user_id": "7", "candidates": [{"item_id": 1}]}]},
     r"instances\[0\].user_id must be an integer, got str"),
    ({"instances": [{"user_id": True, "candidates": [{"item_id": 1}]}]}, "must be an integer, got bool"),
    ({"instances": [{"user_id": 2**63, "candidates": [{"item_id": 1}]}]}, "signed 64-bit"),
    ({"instances": [{"user_id": 1}]}, r"instances\[0\] is missing 'candidates'"),
    ({"instances": [{"user_id": 1, "candidates": []}]}, "non-empty list"),
    ({"instances": [{"user_id": 1, "candidates": [{"category_id": 1}]}]}, r"candidates\[0\] is missing 'item_id'"),
    ({"instances": [{"user_id": 1, "candidates": [{"item_id": 1, "price": -1}]}]},
     r"price must be a finite number in \[0, 1e\+06\]"),
    ({"instances": [{"user_id": 1, "candidates": [{"item_id": 1, "price": "1"}]}]}, "price must be a number"),
    ({"instances": [{"user_id": 1, "candidates": [{"item_id": 1, "categry_id": 2}]}]},
     r"unknown field\(s\) \['categry_id'\]"),
    ({"instances": [{"user_id": 1, "candidates": [{"item_id": i} for i in range(51)]}]}, "too many candidates"),
    ({"instances": [{"user_id": 1, "candidates": [{"item_id": 1}],
                     "history": {"item_seq": [1, 2], "cate_seq": [1]}}]}, "differ in length"),
    ({"instances": [{"user_id": 1, "candidates": [{"item_id": 1}],
                     "history": {"item_seq": list(range(31)), "cate_seq": list(range(31))}}]}, "at most 30"),
    ({"instances": {}}, "non-empty list"),
    ({"inputs": []}, "unknown field"),
    ([1, 2], "must be a JSON object"),
    (b"{not json", "not valid JSON"),
])
def test_parse_v1_rejects_with_a_message_naming_the_problem(body: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_v1(body, LIMITS)


def test_parse_v2_layout() -> None:
    req = parse_v2(v2([("user_id", "INT64", [1], [5]), ("item_id", "INT32", [3, 1], [[1], [2], [3]]),
                       ("price", "FP32", [3], [1.0, 2.0, 0.0])]), LIMITS)
    assert [s.user_id for s in req.slots] == [5] and req.row_slot.tolist() == [0, 0, 0]
    assert req.item.tolist() == [1, 2, 3] and not req.cate_given.any() and req.price_given.all()
    multi = parse_v2(v2([("user_id", "INT64", [3], [8, 5, 8]), ("item_id", "INT64", [3], [1, 2, 3])]), LIMITS)
    assert [s.user_id for s in multi.slots] == [5, 8] and multi.row_slot.tolist() == [1, 0, 1]


@pytest.mark.parametrize("inputs, message", [
    ([("item_id", "INT64", [1], [1])], "missing input 'user_id'"),
    ([("user_id", "INT64", [1], [1])], "missing input 'item_id'"),
    ([("user_id", "INT64", [1], [1]), ("item_id", "FP32", [1], [1.0])], "datatype FP32"),
    ([("user_id", "INT64", [1], [1]), ("item_id", "INT64", [2], [1])], "has 1 values but shape"),
    ([("user_id", "INT64", [1], [1]), ("item_id", "INT64", [-1], [1])], r"shape \[N\] or \[N, 1\]"),
    ([("user_id", "INT64", [1], [1]), ("item_id", "INT64", [1, 2], [[1, 2]])], r"shape \[N\] or \[N, 1\]"),
    ([("user_id", "INT64", [2], [1, 2]), ("item_id", "INT64", [3], [1, 2, 3])], "expected 1 or 3"),
    ([("user_id", "INT64", [1], [1]), ("item_id", "INT64", [1], ["a"])], "must be an integer, got str"),
    ([("user_id", "INT64", [1], [1]), ("item_id", "INT64", [0], [])], "empty"),
    ([("user_id", "INT64", [1], [1]), ("item_id", "INT64", [51], list(range(51)))], "at most 50"),
    ([("user_id", "INT64", [1], [1]), ("item_id", "INT64", [1], [1]), ("price", "FP32", [2], [1.0, 2.0])],
     "expected 1"),
    ([("user_id", "INT64", [1], [1]), ("item_id", "INT64", [1], [1]), ("bid", "FP32", [1], [1.0])],
     "unknown input 'bid'"),
    ([("user_id", "INT64", [1], [1]), ("user_id", "INT64", [1], [1]), ("item_id", "INT64", [1], [1])], "twice"),
])
def test_parse_v2_rejects(inputs: list, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_v2(v2(inputs), LIMITS)


def test_request_guard_limits_bodies_and_refuses_binary_tensors() -> None:
    seen: list[bytes] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            seen.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def call(headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> int:
        sent: list[dict] = []
        queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

        async def receive() -> dict:
            return queue.pop(0)

        async def send(msg: dict) -> None:
            sent.append(msg)

        asyncio.run(RequestGuard(app, max_bytes=10)({"type": "http", "headers": headers}, receive, send))
        return sent[0]["status"]

    assert call([(b"content-length", b"4")], [b"abcd"]) == 200
    assert call([(b"content-length", b"11")], [b"x" * 11]) == 413
    assert call([], [b"x" * 6, b"x" * 6]) == 413  # chunked: cut off after the limit
    assert call([(b"content-length", b"1e3")], [b""]) == 400
    assert call([(b"inference-header-content-length", b"2")], [b"{}"]) == 400


def test_feast_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        FeastConfig(str(tmp_path))
    (tmp_path / "feature_store.yaml").write_text("project: x\n")
    with pytest.raises(ConfigError, match="online store"):
        FeastConfig(str(tmp_path), online="cassandra")


# -- the predictor in-process against the model called directly ------------------------------------


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> ServingArtifacts:
    return serving_artifacts(tmp_path_factory, spark)


@pytest.fixture(scope="module")
def predictor(art: ServingArtifacts) -> CTRPredictor:
    p = CTRPredictor("ctr", art.model, FeastConfig(str(art.feast_dir)), limits=Limits(max_candidates=200))
    assert not p.ready
    p.load()
    assert p.ready
    return p


def predict(p: CTRPredictor, body: Any) -> Any:
    return asyncio.run(p.predict(body))


@pytest.mark.slow
def test_predict_matches_the_model_called_directly(art: ServingArtifacts, predictor: CTRPredictor) -> None:
    ref = ReferenceScorer(art)
    users = [*known_users(art), NO_CLICK_USERS[0], COLD_USER]
    for k, user in enumerate(users):
        cands = candidates_for(art, 12, seed=k)
        got = predict(predictor, {"instances": [{"user_id": user, "candidates": cands}]})["predictions"][0]
        np.testing.assert_allclose(got, ref(user, cands), rtol=1e-5, atol=1e-6)
        assert all(0.0 < p < 1.0 for p in got)


@pytest.mark.slow
def test_multi_user_request_equals_one_request_per_user(art: ServingArtifacts, predictor: CTRPredictor) -> None:
    users = [*known_users(art), COLD_USER]
    instances = [{"user_id": u, "candidates": candidates_for(art, 5, seed=i)} for i, u in enumerate(users)]
    together = predict(predictor, {"instances": instances})["predictions"]
    alone = [predict(predictor, {"instances": [inst]})["predictions"][0] for inst in instances]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_v2_equals_v1(art: ServingArtifacts, predictor: CTRPredictor) -> None:
    user = known_users(art)[0]
    cands = [{"item_id": c["item_id"], "category_id": c.get("category_id", 0), "price": c.get("price", 1.0)}
             for c in candidates_for(art, 8)]
    v1 = predict(predictor, {"instances": [{"user_id": user, "candidates": cands}]})["predictions"][0]
    res = predict(predictor, v2([("user_id", "INT64", [1], [user]),
                                 ("item_id", "INT64", [8], [c["item_id"] for c in cands]),
                                 ("category_id", "INT64", [8], [c["category_id"] for c in cands]),
                                 ("price", "FP64", [8], [c["price"] for c in cands])]))
    out = res.outputs[0]
    assert out.name == "pctr" and out.datatype == "FP32" and out.shape == [8]
    np.testing.assert_allclose(out.data, v1, rtol=1e-6)


@pytest.mark.slow
def test_request_history_replaces_feast(art: ServingArtifacts, predictor: CTRPredictor) -> None:
    """A request-supplied history scores like the same history served by Feast."""
    from genctr.features.feast_sync import get_online_sequences

    user = known_users(art)[0]
    seq = get_online_sequences(art.store, [user])[user]
    cands = candidates_for(art, 6)
    from_feast = predict(predictor, {"instances": [{"user_id": user, "candidates": cands}]})["predictions"][0]
    given = {"item_seq": [999_999, *seq["item_seq"]], "cate_seq": [5, *seq["cate_seq"]]}  # one older: cut at L
    from_request = predict(predictor, {"instances": [{"user_id": user, "candidates": cands, "history": given}]})
    np.testing.assert_allclose(from_request["predictions"][0], from_feast, rtol=1e-6)


@pytest.mark.slow
def test_history_is_expanded_not_copied(art: ServingArtifacts, predictor: CTRPredictor) -> None:
    req = parse_v1({"instances": [{"user_id": known_users(art)[0], "candidates": candidates_for(art, 10)}]},
                   predictor.limits)
    batch = predictor.batch(req)
    assert batch["hist_item"].shape[0] == 10 and batch["hist_item"].stride(0) == 0
    assert batch["user"].stride(0) == 0


@pytest.mark.slow
def test_traced_model_and_worker_threads_score_the_same(art: ServingArtifacts, predictor: CTRPredictor) -> None:
    fast = CTRPredictor("ctr", art.model, art.store, forward_threads=2, jit=True)
    fast.load()
    assert fast.forward is not None and isinstance(fast.forward.model, torch.jit.ScriptModule)
    users = [*known_users(art), COLD_USER]
    body = {"instances": [{"user_id": u, "candidates": candidates_for(art, 20, seed=i)} for i, u in enumerate(users)]}

    async def both() -> tuple[Any, Any]:
        return await fast.predict(body), await predictor.predict(body)

    got, want = asyncio.run(both())
    for a, b in zip(got["predictions"], want["predictions"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    fast.stop()
    assert not fast.ready


def test_trace_falls_back_to_eager_when_the_trace_differs() -> None:
    class ShapeBranch(torch.nn.Module):  # Python control flow on a shape: a trace bakes one branch in
        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            x = batch["price"] * batch["hist_len"]
            return x * 2 if batch["hist_item"].shape[1] > 3 else x

    class Plain(torch.nn.Module):
        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return batch["price"] * 2 + batch["hist_len"]

    sizes = {"user": 10, "item": 10, "category": 5}
    branchy = ShapeBranch()
    assert traced_or_eager(branchy, sizes, 8, torch.device("cpu")) is branchy
    assert isinstance(traced_or_eager(Plain(), sizes, 8, torch.device("cpu")), torch.jit.ScriptModule)


@pytest.mark.slow
def test_predictor_without_feast_needs_histories(art: ServingArtifacts) -> None:
    p = CTRPredictor("ctr", art.model, None)
    p.load()
    with pytest.raises(InvalidInput, match="without a feature store"):
        predict(p, {"instances": [{"user_id": 1, "candidates": [{"item_id": 1, "category_id": 1, "price": 1}]}]})
    with pytest.raises(InvalidInput, match="category_id"):
        predict(p, {"instances": [{"user_id": 1, "candidates": [{"item_id": 1}],
                                   "history": {"item_seq": [], "cate_seq": []}}]})
    ok = predict(p, {"instances": [{"user_id": 1, "candidates": [{"item_id": 1, "category_id": 1, "price": 1}],
                                    "history": {"item_seq": [], "cate_seq": []}}]})
    assert len(ok["predictions"][0]) == 1


@pytest.mark.slow
def test_load_refuses_non_ctr_artifacts(art: ServingArtifacts, tmp_path: Path) -> None:
    import json

    bad = tmp_path / "pretrained"
    shutil.copytree(art.model, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "kind": "genctr_pretrain"}))
    with pytest.raises(ArtifactError, match="CTR model"):
        CTRPredictor("x", bad).load()
    with pytest.raises(ArtifactError, match="missing"):
        CTRPredictor("x", tmp_path / "nothing").load()


@pytest.mark.slow
def test_row_chunked_forward_scores_the_same(art: ServingArtifacts, predictor: CTRPredictor,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    users = [*known_users(art), COLD_USER]
    body = {"instances": [{"user_id": u, "candidates": candidates_for(art, 12, seed=i)} for i, u in enumerate(users)]}
    whole = predict(predictor, body)["predictions"]
    assert predictor.forward is not None
    assert predictor.forward.chunk_cells > 0  # a target-attention model: the chunked path applies
    monkeypatch.setattr(predictor.forward, "chunk_cells", 7)  # a few rows per chunk, uneven last chunk
    chunked = predict(predictor, body)["predictions"]
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
