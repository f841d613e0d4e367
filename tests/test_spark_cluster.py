"""The feature build on a real Spark standalone cluster and over Spark Connect, equal to the local build
table for table (same schema, exactly the same rows).

Started here once per module, on loopback (SPARK_LOCAL_IP=127.0.0.1) with free ports and
SPARK_HOME = the pyspark package, through pyspark's own launchers:

* a standalone master and two workers (``bin/spark-class ...deploy.master.Master`` /
  ``...deploy.worker.Worker``; one core and 1 GiB each, work dirs under tmp);
* and, for the Connect tests, the session's Spark Connect server (conftest ``spark_connect``,
  tests/spark_daemons.py:
  ``bin/spark-submit --class ...connect.service.SparkConnectServer``, ``local[2]``, the bundled
  spark-connect jar), shared with the pipelines' Spark steps.

Each runs in a process group of its own and the group is stopped at teardown (SIGTERM, then
SIGKILL), also when start-up or a test fails, so no executor JVM outlives the module. JVM
start-ups are the cost here: the three daemons boot while the local reference build runs.

The builds: on the cluster through ``spark-submit --master spark://... spark_build.py`` (the
SparkApplication's entry point; its driver a process of its own, its executors on the workers);
over Connect through the build component's body in a fresh interpreter (a Connect client has no
JVM, and pyspark refuses to mix a Connect session into a process that runs a local one). The
reference is ``build_features`` on this test session's local Spark.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from build_compare import assert_same_build
from build_fixtures import MAX_SEQ_LEN, tiny_events, write_partitioned_events
from conftest import free_port
from spark_daemons import START_TIMEOUT_S, spark_env, stop_groups

from genctr.config import FeatureConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "src" / "genctr" / "features" / "spark_build.py"
BUCKET = "genctr-cluster-it"
RUN_TIMEOUT_S = 420


@dataclass
class Daemons:
    """The master and the workers; ``wait()`` blocks until both workers are registered."""

    home: Path
    env: dict[str, str]
    logs: Path
    master_url: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ready: bool = False

    def start(self, name: str, cmd: list[str]) -> None:
        with (self.logs / f"{name}.log").open("wb") as out:
            self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)  # its own group: executors included

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait(self) -> Daemons:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready:
            self.ready = self.log("master").count("Registering worker") >= 2
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or (not self.ready and time.monotonic() > deadline):
                tails = "\n".join(f"--- {n} ---\n{self.log(n)[-1500:]}" for n in self.procs)
                raise RuntimeError(f"Spark daemons did not start (exited: {dead}):\n{tails}")
            if not self.ready:
                time.sleep(0.5)
        return self

    def stop(self) -> None:
        stop_groups(self.procs.values())


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    """Launches the three daemons (without waiting for them) and stops them at the end of the module."""
    root = tmp_path_factory.mktemp("spark-daemons")
    env = spark_env(root)
    port = free_port()
    d = Daemons(Path(env["SPARK_HOME"]), env, root, f"spark://127.0.0.1:{port}")
    spark_class = str(d.home / "bin" / "spark-class")
    try:
        d.start("master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                           "--port", str(port), "--webui-port", str(free_port())])
        for i in (1, 2):
            (root / f"work{i}").mkdir()
            d.start(f"worker{i}", [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                   "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()),
                                   "--work-dir", str(root / f"work{i}"), d.master_url])
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def reference(daemons: Daemons, spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Events (three Parquet files: several input partitions) and their local build (the reference)."""
    from genctr.features.spark_build import build_features

    root = tmp_path_factory.mktemp("cluster-reference")
    events = root / "events"
    write_partitioned_events(events)
    build_features(events, root / "build", FeatureConfig(max_seq_len=MAX_SEQ_LEN), spark=spark)
    return {"events": events, "build": root / "build", "root": root}


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    print(f"{Path(cmd[0]).name} ... {cmd[-1][:40]}: rc={proc.returncode} in {time.perf_counter() - t0:.1f} s "
          f"(load {os.getloadavg()[0]:.1f})")
    return proc


