"""A recording stand-in for the two Kubernetes API clients a training job needs.

No Kubernetes API server (nor a Kubeflow training operator) can run here, so the tests talk to
:class:`StandInCluster`: ``.custom`` has the ``kubernetes.client.CustomObjectsApi`` methods genctr
calls, ``.core`` the ``kubernetes.client.CoreV1Api`` ones, with the same parameter names (a
contract test in ``tests/test_trainer_job.py`` compares them with the real classes). Every call is
recorded. A created job gets pods named and labelled as its operator names and labels them
(Trainer v2: a JobSet named as the TrainJob, replicated job ``node``; Training Operator v1:
``<job>-master-0`` and ``<job>-worker-<i>``), and each read of the job plays the next status of a
scripted sequence (the last one repeats), so a test scripts running -> succeeded, running ->
failed with a message, or a job that never finishes.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes.client import V1Container, V1ObjectMeta, V1Pod, V1PodList, V1PodSpec
from kubernetes.client.rest import ApiException

# (real class, method) pairs the stand-in implements; the contract test walks these
METHODS = {
    "CustomObjectsApi": ("create_namespaced_custom_object", "get_namespaced_custom_object",
                         "delete_namespaced_custom_object"),
    "CoreV1Api": ("list_namespaced_pod", "read_namespaced_pod_log"),
}
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
PYTORCH_LABEL = "training.kubeflow.org/job-name"


def conditions(*types: str, message: str = "", reason: str = "") -> dict[str, Any]:
    """A status whose conditions ``types`` are all ``True``; the last one carries ``reason``/``message``."""
    out = [{"type": t, "status": "True"} for t in types]
    if out and (message or reason):
        out[-1].update({k: v for k, v in (("message", message), ("reason", reason)) if v})
    return {"conditions": out}


class StandInCluster:
    """One namespace-aware store of training jobs and their pods, shared by ``.custom`` and ``.core``."""

    def __init__(self, statuses: Sequence[dict[str, Any]] = ({},),
                 pod_logs: Callable[[str, int], str] | None = None,
                 on_create: Callable[[dict[str, Any]], None] | None = None,
                 create_error: ApiException | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.jobs: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # (group, plural, namespace, name) -> object
        self.pods: list[V1Pod] = []
        self.rank: dict[str, int] = {}  # pod name -> node rank (Master / node 0 is 0)
        self.statuses = list(statuses) or [{}]
        self.reads = 0  # job reads so far: the index into ``statuses``
        self.pod_logs = pod_logs or (lambda pod, node: f"{pod}: training\n{pod}: done")
        self.on_create = on_create  # what the job's pods do, e.g. write the model to the storage root
        self.create_error = create_error
        self.custom = RecordingCustomObjectsApi(self)
        self.core = RecordingCoreV1Api(self)

    def record(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((method, args, kwargs))

    def called(self, method: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for m, a, k in self.calls if m == method]

    def add_pod(self, name: str, namespace: str, labels: dict[str, str], container: str, rank: int = 0) -> None:
        self.rank[name] = rank
        self.pods.append(V1Pod(metadata=V1ObjectMeta(name=name, namespace=namespace, labels=labels),
                               spec=V1PodSpec(containers=[V1Container(name=container)])))

    def _start(self, body: dict[str, Any]) -> None:
        """The operator's part: the pods of a new job, named and labelled as the operator does."""
        name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
        if body["kind"] == "TrainJob":
            for i in range(int(body["spec"]["trainer"]["numNodes"])):
                self.add_pod(f"{name}-node-0-{i}-x7k2p", ns, {JOBSET_LABEL: name,
                             "jobset.sigs.k8s.io/replicatedjob-name": "node",
                             "batch.kubernetes.io/job-completion-index": str(i)}, "node", rank=i)
        else:
            for role, spec in body["spec"]["pytorchReplicaSpecs"].items():
                for i in range(int(spec["replicas"])):  # RANK: the Master is 0, Worker i is i + 1
                    self.add_pod(f"{name}-{role.lower()}-{i}", ns, {PYTORCH_LABEL: name,
                                 "training.kubeflow.org/replica-type": role.lower()}, "pytorch",
                                 rank=i + (role == "Worker"))


class RecordingCustomObjectsApi:
    """The ``kubernetes.client.CustomObjectsApi`` methods genctr's job runner calls."""

    def __init__(self, cluster: StandInCluster) -> None:
        self.cluster = cluster

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, body: Any,
                                        **kwargs: Any) -> Any:
        c = self.cluster
        c.record("create_namespaced_custom_object", group, version, namespace, plural, body)
        if c.create_error is not None:
            raise c.create_error
        key = (group, plural, namespace, body["metadata"]["name"])
        if key in c.jobs:
            raise ApiException(status=409, reason="Conflict")
        assert body["metadata"]["namespace"] == namespace and body["apiVersion"] == f"{group}/{version}"
        c.jobs[key] = copy.deepcopy(body)
        c._start(body)
        if c.on_create is not None:
            c.on_create(copy.deepcopy(body))
        return copy.deepcopy(body)

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                     **kwargs: Any) -> Any:
        c = self.cluster
        c.record("get_namespaced_custom_object", group, version, namespace, plural, name)
        obj = c.jobs.get((group, plural, namespace, name))
        if obj is None:
            raise ApiException(status=404, reason="Not Found")
        status = c.statuses[min(c.reads, len(c.statuses) - 1)]
        c.reads += 1
        return {**copy.deepcopy(obj), "status": copy.deepcopy(status)}

    def delete_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                        **kwargs: Any) -> Any:
        c = self.cluster
        c.record("delete_namespaced_custom_object", group, version, namespace, plural, name)
        if c.jobs.pop((group, plural, namespace, name), None) is None:
            raise ApiException(status=404, reason="Not Found")
        c.pods = [p for p in c.pods if name not in (p.metadata.labels or {}).values()]  # owned pods go with it
        return {"kind": "Status", "status": "Success"}


class RecordingCoreV1Api:
    """The ``kubernetes.client.CoreV1Api`` methods genctr's job runner calls."""

    def __init__(self, cluster: StandInCluster) -> None:
        self.cluster = cluster

    def list_namespaced_pod(self, namespace: str, *, label_selector: str = "", **kwargs: Any) -> V1PodList:
        c = self.cluster
        c.record("list_namespaced_pod", namespace, label_selector=label_selector)
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)  # equality selectors only
        items = [p for p in c.pods if p.metadata.namespace == namespace
                 and all((p.metadata.labels or {}).get(k) == v for k, v in wanted.items())]
        return V1PodList(items=copy.deepcopy(items))

    def read_namespaced_pod_log(self, name: str, namespace: str, *, container: str | None = None,
                                tail_lines: int | None = None, **kwargs: Any) -> str:
        c = self.cluster
        c.record("read_namespaced_pod_log", name, namespace, container=container, tail_lines=tail_lines)
        pod = next((p for p in c.pods if p.metadata.name == name and p.metadata.namespace == namespace), None)
        if pod is None:
            raise ApiException(status=404, reason="Not Found")
        names = [x.name for x in pod.spec.containers]
        if container not in names:  # the API server's answer to a wrong container name
            raise ApiException(status=400, reason=f"container {container} is not valid for pod {name}")
        lines = c.pod_logs(name, c.rank[name]).splitlines()
        return "\n".join(lines[-tail_lines:] if tail_lines else lines)
