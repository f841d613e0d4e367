"""A Spark Connect server for a test session: ``bin/spark-submit --class ...SparkConnectServer``
through pyspark's own launcher, ``local[2]``, on a free loopback port, the bundled spark-connect jar.

One per pytest worker, started by the first test that asks for it (conftest ``spark_connect``). Its
JVM stays warm for every Spark step that later connects to it (kfp.local pipeline builds, the
canary's attribution join, the Connect tests), instead of each step booting a cold JVM of its own.
The server runs in a process group of its own, stopped whole at the end (SIGTERM, then SIGKILL).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 240.0  # a JVM booting on two busy cores
READY_LINE = "Spark Connect server started"


def spark_env(root: Path) -> dict[str, str]:
    """The environment of a Spark daemon: SPARK_HOME = the pyspark package, loopback only, logs and an
    empty configuration directory under ``root`` (nothing from the machine's Spark leaks in)."""
    import pyspark

    (root / "conf").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOG_DIR": str(root), "SPARK_CONF_DIR": str(root / "conf")}


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
        for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.proc.poll() is None:
            self.proc.wait()


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
