"""The A/B log sink over real HTTP (``python -m genctr.monitoring.sink`` in a subprocess on a loopback
port): KServe-agent CloudEvents in, exact A/B log rows out; redeliveries, timeouts, clicks; SIGKILL
and restart (every acknowledged event written exactly once); a hypothesis fuzz of malformed events
(4xx, the sink stays up, nothing half-written, every refusal counted); the encoder against what
KServe's agent sends."""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from genctr.monitoring.clicks import read_raw_clicks
from genctr.monitoring.cloudevents_codec import (
    EventError,
    InferenceEvent,
    decode_event,
    encode_request_event,
    encode_response_event,
    format_time,
    go_json,
    to_structured,
)
from genctr.monitoring.headers import MODEL_URI_ANNOTATION, RANDOMISATION_HEADER, REQUEST_TIME_HEADER
from genctr.monitoring.logs import read_table
from genctr.monitoring.sink.arms import ArmResolver, ModelMap, arms_of_annotations

pytestmark = pytest.mark.slow
SERVICE = "genctr-ctr"
MAX_BODY = 8_192
TIMEOUT_S = 1.5  # the fixture sink's pairing timeout


# ----------------------------------------------------------------------------- a sink process
class Sink:
    """A sink subprocess; ``restart`` (after ``kill``) runs it again on the same out dir and journal."""

    def __init__(self, out: Any, args: list[str], log: Path) -> None:  # out: a Path, or a URI string
        self.out, self.args, self.log = out, args, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> Sink:
        cmd = [sys.executable, "-m", "genctr.monitoring.sink", "--out", str(self.out), "--port", str(self.port),
               "--log-format", "plain", *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if self.client.get("/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"sink did not become healthy: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.client.close()

    def post(self, headers: dict[str, str], body: bytes) -> httpx.Response:
        return self.client.post("/", headers=headers, content=body)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.client.get("/metrics").text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    root = tmp_path_factory.mktemp("sink")
    s = Sink(root / "out", ["--flush-seconds", "0.2", "--pairing-timeout-s", str(TIMEOUT_S), "--slots", "2",
                            "--reserve-price", "0.05", "--max-body-bytes", str(MAX_BODY), "--service", SERVICE],
             root / "sink.log").start()
    yield s
    s.stop()


def rows(out: Path, table: str, prefix: str) -> pd.DataFrame:
    df = read_raw_clicks(out) if table == "raw_clicks" else read_table(out, table)
    return df[df["request_id"].str.startswith(prefix)].reset_index(drop=True)


def wait_rows(out: Path, table: str, prefix: str, n: int, timeout: float = 10.0) -> pd.DataFrame:
    deadline = time.monotonic() + timeout
    while True:
        df = rows(out, table, prefix)
        if len(df) >= n or time.monotonic() > deadline:
            return df
        time.sleep(0.1)


# ----------------------------------------------------------------------------- one scoring call
T0 = 1_700_000_000.25
REQUEST = {"instances": [
    {"user_id": 11, "candidates": [{"item_id": 101, "category_id": 1, "price": 1.0},   # score 0.2
                                   {"item_id": 102, "category_id": 2, "price": 2.0},   # 0.1
                                   {"item_id": 103, "category_id": 3, "price": 0.04},  # bid below the reserve
                                   {"item_id": 104, "category_id": 4, "price": 0.5}]},  # 0.05
    {"user_id": 12, "candidates": [{"item_id": 201, "category_id": 5, "price": 3.0},   # 0.03
                                   {"item_id": 201, "category_id": 5, "price": 3.0},   # same ad twice: once
                                   {"item_id": 202, "category_id": 6, "price": 1.0}]}]}  # 0.02
RESPONSE = {"predictions": [[0.2, 0.05, 0.9, 0.1], [0.01, 0.5, 0.02]]}
# slots=2, reserve 0.05: slot 0 pays the runner-up's score / own pCTR, the last slot without one the reserve
EXPECTED_IMPRESSIONS = [  # (instance, item, category, position, bid, pctr, cpc)
    (0, 101, 1, 0, 1.0, 0.2, 0.1 / 0.2), (0, 102, 2, 1, 2.0, 0.05, min(0.05 / 0.05, 2.0)),
    (1, 201, 5, 0, 3.0, 0.01, 0.02 / 0.01), (1, 202, 6, 1, 1.0, 0.02, 0.05)]


def call(ce_id: str, *, endpoint: str = "default", meta: dict[str, str] | None = None, t: float = T0,
         latency: float = 0.0375, request: Any = REQUEST, response: Any = RESPONSE
         ) -> tuple[tuple[dict[str, str], bytes], tuple[dict[str, str], bytes]]:
    meta = {RANDOMISATION_HEADER: "user", REQUEST_TIME_HEADER: "1700000123.7"} if meta is None else meta
    req = encode_request_event(ce_id, request, service=SERVICE, endpoint=endpoint, metadata=meta, time=t)
    resp = encode_response_event(ce_id, response, service=SERVICE, endpoint=endpoint, metadata=meta,
                                 time=t + latency)
    return req, resp


def test_paired_events_become_exact_rows(sink: Sink) -> None:
    (rh, rb), (sh, sb) = call("paired-1")
    assert sink.post(rh, rb).json() == {"status": "accepted"}
    assert sink.post(sh, sb).json() == {"status": "accepted"}
    # the other order (the agent's workers may send the response first), on the canary endpoint
    (rh2, rb2), (sh2, sb2) = call("paired-2", endpoint="canary", meta={})
    assert sink.post(sh2, sb2).status_code == 200 and sink.post(rh2, rb2).status_code == 200

    reqs = wait_rows(sink.out, "requests", "paired-", 4)
    imps = wait_rows(sink.out, "impressions", "paired-", 8)
    reqs = reqs.sort_values("request_id").reset_index(drop=True)
    assert reqs["request_id"].tolist() == ["paired-1.0", "paired-1.1", "paired-2.0", "paired-2.1"]
    assert reqs["user_id"].tolist() == [11, 12, 11, 12]
    assert reqs["arm"].tolist() == ["champion", "champion", "canary", "canary"]
    assert reqs["status"].tolist() == [200] * 4
    assert reqs["n_candidates"].tolist() == [4, 3, 4, 3]
    assert reqs["randomisation"].tolist() == ["user", "user", "request", "request"]  # header, else the default
    assert reqs["ts"].tolist() == [1_700_000_123] * 2 + [int(T0)] * 2  # the request-time header, else ce-time
    assert reqs["latency_ms"].round(3).tolist() == [37.5] * 4
    for ce_id in ("paired-1", "paired-2"):
        got = imps[imps["request_id"].str.startswith(ce_id)].sort_values(["request_id", "position"])
        want = [(f"{ce_id}.{i}", item, cate, pos, bid, pctr) for i, item, cate, pos, bid, pctr, _ in
                EXPECTED_IMPRESSIONS]
        assert list(got[["request_id", "item_id", "category_id", "position", "bid", "pctr"]].itertuples(
            index=False, name=None)) == want
        assert got["cpc"].round(9).tolist() == [round(c, 9) for *_, c in EXPECTED_IMPRESSIONS]
        assert set(got["user_id"]) == {11, 12} and set(got["randomisation"]) == {"user" if ce_id == "paired-1"
                                                                                  else "request"}


def test_redelivered_events_count_once(sink: Sink) -> None:
    (rh, rb), (sh, sb) = call("redeliver-1")
    before = sink.metric("genctr_sink_events_duplicate_total", type="request")
    assert sink.post(rh, rb).json()["status"] == "accepted"
    assert sink.post(rh, rb).json()["status"] == "duplicate"
    assert sink.post(sh, sb).json()["status"] == "accepted"
    wait_rows(sink.out, "requests", "redeliver-1", 2)
    for _ in range(2):  # after the pair was written too
        assert sink.post(sh, sb).json()["status"] == "duplicate"
        assert sink.post(*to_structured(rh, rb)).json()["status"] == "duplicate"  # same id and type, other mode
    time.sleep(0.5)
    assert len(rows(sink.out, "requests", "redeliver-1")) == 2
    assert len(rows(sink.out, "impressions", "redeliver-1")) == 4
    assert sink.metric("genctr_sink_events_duplicate_total", type="request") == before + 3


def test_structured_mode_is_accepted(sink: Sink) -> None:
    (rh, rb), (sh, sb) = call("structured-1")
    sh2, sb2 = to_structured(sh, sb)
    assert sh2 == {"content-type": "application/cloudevents+json"}
    assert sink.post(*to_structured(rh, rb)).status_code == 200 and sink.post(sh2, sb2).status_code == 200
    assert len(wait_rows(sink.out, "impressions", "structured-1", 4)) == 4


def test_a_request_without_response_is_a_failed_request_and_late_responses_are_refused(sink: Sink) -> None:
    (rh, rb), (sh, sb) = call("lonely-1")
    assert sink.post(rh, rb).status_code == 200
    got = wait_rows(sink.out, "requests", "lonely-1", 2, timeout=TIMEOUT_S + 5)
    assert got["status"].tolist() == [504, 504] and got["latency_ms"].tolist() == [TIMEOUT_S * 1000] * 2
    late = sink.post(sh, sb)
    assert late.status_code == 409 and "pairing timeout" in late.json()["error"]
    assert rows(sink.out, "impressions", "lonely-1").empty
    # a response whose request never comes is dropped and counted, never written
    before = sink.metric("genctr_sink_events_rejected_total", reason="orphan_response")
    (_, _), (oh, ob) = call("orphan-1")
    assert sink.post(oh, ob).status_code == 200
    deadline = time.monotonic() + TIMEOUT_S + 5
    while sink.metric("genctr_sink_events_rejected_total", reason="orphan_response") == before:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert rows(sink.out, "requests", "orphan-1").empty


def test_clicks_post_dedupe_and_refuse_bad_rows_whole(sink: Sink) -> None:
    now = int(time.time())
    batch = [{"request_id": "clk-1.0", "item_id": 5, "ts": now}, {"request_id": "clk-1.0", "item_id": 6, "ts": now}]
    assert sink.client.post("/clicks", content=json.dumps(batch)).json() == {"accepted": 2, "duplicates": 0}
    ndjson = "\n".join(json.dumps(c) for c in [batch[0], {"request_id": "clk-2.0", "item_id": 7, "ts": now}])
    assert sink.client.post("/clicks", content=ndjson).json() == {"accepted": 1, "duplicates": 1}
    bad = [{"request_id": "clk-3.0", "item_id": 1, "ts": now}, {"request_id": "clk-3.0", "item_id": "1", "ts": now},
           {"request_id": "clk-3.0", "item_id": 2, "ts": now * 1000}, {"request_id": "clk-3.0", "item_id": 2}]
    resp = sink.client.post("/clicks", content=json.dumps(bad))
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert "3 of 4" in err and "click 2:" in err and "click 3:" in err and "click 4:" in err and "click 1:" not in err
    assert sink.client.post("/clicks", content=b"{nope").status_code == 400
    got = wait_rows(sink.out, "raw_clicks", "clk-", 3)
    time.sleep(0.4)
    got = rows(sink.out, "raw_clicks", "clk-")
    assert sorted(zip(got["request_id"], got["item_id"], strict=True)) == [("clk-1.0", 5), ("clk-1.0", 6),
                                                                          ("clk-2.0", 7)]


# ----------------------------------------------------------------------------- malformed events
def _valid(ce_id: str) -> tuple[dict[str, str], bytes]:
    return call(ce_id)[0]


def _drop(headers: dict[str, str], name: str) -> tuple[dict[str, str]]:
    return ({k: v for k, v in headers.items() if k != name},)


MUTATIONS: list[tuple[str, Callable[[dict[str, str], bytes, Any], tuple[dict[str, str], bytes]]]] = [
    ("drop a required attribute", lambda h, b, d: _drop(h, d.draw(st.sampled_from(
        ["Ce-Id", "Ce-Type", "Ce-Source", "Ce-Specversion"]))) + (b,)),
    ("wrong content type", lambda h, b, d: ({**h, "Content-Type": d.draw(st.sampled_from(
        ["text/plain", "application/xml", "", "application/cloudevents-batch+json", "application/octet-stream",
         "application/x-www-form-urlencoded"]))}, b)),
    ("not a CloudEvent", lambda h, b, d: ({"Content-Type": d.draw(st.sampled_from(["application/json", "text/plain"]))},
                                          b)),
    ("unknown type", lambda h, b, d: ({**h, "Ce-Type": d.draw(st.text("abcdefghij.", min_size=1, max_size=40))}, b)),
    ("unknown arm", lambda h, b, d: ({**h, "Ce-Endpoint": d.draw(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1,
                                                                         max_size=20).filter(
        lambda e: e not in ("default", "canary")))}, b)),
    ("other service", lambda h, b, d: ({**h, "Ce-Inferenceservicename": "someone-else"}, b)),
    ("bad specversion", lambda h, b, d: ({**h, "Ce-Specversion": d.draw(st.sampled_from(["0.3", "2.0", "x"]))}, b)),
    ("bad time", lambda h, b, d: ({**h, "Ce-Time": d.draw(st.sampled_from(["yesterday", "2024-13-01T00:00:00Z",
                                                                          "2024-01-01T00:00:00"]))}, b)),
    ("bad metadata", lambda h, b, d: ({**h, "Ce-Metadata": d.draw(st.sampled_from(
        ['{"X-Genctr-Randomisation": "user"}', "[1]", "{", '{"X-Genctr-Randomisation": ["household"]}',
         '{"X-Genctr-Request-Time": ["soon"]}']))}, b)),
    ("body not JSON", lambda h, b, d: (h, d.draw(st.binary(max_size=200)).replace(b"{", b"("))),
    ("body off schema", lambda h, b, d: (h, json.dumps(d.draw(st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(
            ["instances", "user_id", "candidates", "item_id", "price", "x"]), kids, max_size=4),
        max_leaves=12))).encode())),
    ("negative price", lambda h, b, d: (h, b.replace(b'"price":1.0', b'"price":-1.0'))),
    ("oversized", lambda h, b, d: (h, b" " * (MAX_BODY + 1) + b)),
]