def test_the_build_on_a_standalone_cluster_equals_the_local_build(daemons: Daemons, reference: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    d = daemons.wait()
    out = tmp_path / "cluster-build"
    proc = _run([str(d.home / "bin" / "spark-submit"), "--master", d.master_url, "--driver-memory", "1g",
                 "--conf", "spark.executor.memory=512m", "--conf", "spark.executor.cores=1",
                 str(ENTRY), "--events", str(reference["events"]), "--out", str(out),
                 "--max-seq-len", str(MAX_SEQ_LEN)], d.env)
    # spark-submit's PythonRunner merges the Python driver's stderr (genctr's log) into its stdout
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"master={d.master_url}" in proc.stdout  # the driver ran against the cluster ...
    launched = re.findall(r"Launching executor (app-\S+)/\d+ on worker", d.log("master"))
    assert len(launched) >= 2 and len(set(launched)) == 1, launched  # ... and its executors on both workers
    stats, _ = json.JSONDecoder().raw_decode(proc.stdout, proc.stdout.rindex("\n{\n") + 1)  # after the log
    rows = assert_same_build(out, reference["build"])
    assert stats["n_events"] == sum(rows[f"samples/{s}"] for s in ("train", "valid", "test")) == len(tiny_events())
    # the application's end released its executors (teardown stops each daemon's whole process group)
    deadline = time.monotonic() + 60
    while True:
        workers = d.log("worker1") + d.log("worker2")
        finished = re.findall(rf"Executor {launched[0]}/\d+ finished with state (\w+)", workers)
        if len(finished) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sorted(finished) == ["KILLED", "KILLED"], finished
    assert all(os.getpgid(p.pid) == p.pid for p in d.procs.values())


def test_the_build_component_over_spark_connect_equals_the_local_build(spark_connect: str,
                                                                       reference: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    env = spark_env(tmp_path / "client")
    artifact, shared = tmp_path / "artifact" / "build", tmp_path / "shared"
    script = tmp_path / "run_component.py"  # a file: pyspark.sql.connect treats a main without one as a doctest
    script.write_text(
        "import json, sys\n"
        "from kfp.dsl import Dataset\n"
        "import components\n"
        "build = Dataset(name='build', uri=sys.argv[2], metadata={})\n"
        "components.build_features.python_func(events=Dataset(name='events', uri=sys.argv[1]), build=build,\n"
        f"    max_seq_len={MAX_SEQ_LEN}, spark_master=sys.argv[3], spark_build_uri=sys.argv[4])\n"
        "import pyspark.sql.connect.session  # a Connect client: no JVM was started in this process\n"
        "from pyspark import SparkContext\n"
        "assert SparkContext._active_spark_context is None and SparkContext._gateway is None\n"
        "print(json.dumps(build.metadata))\n")
    proc = _run([sys.executable, str(script), str(reference["events"]), str(artifact), spark_connect, str(shared)],
                {**env, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    assert meta["spark"] == {"submit": "local", "master": spark_connect, "uri": f"{shared}/features"}
    assert_same_build(artifact, reference["build"])
    assert_same_build(shared / "features", reference["build"])  # the copy the server wrote, kept for reuse


def test_connect_failures_are_project_errors_that_say_what_to_fix(spark_connect: str, reference: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    from moto_s3 import moto_s3

    client_env = spark_env(tmp_path / "client")
    bad = tmp_path / "bad.parquet"
    tiny_events().assign(clicked=lambda df: df["clicked"].where(df.index % 50 != 7, 2)).to_parquet(bad, index=False)

    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return _run([sys.executable, "-m", "genctr.features.spark_build", *args], env or client_env)

    got = cli("--master", spark_connect, "--events", str(bad), "--out", str(tmp_path / "out"))
    assert got.returncode == 2 and "column 'clicked' must be 0 or 1" in got.stderr, got.stderr[-3000:]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    # the server has no S3A connector: said so, with the fix, before any table is written
    with moto_s3(tmp_path, BUCKET):
        import fsspec

        fsspec.filesystem("s3").put(str(reference["events"]), f"{BUCKET}/events", recursive=True)
        got = cli("--master", spark_connect, "--events", f"s3://{BUCKET}/events", "--out", f"s3://{BUCKET}/build",
                  env={**client_env, **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")}})
        assert got.returncode == 2, got.stderr[-3000:]
        assert "Spark cannot reach s3a://" in got.stderr and "hadoop-aws" in got.stderr, got.stderr[-3000:]
        assert not fsspec.filesystem("s3").exists(f"{BUCKET}/build")
    # nobody at the address: a ConfigError in seconds, not Spark Connect's minutes of retries
    t0 = time.perf_counter()
    got = cli("--master", f"sc://127.0.0.1:{free_port()}", "--events", str(bad), "--out", str(tmp_path / "out"))
    assert got.returncode == 2 and "no Spark Connect server answers" in got.stderr, got.stderr[-3000:]
    assert time.perf_counter() - t0 < 60
