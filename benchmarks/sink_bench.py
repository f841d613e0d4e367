"""A/B log sink throughput on one core, and the Spark attribution join at 1M impressions.

    python benchmarks/sink_bench.py                          # both parts (a quiet machine)
    python benchmarks/sink_bench.py --calls 2000 --impressions 100000   # a smoke run

1. Sink: ``python -m genctr.monitoring.sink`` pinned to core 0 (``taskset``), a client *process*
   pinned to core 1 (aiohttp, ``--concurrency`` keep-alive connections) posting ``--calls`` scoring
   calls as KServe's agent does (binary-mode CloudEvents from ``genctr.monitoring.cloudevents_codec``,
   request then response, one instance of ``--candidates`` candidates each; encoded before the clock
   starts). Reported: acknowledged events/s (each acknowledgement = a journal commit, i.e. durable),
   the ack latency p50/p99, the sink's CPU seconds (psutil) and events per CPU-second, and the time
   until every call's rows were in part files.
2. Join: ``--impressions`` impressions (3 ads per request) and raw clicks on 4 % of them (plus
   double clicks, late clicks and orphans) as Parquet parts; ``run_attribution`` on ``local[*]``,
   timed cold (first query of the session) and warm; impressions/s of the warm run.

Writes ``benchmarks/results/sink.json`` (``--out``) with the load average before and after each part.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from genctr.atomic import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "sink.json"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ----------------------------------------------------------------------------- the client process
def encoded_calls(n: int, candidates: int, seed: int = 0) -> list[tuple[tuple[dict[str, str], bytes], ...]]:
    from genctr.monitoring.cloudevents_codec import encode_request_event, encode_response_event

    rng = np.random.default_rng(seed)
    now = time.time()
    out = []
    for i in range(n):
        items = rng.choice(100_000, candidates, replace=False).tolist()
        body = {"instances": [{"user_id": int(rng.integers(1, 50_000)), "candidates": [
            {"item_id": it, "category_id": it % 50, "price": round(float(rng.uniform(0.1, 3)), 2)} for it in items]}]}
        preds = {"predictions": [np.round(rng.uniform(0, 0.1, candidates), 5).tolist()]}
        meta = {"X-Genctr-Randomisation": "user", "X-Genctr-Request-Time": f"{now:.3f}"}
        endpoint = "canary" if i % 2 else "default"
        out.append((encode_request_event(f"bench-{i}", body, service="genctr-ctr", endpoint=endpoint, metadata=meta,
                                         time=now),
                    encode_response_event(f"bench-{i}", preds, service="genctr-ctr", endpoint=endpoint,
                                          metadata=meta, time=now + 0.01)))
    return out


async def _post_all(url: str, calls: list[Any], concurrency: int) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for c in calls:
        queue.put_nowait(c)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            call = queue.get_nowait()
            for headers, body in call:  # request, then response: the agent's order for one call
                t = time.perf_counter()
                async with session.post(url, headers=headers, data=body) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append((time.perf_counter() - t) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"events": len(latencies), "wall_s": wall, "statuses": statuses,
            "ack_p50_ms": pct(latencies, 50), "ack_p99_ms": pct(latencies, 99)}


def client_main(url: str, calls: int, candidates: int, concurrency: int) -> None:
    encoded = encoded_calls(calls, candidates)
    print(json.dumps(asyncio.run(_post_all(url, encoded, concurrency))))


# ----------------------------------------------------------------------------- part 1: the sink
def bench_sink(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import httpx
    import psutil

    from genctr.monitoring.logs import read_table

    port = free_port()
    out = work / "sink-out"
    pin = ["taskset", "-c", "0"] if args.pin else []
    sink = subprocess.Popen([*pin, sys.executable, "-m", "genctr.monitoring.sink", "--out", str(out), "--port",
                             str(port), "--flush-rows", "5000", "--flush-seconds", "1", "--log-format", "json"],
                            stdout=subprocess.DEVNULL, stderr=open(work / "sink.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        proc = psutil.Process(sink.pid)
        cpu0 = sum(proc.cpu_times()[:2])
        before = loadavg()
        pin_client = ["taskset", "-c", "1"] if args.pin else []
        client = subprocess.run([*pin_client, sys.executable, __file__, "--client", url + "/", "--calls",
                                 str(args.calls), "--candidates", str(args.candidates), "--concurrency",
                                 str(args.concurrency)], capture_output=True, text=True, check=True)
        result = json.loads(client.stdout.strip().splitlines()[-1])
        cpu1 = sum(proc.cpu_times()[:2])
        start = time.perf_counter()
        while True:  # every call's rows in part files (flush by count, the rest by time)
            n = len(read_table(out, "requests")) if (out / "requests").is_dir() else 0
            if n >= args.calls or time.perf_counter() - start > 60:
                break
            time.sleep(0.2)
        drained = time.perf_counter() - start
        after = loadavg()
    finally:
        sink.terminate()
        sink.wait(timeout=60)
    events, wall, cpu = result["events"], result["wall_s"], cpu1 - cpu0
    return {"calls": args.calls, "candidates": args.candidates, "concurrency": args.concurrency,
            "pinned": args.pin, "events": events, "statuses": result["statuses"], "wall_s": round(wall, 3),
            "events_per_s": round(events / wall, 1), "calls_per_s": round(args.calls / wall, 1),
            "ack_p50_ms": round(result["ack_p50_ms"], 2), "ack_p99_ms": round(result["ack_p99_ms"], 2),
            "sink_cpu_s": round(cpu, 2), "events_per_cpu_s": round(events / cpu, 1) if cpu else None,
            "requests_rows": n, "rows_written_within_s_after_last_ack": round(drained, 2),
            "loadavg_before": before, "loadavg_after": after}


# ----------------------------------------------------------------------------- part 2: the join
def bench_join(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import pandas as pd

    from genctr.features.spark_session import get_spark
    from genctr.monitoring.attribution import run_attribution
    from genctr.monitoring.logs import append
    from genctr.monitoring.sink.parts import PartWriter

    n = args.impressions
    rng = np.random.default_rng(1)
    req = np.arange(n) // 3
    ts = 1_700_000_000 + req // 10
    imps = pd.DataFrame({"request_id": pd.Series(req).astype(str) + ".0", "ts": ts, "user_id": req % 50_000,
                         "arm": np.where(req % 2 == 0, "champion", "canary"), "item_id": rng.integers(0, 10**6, n),
                         "category_id": 1, "position": np.arange(n) % 3, "bid": 1.0, "pctr": 0.05, "cpc": 0.5,
                         "randomisation": "user"})
    imps = imps.drop_duplicates(["request_id", "item_id"])
    logs = work / "join-logs"
    append(logs, "impressions", imps)
    clicked = imps.sample(frac=0.04, random_state=2)
    lag = rng.integers(0, 3_600, len(clicked))
    lag[: len(lag) // 20] = 2 * 86_400  # 5 % late
    doubles = min(2_000, len(lag) // 4)
    raw = pd.concat([
        pd.DataFrame({"request_id": clicked["request_id"].to_numpy(), "item_id": clicked["item_id"].to_numpy(),
                      "ts": clicked["ts"].to_numpy() + lag}),
        pd.DataFrame({"request_id": clicked["request_id"].to_numpy()[-doubles:],  # double clicks, after the
                      "item_id": clicked["item_id"].to_numpy()[-doubles:],         # first (on the tail: the
                      "ts": clicked["ts"].to_numpy()[-doubles:] + 9_999}),         # late are the head)
        pd.DataFrame({"request_id": [f"gone-{i}.0" for i in range(1_000)], "item_id": 1, "ts": 1_700_000_000}),
    ], ignore_index=True)
    PartWriter(str(logs)).write("raw_clicks", "part-bench.parquet", raw)
    before = loadavg()
    t = time.perf_counter()
    spark = get_spark("local[*]", app_name="genctr-sink-bench", shuffle_partitions=8, driver_memory="4g")
    start_s = time.perf_counter() - t
    timings, counts = [], None
    for i in range(2):
        t = time.perf_counter()
        counts = run_attribution(logs, work / f"join-out-{i}", spark=spark).to_dict()
        timings.append(time.perf_counter() - t)
    spark.stop()
    after = loadavg()
    return {"impressions": len(imps), "raw_clicks": len(raw), "master": "local[*]", "cores": os.cpu_count(),
            "spark_start_s": round(start_s, 2), "cold_s": round(timings[0], 2), "warm_s": round(timings[1], 2),
            "impressions_per_s_warm": round(len(imps) / timings[1], 0), "counts": counts,
            "loadavg_before": before, "loadavg_after": after}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20_000, help="scoring calls (2 events each)")
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--impressions", type=int, default=1_000_000)
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not taskset the sink and the client")
    p.add_argument("--skip", choices=["sink", "join"], action="append", default=[])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--client", default="", help=argparse.SUPPRESS)  # the client process' own mode
    args = p.parse_args(argv)
    if args.client:
        client_main(args.client, args.calls, args.candidates, args.concurrency)
        return 0
    result: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="genctr-sink-bench-") as tmp:
        if "sink" not in args.skip:
            result["sink"] = bench_sink(args, Path(tmp))
            print(json.dumps(result["sink"], indent=2), flush=True)
        if "join" not in args.skip:
            result["join"] = bench_join(args, Path(tmp))
            print(json.dumps(result["join"], indent=2), flush=True)
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
