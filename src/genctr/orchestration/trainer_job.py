"""Kubeflow training-job manifests for a distributed training step, rendered from code.

Two kinds, one per generation of Kubeflow's training operator (plain dicts, the JSON the API
server receives; :mod:`genctr.orchestration.job_runner` submits them through
``kubernetes.client.CustomObjectsApi``):

* ``TrainJob`` — ``trainer.kubeflow.org/v1alpha1``, Kubeflow Trainer v2. Field names as in
  ``kubeflow-trainer-api`` 2.3 (the API models the Kubeflow SDK ``kubeflow`` 0.5 ships and speaks).
  ``spec.runtimeRef`` names a ClusterTrainingRuntime (``torch-distributed`` by default); its torch
  plugin sets ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
  ``PET_MASTER_PORT`` in each node's container (named ``node``). ``spec.trainer`` carries numNodes,
  numProcPerNode, resourcesPerNode, image, command, args and env. GPU node selectors and
  tolerations go into ``spec.runtimePatches`` (Trainer v2.3's API, which replaced
  ``podTemplateOverrides``); they are rendered only when configured, so a job without them is also
  accepted by Trainer v2.0-v2.2.
* ``PyTorchJob`` — ``kubeflow.org/v1``, Training Operator v1.8/v1.9 (field names as in the
  ``kubeflow-training`` 1.9 SDK's models). One ``Master`` and ``numNodes - 1`` ``Worker`` replicas,
  container ``pytorch``, ``spec.nprocPerNode``; the operator sets ``MASTER_ADDR``, ``MASTER_PORT``,
  ``WORLD_SIZE``, ``RANK``, ``PET_NNODES``, ``PET_NPROC_PER_NODE`` and ``PET_NODE_RANK``.

Both run one container command on every node, ``python -m genctr.orchestration.trainer_node``
(:mod:`genctr.orchestration.trainer_node`): it copies the build from the storage root, launches
``torchrun ... -m genctr train <stage>`` with the node's rendezvous from those variables, and node
0 copies the model artifact back to the storage root. Object-store credentials reach the pods as
optional ``secretKeyRef`` env of the storage Secret, the same keys the pipeline's steps get.

Restarts: a failed rank leaves the others' collectives broken and a lone restarted container
cannot rejoin a static torchrun rendezvous, so pods never restart in place (``restartPolicy:
Never``, ``backoffLimit: 0``): the job fails as a whole, its failed pods' logs are kept (the
PyTorchJob deletes only still-running pods, ``cleanPodPolicy: Running``), and the pipeline step
reports it.
"""
from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from genctr.errors import ConfigError, describe

