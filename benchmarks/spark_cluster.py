"""Feature build on a 2-worker Spark standalone cluster vs ``local[2]`` on the same machine, side by side.

Both builds run the same entry point in a process of their own, on the same events:

    local    python -m genctr.features.spark_build --master local[2]      (driver = executor JVM)
    cluster  spark-submit --master spark://127.0.0.1:P spark_build.py      (a driver JVM + two executor
             JVMs on two workers of one core each, started here through pyspark's bin/spark-class)

The figure is the build time from the build's own log: from its first record (the session is up;
the cluster run's session waits until both executors have registered) to its last (the build
published), so JVM and executor start-ups are reported apart (``wall_s``). ``ratio`` = cluster /
local; the target is <= 1.2 (a standalone cluster on one machine pays for shuffles over loopback and
executor JVMs of their own, nothing else). Each build is repeated ``--repeats`` times,
alternating, and the median is reported, with the 1-minute load average around each run.

    python benchmarks/spark_cluster.py --events 10000000            # the recorded figure
    python benchmarks/spark_cluster.py --events 200000 --repeats 1  # a quick check that it works

Events come from ``features_bench.write_numpy_events`` (Zipf-like users and items, ~35 % clicks).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from features_bench import write_numpy_events
from genctr.atomic import write_json

log = logging.getLogger("spark_cluster_bench")
ENTRY = Path(__file__).resolve().parents[1] / "src" / "genctr" / "features" / "spark_build.py"
LAP = re.compile(r"feature build: ([\w+]+) took ([\d.]+) s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StandaloneCluster:
    """A master and ``workers`` one-core workers on loopback, each JVM in a process group of its own."""

    def __init__(self, work: Path, env: dict[str, str], workers: int, worker_memory: str,
                 worker_cores: int = 1) -> None:
        import pyspark

        self.home = Path(pyspark.__file__).parent
        self.work, self.env = work, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port = free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.workers, self.worker_memory, self.worker_cores = workers, worker_memory, worker_cores
        work.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        work, spark_class = self.work, str(self.home / "bin" / "spark-class")
        self._start("master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(self.port), "--webui-port", str(free_port())])
        for i in range(self.workers):
            (work / f"worker{i}").mkdir(parents=True, exist_ok=True)
            self._start(f"worker{i}", [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                       "--cores", str(self.worker_cores), "--memory", self.worker_memory,
                                       "--webui-port", str(free_port()),
                                       "--work-dir", str(work / f"worker{i}"), self.url])

    def _start(self, name: str, cmd: list[str]) -> None:
        with (self.work / f"{name}.log").open("wb") as out:
            self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                               start_new_session=True))

    def wait(self, timeout_s: float = 300) -> float:
        t0 = time.perf_counter()
        master_log = self.work / "master.log"
        while master_log.read_text(errors="replace").count("Registering worker") < self.workers:
            if time.perf_counter() - t0 > timeout_s or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"standalone cluster did not start: {master_log.read_text()[-2000:]}")
            time.sleep(0.5)
        return time.perf_counter() - t0

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in self.procs:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 30
            for p in self.procs:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass


def _log_time(records: list[dict[str, Any]], prefix: str) -> datetime:
    for r in records:
        if str(r.get("message", "")).startswith(prefix):
            return datetime.fromisoformat(r["ts"])
    raise RuntimeError(f"no log record starting with {prefix!r}")


def run_build(cmd: list[str], env: dict[str, str], out: Path) -> dict[str, Any]:
    """One build in its own process. ``build_s``: from the build's first log record (its session is up)
    to its last (published), read from genctr's JSON log; ``wall_s`` includes the JVM start-ups."""
    shutil.rmtree(out, ignore_errors=True)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr  # under spark-submit the driver's log arrives on stdout
    if proc.returncode != 0:
        raise RuntimeError(f"build failed ({proc.returncode}): {text[-3000:]}")
    records = [json.loads(line) for line in text.splitlines() if line.startswith('{"ts"')]
    seconds = (_log_time(records, "feature build written to") - _log_time(records, "feature build: writing"))
    laps = {name: float(s) for name, s in LAP.findall(text)}
    shutil.rmtree(out, ignore_errors=True)
    return {"build_s": round(seconds.total_seconds(), 1), "wall_s": round(wall, 1), "phases_s": laps,
            "load_1m": [round(load0, 1), round(os.getloadavg()[0], 1)]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--cates", type=int, default=500)
    p.add_argument("--max-seq-len", type=int, default=200)
    p.add_argument("--shuffle-partitions", type=int, default=8)
    p.add_argument("--local-driver-memory", default="4g", help="local[2]: its one JVM holds all the data")
    p.add_argument("--worker-memory", default="2g", help="per worker; the executor gets all of it")
    p.add_argument("--cluster-driver-memory", default="1g", help="the cluster driver holds only stats")
    p.add_argument("--cluster-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra setting of the cluster run (repeatable), e.g. spark.locality.wait=0")
    p.add_argument("--worker-cores", type=int, default=1,
                   help="task slots of each worker and its executor (local[2] has 2 in all)")
    p.add_argument("--java-opts", default="",
                   help="JVM options of every build JVM on both sides: the drivers (SPARK_SUBMIT_OPTS) and the "
                        "executors (spark.executor.extraJavaOptions), e.g. -XX:+UseSerialGC")
    p.add_argument("--cluster-driver-java-opts", default="",
                   help="JVM options of the cluster's driver alone (after --java-opts), e.g. -XX:TieredStopAtLevel=1: "
                        "it plans and schedules but holds no data")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/genctr-spark-cluster-bench"))
    p.add_argument("--keep-events", action="store_true", help="reuse events already in --work-dir")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    args.work_dir.mkdir(parents=True, exist_ok=True)
    events = args.work_dir / f"events-{args.events}"
    if not (args.keep_events and events.exists()):
        shutil.rmtree(events, ignore_errors=True)
        write_numpy_events(events, args.events, args.users, args.items, args.cates, seed=0)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "GENCTR_LOG_FORMAT": "json"}
    daemon_env = dict(env)  # the master and workers keep their defaults; only build JVMs get --java-opts
    if args.java_opts:
        env["SPARK_SUBMIT_OPTS"] = args.java_opts
    common = ["--events", str(events), "--max-seq-len", str(args.max_seq_len),
              "--shuffle-partitions", str(args.shuffle_partitions)]
    cluster = StandaloneCluster(args.work_dir / "cluster", daemon_env, workers=2, worker_memory=args.worker_memory,
                                worker_cores=args.worker_cores)
    try:
        cluster.start()
        startup = cluster.wait()
        local_cmd = [sys.executable, "-m", "genctr.features.spark_build", "--master", "local[2]",
                     "--driver-memory", args.local_driver_memory, "--out", str(args.work_dir / "build-local"),
                     *common]
        cluster_cmd = [str(cluster.home / "bin" / "spark-submit"), "--master", cluster.url,
                       "--driver-memory", args.cluster_driver_memory,
                       *(["--driver-java-options", args.cluster_driver_java_opts]
                         if args.cluster_driver_java_opts else []),
                       "--conf", f"spark.executor.memory={args.worker_memory}",
                       "--conf", f"spark.executor.cores={args.worker_cores}",
                       # the session starts once every executor is up: their JVM start is not build time
                       "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
                       "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=300s",
                       *(["--conf", f"spark.executor.extraJavaOptions={args.java_opts}"] if args.java_opts else []),
                       *[x for kv in args.cluster_conf for x in ("--conf", kv)],
                       str(ENTRY), "--out", str(args.work_dir / "build-cluster"), *common]
        runs: dict[str, list[dict[str, Any]]] = {"local[2]": [], "cluster": []}
        for i in range(args.repeats):
            for name, cmd in (("local[2]", local_cmd), ("cluster", cluster_cmd)):
                res = run_build(cmd, env, args.work_dir / f"build-{name}")
                log.info("%s run %d: %s", name, i + 1, json.dumps(res))
                runs[name].append(res)
    finally:
        cluster.stop()
    median = {k: statistics.median(r["build_s"] for r in v) for k, v in runs.items()}
    report = {"events": args.events, "machine": f"{os.cpu_count()} cores", "cluster_startup_s": round(startup, 1),
              "cluster_conf": args.cluster_conf, "worker_cores": args.worker_cores, "java_opts": args.java_opts,
              "cluster_driver_java_opts": args.cluster_driver_java_opts,
              "median_build_s": median, "ratio_cluster_over_local": round(median["cluster"] / median["local[2]"], 2),
              "runs": runs}
    print(f"| events | local[2] build s | cluster build s | ratio | load (1 min) |\n|---|---|---|---|---|\n"
          f"| {args.events:,} | {median['local[2]']:.1f} | {median['cluster']:.1f} | "
          f"{report['ratio_cluster_over_local']:.2f} | {[r['load_1m'] for v in runs.values() for r in v]} |")
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)  # atomically: a killed run leaves the previous figures
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
