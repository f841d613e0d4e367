"""Traffic simulator: GSP auction, arm split and routing, scorers, the headers the sink reads. (Its runs
against a real ModelServer, payload logger and sink are tests/test_ab_loop_e2e.py and test_canary_loop.py.)"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import free_port

from genctr.data.sources.synthetic import SyntheticConfig, SyntheticWorld, end_time, iter_events, replay_world
from genctr.deploy.base import CANARY, CHAMPION, assign_arm, assign_arms
from genctr.errors import ConfigError
from genctr.simulation import (
    STATUS_BAD_RESPONSE,
    STATUS_TIMEOUT,
    HttpScorer,
    OracleScorer,
    RandomScorer,
    ScoreBatch,
    SimulationConfig,
    assign_users,
    gsp_auction,
    run_traffic,
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

class Recording:
    """Wraps a scorer and keeps what each call carried: the headers and the users (an observer)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[dict[str, str], list[int]]] = []
        self._lock = threading.Lock()

    def score(self, batch: ScoreBatch, headers: Any = None) -> Any:
        with self._lock:
            self.calls.append((dict(headers or {}), batch.user_ids.tolist()))
        return self.inner.score(batch, headers)

    def close(self) -> None:
        self.inner.close()


def test_user_randomised_calls_hold_one_arm_and_carry_the_sinks_headers() -> None:
    world, state, _ = replay_world(WORLD, 4_000)
    cfg = fast(n_requests=4_000, sim_rate=20.0, instances_per_call=16, concurrency=3)
    arms = {CHAMPION: Recording(OracleScorer(world, state)), CANARY: Recording(RandomScorer(1))}
    s = run_traffic(arms, 30, world, state, cfg)
    canary_users = {u for _, users in arms[CANARY].calls for u in users}
    champion_users = {u for _, users in arms[CHAMPION].calls for u in users}
    assert not canary_users & champion_users  # a user stays on one arm
    assert assign_arms(np.array(sorted(canary_users)), 30).all()
    assert not assign_arms(np.array(sorted(champion_users)), 30).any()
    calls = [h for a in arms.values() for h, _ in a.calls]
    assert len(calls) == s.calls and all(len(users) <= 16 for a in arms.values() for _, users in a.calls)
    ids = [h["X-Request-Id"] for h in calls]
    assert len(set(ids)) == len(ids) and all(h["Ce-Id"] == h["X-Request-Id"] for h in calls)
    assert all(i.startswith(f"{s.run_id}-") for i in ids)
    assert {h["X-Genctr-Randomisation"] for h in calls} == {"user"}
    times = [int(h["X-Genctr-Request-Time"]) for h in calls]
    assert min(times) == 1_700_000_000 and max(times) <= 1_700_000_000 + 3_999 // 20 and s.end_ts == max(times)
    share = s.arms[CANARY].requests / s.requests
    user_share = assign_users(np.arange(1, WORLD.n_users + 1), 30).mean()
    assert abs(share - user_share) < 4 * np.sqrt(user_share * (1 - user_share) / s.requests)
    for a in (CHAMPION, CANARY):  # every request shows its 3 slots; the summary counts each once
        assert s.arms[a].impressions == 3 * s.arms[a].requests and s.arms[a].errors == 0
        assert 0 < s.arms[a].clicks < s.arms[a].impressions and s.arms[a].revenue > 0
    assert s.arms[CHAMPION].ctr > s.arms[CANARY].ctr  # the oracle ranks better than chance


def test_request_randomised_requests_draw_their_arm_so_users_meet_both() -> None:
    world, state, _ = replay_world(WORLD, 4_000)
    cfg = fast(n_requests=6_000, instances_per_call=8, concurrency=2)
    arms = {CHAMPION: Recording(RandomScorer(0)), CANARY: Recording(RandomScorer(1))}
    s = run_traffic(arms, 25, world, state, cfg, randomisation="request")
    assert {h["X-Genctr-Randomisation"] for a in arms.values() for h, _ in a.calls} == {"request"}
    n_canary = sum(len(us) for _, us in arms[CANARY].calls)
    # each ad request drew its arm: the canary share is binomial over requests (what the SRM check assumes),
    # not over calls of 8 (whose spread would be sqrt(8) times wider)
    assert n_canary == s.arms[CANARY].requests and abs(n_canary / 6_000 - 0.25) < 3 * np.sqrt(0.25 * 0.75 / 6_000)
    both = {u for _, us in arms[CANARY].calls for u in us} & {u for _, us in arms[CHAMPION].calls for u in us}
    assert len(both) > WORLD.n_users / 2  # one user meets both arms
    assert s.requests == 6_000 and s.calls == len(arms[CANARY].calls) + len(arms[CHAMPION].calls)
    n_waves = 6_000 // (cfg.concurrency * cfg.instances_per_call)  # waves of 16 requests
    assert s.calls <= 4 * n_waves  # requests of one arm share calls: at most 2 per arm and wave
    with pytest.raises(ConfigError, match="randomisation"):
        run_traffic(arms, 25, world, state, cfg, randomisation="session")


