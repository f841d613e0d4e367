"""The A/B loop over real processes, the way a cluster runs it:

simulated ad server -> user-hash router -> local ModelServer with the payload logger -> CloudEvents
-> A/B log sink (a subprocess) -> Parquet; clicks -> the sink's POST /clicks -> Spark attribution
-> analysis -> decision.

The counts reconcile exactly with what the simulator sent and saw: every scored ad request logged
once, every shown ad once, every click credited once, also when the sink is killed with SIGKILL
in the middle of the traffic and restarted while the payload logger and the click tracker retry.
"""
from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from canary_fixtures import MODEL, canary_world, plant, traffic
from prometheus_client.parser import text_string_to_metric_families

from genctr.data.sources.synthetic import end_time, replay_world
from genctr.deploy.base import assign_arms
from genctr.deploy.local import LocalDeployer
from genctr.monitoring.attribution import COUNTS_FILE
from genctr.monitoring.canary import run_canary_step
from genctr.monitoring.collect import collect, collect_to
from genctr.monitoring.decision import ACTIONS, CanaryPolicy
from genctr.monitoring.logs import read_table
from genctr.serving.payload_logger import logger_metrics, wait_delivered
from genctr.simulation import LocalSink, SimulationSummary, simulate
from genctr.simulation.entry import reusable_sink_port

pytestmark = pytest.mark.slow
POLICY = CanaryPolicy(min_users_per_arm=100, min_impressions_per_arm=1_000, max_p99_latency_ms=10_000)


@pytest.fixture(scope="module")
def loop(synthetic_build: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
         pytestconfig: pytest.Config, spark: Any) -> dict[str, Any]:
    return canary_world(synthetic_build, tmp_path_factory, pytestconfig)


def server_url(deployer: LocalDeployer) -> str:
    server = deployer.status().detail["server"]
    return f"http://{server['host']}:{server['port']}"


def sink_accepted(sink: LocalSink) -> float:
    with urllib.request.urlopen(f"{sink.url}metrics", timeout=5) as r:
        families = text_string_to_metric_families(r.read().decode())
    return sum(s.value for f in families if f.name == "genctr_sink_events_accepted" for s in f.samples
               if s.name.endswith("_total"))


def run_in_thread(ctx: dict[str, Any], deployer: LocalDeployer, n: int, seed: int,
                  clicks_url: str) -> tuple[threading.Thread, dict[str, Any]]:
    world, state, _ = replay_world(ctx["world"], ctx["n_events"])
    cfg = traffic(seed=seed, n=n)
    cfg.start_ts = end_time(ctx["world"], ctx["n_events"])
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["summary"] = simulate(deployer.status(), world, state, cfg, clicks_url)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            out["error"] = exc

    thread = threading.Thread(target=target, name="simulate")
    thread.start()
    return thread, out


def reconcile(summary: SimulationSummary, log_dir: Path, randomisation: str) -> Any:
    """The sink's tables (clicks attributed by the Spark join) against the simulator's own counts."""
    logs = collect(log_dir)  # duplicates="refuse": an impression or click logged twice raises
    req, imp = logs.requests, logs.impressions
    assert req["request_id"].is_unique and len(req) == summary.requests
    assert req["request_id"].str.startswith(f"{summary.run_id}-").all()
    assert (req["status"] == 200).all() and set(req["randomisation"]) == {randomisation}
    assert set(imp["randomisation"]) == {randomisation}
    for arm, stats in summary.arms.items():
        assert (req["arm"] == arm).sum() == stats.requests, arm
        shown = imp[imp["arm"] == arm]
        assert len(shown) == stats.impressions, arm  # the sink's auction replay = the ad server's auction
        assert int(shown["clicked"].sum()) == stats.clicks, arm  # every click credited once
        assert shown["revenue"].sum() == pytest.approx(stats.revenue, rel=1e-9), arm
    assert logs.quality.orphan_clicks == 0 and logs.quality.duplicate_clicks == 0
    assert (req.groupby(req["request_id"].str.rsplit(".", n=1).str[0])["arm"].nunique() == 1).all()  # one arm a call
    return logs