def _files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and ".sink" not in p.relative_to(out).parts]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_events_get_4xx_and_leave_the_sink_up(sink: Sink, data: st.DataObject) -> None:
    name, mutate = data.draw(st.sampled_from(MUTATIONS))
    ce_id = f"bad-{random.getrandbits(48):x}"
    headers, body = mutate(*_valid(ce_id), data)
    # the SDK's structured encoder fills in a missing id / specversion itself: those stay binary
    if data.draw(st.booleans()) and name not in ("not a CloudEvent", "wrong content type", "oversized",
                                                 "drop a required attribute", "bad specversion"):
        try:
            headers, body = to_structured(headers, body)
        except Exception:  # noqa: BLE001 - not re-encodable (e.g. the body is not JSON): send it as it is
            pass
    before = sum(v for (n, _), v in sink.metrics().items() if n == "genctr_sink_events_rejected_total")
    resp = sink.post(headers, body)
    assert 400 <= resp.status_code < 500, (name, resp.status_code, resp.text)
    assert resp.json()["reason"] and resp.json()["error"]
    assert sink.client.get("/healthz").status_code == 200
    after = sum(v for (n, _), v in sink.metrics().items() if n == "genctr_sink_events_rejected_total")
    assert after >= before + 1  # counted (other rejects, e.g. an orphan's timeout, may land meanwhile)


