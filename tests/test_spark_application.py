"""The feature build as a Spark Operator SparkApplication: the rendered manifest (golden file, committed
file, field-level checks, the entry point it names), submitting it and waiting for its state against a
recording stand-in of the Kubernetes API, and the build component's ``operator`` mode end to end: the
stand-in's "driver" runs the manifest's own command line on this test session's Spark, reading and
writing a real S3-protocol server (moto's), and the component copies the build into its artifact."""
from __future__ import annotations

import copy
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException
from spark_operator_standin import METHODS, RecordingSparkOperator

from genctr.config import FeatureConfig
from genctr.errors import ConfigError, GenCTRError
from genctr.features import spark_application as sa
from genctr.features import spark_operator
from genctr.features.spark_build import config_from_args, parser
from genctr.features.spark_operator import SparkApplicationFailed, run_application

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "spark_application.yaml"
COMMITTED = ROOT / "manifests" / "spark" / "feature-build.yaml"
BUCKET = "genctr-spark-it"


def test_rendered_manifest_equals_the_golden_and_the_committed_file() -> None:
    doc = sa.check_manifest(sa.render(sa.FeatureBuildApp()))
    if os.environ.get("GENCTR_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text("# regenerate with GENCTR_UPDATE_GOLDEN=1 pytest tests/test_spark_application.py\n"
                          + yaml.safe_dump(doc, sort_keys=True))
    assert doc == yaml.safe_load(GOLDEN.read_text()), (
        f"the SparkApplication differs from {GOLDEN.relative_to(ROOT)}; if intended, regenerate with "
        "GENCTR_UPDATE_GOLDEN=1 pytest tests/test_spark_application.py")
    assert COMMITTED.read_text() == sa.to_yaml(doc), f"{COMMITTED} is stale: run `python -m {sa.__name__}`"


def test_manifest_names_real_resources_the_entry_point_and_the_storage_secret() -> None:
    app = sa.FeatureBuildApp(events="s3://b/events", out="s3://b/builds/7/features",
                             features=FeatureConfig(max_seq_len=50, split=(0.7, 0.2, 0.1), time_unit="ms"),
                             executor_instances=3, executor_memory="6g")
    spec = sa.render(app)["spec"]
    assert (spec["type"], spec["mode"], spec["pythonVersion"]) == ("Python", "cluster", "3")
    assert spec["driver"]["cores"] == 1 and spec["driver"]["memory"] == "4g"
    assert (spec["executor"]["instances"], spec["executor"]["cores"], spec["executor"]["memory"]) == (3, 2, "6g")
    assert spec["image"] == sa.IMAGE == "ghcr.io/genctr/genctr:0.1.0"
    # the image holds the repository at /opt/genctr (container-images/Dockerfile), so the file is this one
    dockerfile = (ROOT / "container-images" / "Dockerfile").read_text()
    assert "WORKDIR /opt/genctr" in dockerfile and re.search(r"^COPY src \./src$", dockerfile, re.M)
    in_image = spec["mainApplicationFile"].removeprefix("local://")
    assert (ROOT / Path(in_image).relative_to("/opt/genctr")).is_file()
    # the arguments are what spark_build.py parses, into the app's own FeatureConfig; no --master
    args = parser().parse_args(spec["arguments"])
    assert (args.events, args.out, args.master) == ("s3://b/events", "s3://b/builds/7/features", None)
    assert config_from_args(args) == app.features
    # object-store credentials: the same Secret the other genctr pods read (manifests/storage-secret.yaml)
    secret = yaml.safe_load((ROOT / "manifests" / "storage-secret.yaml").read_text())
    for role in ("driver", "executor"):
        assert spec[role]["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
        assert set(secret["stringData"]) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
    # versions: the installed pyspark, and hadoop-aws at the Hadoop the wheel bundles
    import pyspark

    assert spec["sparkVersion"] == sa.SPARK_VERSION == pyspark.__version__
    jars = Path(pyspark.__file__).parent / "jars"
    assert (jars / f"hadoop-client-api-{sa.HADOOP_VERSION}.jar").is_file()
    assert spec["deps"]["packages"] == [f"org.apache.hadoop:hadoop-aws:{sa.HADOOP_VERSION}"]
    assert "${env.AWS_ENDPOINT_URL" in spec["sparkConf"]["spark.hadoop.fs.s3a.endpoint"]


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: d["spec"].update(mainApplicationFle="x"), "mainApplicationFle"),  # a typo: unknown field
    (lambda d: d["spec"].pop("mainApplicationFile"), "mainApplicationFile"),
    (lambda d: d["spec"]["driver"].update(memory="4GB"), "memory"),
    (lambda d: d["spec"]["executor"].update(instances=0), "instances"),
    (lambda d: d["spec"]["executor"].update(coers=2), "coers"),
    (lambda d: d["spec"].update(mode="standalone"), "mode"),
    (lambda d: d["spec"]["sparkConf"].update({"spark.x": 1}), "sparkConf"),
    (lambda d: d["spec"]["driver"].update(envFrom=[{"secret": {"name": "x"}}]), "envFrom"),
    (lambda d: d.update(apiVersion="sparkoperator.k8s.io/v1beta1"), "apiVersion"),
])
def test_the_check_catches_broken_manifests(mutate: Any, needle: str) -> None:
    doc = sa.render(sa.FeatureBuildApp())
    sa.check_manifest(copy.deepcopy(doc))  # the real one passes
    mutate(doc)
    with pytest.raises(ConfigError, match=needle):
        sa.check_manifest(doc)