APIS = ("trainjob", "pytorchjob")  # the run form's trainer_api values
TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"
PYTORCHJOB_API = "kubeflow.org/v1"
TRAINJOB_CONTAINER = "node"  # the torch runtime's trainer container (replicatedJob "node")
PYTORCHJOB_CONTAINER = "pytorch"  # the container name the Training Operator requires
NODE_COMMAND = ("python", "-m", "genctr.orchestration.trainer_node")
# Keys of the storage Secret (manifests/storage-secret.yaml); pipelines.placement.STORAGE_SECRET_KEYS
# gives the pipeline's steps the same ones (a test keeps the two equal).
STORAGE_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
RUNTIME_PATCH_MANAGER = "genctr"  # owner of the runtimePatches entry this module writes
LABELS = {"app.kubernetes.io/part-of": "genctr", "app.kubernetes.io/component": "training"}
# Kubeflow profile namespaces inject an Istio sidecar, which never exits and so keeps a finished
# training pod Running; PyTorchJob pods opt out (a TrainJob's pods take this from their runtime).
NO_SIDECAR = {"sidecar.istio.io/inject": "false"}
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1035 label: TrainJob names are validated so
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class JobPlacement:
    """Where a training job's pods run: fixed when the pipeline is compiled, like the step's own pod."""

    image: str  # the training image (container-images/Dockerfile.cuda): genctr and torch installed
    cpu: str = "4"  # per-node request (data loading happens on the device)
    memory: str = "16Gi"  # per-node request
    accelerator: str = "nvidia.com/gpu"  # resource name of the GPU device plugin
    node_selector: dict[str, str] = field(default_factory=dict)  # e.g. {"pool": "gpu"}; {} = anywhere
    # each {"key", "operator" (Exists | Equal), "value" (Equal only), "effect"}; () = none
    tolerations: tuple[dict[str, str], ...] = ()
    storage_secret: str = ""  # Secret with the object-store credentials ('' = the pods' own identity)
    runtime: str = "torch-distributed"  # ClusterTrainingRuntime a TrainJob references
    namespace: str = ""  # '' = the namespace of the pod submitting the job (the pipeline run's)

    def __post_init__(self) -> None:
        if not self.image.strip():
            raise ConfigError("job placement: image must name the training image")
        for t in self.tolerations:
            if not t.get("key") or t.get("effect", "NoSchedule") not in _EFFECTS or \
                    t.get("operator", "Exists") not in ("Exists", "Equal"):
                raise ConfigError(f"job placement: toleration {describe(t)} needs a key, operator Exists | Equal "
                                  f"and an effect in {_EFFECTS}")
        if not self.runtime.strip():
            raise ConfigError("job placement: runtime must name a ClusterTrainingRuntime, e.g. torch-distributed")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> JobPlacement:
        """From the pipeline's ``job_placement`` mapping; an unknown key is an error."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"job placement: unknown key(s) {unknown}; known: {sorted(known)}")
        kw = dict(values)
        if "tolerations" in kw:
            kw["tolerations"] = tuple(dict(t) for t in kw["tolerations"])
        if "node_selector" in kw:
            kw["node_selector"] = dict(kw["node_selector"])
        return cls(**kw)


@dataclass(frozen=True)
class TrainerJobSpec:
    """One distributed training job: how many nodes, what each runs, where."""

    name: str  # the job's name: an RFC 1035 label of <= 63 characters (see job_name)
    namespace: str  # where the job and its pods live
    args: tuple[str, ...]  # arguments of the node command (genctr.orchestration.trainer_node)
    placement: JobPlacement
    api: str = "trainjob"  # trainjob (Kubeflow Trainer v2) | pytorchjob (Training Operator v1)
    workers: int = 2  # nodes (pods); each runs torchrun with gpus_per_worker processes
    gpus_per_worker: int = 0  # 0 = CPU nodes, one process each (gloo)

    def __post_init__(self) -> None:
        if self.api not in APIS:
            raise ConfigError(f"trainer_api must be one of {APIS}, got {describe(self.api)}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"train_workers must be an integer >= 1, got {describe(self.workers)}")
        if isinstance(self.gpus_per_worker, bool) or not isinstance(self.gpus_per_worker, int) or \
                self.gpus_per_worker < 0:
            raise ConfigError(f"train_gpus_per_worker must be an integer >= 0, got {describe(self.gpus_per_worker)}")
        if not _NAME.fullmatch(self.name):
            raise ConfigError(f"job name {describe(self.name)} must be an RFC 1035 label (a-z, 0-9, '-', "
                              "starting with a letter, at most 63 characters)")
        if not self.namespace:
            raise ConfigError("the training job needs a namespace")

    @property
    def procs_per_node(self) -> int:
        """torchrun processes per node: one per GPU, or one on a CPU node."""
        return max(1, self.gpus_per_worker)


def job_name(stage: str, key: str) -> str:
    """``genctr-<stage>-<12 hex>`` from ``key`` (the step's output URI): a rerun of the same task
    (a pod retry) finds its own job instead of starting a second one."""
    return f"genctr-{stage}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def render(spec: TrainerJobSpec) -> dict[str, Any]:
    """The job manifest of ``spec.api``."""
    return render_trainjob(spec) if spec.api == "trainjob" else render_pytorchjob(spec)


def render_trainjob(spec: TrainerJobSpec) -> dict[str, Any]:
    """A Kubeflow Trainer v2 ``TrainJob`` on the placement's ClusterTrainingRuntime."""
    p = spec.placement
    trainer = {"numNodes": spec.workers, "numProcPerNode": spec.procs_per_node, "image": p.image,
               "command": list(NODE_COMMAND), "args": list(spec.args), "env": _env(p),
               "resourcesPerNode": _resources(spec)}
    body: dict[str, Any] = {
        "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime", "name": p.runtime},
        "trainer": trainer,
    }
    pod = _scheduling(p)
    if pod:  # Trainer v2.3: pod-spec fields of the runtime's "node" job are patched, keyed by manager
        body["runtimePatches"] = [{"manager": RUNTIME_PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
            "replicatedJobs": [{"name": TRAINJOB_CONTAINER,
                                "template": {"spec": {"template": {"spec": pod}}}}]}}}}]
    return {"apiVersion": TRAINJOB_API, "kind": "TrainJob", "metadata": _metadata(spec), "spec": body}


def render_pytorchjob(spec: TrainerJobSpec) -> dict[str, Any]:
    """A Training Operator v1 ``PyTorchJob``: node 0 is the Master, the others Workers."""
    p = spec.placement
    container = {"name": PYTORCHJOB_CONTAINER, "image": p.image, "command": list(NODE_COMMAND),
                 "args": list(spec.args), "env": _env(p), "resources": _resources(spec)}
    template = {"metadata": {"labels": dict(LABELS), "annotations": dict(NO_SIDECAR)},
                "spec": {"containers": [container], **_scheduling(p)}}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if spec.workers > 1:
        replicas["Worker"] = {"replicas": spec.workers - 1, "restartPolicy": "Never",
                              "template": copy.deepcopy(template)}  # its own object: the two are edited apart
    return {"apiVersion": PYTORCHJOB_API, "kind": "PyTorchJob", "metadata": _metadata(spec),
            "spec": {"nprocPerNode": str(spec.procs_per_node),  # a string in the v1 API ("auto" | "gpu" | N)
                     "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 0},
                     "pytorchReplicaSpecs": replicas}}


def _metadata(spec: TrainerJobSpec) -> dict[str, Any]:
    return {"name": spec.name, "namespace": spec.namespace, "labels": dict(LABELS)}


def _env(p: JobPlacement) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]  # logs reach the pod log at once
    if p.storage_secret:  # optional: a key the Secret lacks is left unset, as for the pipeline's steps
        env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": p.storage_secret, "key": k, "optional": True}}}
                for k in STORAGE_SECRET_KEYS]
    return env


def _resources(spec: TrainerJobSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": {"cpu": spec.placement.cpu, "memory": spec.placement.memory}}
    if spec.gpus_per_worker:  # an extended resource: the limit alone sets the request too
        out["limits"] = {spec.placement.accelerator: str(spec.gpus_per_worker)}
    return out


def _scheduling(p: JobPlacement) -> dict[str, Any]:
    pod: dict[str, Any] = {}
    if p.node_selector:
        pod["nodeSelector"] = dict(p.node_selector)
    if p.tolerations:
        pod["tolerations"] = [dict(t) for t in p.tolerations]
    return pod


__all__ = ["APIS", "JobPlacement", "TrainerJobSpec", "job_name", "render", "render_pytorchjob", "render_trainjob"]
