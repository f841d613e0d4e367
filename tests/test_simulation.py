"""Traffic simulator: GSP auction, arm split, scorers, logs, and a run against a real local ModelServer."""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from conftest import free_port

from genctr.data.sources.synthetic import SyntheticConfig, SyntheticWorld, end_time, iter_events, replay_world
from genctr.deploy.base import CANARY, CHAMPION, assign_arm
from genctr.errors import ConfigError
from genctr.monitoring.logs import read_logs
from genctr.simulation import (
    STATUS_BAD_RESPONSE,
    STATUS_CONNECTION_ERROR,
    STATUS_TIMEOUT,
    HttpScorer,
    OracleScorer,
    RandomScorer,
    ScoreBatch,
    SimulationConfig,
    assign_users,
    gsp_auction,
    run_traffic,
    simulate,
    simulate_deployment,
)
from genctr.simulation.auction import first_occurrence

WORLD = SyntheticConfig(n_users=400, n_items=800, n_cates=20, seed=7)  # the synthetic_build fixture's world


def fast(**kw: Any) -> SimulationConfig:
    return SimulationConfig(**{"progress": False, "start_ts": 1_700_000_000, **kw})


# -- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("n_requests", 0), ("slots", 21), ("instances_per_call", 0),
                                          ("concurrency", 1.5), ("srm_skew", 1.2), ("timeout", 0.0),
                                          ("reserve_price", -1.0), ("sim_rate", 0.0), ("start_ts", -5)])
def test_config_errors_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=field):
        SimulationConfig(**{field: value})


# -- auction ---------------------------------------------------------------------------------

def test_gsp_on_a_hand_made_example() -> None:
    pctr = np.array([[0.1, 0.2, 0.05, 0.3]])
    bid = np.array([[3.0, 1.0, 2.0, 0.5]])  # scores 0.3, 0.2, 0.1, 0.15 -> ranking 0, 1, 3, 2
    res = gsp_auction(pctr, bid, slots=4, reserve=0.05)
    assert res.column.tolist() == [[0, 1, 3, 2]] and res.shown.all()
    # slot k pays score_{k+1} / pctr_k; the last one has no runner-up and pays the reserve
    np.testing.assert_allclose(res.cpc, [[0.2 / 0.1, 0.15 / 0.2, 0.1 / 0.3, 0.05]], rtol=1e-12)

    two = gsp_auction(pctr, bid, slots=2, reserve=0.05)
    np.testing.assert_allclose(two.cpc, [[2.0, 0.75]], rtol=1e-12)  # the last shown slot pays the next candidate

    high_reserve = gsp_auction(pctr, bid, slots=2, reserve=0.9)  # bids 0.5 (col 3) and below are out
    assert high_reserve.column.tolist() == [[0, 1]]
    np.testing.assert_allclose(high_reserve.cpc, [[2.0, 0.9]])  # 0.2 / 0.1; then the reserve beats 0.1 / 0.2

    masked = gsp_auction(pctr, bid, slots=3, eligible=np.array([[False, True, True, True]]))
    assert masked.column.tolist() == [[1, 3, 2]]
    np.testing.assert_allclose(masked.cpc, [[0.15 / 0.2, 0.1 / 0.3, 0.0]])


def test_gsp_prices_never_exceed_bids_and_slots_follow_the_ranking() -> None:
    rng = np.random.default_rng(0)
    b, k, s = 500, 12, 4
    pctr = rng.random((b, k)) ** 3
    bid = np.round(rng.lognormal(0, 0.7, (b, k)), 2)
    eligible = rng.random((b, k)) > 0.6  # some requests have fewer eligible ads than slots
    res = gsp_auction(pctr, bid, s, reserve=0.05, eligible=eligible)
    score = np.where(eligible & (bid >= 0.05), pctr * bid, -np.inf)
    shown_bid = np.take_along_axis(bid, res.column, axis=1)
    shown_score = np.take_along_axis(score, res.column, axis=1)
    assert (res.cpc[res.shown] <= shown_bid[res.shown] + 1e-12).all()
    assert (res.cpc[res.shown] >= 0.05 - 1e-12).all()
    assert np.isfinite(shown_score[res.shown]).all() and not np.isfinite(shown_score[~res.shown]).any()
    assert (np.diff(np.where(res.shown, shown_score, -1.0), axis=1) <= 0).all()  # descending pCTR x bid
    for i in range(b):  # no unshown eligible candidate beats a shown one
        cols = res.column[i, res.shown[i]]
        rest = np.setdiff1d(np.arange(k), cols)
        if len(cols) and len(rest):
            assert score[i, rest].max() <= score[i, cols].min()
    assert (res.shown.sum(axis=1) == np.minimum(s, np.isfinite(score).sum(axis=1))).all()


