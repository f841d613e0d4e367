"""The image's entry point as Spark on Kubernetes runs it (container-images/spark-entrypoint.sh).

The Spark Operator's driver and executor pods start the image with arguments only: ``driver
--properties-file ... --class ... APP_FILE ARGS`` for the driver pod, ``executor`` plus SPARK_*
variables for each executor pod. No Kubernetes here, so the test plays the pods' part on loopback:

* the driver "pod": the entry point's ``driver`` branch with a properties file like the one the
  submission mounts and the SparkApplication's own ``mainApplicationFile`` and ``arguments``
  (genctr.features.spark_application), events and output swapped for local paths;
* two executor "pods": the entry point's ``executor`` branch with the variables Spark's executor pod
  spec sets, Kubernetes' executor backend (``KubernetesExecutorBackend``, in the bundled
  spark-kubernetes jar) registering with that driver;
* in place of the Kubernetes scheduler backend, which would create the executor pods, a standalone
  master with no workers: it registers the app, and every task runs on the entry point's executors.

SPARK_HOME is laid out by container-images/spark-home.sh, as in the image. The build must equal the
local build exactly. The variable names and backend options the entry point uses are checked against
the strings of the bundled jar (the names are Spark's, not a documented API).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from build_compare import assert_same_build
from build_fixtures import MAX_SEQ_LEN, write_partitioned_events
from conftest import JVM_TEST_OPTS, free_port
from spark_daemons import START_TIMEOUT_S, spark_env, stop_groups

from genctr.config import FeatureConfig

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "container-images"
ENTRYPOINT = IMAGES / "spark-entrypoint.sh"
LAYOUT = IMAGES / "spark-home.sh"
RUN_TIMEOUT_S = 420
EXECUTOR_BACKEND = "org/apache/spark/scheduler/cluster/k8s/KubernetesExecutorBackend$.class"
CONSTANTS = "org/apache/spark/deploy/k8s/Constants$.class"
DRIVER_COMMAND = "org/apache/spark/deploy/k8s/features/DriverCommandFeatureStep.class"


def _jar_strings(*members: str) -> set[str]:
    """Printable runs (≥ 3 characters) of class files in pyspark's spark-kubernetes jar."""
    import pyspark

    jars = list((Path(pyspark.__file__).parent / "jars").glob("spark-kubernetes_*.jar"))
    assert len(jars) == 1, jars
    out: set[str] = set()
    with zipfile.ZipFile(jars[0]) as jar:
        for member in members:
            out.update(s.decode() for s in re.findall(rb"[\x20-\x7e]{3,}", jar.read(member)))
    return out