def test_refusals_are_counted_by_reason_and_nothing_is_half_written(sink: Sink) -> None:
    for reason, (headers, body) in {
        "content_type": ({"Content-Type": "text/plain"}, b"x"),
        "unknown_arm": ({**_valid("arm-x")[0], "Ce-Endpoint": "blue"}, _valid("arm-x")[1]),
        "too_large": (_valid("big-x")[0], b"[" * (MAX_BODY * 2)),
        "unknown_type": ({**_valid("type-x")[0], "Ce-Type": "org.example.other"}, _valid("type-x")[1]),
    }.items():
        before = sink.metric("genctr_sink_events_rejected_total", reason=reason)
        assert sink.post(headers, body).json()["reason"] == reason
        assert sink.metric("genctr_sink_events_rejected_total", reason=reason) == before + 1
    time.sleep(0.5)
    files = _files(sink.out)
    assert files, "the other tests wrote parts"
    for p in files:
        assert p.parent.name in ("requests", "impressions", "raw_clicks") and p.name.startswith("part-"), p
        assert p.suffix == ".parquet" and pq.read_metadata(p).num_rows > 0
    assert rows(sink.out, "requests", "bad-").empty and rows(sink.out, "requests", "arm-x").empty


def test_metrics_count_accepted_events_by_type_and_arm(sink: Sink) -> None:
    m = sink.metrics()
    assert m[("genctr_sink_events_accepted_total", (("arm", "champion"), ("type", "request")))] >= 3
    assert m[("genctr_sink_events_accepted_total", (("arm", "canary"), ("type", "response")))] >= 1
    assert ("genctr_sink_buffer_rows", ()) in m and ("genctr_sink_pending_events", (("type", "request"),)) in m
    assert m[("genctr_sink_parts_flushed_total", (("table", "requests"),))] >= 1