def test_a_skewed_split_sends_leaked_users_straight_to_the_canary() -> None:
    world, state, _ = replay_world(WORLD, 4_000)
    router = Recording(RandomScorer(0))
    arms = {"router": router, CHAMPION: Recording(RandomScorer(0)), CANARY: Recording(RandomScorer(1))}
    s = run_traffic(arms, 20, world, state, fast(n_requests=3_000, srm_skew=0.3, seed=4))
    direct = {u for _, us in arms[CANARY].calls for u in us}
    assert not arms[CHAMPION].calls and direct  # everything else went through the router
    assert not assign_arms(np.array(sorted(direct)), 20).any()  # champion-bucket users, bypassing the split
    routed = {u for _, us in router.calls for u in us}
    assert not routed & direct
    want = 0.2 + 0.8 * 0.3
    assert abs(s.arms[CANARY].requests / s.requests - want) < 0.08


def oracle_and_random(world_cfg: SyntheticConfig) -> tuple[Any, Any, dict[str, list[int]]]:
    results, users = {}, {}
    for name in ("oracle", "random"):
        world, state, _ = replay_world(world_cfg, 4_000)
        scorer = Recording(OracleScorer(world, state) if name == "oracle" else RandomScorer(0))
        results[name] = run_traffic({CHAMPION: scorer}, 0, world, state, fast(n_requests=3_000))
        users[name] = [u for _, us in scorer.calls for u in us]
    return results["oracle"].arms[CHAMPION], results["random"].arms[CHAMPION], users


def test_oracle_beats_random_on_the_same_traffic() -> None:
    # ads clicked at the feed's rate (ad_logit_offset=0: the rate these margins were set at)
    oracle, rand, users = oracle_and_random(dataclasses.replace(WORLD, ad_logit_offset=0.0))
    assert users["oracle"] == users["random"]  # the same users in the same order
    assert oracle.impressions == rand.impressions == 9_000
    assert oracle.ctr > rand.ctr + 0.1
    assert oracle.rpm > 1.2 * rand.rpm


def test_ads_are_clicked_at_ad_rates_and_ranking_still_pays() -> None:
    oracle, rand, _ = oracle_and_random(WORLD)  # the world's default: ads, clicked at a few per cent
    assert 0.001 < rand.ctr < 0.02 and 0.01 < oracle.ctr < 0.08
    assert oracle.ctr > 3 * rand.ctr and oracle.rpm > 2 * rand.rpm
    feed = SyntheticWorld(WORLD)  # the world's own impressions keep the feed's rate: the training data
    events = pd.concat(list(iter_events(WORLD, 4_000)), ignore_index=True)
    assert 0.2 < events["clicked"].mean() < 0.45
    state = feed.init_state()
    users, items = np.zeros(50, int), np.arange(50)
    np.testing.assert_allclose(feed.click_logit(state, users, items, ad=True),
                               feed.click_logit(state, users, items) + WORLD.ad_logit_offset)
    with pytest.raises(ConfigError, match="ad_logit_offset"):
        SyntheticConfig(ad_logit_offset=1.0)


def test_a_failing_arm_is_counted_and_the_run_goes_on() -> None:
    world, state, _ = replay_world(WORLD, 4_000)
    dead = HttpScorer(f"http://127.0.0.1:{free_port()}/v1/models/ctr-canary:predict", timeout=2.0)
    s = run_traffic({CHAMPION: OracleScorer(world, state), CANARY: dead}, 50, world, state, fast(n_requests=600))
    assert s.arms[CANARY].requests > 100
    assert s.arms[CANARY].errors == s.arms[CANARY].requests and s.arms[CANARY].impressions == 0
    assert s.arms[CANARY].revenue == 0 and s.arms[CHAMPION].errors == 0
    assert s.arms[CHAMPION].impressions == 3 * s.arms[CHAMPION].requests and s.requests == 600


class _StubHandler(BaseHTTPRequestHandler):
    """503 for user 1, a malformed body for user 2, too slow for user 3, else a valid answer (keep-alive)."""

    protocol_version = "HTTP/1.1"

    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(dict(self.headers))
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
        ok = scorer.score(batch(4), {"Ce-Id": "call-7", "X-Genctr-Randomisation": "user"})  # a fresh connection
        assert ok.status == 200 and ok.pctr is not None and ok.pctr.shape == (2, 3) and ok.latency_ms > 0
        assert _StubHandler.seen[-1]["Ce-Id"] == "call-7" and _StubHandler.seen[-1]["X-Genctr-Randomisation"] == "user"
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
