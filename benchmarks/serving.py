"""Serving latency and throughput: genctr's one-hop predictor vs the KServe Feast sample's two hops.

    python benchmarks/serving.py                          # build (cached), train, serve, measure
    python benchmarks/serving.py --configs dcnv2_ta:50 dnn:200 --seconds 20 --record benchmarks/RESULTS.md

Workload: one request = 100 candidates (item_id, category_id, price) of one user whose Feast
sequence is full (L behaviours), v1 JSON over HTTP on 127.0.0.1; the same body for both layouts.

* one-hop (genctr): client -> ``python -m genctr.serving --model_dir M --feast_repo F``: the
  predictor reads the SQLite online store in-process (cached online-store reader) and scores.
* two-hop (KServe Feast sample): client -> transformer (a ``kserve.Model`` whose ``preprocess``
  calls Feast's Python feature server, ``feast serve``, over HTTP; KServe's default ``predict``
  forwards to ``--predictor_host``) -> ``python -m genctr.serving --model_dir M`` without Feast
  (histories arrive in the request). Three processes.

Per layout: latency with one client (``--requests`` after a warm-up, p50/p90/p99) and requests/s
with 8 concurrent keep-alive clients for ``--seconds``. Both layouts run at the same time and are
measured in alternating rounds (``--rounds``), so bursts of other load on a shared machine hit
both alike. Server CPU ms per request (psutil, all of
the layout's server processes) is reported too: on a shared machine it is steadier than wall
time. Setup is cached under ``--workdir``: synthetic events -> Spark build -> Feast SQLite, and a
1-epoch model per ``--configs`` entry (backbone, history length L). Writes
``benchmarks/results/serving.json``; ``--record FILE`` replaces the ``## Serving`` section of FILE
with the results.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_CANDIDATES = 100
SECTION = "## Serving"


# -- setup -------------------------------------------------------------------------------------

def prepare(work: Path, configs: list[tuple[str, int]], events: int, users: int, items: int) -> dict[str, Any]:
    """Events -> build (L = the largest asked) -> Feast SQLite, and one model per (backbone, L);
    all cached in ``work`` (the build by its parameters, each model by its directory)."""
    from genctr.config import DataConfig, FeatureConfig
    from genctr.features.feast_sync import materialize
    from genctr.training.run import finetune
    from genctr.workflow import build_features, export_events

    work.mkdir(parents=True, exist_ok=True)
    marker = work / "build.json"
    want = {"events": events, "users": users, "items": items, "max_seq_len": max(L for _, L in configs)}
    info = json.loads(marker.read_text()) if marker.exists() else {}
    if info.get("params") != want:
        t0 = time.time()
        export_events(DataConfig(source="synthetic", synthetic_events=events, synthetic_users=users,
                                 synthetic_items=items), work / "events")
        build_features(work / "events", work / "build",
                       FeatureConfig(max_seq_len=want["max_seq_len"], spark_master="local[2]"))
        materialize(work / "build", work_dir=work / "feast")
        info = {"params": want, "build": str(work / "build"), "feast": str(work / "feast"),
                "setup_seconds": round(time.time() - t0, 1)}
        marker.write_text(json.dumps(info, indent=2))
        for old in work.glob("model_*"):  # trained on the previous build
            shutil.rmtree(old)
    info["models"] = {}
    for backbone, L in configs:
        model = work / f"model_{backbone}_L{L}"
        if not (model / "config.json").exists():
            finetune(work / "build", model, {"max_seq_len": L, "backbone": backbone},
                     {"epochs": 1, "progress": False, "device": "cpu"})
        info["models"][f"{backbone}:{L}"] = str(model)
    return info


def parse_config(text: str) -> tuple[str, int]:
    backbone, _, length = text.partition(":")
    if backbone not in ("dnn", "dcnv2", "dcnv2_ta") or not length.isdigit():
        raise argparse.ArgumentTypeError(f"expected BACKBONE:L (dnn|dcnv2|dcnv2_ta), got {text!r}")
    return backbone, int(length)


def workload(info: dict[str, Any]) -> tuple[int, int, bytes]:
    """(user, its sequence length, v1 body): the user with the longest served sequence."""
    import pandas as pd

    fu = pd.read_parquet(Path(info["build"]) / "feast" / "user_behavior_seq")
    row = fu.sort_values(["seq_len", "user_id"], ascending=[False, True]).iloc[0]
    items = pd.read_parquet(Path(info["build"]) / "feast" / "item_features").sample(
        n=N_CANDIDATES, replace=True, random_state=0)
    cands = [{"item_id": int(r.item_id), "category_id": int(r.category_id), "price": round(float(r.price), 4)}
             for r in items.itertuples()]
    body = json.dumps({"instances": [{"user_id": int(row.user_id), "candidates": cands}]}).encode()
    return int(row.user_id), int(row.seq_len), body


# -- processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{' '.join(map(str, proc.args))} did not come up: {log.read_text(errors='replace')[-2000:]}")


@contextmanager
def process(cmd: list[str], port: int, ready_path: str, log: Path) -> Iterator[subprocess.Popen]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_http(port, ready_path, proc, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def one_hop(model: str, feast: str, logs: Path, threads: int) -> Iterator[tuple[int, dict[str, int]]]:
    port = free_port()
    cmd = [sys.executable, "-m", "genctr.serving", "--model_dir", model, "--model_name", "ctr",
           "--feast_repo", feast, "--http_port", str(port), "--forward_threads", str(threads)]
    with process(cmd, port, "/v2/models/ctr/ready", logs / "one_hop.log") as p:
        yield port, {"predictor": p.pid}


@contextmanager
def two_hop(model: str, feast: str, logs: Path, threads: int) -> Iterator[tuple[int, dict[str, int]]]:
    fport, pport, tport = free_port(), free_port(), free_port()
    feast_bin = str(Path(sys.executable).with_name("feast"))
    with ExitStack() as stack:
        fs = stack.enter_context(process([feast_bin, "-c", feast, "serve", "-p", str(fport), "--no-access-log",
                                          # gunicorn would recycle its worker every ~1000 requests
                                          "--max-requests", "100000000", "--max-requests-jitter", "0"],
                                         fport, "/health", logs / "feast_serve.log"))
        pred = stack.enter_context(process(
            [sys.executable, "-m", "genctr.serving", "--model_dir", model, "--model_name", "ctr",
             "--http_port", str(pport), "--forward_threads", str(threads)],
            pport, "/v2/models/ctr/ready", logs / "two_hop_predictor.log"))
        tr = stack.enter_context(process(
            [sys.executable, str(Path(__file__).resolve()), "transformer", "--http_port", str(tport),
             "--predictor_host", f"127.0.0.1:{pport}", "--feast_url", f"http://127.0.0.1:{fport}"],
            tport, "/v2/models/ctr/ready", logs / "two_hop_transformer.log"))
        yield tport, {"feast serve": fs.pid, "predictor": pred.pid, "transformer": tr.pid}


# -- the KServe Feast sample's transformer -------------------------------------------------------

def run_transformer(argv: list[str]) -> None:
    """A kserve.Model transformer: Feast feature server over HTTP in preprocess, then KServe's
    default predict() forwards the enriched v1 request to the predictor."""
    import httpx
    import kserve
    from kserve import model_server
    from kserve.predictor_config import PredictorConfig

    p = argparse.ArgumentParser(parents=[model_server.parser])
    p.add_argument("--feast_url", required=True)
    args, _ = p.parse_known_args(argv)

    class FeastTransformer(kserve.Model):
        def __init__(self, name: str, feast_url: str) -> None:
            super().__init__(name)
            self.feast_url = feast_url
            self.client: httpx.AsyncClient | None = None
            self.ready = True

        async def preprocess(self, payload: dict, headers: dict | None = None) -> dict:
            if self.client is None:
                self.client = httpx.AsyncClient(timeout=30)
            instances = payload["instances"]
            r = await self.client.post(f"{self.feast_url}/get-online-features", json={
                "features": ["user_behavior_seq:item_seq", "user_behavior_seq:cate_seq"],
                "entities": {"user_id": [i["user_id"] for i in instances]}})
            r.raise_for_status()
            got = r.json()
            names = got["metadata"]["feature_names"]
            items = got["results"][names.index("item_seq")]["values"]
            cates = got["results"][names.index("cate_seq")]["values"]
            return {"instances": [{**inst, "history": {"item_seq": items[k] or [], "cate_seq": cates[k] or []}}
                                  for k, inst in enumerate(instances)]}

    import logging

    server = kserve.ModelServer(http_port=args.http_port, enable_grpc=False, enable_latency_logging=False,
                                predictor_config=PredictorConfig(predictor_host=args.predictor_host,
                                                                 predictor_protocol="v1"))
    for name in ("uvicorn.access", "kserve.trace"):  # as genctr.serving does by default
        logging.getLogger(name).disabled = True
    server.start([FeastTransformer("ctr", args.feast_url)])


# -- load generation -----------------------------------------------------------------------------
# A lean asyncio HTTP/1.1 client (one pre-built request, keep-alive, Content-Length framing): the
# load generator shares the 2 cores with the servers, so it must cost far less than a request.

PATH = "/v1/models/ctr:predict"


def _request(body: bytes) -> bytes:
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    i = lower.find(b"content-length:")
    if i < 0:
        raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
    data = await reader.readexactly(int(lower[i + 15:lower.index(b"\r\n", i)]))
    if head[9:12] != b"200":
        raise RuntimeError(f"HTTP {head[9:12].decode()}: {data[:300]!r}")


async def _latency(port: int, request: bytes, n: int, warmup: int, max_seconds: float) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(warmup):
        await _send(reader, writer, request)
    out: list[float] = []
    deadline = time.monotonic() + max_seconds
    while len(out) < n and time.monotonic() < deadline:
        t = time.perf_counter()
        await _send(reader, writer, request)
        out.append((time.perf_counter() - t) * 1e3)
    writer.close()
    return out


def latency(port: int, body: bytes, n: int, warmup: int, max_seconds: float) -> list[float]:
    """One client, sequential requests: per-request milliseconds."""
    return asyncio.run(_latency(port, _request(body), n, warmup, max_seconds))


async def _throughput(port: int, request: bytes, clients: int, seconds: float) -> tuple[float, int, list[float], float]:
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]
    for reader, writer in conns:
        await _send(reader, writer, request)  # warm every connection
    lat: list[float] = []
    cpu0, t0 = time.process_time(), time.monotonic()
    stop = t0 + seconds

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        n = 0
        while time.monotonic() < stop:
            t = time.perf_counter()
            await _send(reader, writer, request)
            lat.append((time.perf_counter() - t) * 1e3)
            n += 1
        return n

    counts = await asyncio.gather(*(client(r, w) for r, w in conns))
    elapsed, client_cpu = time.monotonic() - t0, time.process_time() - cpu0
    for _, writer in conns:
        writer.close()
    return sum(counts) / elapsed, sum(counts), lat, client_cpu


def throughput(port: int, body: bytes, clients: int, seconds: float) -> tuple[float, int, list[float], float]:
    """``clients`` concurrent keep-alive connections for ``seconds``: (req/s, requests, latencies ms,
    client CPU seconds)."""
    return asyncio.run(_throughput(port, _request(body), clients, seconds))


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
    return total


def main_thread_seconds(pid: int) -> float:
    """CPU seconds of a process's main thread (the event loop of a KServe server)."""
    import psutil

    t = next((t for t in psutil.Process(pid).threads() if t.id == pid), None)
    return 0.0 if t is None else t.user_time + t.system_time


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def measure(layouts: dict[str, tuple[int, dict[str, int]]], body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """Both layouts are up at once and measured in alternating rounds (the order flips every
    round), so a burst of other load on the shared machine hits both alike."""
    names = list(layouts)
    lat: dict[str, list[float]] = {n: [] for n in names}
    thr: dict[str, dict[str, Any]] = {n: {"n": 0, "s": 0.0, "cpu": 0.0, "client_cpu": 0.0, "lat": [],
                                          "proc": {k: [0.0, 0.0] for k in layouts[n][1]}} for n in names}
    for port, _ in layouts.values():
        latency(port, body, 0, warmup=50, max_seconds=1)
    per_round = max(1, args.requests // args.rounds)
    for r in range(args.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            port, _ = layouts[n]
            lat[n] += latency(port, body, per_round, warmup=3, max_seconds=2 * args.seconds / args.rounds)
    for r in range(args.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            port, pids = layouts[n]
            p0 = {k: (cpu_seconds([pid]), main_thread_seconds(pid)) for k, pid in pids.items()}
            rps, count, lat8, client_cpu = throughput(port, body, args.clients, args.seconds / args.rounds)
            t = thr[n]
            for k, pid in pids.items():
                t["proc"][k][0] += cpu_seconds([pid]) - p0[k][0]
                t["proc"][k][1] += main_thread_seconds(pid) - p0[k][1]
            t["cpu"] = sum(c for c, _ in t["proc"].values())
            t["client_cpu"] += client_cpu
            t["n"] += count
            t["s"] += count / rps
            t["lat"] += lat8
    out = {}
    for n in names:
        x, t = lat[n], thr[n]
        out[n] = {"p50_ms": pct(x, 50), "p90_ms": pct(x, 90), "p99_ms": pct(x, 99), "mean_ms": statistics.fmean(x),
                  "n_latency": len(x), "rps": t["n"] / t["s"], "n_throughput": t["n"],
                  "p50_ms_8clients": pct(t["lat"], 50), "p99_ms_8clients": pct(t["lat"], 99),
                  "server_cpu_ms_per_request": t["cpu"] / max(t["n"], 1) * 1e3,
                  "client_cpu_ms_per_request": t["client_cpu"] / max(t["n"], 1) * 1e3,
                  # per server process: CPU ms/req, and of it the main (event-loop) thread's
                  "cpu_ms_per_request_by_process": {k: {"total": c / max(t["n"], 1) * 1e3,
                                                        "main_thread": m / max(t["n"], 1) * 1e3}
                                                    for k, (c, m) in t["proc"].items()}}
    return out


def hot_path(model: str, feast: str, body: bytes, reps: int = 200) -> dict[str, float]:
    """In-process split of one request (CPU ms, best of ``reps``: the least-disturbed run on a
    shared machine): parse, Feast lookup, batch build, forward (TorchScript-frozen, as served)
    and the whole ``predict``."""
    import torch

    from genctr.serving.online import FeastConfig
    from genctr.serving.predictor import CTRPredictor
    from genctr.serving.request import parse_v1
    from genctr.serving.tuning import keep_heap_thresholds

    torch.set_num_threads(1)
    keep_heap_thresholds()  # as python -m genctr.serving does
    p = CTRPredictor("ctr", model, FeastConfig(feast), jit=True)
    p.load()
    loop = asyncio.new_event_loop()
    payload = json.loads(body)
    req = parse_v1(payload, p.limits)
    batch = p.batch(req)
    assert p.forward is not None and p.assembler is not None
    forward_pass, assembler = p.forward, p.assembler

    def forward() -> None:
        forward_pass(batch)  # as served: inference mode, row chunks for target attention, sigmoid

    fns = {"parse_ms": lambda: parse_v1(payload, p.limits), "feast_ms": lambda: assembler.fetch(req),
           "batch_ms": lambda: p.batch(req), "forward_ms": forward,
           "predict_ms": lambda: loop.run_until_complete(p.predict(payload))}
    best = {k: float("inf") for k in fns}
    for _ in range(reps + 5):  # round-robin, so every step sees the same machine
        for k, fn in fns.items():
            t = time.process_time()
            fn()
            best[k] = min(best[k], (time.process_time() - t) * 1e3)
    p.stop()
    return best


# -- report ------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    from importlib.metadata import version

    import feast
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "kserve": version("kserve"), "feast": feast.__version__, "loadavg_start": os.getloadavg()}


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [SECTION, "",
             f"Command: `{res['command']}` ({res['date']}). Machine: {m['cpu']}, {m['cores']} cores shared with "
             f"other work (load average {m['loadavg_start'][0]:.1f} at start, {res['loadavg_end'][0]:.1f} at end); "
             f"Python {m['python']}, torch {m['torch']} (1 intra-op thread), kserve {m['kserve']}, feast {m['feast']}.",
             "",
             f"Workload: {N_CANDIDATES} candidates of one user with a full Feast sequence, v1 JSON over loopback "
             f"HTTP; models fine-tuned 1 epoch on synthetic data (dcnv2_ta = DCN-V2 + DIN target attention over "
             f"the L behaviours, per candidate; dnn = mean-pooled history); Feast SQLite online store. "
             f"Both layouts up at once, measured in {res['args']['rounds']} alternating rounds. Latency: "
             f"one client, {res['args']['requests']} requests after 50 warm-up. Throughput: "
             f"{res['args']['clients']} concurrent keep-alive clients, {res['args']['seconds']:.0f} s per layout. "
             "CPU ms/req: all of the layout's server processes (psutil), steadier than wall time here. "
             "Both predictors are `python -m genctr.serving` with its defaults: TorchScript-frozen model, "
             f"{res['args'].get('forward_threads', 2)} forward threads, uvloop, the v1 short route "
             "(`genctr.serving.tuning.fastpath`), no per-request timing/access log, fixed glibc malloc thresholds; "
             "the transformer is a stock `kserve.ModelServer` (access and latency logs off).", "",
             "| model | layout | p50 ms | p90 ms | p99 ms | req/s (8 clients) | p99 ms (8 clients) | server CPU ms/req "
             "| client CPU ms/req |",
             "|---|---|---|---|---|---|---|---|---|"]
    for L, r in res["runs"].items():
        for name in ("one_hop", "two_hop"):
            x = r[name]
            label = "genctr one-hop (Feast in-process)" if name == "one_hop" else "two-hop (transformer + feast serve)"
            lines.append(f"| {L.replace(':', ', L=')} | {label} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | "
                         f"{x['p99_ms']:.2f} | "
                         f"{x['rps']:.1f} | {x['p99_ms_8clients']:.1f} | {x['server_cpu_ms_per_request']:.2f} | "
                         f"{x['client_cpu_ms_per_request']:.2f} |")
    lines += ["", "| model | throughput one-hop / two-hop | CPU/req two-hop / one-hop | p99 ≤ 10 ms (1 client) | "
              "≥ 3× two-hop throughput | in-process CPU ms (best of 200): parse / Feast / batch / forward / predict |",
              "|---|---|---|---|---|---|"]
    for L, r in res["runs"].items():
        ratio = r["one_hop"]["rps"] / r["two_hop"]["rps"]
        cpu_ratio = r["two_hop"]["server_cpu_ms_per_request"] / r["one_hop"]["server_cpu_ms_per_request"]
        h = r.get("hot_path", {})
        split = " / ".join(f"{h[k]:.2f}" for k in ("parse_ms", "feast_ms", "batch_ms", "forward_ms", "predict_ms")) \
            if h else "-"
        lines.append(f"| {L.replace(':', ', L=')} | {ratio:.2f}× | {cpu_ratio:.2f}× | "
                     f"{'met' if r['one_hop']['p99_ms'] <= 10 else 'missed'} "
                     f"({r['one_hop']['p99_ms']:.1f} ms) | {'met' if ratio >= 3 else 'missed'} | {split} |")
    lines += ["", "Server CPU ms per request by process in the throughput runs; for the KServe processes, "
              "in parentheses the part on the main (event-loop) thread: HTTP, JSON, KServe, parsing, the Feast read; "
              "the rest is the forward-pass worker threads.", "",
              "| model | one-hop: predictor | two-hop: transformer | two-hop: feast serve | two-hop: predictor |",
              "|---|---|---|---|---|"]

    def cell(x: dict[str, Any], k: str) -> str:
        c = x.get("cpu_ms_per_request_by_process", {}).get(k)
        if c is None:
            return "-"
        return f"{c['total']:.2f}" + ("" if k == "feast serve" else f" ({c['main_thread']:.2f})")

    for L, r in res["runs"].items():
        lines.append(f"| {L.replace(':', ', L=')} | {cell(r['one_hop'], 'predictor')} | "
                     f"{cell(r['two_hop'], 'transformer')} "
                     f"| {cell(r['two_hop'], 'feast serve')} | {cell(r['two_hop'], 'predictor')} |")
    return "\n".join(lines) + "\n"


def record(path: Path, text: str) -> None:
    """Replace (or append) the ``## Serving`` section of ``path``; other sections are untouched."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == SECTION), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + text + ("\n" if end < len(lines) else "") + "".join(lines[end:])
    path.write_text(new)


def main(argv: list[str]) -> int:
    if argv[:1] == ["transformer"]:
        run_transformer(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/genctr-serving-bench"))
    ap.add_argument("--configs", type=parse_config, nargs="+",
                    default=[("dcnv2_ta", 50), ("dcnv2_ta", 200), ("dnn", 200)],
                    help="Models to serve, as BACKBONE:L (L = history length the model sees).")
    ap.add_argument("--events", type=int, default=80_000)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--items", type=int, default=2_000)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0, help="Throughput seconds per layout (all rounds).")
    ap.add_argument("--rounds", type=int, default=4, help="Alternating measurement rounds per layout.")
    ap.add_argument("--forward-threads", type=int, default=2,
                    help="--forward_threads of both layouts' predictors (the same genctr.serving process).")
    ap.add_argument("--record", type=Path, default=None, help="Markdown file whose '## Serving' section to replace.")
    args = ap.parse_args(argv)

    info = prepare(args.workdir, args.configs, args.events, args.users, args.items)
    user, seq_len, body = workload(info)
    res: dict[str, Any] = {"command": "python benchmarks/serving.py " + " ".join(argv), "machine": machine(),
                           "date": time.strftime("%Y-%m-%d"),
                           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                           "user": user, "user_seq_len": seq_len, "runs": {}}
    logs = args.workdir / "logs"
    logs.mkdir(exist_ok=True)
    for backbone, L in args.configs:
        key = f"{backbone}:{L}"
        model = info["models"][key]
        run: dict[str, Any] = {"hot_path": hot_path(model, info["feast"], body)}
        with one_hop(model, info["feast"], logs, args.forward_threads) as one, \
                two_hop(model, info["feast"], logs, args.forward_threads) as two:
            run.update(measure({"one_hop": one, "two_hop": two}, body, args))
        res["runs"][key] = run
        print(json.dumps({key: run}, indent=1), flush=True)
    res["loadavg_end"] = os.getloadavg()
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "serving.json").write_text(json.dumps(res, indent=2))
    text = markdown(res)
    print(text)
    if args.record:
        record(args.record, text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