# ----------------------------------------------------------------------------- crash and restart
def _sender(sink: Sink, stop: threading.Event, acked: list[str], n_threads: int = 4) -> list[threading.Thread]:
    def run(k: int) -> None:
        client = httpx.Client(base_url=sink.url, timeout=5)
        i = 0
        while not stop.is_set():
            ce_id = f"crash-{k}-{i}"
            i += 1
            (rh, rb), (sh, sb) = call(ce_id, t=time.time())
            try:
                ok = client.post("/", headers=rh, content=rb).status_code == 200
                ok = ok and client.post("/", headers=sh, content=sb).status_code == 200
            except httpx.TransportError:
                return  # the sink is gone
            if ok:
                acked.append(ce_id)
        client.close()

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(n_threads)]
    for t in threads:
        t.start()
    return threads


def test_sigkill_then_restart_keeps_every_acknowledged_event_exactly_once(tmp_path: Path) -> None:
    s = Sink(tmp_path / "out", ["--flush-seconds", "0.05", "--flush-rows", "40", "--pairing-timeout-s", "30",
                                "--slots", "2"],
             tmp_path / "sink.log").start()
    try:
        stop, acked = threading.Event(), []
        threads = _sender(s, stop, acked)
        time.sleep(1.5)  # acks and part writes interleave: the kill lands anywhere between them
        s.kill()
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert len(acked) > 20, "too little traffic before the kill to test anything"
        s.start()  # replays the journal: finishes an open flush, re-pairs the unwritten events
        reqs = wait_rows(s.out, "requests", "crash-", 2 * len(acked), timeout=15)
        time.sleep(0.5)
        reqs = rows(s.out, "requests", "crash-")
        counts = reqs["request_id"].value_counts()
        assert counts.max() == 1, f"written twice: {counts[counts > 1].head()}"
        written = set(reqs["request_id"].str.rsplit(".", n=1).str[0])
        missing = sorted(set(acked) - written)
        assert not missing, f"{len(missing)} acknowledged calls lost, e.g. {missing[:3]}"
        assert (reqs["status"] == 200).all()  # both halves were acknowledged: every one paired
        imps = rows(s.out, "impressions", "crash-")
        assert imps.groupby("request_id").size().max() == 2 and imps.duplicated(["request_id", "item_id"]).sum() == 0
        # the journal still knows the ids: a redelivery after the restart is not counted again
        (rh, rb), _ = call(acked[0])
        assert s.post(rh, rb).json()["status"] == "duplicate"
    finally:
        s.stop()