def _entry(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_entry_point_uses_sparks_own_names_for_the_pods_variables_and_the_backends_options() -> None:
    script = ENTRYPOINT.read_text()
    # what the executor pod's spec must set (the script's own list of required variables) ...
    required = re.search(r"for name in ([A-Z_ \\\n]+); do", script)
    assert required, "the entry point's list of the executor pod's variables moved"
    names = required.group(1).replace("\\", " ").split()
    assert len(names) == 8, names
    constants = _jar_strings(CONSTANTS)
    # ... and every other variable of the pods' specs the script reads: all are Spark's constants
    for name in [*names, "SPARK_DRIVER_BIND_ADDRESS", "SPARK_DRIVER_POD_IP", "SPARK_CLASSPATH", "SPARK_CONF_DIR"]:
        assert name in constants, f"{name} is not a variable of Spark's pod specs"
    assert "SPARK_JAVA_OPT_" in constants and "SPARK_JAVA_OPT_" in script
    # the executor backend's options, as its usage lists them
    backend = " ".join(_jar_strings(EXECUTOR_BACKEND))
    passed = re.findall(r"(--[a-zA-Z-]+) \"\$", script.split("KubernetesExecutorBackend", 1)[1])
    assert len(passed) == 7, passed
    for option in passed:
        assert f"{option} <" in backend, f"KubernetesExecutorBackend has no option {option}"
    assert "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend" in script
    # the driver pod's arguments: driver --properties-file /opt/spark/conf/spark.properties --class ...
    assert {"driver", "--properties-file", "--class"} <= _jar_strings(DRIVER_COMMAND)
    assert {"/opt/spark/conf", "spark.properties"} <= constants
    # the image: SPARK_HOME is /opt/spark laid out by spark-home.sh (conf/ is the mount point), and the
    # entry point is the image's, with tini reaping the executors' Python workers
    dockerfile = (IMAGES / "Dockerfile").read_text()
    assert re.search(r"container-images/spark-home\.sh /opt/spark\b", dockerfile)
    assert re.search(r"^ENV .*SPARK_HOME=/opt/spark\b", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["/usr/bin/tini", "-s", "--", "\S*spark-entrypoint"\]', dockerfile, re.M)
    assert re.search(r'^CMD \["python3"\]', dockerfile, re.M)  # an ENTRYPOINT resets the base image's CMD


def test_other_commands_pass_through_and_bad_pod_settings_say_what_to_fix(tmp_path: Path) -> None:
    done = _entry([sys.executable, "-c", "import sys; print(sys.argv[1:])", "a b", "--c"])
    assert (done.returncode, done.stdout.strip()) == (0, "['a b', '--c']"), done.stderr  # unchanged, spaces kept
    assert _entry([sys.executable, "-c", "raise SystemExit(7)"]).returncode == 7  # its exit status is the pod's
    done = _entry([])
    assert done.returncode == 2 and "expected 'driver ...', 'executor' or a command" in done.stderr
    home = spark_env(tmp_path)["SPARK_HOME"]
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SPARK_HOME": home}
    done = _entry(["executor"], base)  # not an executor pod: every missing variable named at once
    assert done.returncode == 2, done.stderr
    assert ("SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES SPARK_EXECUTOR_MEMORY SPARK_APPLICATION_ID "
            "SPARK_EXECUTOR_POD_IP SPARK_EXECUTOR_POD_NAME SPARK_RESOURCE_PROFILE_ID not set") in done.stderr
    done = _entry(["executor", "--cores", "2"], base)
    assert done.returncode == 2 and "takes no arguments" in done.stderr
    done = _entry(["driver", "--class", "x", "app.py"], base)
    assert done.returncode == 2 and "SPARK_DRIVER_BIND_ADDRESS is not set" in done.stderr
    done = _entry(["driver"], {**base, "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1"})
    assert done.returncode == 2 and "no spark-submit arguments" in done.stderr
    done = _entry(["driver", "app.py"], {**base, "SPARK_HOME": str(tmp_path)})
    assert done.returncode == 2 and f"SPARK_HOME={tmp_path} is not a Spark distribution" in done.stderr
    # the layout script, given an interpreter without pyspark
    done = subprocess.run(["bash", str(LAYOUT), str(tmp_path / "s"), "/bin/false"], capture_output=True, text=True)
    assert done.returncode == 2 and "cannot import pyspark" in done.stderr and not (tmp_path / "s").exists()


# -- the pods, on loopback -----------------------------------------------------------------------

def _wait_for(path: Path, pattern: str, procs: dict[str, subprocess.Popen[bytes]]) -> re.Match[str]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if found := re.search(pattern, text):
            return found
        dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
        if dead or time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} never appeared in {path.name} (exited: {dead}):\n{text[-3000:]}")
        time.sleep(0.25)


@pytest.fixture
def group() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        yield procs
    finally:
        stop_groups(procs.values())


@pytest.mark.slow
def test_the_operators_driver_and_executor_pods_build_what_the_local_build_does(
        spark: Any, tmp_path: Path, group: dict[str, subprocess.Popen[bytes]]) -> None:
    from genctr.features import spark_application as sa
    from genctr.features.spark_build import build_features

    # SPARK_HOME as the image lays it out
    home = tmp_path / "opt-spark"
    subprocess.run(["bash", str(LAYOUT), str(home), sys.executable], check=True, capture_output=True)
    assert (home / "bin").is_symlink() and (home / "jars").is_symlink() and (home / "work-dir").is_dir()
    env = {**spark_env(tmp_path), "SPARK_HOME": str(home)}

    def start(name: str, cmd: list[str], extra: dict[str, str]) -> Path:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            group[name] = subprocess.Popen(cmd, env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        return log

    master_port, driver_port = free_port(), free_port()
    master = start("master", [str(home / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
                              "--host", "127.0.0.1", "--port", str(master_port), "--webui-port", str(free_port())], {})
    # the reference while the master's JVM boots
    events = tmp_path / "events"
    df = write_partitioned_events(events)
    build_features(events, tmp_path / "reference", FeatureConfig(max_seq_len=MAX_SEQ_LEN), spark=spark)

    # the driver pod: the SparkApplication's file and arguments, its properties as the submission writes them
    app = sa.render(sa.FeatureBuildApp(features=FeatureConfig(max_seq_len=MAX_SEQ_LEN)))["spec"]
    out = tmp_path / "pod-build"
    args = list(app["arguments"])
    args[args.index("--events") + 1], args[args.index("--out") + 1] = str(events), str(out)
    app_file = "local://" + str(ROOT / Path(app["mainApplicationFile"].removeprefix("local://"))
                                .relative_to("/opt/genctr"))
    props = tmp_path / "conf" / "spark.properties"
    props.write_text("\n".join(f"{k}={v}" for k, v in {
        "spark.master": f"spark://127.0.0.1:{master_port}", "spark.submit.deployMode": "cluster",
        "spark.app.name": app["driver"]["labels"]["app.kubernetes.io/name"], "spark.driver.host": "127.0.0.1",
        "spark.driver.port": str(driver_port), "spark.executor.instances": "2", "spark.executor.cores": "1",
        "spark.executor.memory": "512m", "spark.driver.memory": "1g"}.items()) + "\n")
    _wait_for(master, r"New state: ALIVE", group)
    driver = start("driver", ["bash", str(ENTRYPOINT), "driver", "--properties-file", str(props),
                              "--class", "org.apache.spark.deploy.PythonRunner", app_file, *args],
                   {"SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1"})
    app_id = _wait_for(driver, r"app ID (app-\S+)", group).group(1)

    # two executor pods, with the variables Spark's executor pod spec sets. Two java options point log4j at
    # a file: the later (by number, 10 after 2) must win and its path, with a space, must arrive whole.
    exec_logs = {}
    for i in (1, 2):
        (tmp_path / f"exec {i}").mkdir()
        exec_logs[i] = tmp_path / f"exec {i}" / "executor.log"
        log4j = tmp_path / f"exec {i}" / "log4j2.properties"
        log4j.write_text("rootLogger.level = info\nrootLogger.appenderRef.f.ref = f\nappender.f.type = File\n"
                         f"appender.f.name = f\nappender.f.fileName = {exec_logs[i]}\n"
                         "appender.f.layout.type = PatternLayout\nappender.f.layout.pattern = %p %c{1}: %m%n\n")
        (tmp_path / f"work{i}").mkdir()
        start(f"executor{i}", ["bash", str(ENTRYPOINT), "executor"], {
            "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@127.0.0.1:{driver_port}",
            "SPARK_EXECUTOR_ID": str(i), "SPARK_EXECUTOR_CORES": "1", "SPARK_EXECUTOR_MEMORY": "512m",
            "SPARK_APPLICATION_ID": app_id, "SPARK_EXECUTOR_POD_IP": "127.0.0.1",
            "SPARK_EXECUTOR_POD_NAME": f"genctr-features-exec-{i}", "SPARK_RESOURCE_PROFILE_ID": "0",
            "SPARK_JAVA_OPT_0": f"-Dspark.driver.port={driver_port}",
            # the JVM settings every test JVM gets (conftest), as the pod's options 1 and 3
            **{f"SPARK_JAVA_OPT_{n}": opt for n, opt in zip((1, 3), JVM_TEST_OPTS.split(), strict=True)},
            "SPARK_JAVA_OPT_2": "-Dlog4j2.configurationFile=/nonexistent/log4j2.properties",
            "SPARK_JAVA_OPT_10": f"-Dlog4j2.configurationFile={log4j}",
            "SPARK_LOCAL_DIRS": str(tmp_path / f"work{i}"), "GENCTR_SPARK_WORKDIR": str(tmp_path / f"work{i}")})

    try:
        rc = group["driver"].wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        rc = None
    text = driver.read_text(errors="replace")
    assert rc == 0, text[-4000:]
    stats, _ = json.JSONDecoder().raw_decode(text, text.rindex("\n{\n") + 1)  # the build's stats, after the log
    rows = assert_same_build(out, tmp_path / "reference")
    assert stats["n_events"] == sum(rows[f"samples/{s}"] for s in ("train", "valid", "test")) == len(df)
    # every task ran on the entry point's executors (the master has no workers), and both took part
    ran = {}
    for i, log in exec_logs.items():
        body = log.read_text(errors="replace") if log.exists() else f"(no {log}: the java options did not arrive)"
        assert "Successfully registered with driver" in body, body[-2000:]
        ran[i] = len(re.findall(r"Running task", body))
    assert all(n > 0 for n in ran.values()), ran
    assert "Launching executor" not in master.read_text(errors="replace")
    # the app's end ends the executor pods: each backend exits on the driver's word
    for i in (1, 2):
        group[f"executor{i}"].wait(timeout=60)
