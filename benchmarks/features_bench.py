"""Feature-build benchmark: synthetic canonical events -> ``build_features`` on Spark.

For each size it writes events to Parquet (not timed), then times ``build_features`` in one
shared SparkSession, sampling the RSS of this process and all its children (the Spark driver
JVM and its launcher) to report the peak. Output: events/s, peak memory, output bytes per
sample (total and per table), as a table on stdout and as JSON (``--json``).

    python benchmarks/features_bench.py --events 1000000 10000000 --master 'local[2]'

Events come from the project's synthetic world (``genctr.data.sources.synthetic``) by
default, or from a faster numpy generator (``--generator numpy``: skewed user activity and
item popularity, ~35 % clicks).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from genctr.config import FeatureConfig
from genctr.features.spark_build import build_features
from genctr.features.spark_session import get_spark

log = logging.getLogger("features_bench")


def write_numpy_events(path: Path, n: int, n_users: int, n_items: int, n_cates: int, seed: int,
                       chunk: int = 1_000_000) -> None:
    """Canonical events in chunks: Zipf-like users and items, times over ~90 days, ~35 % clicks."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    item_cate = rng.integers(1, n_cates + 1, n_items + 1).astype(np.int64)  # index 0 unused
    item_price = np.round(rng.lognormal(0.0, 0.5, n_items + 1), 2)
    user_w = 1.0 / np.arange(1, n_users + 1) ** 0.6
    item_w = 1.0 / np.arange(1, n_items + 1) ** 0.8
    user_p, item_p = user_w / user_w.sum(), item_w / item_w.sum()
    for i, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        items = rng.choice(n_items, m, p=item_p) + 1
        table = pa.table({
            "request_id": np.arange(start, start + m, dtype=np.int64) + 1,
            "user_id": (rng.choice(n_users, m, p=user_p) + 1).astype(np.int64),
            "item_id": items.astype(np.int64),
            "category_id": item_cate[items],
            "event_time": rng.integers(1_600_000_000, 1_600_000_000 + 90 * 86_400, m, dtype=np.int64),
            "clicked": (rng.random(m) < 0.35).astype(np.int8),
            "price": item_price[items],
        })
        pq.write_table(table, path / f"part-{i:05d}.parquet")


def write_synthetic_events(path: Path, n: int, n_users: int, n_items: int, n_cates: int, seed: int) -> None:
    from genctr.data.sources.synthetic import SyntheticConfig, write_events

    cfg = SyntheticConfig(n_users=n_users, n_items=n_items, n_cates=n_cates, seed=seed)
    write_events(cfg, n, str(path), chunk_rounds=20)


class PeakRSS:
    """Samples RSS every ``interval`` s: this Python process, its children (the Spark JVM), the sum."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self._stop = interval, threading.Event()
        self.peak = self.peak_python = self.peak_jvm = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            py, jvm = me.memory_info().rss, 0
            for p in me.children(recursive=True):
                try:
                    jvm += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_python, self.peak_jvm = max(self.peak_python, py), max(self.peak_jvm, jvm)
            self.peak = max(self.peak, py + jvm)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tree_cpu_seconds() -> float:
    """User + system CPU seconds used so far by this process and its live children."""
    total = 0.0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def dir_bytes(path: Path) -> int:
    """Bytes of the data files (Parquet and JSON; Spark's .crc and _SUCCESS excluded)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in (".parquet", ".json"))


def run_one(spark, events: Path, out: Path, n: int, cfg: FeatureConfig) -> dict:
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), tree_cpu_seconds()
        stats = build_features(events, out, cfg, spark=spark)
        seconds, cpu = time.perf_counter() - t0, tree_cpu_seconds() - c0
    tables = {name: dir_bytes(out / name) for name in ("samples", "histories", "items", "vocab", "feast")}
    total = dir_bytes(out)
    return {
        "events": n, "seconds": round(seconds, 1), "events_per_s": round(n / seconds),
        "cpu_seconds": round(cpu, 1), "events_per_cpu_s": round(n / cpu),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "peak_rss_gib": round(mem.peak / 2**30, 2), "peak_rss_jvm_gib": round(mem.peak_jvm / 2**30, 2),
        "peak_rss_python_gib": round(mem.peak_python / 2**30, 2), "output_mib": round(total / 2**20, 1),
        "bytes_per_sample": round(total / n, 1),
        "bytes_per_sample_by_table": {k: round(v / n, 1) for k, v in tables.items()},
        "n_users": stats["n_users"], "n_behaviors": stats["n_behaviors"],
        "click_rate_train": round(stats["splits"]["train"]["click_rate"], 3),
        "mean_seq_len_test": round(stats["splits"]["test"]["mean_seq_len"], 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--cates", type=int, default=500)
    p.add_argument("--generator", choices=("synthetic", "numpy"), default="synthetic")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--shuffle-partitions", type=int, default=8)
    p.add_argument("--max-seq-len", type=int, default=200)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/genctr-features-bench"))
    p.add_argument("--keep-events", action="store_true", help="reuse events already in --work-dir")
    p.add_argument("--warmup", type=int, default=100_000,
                   help="events of an untimed first build that warms the JVM (0: none)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    args.work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spark = get_spark(args.master, app_name="features-bench", shuffle_partitions=args.shuffle_partitions,
                      driver_memory=args.driver_memory)
    startup = time.perf_counter() - t0
    cfg = FeatureConfig(max_seq_len=args.max_seq_len, shuffle_partitions=args.shuffle_partitions)
    warmup = None
    if args.warmup:
        events = args.work_dir / f"events-warmup-{args.warmup}"
        if not events.exists():
            write_numpy_events(events, args.warmup, args.users, args.items, args.cates, seed=1)
        warmup = run_one(spark, events, args.work_dir / "build-warmup", args.warmup, cfg)
        log.info("warm-up (cold JVM): %s", json.dumps(warmup))
        shutil.rmtree(args.work_dir / "build-warmup", ignore_errors=True)
    results = []
    for n in args.events:
        events = args.work_dir / f"events-{args.generator}-{n}"
        if not (args.keep_events and events.exists()):
            shutil.rmtree(events, ignore_errors=True)
            t1 = time.perf_counter()
            write = write_synthetic_events if args.generator == "synthetic" else write_numpy_events
            write(events, n, args.users, args.items, args.cates, seed=0)
            log.info("generated %d events in %.0f s", n, time.perf_counter() - t1)
        out = args.work_dir / f"build-{n}"
        res = run_one(spark, events, out, n, cfg)
        log.info("%s", json.dumps(res))
        results.append(res)
        shutil.rmtree(out, ignore_errors=True)
    spark.stop()
    report = {"machine": f"{os.cpu_count()} cores {os.uname().machine}, "
                         f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
              "master": args.master, "driver_memory": args.driver_memory, "generator": args.generator,
              "spark_startup_s": round(startup, 1), "python": sys.version.split()[0],
              "warmup": warmup, "results": results}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
