"""Training on a Kubeflow training job: the TrainJob / PyTorchJob manifests (golden files and a schema
check), submit / wait / logs against a recording stand-in of the Kubernetes API (``tests/k8s_standin.py``;
no API server or training operator can run here) with a contract test against the real client classes,
the RBAC the calls need, the node command, and the training components with ``train_workers > 1``.
"""
from __future__ import annotations

import ast
import copy
import inspect
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import fsspec
import kubernetes.client
import kubernetes_validate
import pytest
import yaml
from k8s_standin import METHODS, StandInCluster, conditions
from kubernetes.client.rest import ApiException

from genctr.errors import ArtifactError, ConfigError, TrainingJobError
from genctr.orchestration import job_runner, trainer_node, training_step
from genctr.orchestration.job_runner import KINDS, WaitConfig, job_state, run_job
from genctr.orchestration.trainer_job import (
    STORAGE_SECRET_KEYS,
    JobPlacement,
    TrainerJobSpec,
    job_name,
    render,
    render_pytorchjob,
    render_trainjob,
)
from genctr.orchestration.trainer_node import Rendezvous, copy_tree, train_command

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
JOB_RUNNER_PY = ROOT / "src" / "genctr" / "orchestration" / "job_runner.py"
K8S_VERSION = "1.31"  # as tests/test_manifests.py: the oldest Kubernetes the supported Kubeflow runs on

PLACEMENT = JobPlacement(image="registry.example/genctr:0.1.0-cuda", cpu="8", memory="32Gi",
                         node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
                         tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
                         storage_secret="genctr-storage")
ARGS = ("--stage", "pretrain", "--build-uri", "s3://genctr/prod/train-jobs/j/build", "--out-uri",
        "s3://genctr/prod/train-jobs/j/model", "--", "--method", "genctr", "--train", "epochs=1")


def spec(api: str = "trainjob", workers: int = 3, gpus: int = 2, placement: JobPlacement = PLACEMENT,
         name: str = "genctr-pretrain-0123456789ab") -> TrainerJobSpec:
    return TrainerJobSpec(name=name, namespace="genctr", args=ARGS, placement=placement, api=api, workers=workers,
                          gpus_per_worker=gpus)


# ------------------------------------------------------------------------------ schema of the two CRDs
# Field names per object, from the API models of kubeflow-trainer-api 2.3 (TrainJob v1alpha1) and
# kubeflow-training 1.9 (PyTorchJob v1): (allowed keys, required keys, children). kubernetes-validate
# has no schema for custom resources; the pod-level parts are checked against Kubernetes' own schema.
Schema = tuple[set[str], set[str], dict[str, Any]]
POD_SPEC_PATCH: Schema = ({"affinity", "containers", "imagePullSecrets", "initContainers", "nodeSelector",
                           "schedulingGates", "securityContext", "serviceAccountName",
                           "terminationGracePeriodSeconds", "tolerations", "volumes"}, set(), {})
TEMPLATE_PATCH: Schema = ({"metadata", "spec"}, set(), {"spec": POD_SPEC_PATCH})
ROOT_REQUIRED = {"apiVersion", "kind", "metadata", "spec"}
ROOT_KEYS = {*ROOT_REQUIRED, "status"}
TRAINJOB: Schema = (ROOT_KEYS, ROOT_REQUIRED, {
    "metadata": ({"name", "namespace", "labels", "annotations"}, {"name", "namespace"}, {}),
    "spec": ({"activeDeadlineSeconds", "initializer", "managedBy", "runtimePatches", "runtimeRef", "suspend",
              "trainer"}, {"runtimeRef"}, {
        "runtimeRef": ({"apiGroup", "kind", "name"}, {"name"}, {}),
        "trainer": ({"args", "command", "env", "image", "numNodes", "numProcPerNode", "resourcesPerNode"}, set(), {}),
        "runtimePatches": ("list", ({"manager", "time", "trainingRuntimeSpec"}, {"manager"}, {
            "trainingRuntimeSpec": ({"template"}, set(), {"template": ({"metadata", "spec"}, set(), {
                "spec": ({"replicatedJobs"}, set(), {"replicatedJobs": ("list", ({"name", "template"}, {"name"}, {
                    "template": ({"metadata", "spec"}, set(), {
                        "spec": ({"template"}, set(), {"template": TEMPLATE_PATCH})})}))})})})}))})})
PYTORCHJOB: Schema = (ROOT_KEYS, ROOT_REQUIRED, {
    "metadata": ({"name", "namespace", "labels", "annotations"}, {"name", "namespace"}, {}),
    "spec": ({"elasticPolicy", "nprocPerNode", "pytorchReplicaSpecs", "runPolicy"},
             {"pytorchReplicaSpecs", "runPolicy"}, {
        "runPolicy": ({"activeDeadlineSeconds", "backoffLimit", "cleanPodPolicy", "managedBy", "schedulingPolicy",
                       "suspend", "ttlSecondsAfterFinished"}, set(), {}),
        "pytorchReplicaSpecs": ("map", ({"replicas", "restartPolicy", "template"}, {"replicas", "template"}, {}))})})