def test_a_flush_interrupted_between_its_two_journal_steps_is_finished_once(tmp_path: Path) -> None:
    """In-process: the parts of a begun flush exist (or half exist) and the journal never heard back."""
    from genctr.monitoring.sink.config import SinkConfig
    from genctr.monitoring.sink.service import LogSink

    cfg = SinkConfig(out=str(tmp_path / "out"), flush_seconds=1000, flush_rows=1000, slots=2, reserve_price=0.05)

    async def crash_mid_flush() -> None:
        sink = LogSink(cfg)
        await sink.start()
        for ce_id in ("mid-1", "mid-2"):
            for headers, body in call(ce_id):
                assert await sink.accept_event(decode_event(headers, body)) == "accepted"
        batch, sink.batch = sink.batch, type(sink.batch)()
        assert sink.journal is not None
        seq, name = await sink.journal.call(sink.journal.journal.begin_flush, sink.sink_id, batch.outcomes, 0.0)
        sink.writer.write("requests", name, pd.DataFrame(batch.rows["requests"]))  # one of two parts, then "crash"
        for task in sink._tasks:
            task.cancel()
        sink.journal.stop()

    async def restart() -> None:
        sink = LogSink(cfg)
        await sink.start()
        await sink.stop()

    asyncio.run(crash_mid_flush())
    asyncio.run(restart())
    reqs, imps = read_table(tmp_path / "out", "requests"), read_table(tmp_path / "out", "impressions")
    assert sorted(reqs["request_id"]) == ["mid-1.0", "mid-1.1", "mid-2.0", "mid-2.1"]
    assert len(imps) == 8 and not imps.duplicated(["request_id", "item_id"]).any()
    assert len(list((tmp_path / "out" / "requests").glob("part-*"))) == 1  # rewritten under its name