@pytest.mark.parametrize(("change", "needle"), [
    ({"events": "/data/events.parquet"}, "events must be an object-store URI"),
    ({"out": "memory://x/build"}, "out must be an object-store URI"),
    ({"out": "s3://bucket-only"}, "no prefix"),
    ({"name": "Genctr_Features"}, "name must be a DNS-1123"),
    ({"executor_memory": "4 GB"}, "executor_memory"),
    ({"executor_instances": 0}, "executor_instances"),
    ({"image_pull_policy": "Sometimes"}, "image_pull_policy"),
])
def test_bad_app_settings_are_config_errors(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        sa.FeatureBuildApp(**change)


# ----------------------------------------------------------------------------- submit and wait
def test_the_standin_has_the_real_clients_parameters() -> None:
    from kubernetes import client

    for cls_name, methods in METHODS.items():
        real_cls = getattr(client, cls_name)
        for method in methods:
            real = set(inspect.signature(getattr(real_cls, method)).parameters) - {"self", "kwargs"}
            ours = set(inspect.signature(getattr(RecordingSparkOperator, method)).parameters) - {"self", "kwargs"}
            assert real == ours, f"{cls_name}.{method}: real {sorted(real)} vs stand-in {sorted(ours)}"


def _manifest() -> dict[str, Any]:
    return sa.render(sa.FeatureBuildApp(events="s3://b/events", out="s3://b/builds/1/features"))


def test_submit_creates_a_unique_application_and_waits_for_completed() -> None:
    api = RecordingSparkOperator()
    run = run_application(_manifest(), api, poll_s=0)
    assert run.state == "COMPLETED" and run.namespace == "genctr"
    assert re.fullmatch(r"genctr-features-[a-z0-9]{5}", run.name) and run.driver_pod == f"{run.name}-driver"
    (created,) = api.called("create_namespaced_custom_object")
    kind = (created["group"], created["version"], created["plural"])
    assert kind == (spark_operator.GROUP, spark_operator.VERSION, spark_operator.PLURAL)
    assert "name" not in created["body"]["metadata"] and created["body"]["metadata"]["generateName"] == \
        "genctr-features-"
    assert len(api.called("get_namespaced_custom_object")) == 4  # "", SUBMITTED, RUNNING, COMPLETED
    again = run_application(_manifest(), api, poll_s=0)  # a retried step: a new name, no conflict
    assert again.name != run.name


def test_a_failed_application_raises_with_the_operators_message_and_the_driver_log() -> None:
    def driver(app: dict[str, Any]) -> None:
        raise GenCTRError("events at s3://b/events: column 'clicked' must be 0 or 1: 3 of 90 rows do not")

    api = RecordingSparkOperator(driver=driver)
    with pytest.raises(SparkApplicationFailed) as err:
        run_application(_manifest(), api, core=api, poll_s=0)
    text = str(err.value)
    assert "FAILED" in text and "driver container failed with ExitCode" in text
    assert "column 'clicked' must be 0 or 1" in text  # the driver's own error, from its log
    assert err.value.run.driver_pod.endswith("-driver")
    (logged,) = api.called("read_namespaced_pod_log")
    assert logged["tail_lines"] == spark_operator.LOG_TAIL_LINES
    # without a CoreV1Api the message says where the log is
    api = RecordingSparkOperator(script=("", "SUBMISSION_FAILED"), error_message="failed to run spark-submit")
    with pytest.raises(SparkApplicationFailed, match=r"SUBMISSION_FAILED: failed to run spark-submit.*kubectl"):
        run_application(_manifest(), api, poll_s=0)


def test_waiting_survives_api_hiccups_and_gives_up_at_the_timeout() -> None:
    api = RecordingSparkOperator(fail_gets=[503, 500])
    assert run_application(_manifest(), api, poll_s=0).state == "COMPLETED"
    ticks = iter(range(0, 10_000, 60))  # each clock reading one minute later
    api = RecordingSparkOperator(script=("", "SUBMITTED", "RUNNING"))
    with pytest.raises(SparkApplicationFailed, match=r"did not finish within 600 s \(state RUNNING\)"):
        run_application(_manifest(), api, timeout_s=600, poll_s=0, clock=lambda: float(next(ticks)))


class _Refusing(RecordingSparkOperator):
    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, body: Any,
                                        **kwargs: Any) -> Any:
        raise ApiException(status=self.status, reason="refused")


