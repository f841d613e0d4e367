"""Spark daemons for the tests, through pyspark's own launchers (``SPARK_HOME`` = the pyspark package):
their environment, stopping a daemon's whole process group, and a Spark Connect server
(``bin/spark-submit --class ...SparkConnectServer``, ``local[2]``, on a free loopback port, the
bundled spark-connect jar).

The Connect server: one per pytest worker, started by the first test that asks for it (conftest
``spark_connect``). Its JVM stays warm for every Spark step that later connects to it (kfp.local
pipeline builds, the canary's attribution join, the Connect tests), instead of each step booting a
cold JVM of its own.
Every daemon runs in a process group of its own, stopped whole at the end (:func:`stop_groups`).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 240.0  # JVMs booting on two busy cores
READY_LINE = "Spark Connect server started"


def spark_env(root: Path) -> dict[str, str]:
    """The environment of a Spark daemon: SPARK_HOME = the pyspark package, loopback only, logs and an
    empty configuration directory under ``root`` (nothing from the machine's Spark leaks in)."""
    import pyspark

    (root / "conf").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOG_DIR": str(root), "SPARK_CONF_DIR": str(root / "conf")}


def stop_groups(procs: Iterable[subprocess.Popen[bytes]], grace_s: float = 30.0) -> None:
    """SIGTERM each daemon's process group, wait up to ``grace_s`` in all, then SIGKILL whatever is
    left of each group (an executor JVM outlives its worker's leader otherwise) and reap the leader."""
    procs = list(procs)
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@dataclass
class ConnectServer:
    url: str  # sc://127.0.0.1:<port>
    log_path: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self) -> ConnectServer:
        """Block until the server says it listens; RuntimeError with its log's tail if it died or hung."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while READY_LINE not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Spark Connect server did not start (rc {self.proc.poll()}):\n"
                                   f"{self.log()[-3000:]}")
            time.sleep(0.25)
        return self

    def stop(self) -> None:
        stop_groups([self.proc])


def start_connect_server(root: Path, port: int) -> ConnectServer:
    """Launch the server (without waiting for it: :meth:`ConnectServer.wait`)."""
    env = spark_env(root)
    submit = Path(env["SPARK_HOME"]) / "bin" / "spark-submit"
    log_path = root / "connect.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [str(submit), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
             "--master", "local[2]", "--driver-memory", "2g",
             "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
             "--conf", f"spark.connect.grpc.binding.port={port}", "--conf", "spark.ui.enabled=false"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return ConnectServer(f"sc://127.0.0.1:{port}", log_path, proc)
