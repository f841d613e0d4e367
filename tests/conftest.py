"""Shared fixtures: one Spark session per test run, free loopback ports, tiny datasets."""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PYSPARK_PYTHON", os.path.realpath(os.sys.executable))

# Every JVM the suite starts runs seconds of work on tiny tables: pyspark's drivers (in the workers,
# in pipeline steps and CLI subprocesses, inherited through the environment), the Connect server and
# the standalone daemons. For such short lives HotSpot's C2 compiler costs more CPU than its code
# saves; C1 alone cuts a cold 40k-event build's CPU by a third or more (35 -> 19-28 s, RESULTS.md
# "The test suite's time"). The serial collector does the small heaps' collections in the thread that
# needs them, without G1's concurrent and parallel helper threads: a further ~13 % of a cold tiny
# build's CPU (24.7-26.2 -> 20.3-22.8 s, paired runs). The results depend on neither; users' builds
# keep the JVM's defaults.
JVM_TEST_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
for _var in ("SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS"):
    os.environ.setdefault(_var, JVM_TEST_OPTS)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reap_servers(basetemp: Path) -> None:
    """Stop every ``python -m genctr...`` process still running on a path of this session's
    temporary tree: a server or router that a pipeline step or CLI subprocess started for a
    deployment and whose owner is gone (the fixtures stop what they start themselves; this is the
    net under them, so no test run leaves a process behind)."""
    import signal
    import time

    mine = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if "-m genctr" in text and str(basetemp) in text and int(proc.name) != os.getpid():
            mine.append(int(proc.name))
    for pid in mine:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while mine and time.monotonic() < deadline:
        mine = [pid for pid in mine if _running(pid)]
        time.sleep(0.1)
    for pid in mine:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child of a live parent waits as one until reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="session", autouse=True)
def _no_server_outlives_the_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    # a config cleanup registered first runs last: after the fixtures' and helpers' own shutdowns
    basetemp = tmp_path_factory.getbasetemp()
    request.config.add_cleanup(lambda: _reap_servers(basetemp))


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """A local Spark session shared by every test (start-up costs ~15 s)."""
    from genctr.features.spark_session import get_spark

    session = get_spark("local[2]", app_name="genctr-tests", shuffle_partitions=4)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_connect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``sc://`` URL of this worker's Spark Connect server (tests/spark_daemons.py), started
    on first use: the kfp.local pipelines' Spark steps connect to one warm JVM instead of each
    booting a cold one (a cold 40k-event build costs 15-20 s, a warm one 6-8 s)."""
    from spark_daemons import start_connect_server

    server = start_connect_server(tmp_path_factory.mktemp("spark-connect"), free_port())
    try:
        yield server.wait().url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def synthetic_build(spark, tmp_path_factory) -> dict[str, object]:
    """A small synthetic world, its events and a real Spark feature build (shared, read-only)."""
    from genctr.config import FeatureConfig
    from genctr.data.sources.synthetic import SyntheticConfig, write_events
    from genctr.features.spark_build import build_features

    root = tmp_path_factory.mktemp("synthetic")
    world = SyntheticConfig(n_users=400, n_items=800, n_cates=20, seed=7)
    write_events(world, 40_000, str(root / "events"))
    cfg = FeatureConfig(max_seq_len=30, shuffle_partitions=4)  # the partitioning its measured AUCs were taken with
    stats = build_features(root / "events", root / "build", cfg, spark=spark)
    return {"world": world, "events": root / "events", "build": root / "build", "stats": stats, "max_seq_len": 30}


# Test files by their measured cost, heaviest first (``make test --durations``; each runs kfp.local
# pipelines, real servers or Spark). ``make test`` hands whole files to two workers as they free
# up (``--dist loadfile --no-loadscope-reorder``): starting the longest first keeps one from
# running alone at the end (xdist's own reorder puts files with the most tests first, which
# left the demo and the pipeline runs for last).
HEAVIEST_FIRST = (
    "test_demo.py", "test_pipeline_local.py", "test_canary_pipeline.py", "test_storage_s3.py", "test_training.py",
    "test_spark_cluster.py", "test_training_modes.py", "test_canary_loop.py", "test_ab_loop_e2e.py",
    "test_serving_tuning.py", "test_distributed.py", "test_feast.py", "test_trainer_job.py", "test_spark_pods.py",
    "test_spark_build.py", "test_behaviour_log.py", "test_attack_serving.py", "test_attack_artifacts.py",
    "test_components.py", "test_pipeline_compile.py", "test_expectations.py", "test_profiles.py", "test_attack_data.py",
    "test_registry.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heaviest files first (:data:`HEAVIEST_FIRST`), the rest in collection order; the order
    within a file is kept (its module fixtures are shared in that order)."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order kept


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs two workers on two cores) each worker's torch gets one
    thread: two workers with two threads each would oversubscribe the cores and spin."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import sys

        import torch

        # An xdist worker's __main__ (execnet) has neither __spec__ nor __file__, which
        # pyspark.sql.connect (imported by Great Expectations) takes for a doctest run and exits.
        main = sys.modules["__main__"]
        if getattr(main, "__spec__", None) is None and not hasattr(main, "__file__"):
            main.__file__ = "<string>"  # what `python -c` names its code's file (execnet starts workers so)
        # inspect.stack() (kfp runs it in every task setter: set_container_image, set_cpu_request, ...)
        # looks up each frame's module by file name; a file no module in sys.modules claims sends it
        # through all of sys.modules (~7,000 here), 34 ms a setter and 70 s of the suite. The worker's
        # bottom frames are execnet's `-c` code (claimed by __main__ above) and xdist's remote loop,
        # which execnet executes from its source without importing it: imported here, it is claimed.
        import xdist.remote  # noqa: F401 - imported for its sys.modules entry (above)

        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
