"""Shared fixtures: one Spark session per test run, free loopback ports, tiny datasets."""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

os.environ.setdefault("PYSPARK_PYTHON", os.path.realpath(os.sys.executable))


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """A local Spark session shared by every test (start-up costs ~15 s)."""
    from genctr.features.spark_session import get_spark

    session = get_spark("local[2]", app_name="genctr-tests", shuffle_partitions=4)
    yield session
    session.stop()