def test_sink_writes_an_s3_log_dir_that_collect_reads(tmp_path: Path) -> None:
    """s3:// output against a real S3 API (moto's server on a loopback port): parts appear whole under
    their final names, and the canary's collect step reads them from the URI."""
    port = free_port()
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the sink subprocess inherits them; so do s3fs here and collect()
    s = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(env["AWS_ENDPOINT_URL"], timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir("genctr-logs")
        uri = "s3://genctr-logs/ab-logs/genctr-ctr"
        s = Sink(uri, ["--state-dir", str(tmp_path / "journal"), "--flush-seconds", "0.2", "--slots", "2",
                       "--reserve-price", "0.05"], tmp_path / "sink.log").start()
        for ce_id in ("s3-1", "s3-2"):
            for headers, body in call(ce_id):
                assert s.post(headers, body).status_code == 200
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        deadline = time.monotonic() + 15
        while len(fs.glob(f"{uri}/impressions/part-*.parquet")) < 1:
            assert time.monotonic() < deadline, "no impressions part in S3"
            time.sleep(0.2)
        time.sleep(0.3)
        assert not [p for p in fs.find(uri) if not p.rsplit("/", 1)[1].startswith("part-")]  # no temporaries
        from genctr.monitoring.collect import collect

        logs = collect(uri)
        assert sorted(logs.requests["request_id"]) == ["s3-1.0", "s3-1.1", "s3-2.0", "s3-2.1"]
        assert len(logs.impressions) == 8 and (logs.requests["status"] == 200).all()
    finally:
        if s is not None:
            s.stop()
        moto.terminate()
        moto.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----------------------------------------------------------------------------- the encoder and arms
def test_encoder_writes_what_kserves_agent_sends() -> None:
    """Headers as sdk-go's binary writer puts them (canonical names, ce-metadata = Go json.Marshal of
    map[string][]string: compact, sorted keys, HTML-escaped), ce-time as Go's RFC3339Nano."""
    headers, body = encode_request_event(
        "2b5a6f6e-6c1e-4f5e-9d8a-0d3a1b2c3d4e", b'{"instances": []}', service="genctr-ctr", namespace="genctr",
        endpoint="canary", metadata={"X-Genctr-Randomisation": "user", "X-B": ["a&b", "<c>"]},
        annotations={MODEL_URI_ANNOTATION: "s3://m/ctr/versions/2"}, time=1_714_564_800.5,
        source="http://genctr-ctr-predictor-00002-deployment-7f9c")
    assert headers == {
        "Ce-Specversion": "1.0", "Ce-Id": "2b5a6f6e-6c1e-4f5e-9d8a-0d3a1b2c3d4e",
        "Ce-Source": "http://genctr-ctr-predictor-00002-deployment-7f9c",
        "Ce-Type": "org.kubeflow.serving.inference.request", "Ce-Time": "2024-05-01T12:00:00.5Z",
        "Ce-Inferenceservicename": "genctr-ctr", "Ce-Namespace": "genctr", "Ce-Component": "predictor",
        "Ce-Endpoint": "canary",
        "Ce-Metadata": '{"X-B":["a\\u0026b","\\u003cc\\u003e"],"X-Genctr-Randomisation":["user"]}',
        "Ce-Annotations": '{"internal.serving.kserve.io/storage-initializer-sourceuri":"s3://m/ctr/versions/2"}',
        "Content-Type": "application/json"}
    assert body == b'{"instances": []}'  # the scoring call's body, byte for byte
    assert format_time(1_714_564_800.0) == "2024-05-01T12:00:00Z" and go_json({}) == "{}"
    resp_headers, _ = encode_response_event("x", {"predictions": [[0.5]]}, service="s", time=1.0)
    assert resp_headers["Ce-Type"] == "org.kubeflow.serving.inference.response"
    assert resp_headers["Ce-Metadata"] == "{}"  # the agent always sends it, empty when nothing matched
    event = decode_event({k.lower(): v for k, v in headers.items()}, body)  # header names are case-insensitive
    assert (event.kind, event.endpoint, event.time) == ("request", "canary", 1_714_564_800.5)
    assert event.metadata == {"X-B": ["a&b", "<c>"], "X-Genctr-Randomisation": ["user"]}
    assert event.header("x-genctr-randomisation") == "user"
    with pytest.raises(EventError) as err:
        decode_event({**headers, "Content-Type": "text/csv"}, body)
    assert err.value.status == 415 and err.value.reason == "content_type"


def test_arms_by_endpoint_or_by_the_model_the_event_names() -> None:
    def event(endpoint: str, uri: str | None = None) -> InferenceEvent:
        return InferenceEvent("i", "request", "s", 0.0, SERVICE, "genctr", "predictor", endpoint,
                              annotations={MODEL_URI_ANNOTATION: uri} if uri else {})

    plain = ArmResolver()
    assert plain.resolve(event("default")) == "champion" and plain.resolve(event("canary")) == "canary"
    with pytest.raises(EventError, match="neither 'default'"):
        plain.resolve(event("green"))
    isvc = {"genctr.io/champion-storage-uri": "s3://m/v/1", "genctr.io/canary-storage-uri": "s3://m/v/2/"}
    calls: list[int] = []

    def fetch() -> dict[str, str]:
        calls.append(1)
        return arms_of_annotations(isvc)

    models = ModelMap(fetch=fetch, refresh_s=60)
    by_model = ArmResolver(models)
    # canaryTrafficPercent: both revisions say "default"; the model URI names the arm
    assert by_model.resolve(event("default", "s3://m/v/1/")) == "champion"
    assert by_model.resolve(event("default", "s3://m/v/2")) == "canary"
    with pytest.raises(EventError, match="neither the champion nor the canary"):
        by_model.resolve(event("default", "s3://m/v/0"))
    with pytest.raises(EventError, match="metadataAnnotations"):
        by_model.resolve(event("default"))
    isvc = {"genctr.io/champion-storage-uri": "s3://m/v/2"}  # promoted: the canary's model is now the champion
    models.refresh()
    assert by_model.resolve(event("default", "s3://m/v/2")) == "champion" and len(calls) == 2
    models.stop()


def test_clicks_import_cli(tmp_path: Path) -> None:
    from genctr.cli import app

    runner = CliRunner()
    out = tmp_path / "logs"
    now = int(time.time())
    good = tmp_path / "clicks.csv"
    good.write_text(f"request_id,item_id,ts\na.0,1,{now}\na.0,2,{now}\nb.1,3,{now}\n")
    result = runner.invoke(app, ["canary", "clicks", "import", str(good), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["clicks"] == 3
    assert runner.invoke(app, ["canary", "clicks", "import", str(good), "--out", str(out)]).exit_code == 0
    assert len(read_raw_clicks(out)) == 3  # the same file again replaced its part
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in [{"request_id": "a.0", "item_id": 1, "ts": now},
                                                      {"request_id": "", "item_id": 1, "ts": now},
                                                      {"request_id": "a.0", "item_id": 1.5, "ts": now}]))
    result = runner.invoke(app, ["canary", "clicks", "import", str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert "bad.jsonl row 2" in result.output and "bad.jsonl row 3" in result.output and "row 1:" not in result.output
    parquet = tmp_path / "c.parquet"
    pd.DataFrame({"request_id": ["p.0"], "item_id": [9], "ts": [now]}).to_parquet(parquet)
    assert runner.invoke(app, ["canary", "clicks", "import", str(parquet), "--out", str(out)]).exit_code == 0
    assert len(read_raw_clicks(out)) == 4


def test_sink_price_bound_is_the_predictors() -> None:
    from genctr.monitoring.sink.payload import MAX_PRICE

    source = (Path(__file__).resolve().parents[1] / "src" / "genctr" / "serving" / "request.py").read_text()
    found = re.search(r"^MAX_PRICE = ([0-9.eE+]+)", source, re.M)  # text: importing serving costs torch
    assert found and float(found.group(1)) == MAX_PRICE


def test_bad_sink_options_exit_2_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from genctr.monitoring.sink.__main__ import main

    for args, word in ([["--out", "s3://b/ab-logs/x"], "state_dir"], [["--out", str(tmp_path), "--slots", "0"],
                                                                     "sink.slots"],
                       [["--out", str(tmp_path), "--isvc", "nope"], "NAMESPACE/NAME"],
                       [["--out", str(tmp_path), "--canary-uri", "s3://m/2"], "--champion-uri"]):
        assert main([*args, "--log-format", "plain"]) == 2, args
        assert word in capsys.readouterr().err, args
    assert not (tmp_path / ".sink").exists()  # refused before anything was opened
