"""Overload: the connections the server sustains, then 4x that, with load shedding on.

    python benchmarks/overload.py                                    # full run (quiet machine)
    python benchmarks/overload.py --events 5000 --users 50 --items 300 --levels 1 2 \\
        --requests 60 --workdir /tmp/genctr-overload-tiny               # a smoke run

Workload: ``benchmarks/serving.py``'s (one request = 100 candidates of one user with a full Feast
sequence, v1 JSON over loopback HTTP; setup cached under ``--workdir``). One server,
``python -m genctr.serving`` with its defaults (``--max_in_flight`` = 4 x forward threads).

1. Ramp: for each ``--levels`` entry C, C keep-alive connections send ``--requests`` requests in
   all, each connection one request at a time, as fast as answers come. The server *sustains* C
   when no request was shed (503) and the p99 latency is within ``--budget-ms``; the ramp stops
   at the first level it does not sustain.
2. Overload: ``--factor`` x the largest sustained C connections until ``--requests`` x factor
   requests were accepted (at most 20 times that many sent). A shed request (503) is retried by
   its connection at once, without honouring Retry-After (the worst case for the server), or
   after the Retry-After it names with ``--honour-retry-after`` (what a well-behaved client does).
   Reported: the accepted requests' p50/p99, the number of 503s and their latency, other
   statuses (must be none), and the server's RSS (psutil) sampled every 0.25 s from its start
   to the end of the run.

Writes ``benchmarks/results/overload.json`` (``--out``). All traffic is on 127.0.0.1 and every
loop is bounded by a request count.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

from genctr.atomic import write_json
from serving import free_port, parse_config, pct, prepare, process, workload  # benchmarks/ is the script's dir

HERE = Path(__file__).resolve().parent

LATENCY_BUDGET_MS = 100.0  # genctr.serving.server.LATENCY_BUDGET_MS


class RssSampler(threading.Thread):
    """The server's resident set size every ``every`` seconds: [(seconds since start, MiB)]."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self.marks: dict[str, float] = {}
        self._done = threading.Event()
        self._t0 = time.monotonic()

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self._t0, 2)

    def run(self) -> None:
        while not self._done.is_set():
            try:
                rss = self.proc.memory_info().rss / 2**20
            except Exception:  # broad on purpose: the server exited
                return
            self.samples.append((round(time.monotonic() - self._t0, 2), round(rss, 1)))
            self._done.wait(self.every)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)