def test_first_occurrence_keeps_one_copy_of_each_item() -> None:
    items = np.array([[5, 3, 5, 7, 3], [1, 2, 3, 4, 5]])
    assert first_occurrence(items).tolist() == [[True, True, False, True, False], [True] * 5]


# -- arms ------------------------------------------------------------------------------------

def test_arm_assignment_is_stable_and_matches_the_percent() -> None:
    ids = np.arange(1, 20_001)
    canary = assign_users(ids, 10)
    assert abs(canary.mean() - 0.10) < 4 * np.sqrt(0.1 * 0.9 / len(ids))
    perm = np.random.default_rng(0).permutation(len(ids))
    assert (assign_users(ids[perm], 10) == canary[perm]).all()  # per user, not per position
    assert all((assign_arm(int(u), 10) == CANARY) == canary[u - 1] for u in ids[:300])
    assert not assign_users(ids, 0).any()

    skewed = assign_users(ids, 10, srm_skew=0.2, seed=3)
    want = 0.10 + 0.90 * 0.2
    assert abs(skewed.mean() - want) < 4 * np.sqrt(want * (1 - want) / len(ids))
    assert skewed[canary].all()  # the skew only moves champion-bucket users
    assert (assign_users(ids, 10, srm_skew=0.2, seed=3) == skewed).all()


# -- the loop with in-process scorers --------------------------------------------------------

def test_run_traffic_splits_users_and_writes_valid_logs(tmp_path: Path) -> None:
    world, state, _ = replay_world(WORLD, 4_000)
    cfg = fast(n_requests=4_000, sim_rate=20.0, instances_per_call=16, concurrency=3)
    s = run_traffic({CHAMPION: OracleScorer(world, state), CANARY: RandomScorer(1)}, 30, world, state, cfg, tmp_path)
    logs = read_logs(tmp_path)
    req, imp = logs.requests, logs.impressions
    assert len(req) == 4_000 and req["request_id"].is_unique and (req["status"] == 200).all()
    assert (req.groupby("user_id")["arm"].nunique() == 1).all()  # a user stays on one arm
    user_share = assign_users(np.arange(1, WORLD.n_users + 1), 30).mean()
    share = (req["arm"] == CANARY).mean()
    assert abs(share - user_share) < 4 * np.sqrt(user_share * (1 - user_share) / len(req))
    assert abs(user_share - 0.30) < 4 * np.sqrt(0.3 * 0.7 / WORLD.n_users)
    assert (req["ts"].diff().dropna() >= 0).all() and req["ts"].iloc[-1] == 1_700_000_000 + 3_999 // 20
    assert len(imp) == 3 * 4_000 and imp.groupby("request_id")["position"].apply(lambda p: sorted(p) == [0, 1, 2]).all()
    assert not imp.duplicated(["request_id", "item_id"]).any()
    assert (imp["cpc"] <= imp["bid"]).all() and (imp["cpc"] >= cfg.reserve_price).all()
    # the summary and the logs agree
    by_arm = imp.groupby("arm").agg(clicks=("clicked", "sum"), revenue=("revenue", "sum"))
    for arm in (CHAMPION, CANARY):
        assert s.arms[arm].clicks == by_arm.loc[arm, "clicks"]
        assert s.arms[arm].revenue == pytest.approx(by_arm.loc[arm, "revenue"])


