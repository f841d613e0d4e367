"""One place that builds the SparkSession used by feature building and the tests."""
from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def get_spark(
    master: str | None = "local[*]",
    app_name: str = "genctr-features",
    shuffle_partitions: int = 8,
    driver_memory: str = "4g",
    log_level: str = "WARN",
) -> SparkSession:
    """Build (or return the running) SparkSession: UTC session time, quiet logs, no UI.

    ``master=None`` leaves the master to ``spark-submit --master`` (or Spark's own default,
    ``local[*]``). ``driver_memory`` only takes effect when this call starts the JVM, i.e. in
    a plain ``python`` process; under ``spark-submit`` pass ``--driver-memory`` instead.
    """
    from pyspark.sql import SparkSession

    # Python workers are never needed (no UDFs), but if one starts it must be this interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    builder = (
        builder.config("spark.driver.memory", driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.adaptive.enabled", "true")
        # Feast / pyarrow read INT64 microsecond timestamps; Spark's INT96 default is legacy.
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(log_level)
    log.info("spark %s master=%s", spark.version, spark.sparkContext.master)
    return spark