async def _one_connection(port: int, request: bytes, budget: list[int], out: list[tuple[int, float]],
                          honour_retry_after: bool = False) -> None:
    """Send requests one after another on one keep-alive connection while ``budget`` lasts:
    ``budget[0]`` attempts left, ``budget[1]`` accepted (200) answers still wanted. With
    ``honour_retry_after`` a 503 makes the connection wait its ``Retry-After`` seconds first."""
    reader = writer = None
    wait = 0.0
    while budget[0] > 0 and budget[1] > 0:
        if wait:
            await asyncio.sleep(wait)
            wait = 0.0
        budget[0] -= 1
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.perf_counter()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                elif honour_retry_after and status == 503 and line.lower().startswith(b"retry-after:"):
                    wait = float(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if b"connection: close" in head.lower():
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = -1  # connection failed or was dropped
            if writer is not None:
                writer.close()
            writer = None
        out.append((status, (time.perf_counter() - t0) * 1e3))
        budget[1] -= status == 200
    if writer is not None:
        writer.close()


def drive(port: int, request: bytes, connections: int, requests: int, attempts: int = 0,
          honour_retry_after: bool = False) -> dict[str, Any]:
    """``connections`` concurrent keep-alive clients until ``requests`` were answered 200 or
    ``attempts`` (default: ``requests``) requests were sent."""
    results: list[tuple[int, float]] = []
    budget = [attempts or requests, requests]

    async def main() -> None:
        await asyncio.gather(*(_one_connection(port, request, budget, results, honour_retry_after)
                               for _ in range(connections)))

    t0 = time.perf_counter()
    asyncio.run(main())
    seconds = time.perf_counter() - t0
    ok = [ms for s, ms in results if s == 200]
    shed = [ms for s, ms in results if s == 503]
    other = sorted({s for s, _ in results if s not in (200, 503)})

    def q(xs: list[float], p: float) -> float | None:
        return round(pct(xs, p), 2) if xs else None

    return {"connections": connections, "requests": len(results), "seconds": round(seconds, 2),
            "ok": len(ok), "ok_per_s": round(len(ok) / seconds, 1), "ok_p50_ms": q(ok, 50), "ok_p99_ms": q(ok, 99),
            "shed_503": len(shed), "shed_p50_ms": q(shed, 50), "shed_p99_ms": q(shed, 99),
            "other_statuses": other, "other": sum(1 for s, _ in results if s not in (200, 503))}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/genctr-serving-bench"))
    ap.add_argument("--config", type=parse_config, default=("dcnv2_ta", 50), help="BACKBONE:L of the served model.")
    ap.add_argument("--events", type=int, default=80_000)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--items", type=int, default=2_000)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    ap.add_argument("--requests", type=int, default=2000, help="Requests per ramp level (overload: x factor).")
    ap.add_argument("--factor", type=int, default=4, help="Overload connections = factor x sustained.")
    ap.add_argument("--budget-ms", type=float, default=LATENCY_BUDGET_MS, help="p99 latency budget.")
    ap.add_argument("--forward-threads", type=int, default=2)
    ap.add_argument("--max-in-flight", type=int, default=0, help="Server --max_in_flight (0 = its default).")
    ap.add_argument("--honour-retry-after", action="store_true",
                    help="Overload clients wait Retry-After after a 503 (default: retry at once, the worst case).")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "overload.json")
    args = ap.parse_args(argv)

    info = prepare(args.workdir, [args.config], args.events, args.users, args.items)
    _, _, body = workload(info)
    request = (b"POST /v1/models/ctr:predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(body), body))
    model = info["models"][f"{args.config[0]}:{args.config[1]}"]
    port = free_port()
    cmd = [sys.executable, "-m", "genctr.serving", "--model_dir", str(model), "--model_name", "ctr",
           "--feast_repo", info["feast"], "--http_port", str(port), "--forward_threads", str(args.forward_threads),
           "--max_in_flight", str(args.max_in_flight)]
    logs = args.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": _cpus(),
                                          "load_at_start": _load()},
                              "config": f"{args.config[0]}:{args.config[1]}", "budget_ms": args.budget_ms}
    with process(cmd, port, "/v2/models/ctr/ready", logs / "overload_server.log") as server:
        rss = RssSampler(server.pid)
        rss.start()
        drive(port, request, 4, 50)  # warm-up
        ramp, sustained = [], 0
        for c in args.levels:
            rss.mark(f"ramp_{c}")
            level = drive(port, request, c, args.requests)
            level["sustained"] = level["shed_503"] == 0 and level["other"] == 0 and \
                level["ok_p99_ms"] is not None and level["ok_p99_ms"] <= args.budget_ms
            ramp.append(level)
            print(json.dumps(level), flush=True)
            if not level["sustained"]:
                break
            sustained = c
        sustained = max(sustained, 1)
        rss.mark("overload")
        over = drive(port, request, args.factor * sustained, args.requests * args.factor,
                     attempts=args.requests * args.factor * 20, honour_retry_after=args.honour_retry_after)
        rss.mark("end")
        over["p99_within_budget"] = over["ok_p99_ms"] is not None and over["ok_p99_ms"] <= args.budget_ms
        over["server_alive"] = server.poll() is None
        rss.stop()
    sizes = [mb for _, mb in rss.samples]
    result.update(ramp=ramp, sustained_connections=sustained, overload=over,
                  rss_mib={"start": sizes[0] if sizes else None, "max": max(sizes) if sizes else None,
                           "end": sizes[-1] if sizes else None, "marks": rss.marks, "samples": rss.samples},
                  load_at_end=_load())
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mib"} | {
        "rss_mib": {k: v for k, v in result["rss_mib"].items() if k != "samples"}}, indent=2))
    write_json(args.out, result)
    ok = over["other"] == 0 and over["server_alive"] and over["p99_within_budget"]
    return 0 if ok else 1


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def _load() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