def test_oracle_beats_random_on_the_same_traffic(tmp_path: Path) -> None:
    results = {}
    for name in ("oracle", "random"):
        world, state, _ = replay_world(WORLD, 4_000)
        scorer = OracleScorer(world, state) if name == "oracle" else RandomScorer(0)
        results[name] = run_traffic({CHAMPION: scorer}, 0, world, state, fast(n_requests=3_000), tmp_path / name)
    users = {n: read_logs(tmp_path / n).requests["user_id"].tolist() for n in results}
    assert users["oracle"] == users["random"]  # the same users in the same order
    oracle, rand = results["oracle"].arms[CHAMPION], results["random"].arms[CHAMPION]
    assert oracle.impressions == rand.impressions == 9_000
    assert oracle.ctr > rand.ctr + 0.1
    assert oracle.rpm > 1.2 * rand.rpm


def test_a_failing_arm_is_logged_and_the_run_goes_on(tmp_path: Path) -> None:
    world, state, _ = replay_world(WORLD, 4_000)
    dead = HttpScorer(f"http://127.0.0.1:{free_port()}/v1/models/ctr-canary:predict", timeout=2.0)
    s = run_traffic({CHAMPION: OracleScorer(world, state), CANARY: dead}, 50, world, state,
                    fast(n_requests=600), tmp_path)
    logs = read_logs(tmp_path)
    failed = logs.requests[logs.requests["arm"] == CANARY]
    assert len(failed) > 100 and (failed["status"] == STATUS_CONNECTION_ERROR).all()
    assert (logs.requests.loc[logs.requests["arm"] == CHAMPION, "status"] == 200).all()
    assert set(logs.impressions["arm"]) == {CHAMPION}  # no impressions for failed requests
    assert s.arms[CANARY].errors == s.arms[CANARY].requests == len(failed) and s.arms[CANARY].revenue == 0
    assert s.requests == 600