def test_the_loop_reconciles_exactly_through_a_sink_crash(loop: dict[str, Any], tmp_path: Path) -> None:
    plant(loop, "random", "trained", 50)
    deployer: LocalDeployer = loop["deployer"]
    sink = LocalSink(tmp_path / "logs", port=reusable_sink_port(deployer), slots=3,
                     reserve_price=traffic(0).reserve_price).start()
    try:
        deployer.use_logger(sink.url)
        status = deployer.status()
        assert status.randomisation == "user" and "router" in status.urls
        before = logger_metrics(server_url(deployer))
        thread, out = run_in_thread(loop, deployer, 3_000, seed=11, clicks_url=sink.clicks_url)
        deadline = time.monotonic() + 120
        while sink_accepted(sink) < 60 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert thread.is_alive(), "the traffic ended before the sink could be killed in the middle of it"
        sink.kill()  # SIGKILL: what it acknowledged is journaled, nothing else survives
        time.sleep(1.5)  # the payload logger and the click tracker keep retrying into the void
        sink = LocalSink(tmp_path / "logs", port=sink.port, slots=3, reserve_price=traffic(0).reserve_price).start()
        thread.join(300)
        assert not thread.is_alive() and "error" not in out, out.get("error")
        summary: SimulationSummary = out["summary"]
        assert wait_delivered(server_url(deployer), 120)
        after = logger_metrics(server_url(deployer))
    finally:
        sink.stop()  # SIGTERM: the sink writes what it buffers
    # the crash was real: the payload logger had to retry, and gave nothing up
    assert after["retries_total"] > before.get("retries_total", 0)
    assert all(after.get(f"dropped_total{{reason={r}}}", 0) == before.get(f"dropped_total{{reason={r}}}", 0)
               for r in ("queue_full", "rejected", "shutdown"))
    assert after["sent_total{type=request}"] - before.get("sent_total{type=request}", 0) == summary.calls
    assert summary.requests == 3_000 and summary.errors == 0 and summary.clicks > 50

    logs = reconcile(summary, tmp_path / "logs", "user")
    assert logs.requests["ts"].min() == end_time(loop["world"], loop["n_events"])  # the request time header
    users = logs.requests.drop_duplicates("user_id")
    canary = assign_arms(users["user_id"].to_numpy(), 50)
    assert ((users["arm"] == "canary").to_numpy() == canary).all()  # the router's split is the user hash

    # analysis and decision read the sink's tables (the collect step attributes the raw clicks)
    collected = collect_to(str(tmp_path / "logs"), 0, tmp_path / "collected")
    assert (tmp_path / "collected" / COUNTS_FILE).is_file()
    assert collected["attribution"]["credited"] == summary.clicks == collected["attribution"]["raw_clicks"]
    turn = run_canary_step(tmp_path / "logs", deployer, POLICY, tmp_path / "out", registry=loop["reg"],
                           model_name=MODEL, drift=False, dry_run=True)
    assert turn.decision.action in ACTIONS and turn.decision.analysis is not None
    arms = turn.decision.analysis["arms"]
    for arm, stats in summary.arms.items():
        assert (arms[arm]["impressions"], arms[arm]["clicks"]) == (stats.impressions, stats.clicks)
    # the logged pCTR is what the arm answers when asked directly (the response event is the arm's answer);
    # those direct calls are scoring calls too, logged with their arm by the sink, back on its address
    sample = logs.impressions[logs.impressions["request_id"].isin(logs.requests.groupby("arm")["request_id"].head(5))]
    with LocalSink(tmp_path / "logs", port=sink.port, reserve_price=traffic(0).reserve_price) as sink:
        for (rid, arm), rows in sample.groupby(["request_id", "arm"]):
            cands = [{"item_id": int(r.item_id), "category_id": int(r.category_id), "price": float(r.bid)}
                     for r in rows.itertuples()]
            r = requests.post(status.urls[arm], json={"instances": [{"user_id": int(rows["user_id"].iloc[0]),
                                                                      "candidates": cands}]},
                              headers={"Ce-Id": f"probe-{rid}"}, timeout=30)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["predictions"][0], rows["pctr"], rtol=1e-5, atol=1e-7)
        assert wait_delivered(server_url(deployer), 120)
    assert sample["arm"].nunique() == 2
    probes = read_table(tmp_path / "logs", "requests")
    probes = probes[probes["request_id"].str.startswith("probe-")]
    want = sample.groupby("request_id")["arm"].first()
    assert dict(zip(probes["request_id"], probes["arm"], strict=True)) == {f"probe-{k}.0": v for k, v in want.items()}
    print(f"e2e: {summary.requests} requests in {summary.calls} calls, {summary.clicks} clicks; "
          f"logger retries {after['retries_total'] - before.get('retries_total', 0):.0f}; "
          f"decision {turn.decision.action}")


def test_request_randomised_traffic_reconciles_and_splits_per_request(loop: dict[str, Any], tmp_path: Path) -> None:
    plant(loop, "random", "trained", 30)
    by_request = LocalDeployer(loop["deployer"].state_file, name=MODEL, randomisation="request")
    try:
        port = reusable_sink_port(by_request)  # the first test's sink address: no server restart
        with LocalSink(tmp_path / "logs", port=port, reserve_price=traffic(0).reserve_price) as sink:
            by_request.use_logger(sink.url)
            status = by_request.status()
            assert status.randomisation == "request" and "router" not in status.urls
            thread, out = run_in_thread(loop, by_request, 1_500, seed=12, clicks_url=sink.clicks_url)
            thread.join(300)
            assert "error" not in out, out.get("error")
            assert wait_delivered(server_url(by_request), 120)
        logs = reconcile(out["summary"], tmp_path / "logs", "request")
        arms_per_user = logs.requests.groupby("user_id")["arm"].nunique()
        assert (arms_per_user == 2).any()  # one user meets both arms: the request is the unit
        share = (logs.requests["arm"] == "canary").mean()
        assert abs(share - 0.30) < 4 * np.sqrt(0.3 * 0.7 / len(logs.requests))  # each ad request drew its arm
    finally:
        LocalDeployer(loop["deployer"].state_file, name=MODEL, randomisation="user").ensure_running()
    assert "router" in loop["deployer"].status().urls  # the shared deployment is user-sticky again
    assert np.isfinite(out["summary"].arms["canary"].ctr)