def schema_problems(obj: Any, schema: Any, path: str = "") -> list[str]:
    """Unknown or missing keys, and non-mapping values, of ``obj`` against ``schema``."""
    if isinstance(schema, tuple) and schema and schema[0] in ("list", "map"):
        kind, inner = schema
        items = obj if kind == "list" else (obj or {}).values() if isinstance(obj, dict) else None
        if items is None or (kind == "list" and not isinstance(obj, list)):
            return [f"{path}: expected a {kind}"]
        return [p for i, item in enumerate(items) for p in schema_problems(item, inner, f"{path}[{i}]")]
    allowed, required, children = schema
    if not isinstance(obj, dict):
        return [f"{path or '<root>'}: expected a mapping"]
    out = [f"{path}.{k}: unknown field" for k in sorted(set(obj) - allowed)]
    out += [f"{path}.{k}: required" for k in sorted(required - set(obj))]
    for key, child in children.items():
        if key in obj:
            out += schema_problems(obj[key], child, f"{path}.{key}")
    return out


def check_trainjob(doc: dict[str, Any]) -> None:
    problems = schema_problems(doc, TRAINJOB)
    assert doc["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and doc["kind"] == "TrainJob"
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", doc["metadata"]["name"])  # the CRD's CEL rule
    trainer = doc["spec"].get("trainer", {})
    for key in ("numNodes", "numProcPerNode"):
        if not isinstance(trainer.get(key), int) or isinstance(trainer.get(key), bool):
            problems.append(f".spec.trainer.{key}: expected an integer")
    # the trainer's container fields as a container, and each pod patch as a pod spec (Kubernetes' schema)
    container = {"name": "node", **{k: trainer[k] for k in ("image", "command", "args", "env") if k in trainer},
                 "resources": trainer.get("resourcesPerNode", {})}
    _validate_builtin({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                       "spec": {"containers": [container]}}, problems)
    for patch in doc["spec"].get("runtimePatches", []):
        for rjob in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            pod = rjob["template"]["spec"]["template"]["spec"]
            _validate_builtin({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                               "spec": {"containers": [{"name": "node", "image": "x"}], **pod}}, problems)
    assert not problems, problems


def check_pytorchjob(doc: dict[str, Any]) -> None:
    problems = schema_problems(doc, PYTORCHJOB)
    assert doc["apiVersion"] == "kubeflow.org/v1" and doc["kind"] == "PyTorchJob"
    spec_ = doc["spec"]
    if not isinstance(spec_.get("nprocPerNode", ""), str):
        problems.append(".spec.nprocPerNode: a string in the v1 API")
    replicas = spec_.get("pytorchReplicaSpecs", {})
    if set(replicas) - {"Master", "Worker"} or replicas.get("Master", {}).get("replicas") != 1:
        problems.append(".spec.pytorchReplicaSpecs: exactly one Master, then Workers")
    if spec_.get("runPolicy", {}).get("cleanPodPolicy") not in (None, "None", "Running", "All"):
        problems.append(".spec.runPolicy.cleanPodPolicy: None | Running | All")
    for role, r in replicas.items():
        if r.get("restartPolicy") not in ("Always", "OnFailure", "Never", "ExitCode"):
            problems.append(f"{role}.restartPolicy: Always | OnFailure | Never | ExitCode")
        names = [c["name"] for c in r["template"]["spec"]["containers"]]
        if "pytorch" not in names:  # the operator finds the training container by this name
            problems.append(f"{role}: no container named pytorch")
        _validate_builtin({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"},
                           "template": r["template"]}, problems)
    assert not problems, problems


def _validate_builtin(doc: dict[str, Any], problems: list[str]) -> None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        problems.append(f"{doc['kind']} {'/'.join(str(p) for p in exc.absolute_path)}: {exc.message}")


def assert_golden(doc: dict[str, Any], golden: Path) -> None:
    if os.environ.get("GENCTR_UPDATE_GOLDEN") == "1":
        golden.write_text("# rendered by genctr.orchestration.trainer_job (tests/test_trainer_job.py); regenerate "
                          "with\n# GENCTR_UPDATE_GOLDEN=1 pytest tests/test_trainer_job.py\n"
                          + yaml.safe_dump(doc, sort_keys=False))
    assert doc == yaml.safe_load(golden.read_text()), (
        f"rendered manifest differs from {golden.relative_to(ROOT)}; if intended, regenerate with "
        "GENCTR_UPDATE_GOLDEN=1 pytest tests/test_trainer_job.py")


# ------------------------------------------------------------------------------ manifests
def test_trainjob_golden_file_and_schema() -> None:
    doc = render_trainjob(spec("trainjob"))
    check_trainjob(doc)
    assert_golden(doc, GOLDEN / "trainjob.yaml")


def test_pytorchjob_golden_file_and_schema() -> None:
    doc = render_pytorchjob(spec("pytorchjob"))
    check_pytorchjob(doc)
    assert_golden(doc, GOLDEN / "pytorchjob.yaml")


def test_trainjob_fields_carry_the_run_form_and_placement() -> None:
    doc = render(spec("trainjob", workers=4, gpus=2))
    trainer = doc["spec"]["trainer"]
    assert doc["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                         "name": "torch-distributed"}
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 2)
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "8", "memory": "32Gi"},
                                           "limits": {"nvidia.com/gpu": "2"}}
    assert trainer["command"] == ["python", "-m", "genctr.orchestration.trainer_node"]
    assert trainer["args"] == list(ARGS) and trainer["image"] == PLACEMENT.image
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in trainer["env"] if "valueFrom" in e}
    assert set(refs) == set(STORAGE_SECRET_KEYS)
    assert all(r == {"name": "genctr-storage", "key": k, "optional": True} for k, r in refs.items())
    (patch,) = doc["spec"]["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rjob["name"] == "node"  # the torch runtime's trainer job
    pod = rjob["template"]["spec"]["template"]["spec"]
    assert pod == {"nodeSelector": PLACEMENT.node_selector, "tolerations": list(PLACEMENT.tolerations)}


def test_without_placement_the_trainjob_has_no_runtime_patches_and_cpu_nodes_no_gpu() -> None:
    bare = JobPlacement(image="img")
    doc = render_trainjob(spec(gpus=0, placement=bare))
    check_trainjob(doc)
    assert "runtimePatches" not in doc["spec"]  # so Trainer v2.0-v2.2 accept the object too
    trainer = doc["spec"]["trainer"]
    assert "limits" not in trainer["resourcesPerNode"] and trainer["numProcPerNode"] == 1
    assert [e["name"] for e in trainer["env"]] == ["PYTHONUNBUFFERED"]  # no storage Secret: no refs


def test_pytorchjob_has_a_master_and_n_minus_one_workers_that_never_restart_in_place() -> None:
    doc = render(spec("pytorchjob", workers=3, gpus=4))
    replicas = doc["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 2}
    assert {v["restartPolicy"] for v in replicas.values()} == {"Never"}
    assert doc["spec"]["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 0}
    assert doc["spec"]["nprocPerNode"] == "4"
    pod = replicas["Worker"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "pytorch" and container["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert pod["spec"]["nodeSelector"] == PLACEMENT.node_selector
    assert pod["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    single = render(spec("pytorchjob", workers=1))
    assert set(single["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    check_pytorchjob(single)


def test_the_schema_check_catches_what_the_api_server_would_reject() -> None:
    good = render_trainjob(spec())
    for mutate, needle in [
        (lambda d: d["spec"].pop("runtimeRef"), "runtimeRef: required"),
        (lambda d: d["spec"]["trainer"].update(numNode=2), "numNode: unknown"),
        (lambda d: d["spec"]["trainer"].update(numNodes="2"), "numNodes: expected an integer"),
        (lambda d: d["spec"]["trainer"]["env"].append({"name": "X", "valeu": "1"}), "valeu"),
        (lambda d: d["spec"]["runtimePatches"][0].pop("manager"), "manager: required"),
    ]:
        bad = copy.deepcopy(good)
        mutate(bad)
        with pytest.raises(AssertionError, match=needle):
            check_trainjob(bad)
    good = render_pytorchjob(spec("pytorchjob"))
    for mutate, needle in [
        (lambda d: d["spec"].pop("runPolicy"), "runPolicy: required"),
        (lambda d: d["spec"]["pytorchReplicaSpecs"]["Master"].update(restartPolicy="Sometimes"), "restartPolicy"),
        (lambda d: d["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].update(
            name="trainer"), "no container named pytorch"),
        (lambda d: d["spec"].update(nprocPerNode=2), "nprocPerNode"),
    ]:
        bad = copy.deepcopy(good)
        mutate(bad)
        with pytest.raises(AssertionError, match=needle):
            check_pytorchjob(bad)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"workers": 0}, "train_workers must be an integer >= 1"),
    ({"workers": True}, "train_workers"),
    ({"gpus": -1}, "train_gpus_per_worker must be an integer >= 0"),
    ({"api": "mpijob"}, r"trainer_api must be one of \('trainjob', 'pytorchjob'\)"),
    ({"name": "Genctr_Job"}, "RFC 1035"),
    ({"name": "g" * 64}, "RFC 1035"),
])
def test_a_bad_job_spec_names_what_to_fix(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        spec(**kwargs)


def test_placement_from_the_pipeline_mapping_rejects_unknown_keys_and_bad_tolerations() -> None:
    got = JobPlacement.from_dict({"image": "img", "tolerations": [{"key": "gpu", "effect": "NoExecute"}]})
    assert got.tolerations == ({"key": "gpu", "effect": "NoExecute"},)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['gpus'\]"):
        JobPlacement.from_dict({"image": "img", "gpus": 2})
    with pytest.raises(ConfigError, match="toleration"):
        JobPlacement(image="img", tolerations=({"key": "gpu", "effect": "Sometimes"},))
    with pytest.raises(ConfigError, match="image"):
        JobPlacement(image=" ")


def test_storage_secret_keys_are_the_pipelines() -> None:
    from pipelines.placement import STORAGE_SECRET_KEYS as PIPELINE_KEYS

    assert STORAGE_SECRET_KEYS == PIPELINE_KEYS


def test_job_names_are_stable_per_output_and_valid() -> None:
    a, b = job_name("pretrain", "s3://kfp/run-1/pretrain/pretrained"), job_name("finetune", "s3://kfp/run-1/x")
    assert a == job_name("pretrain", "s3://kfp/run-1/pretrain/pretrained") and a != b
    assert a.startswith("genctr-pretrain-") and len(a) <= 63
    spec(name=a)  # accepted as a TrainJob name


# ------------------------------------------------------------------------------ the client's API, pinned
@pytest.mark.parametrize(("cls", "method"), [(c, m) for c, ms in METHODS.items() for m in ms])
def test_the_real_clients_have_what_the_stand_in_implements(cls: str, method: str) -> None:
    import k8s_standin

    real_fn = getattr(getattr(kubernetes.client, cls), method)
    ours_cls = {"CustomObjectsApi": k8s_standin.RecordingCustomObjectsApi,
                "CoreV1Api": k8s_standin.RecordingCoreV1Api}[cls]
    real, ours = inspect.signature(real_fn), inspect.signature(getattr(ours_cls, method))
    positional = [n for n, p in real.parameters.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert [n for n, p in ours.parameters.items() if p.kind == p.POSITIONAL_OR_KEYWORD] == positional, method
    # the real methods take their options as **kwargs, checked against the generated `all_params`
    source = inspect.getsource(getattr(getattr(kubernetes.client, cls), f"{method}_with_http_info"))
    accepted = set(re.findall(r"'(\w+)'", re.search(r"all_params = \[(.*?)\]", source, re.S).group(1)))
    for name, p in ours.parameters.items():
        if p.kind == p.KEYWORD_ONLY:
            assert name in accepted, f"kubernetes.client.{cls}.{method} takes no {name!r}"


def test_the_runner_calls_only_what_the_stand_in_implements() -> None:
    """Every ``custom_api.<m>`` / ``core_api.<m>`` call in job_runner.py is a stand-in (and contract) method."""
    called = runner_calls_in_source()
    assert called == {"custom_api": set(METHODS["CustomObjectsApi"]), "core_api": set(METHODS["CoreV1Api"])}


def runner_calls_in_source() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"custom_api": set(), "core_api": set()}
    for node in ast.walk(ast.parse(JOB_RUNNER_PY.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in found:
            found[node.value.id].add(node.attr)
    return found


# ------------------------------------------------------------------------------ submit, wait, logs
FAST = WaitConfig(timeout_s=100.0, poll_s=10.0, log_tail_lines=50)


class Clock:
    """Time that passes only when the runner sleeps: a wait's reads are exact, and instant."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def run(cluster: StandInCluster, manifest: dict[str, Any], wait: WaitConfig = FAST) -> dict[str, Any]:
    clock = Clock()
    return run_job(manifest, cluster.custom, cluster.core, wait, sleep=clock.sleep, clock=lambda: clock.now)


def test_trainjob_running_then_complete_logs_every_node(caplog: pytest.LogCaptureFixture) -> None:
    cluster = StandInCluster([conditions("Created"), conditions("Created"), conditions("Created", "Complete")],
                             pod_logs=lambda pod, node: "\n".join(f"rank {node} line {i}" for i in range(80)))
    manifest = render(spec("trainjob", workers=2))
    cluster.add_pod("another-job-node-0-0-aaaaa", "genctr", {"jobset.sigs.k8s.io/jobset-name": "another-job"},
                    "node")  # not this job's: its log must not appear
    with caplog.at_level(logging.INFO):
        obj = run(cluster, manifest)
    assert job_state(KINDS["TrainJob"], obj)[0] == "succeeded"
    methods = [m for m, _, _ in cluster.calls]
    assert methods == ["create_namespaced_custom_object"] + ["get_namespaced_custom_object"] * 3 + [
        "list_namespaced_pod", "read_namespaced_pod_log", "read_namespaced_pod_log"]
    (args, _), = cluster.called("create_namespaced_custom_object")
    assert args[:4] == ("trainer.kubeflow.org", "v1alpha1", "genctr", "trainjobs") and args[4] == manifest
    (_, kw), = cluster.called("list_namespaced_pod")
    assert kw["label_selector"] == f"jobset.sigs.k8s.io/jobset-name={manifest['metadata']['name']}"
    reads = cluster.called("read_namespaced_pod_log")
    assert {k["container"] for _, k in reads} == {"node"} and {k["tail_lines"] for _, k in reads} == {50}
    lines = [r.getMessage() for r in caplog.records if r.name == "genctr.orchestration.job_pods"]
    assert any("rank 1 line 79" in m for m in lines) and not any("line 29" in m for m in lines)  # the tail only
    assert not any("another-job" in m for m in lines)


def test_pytorchjob_failure_raises_with_the_operators_message_after_the_logs(
        caplog: pytest.LogCaptureFixture) -> None:
    msg = "PyTorchJob genctr-x is failed because 1 Master replica(s) failed."
    cluster = StandInCluster([conditions("Created", "Running"),
                              conditions("Created", "Running", "Failed", reason="PyTorchJobFailed", message=msg)],
                             pod_logs=lambda pod, node: f"Traceback on rank {node}\nCUDA out of memory")
    manifest = render(spec("pytorchjob", workers=2))
    with caplog.at_level(logging.INFO), pytest.raises(TrainingJobError) as err:
        run(cluster, manifest)
    text = str(err.value)
    assert f"PyTorchJob genctr/{manifest['metadata']['name']} failed: PyTorchJobFailed: {msg}" in text
    assert "kubectl -n genctr describe pytorchjobs" in text
    lines = [r.getMessage() for r in caplog.records if r.name == "genctr.orchestration.job_pods"]
    assert any("-master-0] CUDA out of memory" in m for m in lines)
    assert any("-worker-0] Traceback on rank 1" in m for m in lines)
    (_, kw), = cluster.called("list_namespaced_pod")
    assert kw["label_selector"] == f"training.kubeflow.org/job-name={manifest['metadata']['name']}"
    assert {k["container"] for _, k in cluster.called("read_namespaced_pod_log")} == {"pytorch"}
    assert not cluster.called("delete_namespaced_custom_object")  # a failed job is kept for inspection


def test_a_job_that_never_finishes_times_out_and_is_deleted() -> None:
    cluster = StandInCluster([conditions("Created")])
    manifest = render(spec("trainjob"))
    with pytest.raises(TrainingJobError, match=r"did not finish within 100 s \(last state Created\); it was deleted"):
        run(cluster, manifest, WaitConfig(timeout_s=100.0, poll_s=10.0))
    assert len(cluster.called("get_namespaced_custom_object")) == 11  # at 0, 10, ..., 100 s
    (args, _), = cluster.called("delete_namespaced_custom_object")
    assert args == ("trainer.kubeflow.org", "v1alpha1", "genctr", "trainjobs", manifest["metadata"]["name"])
    assert cluster.called("read_namespaced_pod_log")  # its logs were surfaced before it went
    assert not cluster.jobs and not cluster.pods


def test_a_retried_step_adopts_its_earlier_job() -> None:
    cluster = StandInCluster([conditions("Created", "Complete")])
    manifest = render(spec("trainjob"))
    run(cluster, manifest)
    run(cluster, manifest)  # the same name: 409 from the API server, then the same job is awaited
    assert len(cluster.called("create_namespaced_custom_object")) == 2 and len(cluster.jobs) == 1


@pytest.mark.parametrize(("status", "needle"), [
    (403, "HTTP 403 Forbidden.*apply manifests/rbac-pipeline-runner.yaml"),
    (404, "HTTP 404 Not Found.*kubectl get crd trainjobs.trainer.kubeflow.org"),
    (500, "HTTP 500 Internal"),
])
def test_api_errors_on_submit_say_what_to_fix(status: int, needle: str) -> None:
    reasons = {403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}
    cluster = StandInCluster(create_error=ApiException(status=status, reason=reasons[status]))
    with pytest.raises(TrainingJobError, match=needle):
        run(cluster, render(spec("trainjob")))


def test_an_unreadable_pod_log_is_a_warning_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    cluster = StandInCluster([conditions("Succeeded")])
    real_read = cluster.core.read_namespaced_pod_log

    def read(name: str, namespace: str, **kw: Any) -> str:
        if name.endswith("-worker-0"):
            raise ApiException(status=400, reason="container is waiting to start")
        return real_read(name, namespace, **kw)

    cluster.core.read_namespaced_pod_log = read  # type: ignore[method-assign]  # a spy on the real client's method
    with caplog.at_level(logging.WARNING):
        run(cluster, render(spec("pytorchjob", workers=2)))
    assert any("cannot read the log of pod" in r.getMessage() and "waiting to start" in r.getMessage()
               for r in caplog.records)


def test_job_state_reads_each_kinds_conditions() -> None:
    tj, pj = KINDS["TrainJob"], KINDS["PyTorchJob"]
    assert job_state(tj, {}) == ("Pending", "")
    assert job_state(tj, {"status": conditions("Created", "Complete")})[0] == "succeeded"
    assert job_state(pj, {"status": conditions("Created", "Complete")})[0] == "Complete"  # not PyTorchJob's word
    assert job_state(pj, {"status": conditions("Running", "Succeeded")})[0] == "succeeded"
    failed = {"status": {"conditions": [{"type": "Complete", "status": "False"},
                                        {"type": "Failed", "status": "True", "message": "DeadlineExceeded"}]}}
    assert job_state(tj, failed) == ("failed", "DeadlineExceeded")
    with pytest.raises(ConfigError, match="not a training job"):
        job_runner.kind_of({"apiVersion": "kubeflow.org/v2", "kind": "PyTorchJob"})
    with pytest.raises(ConfigError, match="poll_s"):
        WaitConfig(timeout_s=10, poll_s=20)


# ------------------------------------------------------------------------------ RBAC
# the API calls -> the RBAC verb each needs (Kubernetes' REST semantics); pod logs are the pods/log subresource
VERB_OF = {"create_namespaced_custom_object": "create", "get_namespaced_custom_object": "get",
           "delete_namespaced_custom_object": "delete", "list_namespaced_pod": "list",
           "read_namespaced_pod_log": "get"}


def needed_permissions(cluster: StandInCluster) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for method, args, _ in cluster.calls:
        if method.endswith("custom_object"):
            resource = f"{args[0]}/{args[3]}"
        else:
            resource = "core/pods/log" if method == "read_namespaced_pod_log" else "core/pods"
        out.setdefault(resource, set()).add(VERB_OF[method])
    return out


def test_the_runner_role_grants_every_verb_the_job_runner_uses(tmp_path: Path) -> None:
    from test_manifests import RBAC, granted

    cluster = StandInCluster([conditions("Created")])
    for api in ("trainjob", "pytorchjob"):  # submit, poll, time out (delete), logs: every call there is
        with pytest.raises(TrainingJobError):
            run(cluster, render(spec(api)), WaitConfig(timeout_s=20, poll_s=10))
    assert {m for m, _, _ in cluster.calls} == set(VERB_OF)  # the scenario exercised every call
    assert {m for ms in runner_calls_in_source().values() for m in ms} <= set(VERB_OF)
    needed = needed_permissions(cluster)
    assert needed == {"trainer.kubeflow.org/trainjobs": {"create", "get", "delete"},
                      "kubeflow.org/pytorchjobs": {"create", "get", "delete"},
                      "core/pods": {"list"}, "core/pods/log": {"get"}}

    def missing(rbac: Path) -> dict[str, list[str]]:
        perms = granted(rbac)
        return {r: sorted(v - set(perms.get(r, []))) for r, v in needed.items() if v - set(perms.get(r, []))}

    assert missing(RBAC) == {}, f"{RBAC.name} lacks verbs the training job runner uses"
    text = RBAC.read_text()
    without_delete = text.replace('resources: ["pytorchjobs"]\n    verbs: ["create", "get", "delete"]',
                                  'resources: ["pytorchjobs"]\n    verbs: ["create", "get"]')
    assert without_delete != text
    (tmp_path / "rbac.yaml").write_text(without_delete)
    assert missing(tmp_path / "rbac.yaml") == {"kubeflow.org/pytorchjobs": ["delete"]}


# ------------------------------------------------------------------------------ the node command
TRAINJOB_ENV = {"PET_NNODES": "3", "PET_NPROC_PER_NODE": "2", "PET_NODE_RANK": "1",
                "PET_MASTER_ADDR": "genctr-pretrain-x-node-0-0.genctr-pretrain-x", "PET_MASTER_PORT": "29400"}
# Training Operator v1 with nprocPerNode: MASTER_ADDR/PORT unprefixed, WORLD_SIZE = nodes * procs
PYTORCHJOB_ENV = {"MASTER_ADDR": "genctr-pretrain-x-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "6",
                  "RANK": "2", "PET_NNODES": "3", "PET_NPROC_PER_NODE": "2", "PET_NODE_RANK": "2"}


def test_rendezvous_comes_from_either_operators_environment() -> None:
    tj = Rendezvous.from_env(TRAINJOB_ENV)
    assert (tj.nnodes, tj.nproc_per_node, tj.node_rank, tj.master_port) == (3, 2, 1, 29400)
    pj = Rendezvous.from_env(PYTORCHJOB_ENV)
    assert (pj.master_addr, pj.master_port, pj.node_rank) == ("genctr-pretrain-x-master-0", 23456, 2)
    with pytest.raises(ConfigError, match="PET_MASTER_ADDR or MASTER_ADDR is not set"):
        Rendezvous.from_env({k: v for k, v in PYTORCHJOB_ENV.items() if k != "MASTER_ADDR"})
    with pytest.raises(ConfigError, match="PET_NNODES must be an integer"):
        Rendezvous.from_env({**TRAINJOB_ENV, "PET_NNODES": "three"})


def test_the_node_runs_torchrun_on_genctr_train() -> None:
    cmd = train_command("finetune", Rendezvous.from_env(TRAINJOB_ENV), Path("/w/build"), Path("/w/model"),
                        Path("/w/pretrained"), ["--model", "backbone=dnn"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:8] == ["--nnodes=3", "--nproc-per-node=2", "--node-rank=1",
                        "--master-addr=genctr-pretrain-x-node-0-0.genctr-pretrain-x", "--master-port=29400"]
    assert cmd[8:] == ["-m", "genctr", "train", "finetune", "--build", "/w/build", "--out", "/w/model",
                       "--pretrained", "/w/pretrained", "--model", "backbone=dnn"]


def test_node_args_round_trip_through_the_node_parser() -> None:
    args = training_step.node_args("pretrain", "s3://b/r/train-jobs/j", "genctr",
                                   {"max_seq_len": 10, "negatives": "cs"}, {"lr": 0.001, "epochs": 1}, False)
    assert args[args.index("--") + 1:] == ["--method", "genctr", "--model", "max_seq_len=10", "--model",
                                           "negatives=cs", "--train", "lr=0.001", "--train", "epochs=1"]
    from genctr.cli.train import model_sets, train_sets

    rest = args[args.index("--") + 1:]
    assert model_sets("genctr", rest[3:6:2]) == {"max_seq_len": 10, "negatives": "cs"}  # what the CLI will read
    assert train_sets(rest[7::2]) == {"lr": 0.001, "epochs": 1}


def test_copy_tree_puts_the_completion_file_last(tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "vocab").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "vocab/item.parquet", "metrics.json"):
        (src / name).write_bytes(name.encode())
    fs = fsspec.filesystem("memory")
    order: list[str] = []
    real_open = fs.open

    def spy(path: str, mode: str = "rb", **kw: Any) -> Any:
        if "w" in mode:
            order.append(path.rsplit("/", 1)[-1])
        return real_open(path, mode, **kw)

    fs.open = spy  # type: ignore[method-assign]  # a spy on the real filesystem's method
    try:
        assert copy_tree(str(src), "memory://copy-test/model", last="config.json") == 4
    finally:
        del fs.open
    assert order[-1] == "config.json" and len(order) == 4
    back = tmp_path / "back"
    copy_tree("memory://copy-test/model", str(back))
    assert (back / "vocab" / "item.parquet").read_bytes() == b"vocab/item.parquet"
    with pytest.raises(ConfigError, match="has no files"):
        copy_tree("memory://copy-test/nothing", str(back))


def test_the_node_fails_when_training_fails_and_copies_nothing(tmp_path: Path) -> None:
    from tiny_build import write_tiny_build

    build = write_tiny_build(tmp_path / "build")
    copy_tree(str(build), "memory://node-fail/build")
    env = {**TRAINJOB_ENV, "PET_NNODES": "1", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "0",
           "PET_MASTER_ADDR": "127.0.0.1"}
    code = trainer_node.run_node("pretrain", "memory://node-fail/build", "memory://node-fail/model", "",
                                 tmp_path / "work", ["--method", "nosuch"], env=env)
    assert code != 0
    assert not fsspec.filesystem("memory").exists("/node-fail/model")


# ------------------------------------------------------------------------------ the components
def job_pods(cluster: StandInCluster, workdir: Path) -> Any:
    """The job's nodes, played in this process: node 0 runs the real node command (torchrun on
    ``genctr train``, one process) against the in-memory storage root the step staged into."""
    from conftest import free_port

    def on_create(body: dict[str, Any]) -> None:
        spec_ = body["spec"]
        container = spec_["trainer"] if "trainer" in spec_ else \
            spec_["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
        env = {"PET_NNODES": "1", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1",
               "PET_MASTER_PORT": str(free_port())}
        argv = ["--workdir", str(workdir / body["metadata"]["name"]), *container["args"]]
        code = trainer_node.main(argv, env)
        cluster.statuses = [conditions("Created", "Complete" if body["kind"] == "TrainJob" else "Succeeded")
                            if code == 0 else conditions("Created", "Failed", message=f"node 0 exited {code}")]

    return on_create


@pytest.mark.slow
def test_components_train_on_a_job_and_output_its_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kfp.dsl import Dataset, Metrics, Model
    from tiny_build import write_tiny_build

    import components

    build = write_tiny_build(tmp_path / "build", max_seq_len=8)
    cluster = StandInCluster()
    cluster.on_create = job_pods(cluster, tmp_path / "pods")
    monkeypatch.setattr(training_step, "kube_clients", lambda: (cluster.custom, cluster.core))
    monkeypatch.setattr(job_runner, "WaitConfig", lambda: WaitConfig(timeout_s=60, poll_s=0.01))
    root = "memory://genctr-e2e/prod"
    placement = {"image": "registry.example/genctr:cuda", "namespace": "team-a", "storage_secret": "genctr-storage"}
    common = {"max_seq_len": 8, "epochs": 1, "batch_size": 64, "seed": 0, "device": "cpu", "train_workers": 2,
              "storage_root": root, "job_placement": placement}
    pre = Model(name="pretrained", uri=str(tmp_path / "out" / "pretrained"), metadata={})
    pre_metrics = Metrics(name="m", uri=str(tmp_path / "out" / "pre_metrics"), metadata={})
    components.pretrain.python_func(build=Dataset(uri=str(build)), pretrained=pre, metrics=pre_metrics,
                                    method="genctr", trainer_api="trainjob", **common)
    assert (Path(pre.path) / "model.safetensors").is_file() and (Path(pre.path) / "config.json").is_file()
    job = pre.metadata["trainer_job"]
    assert job["kind"] == "TrainJob" and job["namespace"] == "team-a" and job["nodes"] == 2
    assert job["model_uri"] == f"{root}/train-jobs/{job['name']}/model"
    assert any(k.startswith("pretrain_") for k in pre_metrics.metadata)
    model = Model(name="model", uri=str(tmp_path / "out" / "model"), metadata={})
    metrics = Metrics(name="m2", uri=str(tmp_path / "out" / "metrics"), metadata={})
    components.finetune.python_func(build=Dataset(uri=str(build)), pretrained=pre, model=model, metrics=metrics,
                                    pretrain_method="genctr", backbone="dnn", transfer="share",
                                    trainer_api="pytorchjob", **common)
    assert set(metrics.metadata) == {"auc", "logloss", "gauc"}
    assert model.metadata["trainer_job"]["kind"] == "PyTorchJob" and model.metadata["test_auc"] == metrics.metadata[
        "auc"]
    (args, _), = [c for c in cluster.called("create_namespaced_custom_object") if c[0][1] == "v1"]
    assert args[4]["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    container = args[4]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "--pretrained-uri" in container["args"]  # the fine-tune job read the pretrained model from the root
    saved = json.loads((Path(model.path) / "config.json").read_text())
    assert saved["kind"]  # a whole artifact, as the gate and registry read it


def test_components_check_the_run_form_before_training(tmp_path: Path) -> None:
    from kfp.dsl import Dataset, Metrics, Model

    import components

    pre = Model(name="p", uri=str(tmp_path / "p"), metadata={})
    metrics = Metrics(name="m", uri=str(tmp_path / "m"), metadata={})
    for kwargs, needle in [({"train_workers": 0}, "train_workers must be an integer >= 1"),
                           ({"trainer_api": "tfjob"}, "trainer_api must be one of"),
                           ({"train_gpus_per_worker": -2}, "train_gpus_per_worker")]:
        with pytest.raises(ConfigError, match=needle):
            components.pretrain.python_func(build=Dataset(uri=str(tmp_path / "b")), pretrained=pre, metrics=metrics,
                                            method="none", **kwargs)
    with pytest.raises(ConfigError, match="storage root must be an object store"):
        training_step.train_step("pretrain", tmp_path / "b", tmp_path / "o", model={}, train={}, workers=2,
                                 storage_root=str(tmp_path / "root"), placement={"image": "img"})
    with pytest.raises(ConfigError, match="needs the job's placement"):
        training_step.train_step("pretrain", tmp_path / "b", tmp_path / "o", model={}, train={}, workers=2,
                                 storage_root="memory://x/y", placement=None)


def test_a_job_that_succeeds_without_a_model_is_an_artifact_error(tmp_path: Path) -> None:
    from tiny_build import write_tiny_build

    build = write_tiny_build(tmp_path / "build")
    cluster = StandInCluster([conditions("Complete")])  # "succeeds" but its node 0 never wrote a model
    with pytest.raises(ArtifactError, match="succeeded but left no model at memory://no-model/r/train-jobs/"):
        training_step.train_step("finetune", build, tmp_path / "out", model={}, train={}, workers=3,
                                 storage_root="memory://no-model/r",
                                 placement={"image": "img", "namespace": "genctr"},
                                 clients=(cluster.custom, cluster.core), wait=WaitConfig(timeout_s=1, poll_s=0.5))
    (args, _), = cluster.called("create_namespaced_custom_object")
    assert args[4]["spec"]["trainer"]["numNodes"] == 3