class _StubHandler(BaseHTTPRequestHandler):
    """503 for user 1, a malformed body for user 2, too slow for user 3, else a valid answer (keep-alive)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        inst = body["instances"]
        if inst[0]["user_id"] == 1:
            code, out = 503, b'{"error": "overloaded"}'
        elif inst[0]["user_id"] == 2:
            code, out = 200, json.dumps({"predictions": [[0.5]]}).encode()
        elif inst[0]["user_id"] == 3:
            time.sleep(1.0)
            return
        else:
            code, out = 200, json.dumps({"predictions": [[0.25] * len(i["candidates"]) for i in inst]}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


def test_http_scorer_maps_failures_to_statuses() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scorer = HttpScorer(f"http://127.0.0.1:{server.server_address[1]}/v1/models/m:predict", timeout=0.3)
    try:
        def batch(user: int) -> ScoreBatch:
            items = np.array([[4, 5, 6], [7, 8, 9]])
            return ScoreBatch(np.array([user, 9]), items, items % 3 + 1, items * 0.5)

        assert scorer.score(batch(1)).status == 503
        assert scorer.score(batch(2)).status == STATUS_BAD_RESPONSE
        assert scorer.score(batch(3)).status == STATUS_TIMEOUT
        ok = scorer.score(batch(4))  # a fresh connection after the timeout dropped the old one
        assert ok.status == 200 and ok.pctr is not None and ok.pctr.shape == (2, 3) and ok.latency_ms > 0
    finally:
        scorer.close()
        server.shutdown()
        server.server_close()
    with pytest.raises(ConfigError, match="http"):
        HttpScorer("ctr-champion:predict")


def test_replay_continues_the_event_stream() -> None:
    cfg = SyntheticConfig(n_users=50, n_items=120, n_cates=6, seed=3)
    world, state, rng = replay_world(cfg, 5 * 50)
    events = pd.concat(list(iter_events(cfg, 6 * 50)), ignore_index=True).iloc[5 * 50:]
    users = np.arange(cfg.n_users)
    items = world.sample_items(state, users, rng)  # the sixth round, continued by hand
    np.testing.assert_array_equal(items + 1, events["item_id"])
    np.testing.assert_allclose(world.click_prob(state, users, items), events["true_ctr"])
    start = end_time(cfg, 5 * 50)
    assert start == cfg.start_time + 5 * cfg.seconds_per_round
    assert events["event_time"].between(start, start + cfg.seconds_per_round - 1).all()
    assert isinstance(world, SyntheticWorld)


# -- against a real local ModelServer --------------------------------------------------------

@pytest.mark.slow
def test_simulation_against_a_real_local_model_server(synthetic_build: dict[str, Any], tmp_path: Path) -> None:
    from serving_fixtures import perturbed_copy

    from genctr.deploy.local import LocalDeployer
    from genctr.features.feast_sync import materialize
    from genctr.serving.online import FeastConfig
    from genctr.training.run import finetune

    build, world_cfg = synthetic_build["build"], synthetic_build["world"]
    assert world_cfg == WORLD  # the served users and items are the simulator's
    n_events = len(pd.read_parquet(synthetic_build["events"], columns=["request_id"]))
    finetune(build, tmp_path / "a", {"max_seq_len": synthetic_build["max_seq_len"], "backbone": "dnn",
                                     "embed_dim": 8, "mlp_dims": [32]},
             {"epochs": 1, "progress": False, "device": "cpu", "seed": 0})
    perturbed_copy(tmp_path / "a", tmp_path / "b")
    materialize(build, work_dir=tmp_path / "feast")
    deployer = LocalDeployer(tmp_path / "state.json", feast=FeastConfig(str(tmp_path / "feast")))
    try:
        deployer.deploy(str(tmp_path / "a"))
        status = deployer.start_canary(str(tmp_path / "b"), 30)
        cfg = fast(n_requests=2_000, start_ts=None, seed=5)
        s = simulate_deployment(deployer, world_cfg, n_events, cfg, tmp_path / "logs", tmp_path / "summary.json")
        logs = read_logs(tmp_path / "logs")
        req, imp = logs.requests, logs.impressions
        assert (req["status"] == 200).all() and len(req) == 2_000 and len(imp) == 3 * 2_000
        assert req["ts"].min() == end_time(world_cfg, n_events)  # traffic follows the training data
        user_share = assign_users(np.arange(1, world_cfg.n_users + 1), 30).mean()
        share = (req["arm"] == CANARY).mean()
        assert abs(share - user_share) < 4 * np.sqrt(user_share * (1 - user_share) / len(req))
        assert json.loads((tmp_path / "summary.json").read_text())["requests"] == 2_000

        # the logged pCTR is what the arm answers when asked directly
        sample = imp[imp["request_id"].isin(req.groupby("arm")["request_id"].head(10))]
        for (_rid, arm), rows in sample.groupby(["request_id", "arm"]):
            cands = [{"item_id": int(r.item_id), "category_id": int(r.category_id), "price": float(r.bid)}
                     for r in rows.itertuples()]
            r = requests.post(status.urls[arm], json={"instances": [{"user_id": int(rows["user_id"].iloc[0]),
                                                                      "candidates": cands}]}, timeout=30)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["predictions"][0], rows["pctr"], rtol=1e-4, atol=1e-6)
        assert sample["arm"].nunique() == 2

        # a canary that is not there: its requests fail with a status, the champion's go on
        world, state, _ = replay_world(world_cfg, n_events)
        broken = dataclasses.replace(status, urls={**status.urls,
                                                    CANARY: f"http://127.0.0.1:{free_port()}/v1/models/x:predict"})
        s2 = simulate(broken, world, state, fast(n_requests=300), tmp_path / "logs2")
        bad = read_logs(tmp_path / "logs2").requests
        assert (bad.loc[bad["arm"] == CANARY, "status"] == STATUS_CONNECTION_ERROR).all()
        assert (bad.loc[bad["arm"] == CHAMPION, "status"] == 200).all() and s2.errors == (bad["arm"] == CANARY).sum()
        print(f"simulated {s.requests} requests through the local ModelServer at {s.requests_per_second:.0f} req/s")
    finally:
        deployer.stop()
    assert not deployer.status().ready  # the server is gone