@pytest.mark.parametrize(("status", "needle"), [
    (403, "grant this step's service account 'create' on sparkoperator.k8s.io/sparkapplications"),
    (404, "install the Kubeflow Spark Operator"),
])
def test_refused_submissions_say_what_to_fix(status: int, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        run_application(_manifest(), _Refusing(status), poll_s=0)


def test_the_rendered_manifest_runs_its_entry_point(tmp_path: Path) -> None:
    """``spark-submit``-style: the image's entry file, with the manifest's arguments, starts and checks its
    input (here: events that do not exist, so it stops before any Spark start-up with exit status 2)."""
    spec = sa.render(sa.FeatureBuildApp(events="s3://b/events", out="s3://b/builds/1/features"))["spec"]
    entry = ROOT / Path(spec["mainApplicationFile"].removeprefix("local://")).relative_to("/opt/genctr")
    args = [a.replace("s3://b/events", str(tmp_path / "missing")) for a in spec["arguments"]]
    args[args.index("--out") + 1] = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, str(entry), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr, proc.stderr[-2000:]


# ----------------------------------------------------------------------------- operator mode, end to end
@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on loopback (tests/moto_s3.py); yields its endpoint."""
    from moto_s3 import moto_s3

    with moto_s3(tmp_path_factory.mktemp("moto"), BUCKET) as endpoint:
        yield endpoint


@pytest.mark.slow
def test_operator_mode_builds_on_the_object_store_and_fills_the_artifact(
        s3: str, spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec
    from build_compare import assert_same_build
    from build_fixtures import MAX_SEQ_LEN, tiny_events
    from kfp.dsl import Dataset

    import components
    from genctr.features.spark_build import build_features

    events_file = tmp_path / "events.parquet"
    tiny_events().to_parquet(events_file, index=False)
    cfg = FeatureConfig(max_seq_len=MAX_SEQ_LEN)
    build_features(events_file, tmp_path / "reference", cfg, spark=spark)  # local[*]-style, local paths
    fs = fsspec.filesystem("s3")
    fs.put(str(events_file), f"{BUCKET}/runs/1/events.parquet")
    ran: list[list[str]] = []

    def driver(app: dict[str, Any]) -> None:  # the driver pod: spark_build.py with the manifest's arguments
        argv = app["spec"]["arguments"]
        ran.append(argv)
        args = parser().parse_args(argv)
        build_features(args.events, args.out, config_from_args(args), spark=spark)

    api = RecordingSparkOperator(driver=driver)
    monkeypatch.setattr(spark_operator, "kubernetes_clients", lambda: (api, api))
    monkeypatch.setattr(spark_operator, "POLL_S", 0.01)
    build = Dataset(name="build", uri=str(tmp_path / "artifact" / "build"), metadata={})
    components.build_features.python_func(
        events=Dataset(name="events", uri=f"s3://{BUCKET}/runs/1/events.parquet"), build=build,
        max_seq_len=MAX_SEQ_LEN, spark_submit="operator", spark_build_uri=f"s3://{BUCKET}/builds/run-1")
    (argv,) = ran
    assert argv[argv.index("--events") + 1] == f"s3://{BUCKET}/runs/1/events.parquet"  # read in place
    assert argv[argv.index("--out") + 1] == f"s3://{BUCKET}/builds/run-1/features"
    assert fs.isfile(f"{BUCKET}/builds/run-1/features/stats.json")
    assert not [f for f in fs.find(f"{BUCKET}/builds/run-1") if f.endswith(".crc")]  # local checksums stay home
    rows = assert_same_build(Path(build.path), tmp_path / "reference")
    assert rows["samples/train"] > 0
    assert build.metadata["spark"]["submit"] == "operator"
    assert build.metadata["spark"]["application"].startswith("genctr/genctr-features-")
    assert build.metadata["n_events"] == len(tiny_events())
    # a second run replaces the build on the store; a failing one leaves it complete and untouched
    before = sorted(fs.find(f"{BUCKET}/builds/run-1/features"))
    bad = tiny_events().assign(clicked=2)
    with fs.open(f"{BUCKET}/runs/2/events.parquet", "wb") as f:
        bad.to_parquet(f, index=False)
    with pytest.raises(SparkApplicationFailed, match="column 'clicked' must be 0 or 1"):
        components.build_features.python_func(
            events=Dataset(name="events", uri=f"s3://{BUCKET}/runs/2/events.parquet"),
            build=Dataset(name="build", uri=str(tmp_path / "artifact2" / "build"), metadata={}),
            max_seq_len=MAX_SEQ_LEN, spark_submit="operator", spark_build_uri=f"s3://{BUCKET}/builds/run-1")
    assert sorted(fs.find(f"{BUCKET}/builds/run-1/features")) == before
    assert not [p for p in fs.ls(f"{BUCKET}/builds/run-1", detail=False) if p.rsplit("/", 1)[1].startswith(".")]


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"spark_submit": "yarn"}, "spark_submit must be one of"),
    ({"spark_master": "spark://127.0.0.1:7077"}, "set spark_build_uri"),
    ({"spark_master": "sc://127.0.0.1:15002", "spark_build_uri": "ftp://host/x"}, "object-store URI"),
    ({"spark_submit": "operator", "spark_build_uri": "/mnt/shared"}, "mount no local path"),
    ({"spark_master": "spark://nohost"}, "is not one of"),
])
def test_the_build_component_refuses_unusable_spark_settings(kwargs: dict[str, Any], needle: str,
                                                              tmp_path: Path) -> None:
    from kfp.dsl import Dataset

    import components

    build = Dataset(name="build", uri=str(tmp_path / "build"), metadata={})
    with pytest.raises(ConfigError, match=needle):
        components.build_features.python_func(events=Dataset(name="events", uri=str(tmp_path / "events")),
                                              build=build, **kwargs)
    assert not (tmp_path / "build").exists()


def test_the_pipeline_runner_may_do_what_submitting_and_waiting_call() -> None:
    """The RBAC verbs come from the calls a submit-and-wait makes (a failed run also reads the
    driver's log), checked against manifests/rbac-pipeline-runner.yaml."""
    from test_manifests import RBAC, granted

    def driver(app: dict[str, Any]) -> None:
        raise GenCTRError("driver died")

    api = RecordingSparkOperator(driver=driver)
    with pytest.raises(SparkApplicationFailed):
        run_application(_manifest(), api, core=api, poll_s=0)
    verb = {"create_namespaced_custom_object": "create", "get_namespaced_custom_object": "get",
            "read_namespaced_pod_log": "get"}
    needed: dict[str, set[str]] = {}
    for method, kw in api.calls:
        resource = f"{kw['group']}/{kw['plural']}" if "plural" in kw else "core/pods/log"
        needed.setdefault(resource, set()).add(verb[method])
    assert needed == {"sparkoperator.k8s.io/sparkapplications": {"create", "get"}, "core/pods/log": {"get"}}
    perms = granted(RBAC)
    missing = {res: verbs - set(perms.get(res, [])) for res, verbs in needed.items()}
    assert not any(missing.values()), f"{RBAC.name} lacks {missing}"
