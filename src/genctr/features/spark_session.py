"""One place that builds the SparkSession used by feature building and the tests.

The master decides where the work runs and what this process is:

    local, local[N], local[*]       Spark inside this process's JVM (the laptop default)
    spark://host:port[,host:port]   a standalone cluster; this process is the driver (client mode)
    k8s://https://host[:port], yarn  other cluster managers; this process is the driver
    sc://host[:port][/;k=v...]      Spark Connect: the driver is the server; this process is a
                                    gRPC client with no JVM, no SparkContext and no RDDs
    None                            whatever ``spark-submit --master`` (or Spark's default) says

A cluster master or a Connect server is probed over TCP first, so an unreachable one is a
ConfigError in seconds instead of Spark's minute of silent retries.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from genctr.errors import ConfigError, describe

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

_LOCAL = re.compile(r"local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|local-cluster\[\d+,\d+,\d+\]")
_HOST_PORT = r"[A-Za-z0-9_.\-]+:\d{1,5}"
_STANDALONE = re.compile(rf"spark://{_HOST_PORT}(,{_HOST_PORT})*")
_CONNECT = re.compile(r"sc://(?P<host>[A-Za-z0-9_.\-]+)(:(?P<port>\d{1,5}))?(/(;[^;=\s]+=[^;\s]*)*)?")
_OTHER = re.compile(r"yarn|k8s://https?://\S+|mesos://\S+")
MASTER_FORMS = "local[*], local[N], spark://host:port, sc://host:port (Spark Connect), k8s://https://host, yarn"
CONNECT_DEFAULT_PORT = 15002  # Spark Connect's default gRPC port
PROBE_TIMEOUT_S = 10.0
# Session settings every build relies on; all are runtime SQL settings, so they can also be set
# over Spark Connect (core settings such as spark.driver.memory cannot: the server owns them).
SQL_DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    # Feast / pyarrow read INT64 microsecond timestamps; Spark's INT96 default is legacy.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}


def check_master(master: str) -> str:
    """``master`` stripped, or ConfigError naming the accepted forms."""
    text = master.strip() if isinstance(master, str) else ""
    if not any(p.fullmatch(text) for p in (_LOCAL, _STANDALONE, _CONNECT, _OTHER)):
        raise ConfigError(f"Spark master {describe(master)} is not one of {MASTER_FORMS}")
    return text


def is_connect(master: str | None) -> bool:
    """Whether ``master`` names a Spark Connect server (``sc://``)."""
    return bool(master) and str(master).strip().startswith("sc://")


def is_local(master: str | None) -> bool:
    """Whether ``master`` runs executors inside this process (they share its filesystem)."""
    return bool(master) and _LOCAL.fullmatch(str(master).strip()) is not None


def is_connect_session(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect client session (no SparkContext behind it)."""
    # by module, not isinstance: importing pyspark.sql.connect checks for the gRPC client packages,
    # which a classic-only installation need not have
    return type(spark).__module__.startswith("pyspark.sql.connect.")


def session_is_local(spark: SparkSession) -> bool:
    """Whether the executors of ``spark`` run in this process, on this machine's filesystem.

    A Connect session never is: even a server on this machine is another process, possibly
    another machine's mount namespace, so only a path that both see can be shared.
    """
    if is_connect_session(spark):
        return False
    return is_local(spark.sparkContext.master)


def get_spark(
    master: str | None = "local[*]",
    app_name: str = "genctr-features",
    shuffle_partitions: int = 8,
    driver_memory: str = "4g",
    log_level: str = "WARN",
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """Build (or return the running) SparkSession: UTC session time, quiet logs, no UI.

    ``master=None`` leaves the master to ``spark-submit --master`` (or Spark's own default,
    ``local[*]``). ``driver_memory`` only takes effect when this call starts the JVM, i.e. in
    a plain ``python`` process; under ``spark-submit`` pass ``--driver-memory`` instead.
    ``conf`` adds Spark settings (``spark.executor.memory``, ``spark.hadoop.fs.s3a.*``, ...);
    over Spark Connect only runtime SQL settings are accepted, and a bad one is a ConfigError.
    """
    if master is not None:
        master = check_master(master)
        if not is_local(master):
            _probe(master)
    if is_connect(master):
        assert master is not None  # narrowed by is_connect
        return _connect_session(master, shuffle_partitions, conf or {})
    from pyspark.sql import SparkSession

    # Python workers are never needed (no UDFs), but if one starts it must be this interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    settings = {**SQL_DEFAULTS, "spark.driver.memory": driver_memory,
                "spark.sql.shuffle.partitions": str(shuffle_partitions),
                "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", **(conf or {})}
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    log.info("spark %s master=%s", spark.version, spark.sparkContext.master)
    return spark


def _connect_session(master: str, shuffle_partitions: int, conf: Mapping[str, str]) -> SparkSession:
    """A Spark Connect client session; the server's own settings (memory, UI, logs) stay its own."""
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    try:
        spark = SparkSession.builder.remote(master).getOrCreate()
    except PySparkException as exc:
        if "SESSION_ALREADY_EXIST" in str(exc):  # pyspark refuses to mix the two in one process
            raise ConfigError(f"cannot open a Spark Connect session to {master}: this process already runs a "
                              "classic (JVM) Spark session; run the Connect build in a process of its own") from exc
        raise ConfigError(f"cannot open a Spark Connect session to {master}: {describe(str(exc), 300)}") from exc
    for key, value in {**SQL_DEFAULTS, "spark.sql.shuffle.partitions": str(shuffle_partitions), **conf}.items():
        try:
            spark.conf.set(key, value)
        except PySparkException as exc:
            raise ConfigError(f"Spark Connect server {master} refused the setting {key}={describe(value)} "
                              f"({describe(str(exc).splitlines()[0], 200, raw=True)}); only runtime SQL settings "
                              "can be set from a Connect client, the rest belong in the server's own config") from exc
    log.info("spark %s over Spark Connect %s (server master=%s)", spark.version, master,
             spark.conf.get("spark.master", "?"))
    return spark


def _probe(master: str) -> None:
    """ConfigError unless the first host:port of a standalone master or Connect server accepts TCP."""
    if master.startswith("spark://"):
        host, _, port = master.removeprefix("spark://").split(",")[0].rpartition(":")
        what = "Spark standalone master"
    elif (m := _CONNECT.fullmatch(master)) is not None:
        host, port, what = m["host"], m["port"] or str(CONNECT_DEFAULT_PORT), "Spark Connect server"
    else:
        return  # k8s / yarn: the cluster manager's own client reports what is wrong
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(f"no {what} answers at {host}:{port} ({exc.strerror or exc}); start it or fix the "
                          "master URL (features.spark_master / --master)") from None
