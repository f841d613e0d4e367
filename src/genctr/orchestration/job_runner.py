"""Submit a Kubeflow training job, wait for it, and copy its pods' logs into this step's log.

The clients are shaped like ``kubernetes.client.CustomObjectsApi`` (create / get / delete of the
job) and ``kubernetes.client.CoreV1Api`` (list the job's pods by label, read each pod's log); a
contract test keeps the recording stand-in the tests use in line with the real classes' methods.
Every call here needs an RBAC verb the pipeline runner holds (``manifests/rbac-pipeline-runner.yaml``,
checked against these calls by ``tests/test_trainer_job.py``).

Status: a ``TrainJob`` is done when its ``Complete`` condition is ``True`` and failed when its
``Failed`` condition is; a ``PyTorchJob`` uses ``Succeeded`` / ``Failed`` in ``status.conditions``.
The wait polls (no watch: a watch needs another verb and reconnect handling, and a training job
changes state a handful of times in hours). A job that outlives the wait is deleted, so its GPUs
are not held by a job nobody reads any more.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genctr.errors import ConfigError, TrainingJobError, describe

log = logging.getLogger(__name__)
pod_log = logging.getLogger("genctr.orchestration.job_pods")  # the job's pods' lines, one logger to filter on


@dataclass(frozen=True)
class JobKind:
    """How one kind of training job is addressed, found and judged."""

    kind: str
    group: str
    version: str
    plural: str
    container: str  # the training container of every pod
    pod_label: str  # label whose value is the job's name on each of its pods
    done: str  # condition type that means the job succeeded
    failed: str = "Failed"


KINDS = {
    "TrainJob": JobKind("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs", container="node",
                        pod_label="jobset.sigs.k8s.io/jobset-name", done="Complete"),  # the JobSet is named as the job
    "PyTorchJob": JobKind("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs", container="pytorch",
                          pod_label="training.kubeflow.org/job-name", done="Succeeded"),
}


@dataclass(frozen=True)
class WaitConfig:
    """How long and how often the step looks at its job."""

    timeout_s: float = 86_400.0  # a day: longer than any training run this project's budgets allow
    poll_s: float = 30.0  # between status reads: a training job changes state a few times in hours
    log_tail_lines: int = 2_000  # last lines of each pod's log copied into the step's log

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.poll_s <= 0 or self.poll_s > self.timeout_s:
            raise ConfigError(f"wait: need 0 < poll_s ({self.poll_s}) <= timeout_s ({self.timeout_s})")
        if self.log_tail_lines < 1:
            raise ConfigError(f"wait: log_tail_lines must be >= 1, got {self.log_tail_lines}")


def kind_of(manifest: dict[str, Any]) -> JobKind:
    """The :class:`JobKind` of a rendered manifest (checked against its apiVersion)."""
    k = KINDS.get(str(manifest.get("kind")))
    if k is None or manifest.get("apiVersion") != f"{k.group}/{k.version}":
        raise ConfigError(f"not a training job this step can run: apiVersion {describe(manifest.get('apiVersion'))} "
                          f"kind {describe(manifest.get('kind'))}; expected one of "
                          f"{[f'{v.group}/{v.version} {v.kind}' for v in KINDS.values()]}")
    return k


def job_state(kind: JobKind, obj: dict[str, Any]) -> tuple[str, str]:
    """(``succeeded`` | ``failed`` | the latest true condition's type, or ``Pending``; its reason: message)."""
    conditions = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    for c in conditions:
        if c.get("type") == kind.failed:
            return "failed", _why(c)
    for c in conditions:
        if c.get("type") == kind.done:
            return "succeeded", _why(c)
    return (conditions[-1].get("type") or "Pending", _why(conditions[-1])) if conditions else ("Pending", "")


def run_job(manifest: dict[str, Any], custom_api: Any, core_api: Any, wait: WaitConfig | None = None, *,
            sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Create the job (or find it, when a retry of this step already created it), poll until it
    succeeds, fails or ``wait.timeout_s`` passes, log its pods' logs, and return its last object.

    Raises :class:`TrainingJobError` naming the job with the failure message, or the timeout.
    """
    wait = wait or WaitConfig()
    kind = kind_of(manifest)
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    where = f"{kind.kind} {namespace}/{name}"
    submit(manifest, custom_api, kind)
    deadline = clock() + wait.timeout_s
    seen = ""
    while True:
        obj = _call(where, "read", custom_api.get_namespaced_custom_object,
                    kind.group, kind.version, namespace, kind.plural, name)
        state, why = job_state(kind, obj)
        if state != seen:
            log.info("%s: %s%s", where, state, f" ({why})" if why else "")
            seen = state
        if state in ("succeeded", "failed"):
            break
        if clock() >= deadline:
            surface_logs(core_api, kind, name, namespace, wait.log_tail_lines)
            _call(where, "delete", custom_api.delete_namespaced_custom_object,
                  kind.group, kind.version, namespace, kind.plural, name)
            raise TrainingJobError(f"{where} did not finish within {wait.timeout_s:g} s (last state {state}); "
                                   "it was deleted to release its nodes. Its pods' logs are above.")
        sleep(wait.poll_s)
    surface_logs(core_api, kind, name, namespace, wait.log_tail_lines)
    if state == "failed":
        raise TrainingJobError(f"{where} failed: {why or 'no message'}. Its pods' logs are above; "
                               f"kubectl -n {namespace} describe {kind.plural} {name} shows its events. A retry "
                               f"of this step waits for the same job: delete it first (kubectl -n {namespace} "
                               f"delete {kind.plural} {name}).")
    return obj


def submit(manifest: dict[str, Any], custom_api: Any, kind: JobKind) -> None:
    """Create the job; an existing one of the same name (this task's earlier attempt) is adopted."""
    from kubernetes.client.rest import ApiException

    meta = manifest["metadata"]
    where = f"{kind.kind} {meta['namespace']}/{meta['name']}"
    try:
        custom_api.create_namespaced_custom_object(kind.group, kind.version, meta["namespace"], kind.plural, manifest)
    except ApiException as exc:
        if exc.status == 409:  # the name derives from this task's output: an earlier attempt's job
            log.info("%s exists already (an earlier attempt of this step): waiting for it", where)
            return
        raise _api_error(where, "create", exc) from None
    log.info("%s created: %d node(s)", where, _nodes(manifest))


def surface_logs(core_api: Any, kind: JobKind, name: str, namespace: str, tail_lines: int) -> int:
    """Copy the last ``tail_lines`` of every pod's log into this step's log; return the pod count.

    A pod whose log cannot be read is a warning: the job's outcome, not its logs, decides the step.
    """
    from kubernetes.client.rest import ApiException

    try:
        pods = core_api.list_namespaced_pod(namespace, label_selector=f"{kind.pod_label}={name}")
    except ApiException as exc:
        log.warning("cannot list the pods of %s %s/%s: %s", kind.kind, namespace, name, _reason(exc))
        return 0
    names = sorted(p.metadata.name for p in pods.items)
    for pod in names:
        try:
            text = core_api.read_namespaced_pod_log(name=pod, namespace=namespace, container=kind.container,
                                                    tail_lines=tail_lines)
        except ApiException as exc:
            log.warning("cannot read the log of pod %s: %s", pod, _reason(exc))
            continue
        pod_log.info("----- pod %s (last %d lines) -----", pod, tail_lines)
        for line in (text or "").splitlines():
            pod_log.info("[%s] %s", pod, line)
    if not names:
        log.warning("%s %s/%s has no pods (label %s=%s): nothing to show", kind.kind, namespace, name,
                    kind.pod_label, name)
    return len(names)


def _call(where: str, what: str, method: Callable[..., Any], *args: Any) -> Any:
    from kubernetes.client.rest import ApiException

    try:
        return method(*args)
    except ApiException as exc:
        raise _api_error(where, what, exc) from None


def _api_error(where: str, what: str, exc: Any) -> TrainingJobError:
    hint = {403: "the pipeline runner's ServiceAccount lacks the permission: apply manifests/rbac-pipeline-runner.yaml "
                 "in the run's namespace",
            404: "is the operator installed? (kubectl get crd trainjobs.trainer.kubeflow.org / "
                 "pytorchjobs.kubeflow.org)" if what == "create" else "it was deleted meanwhile",
            401: "the pod's ServiceAccount token was rejected"}.get(exc.status, "")
    return TrainingJobError(f"cannot {what} {where}: HTTP {exc.status} {_reason(exc)}" + (f"; {hint}" if hint else ""))


def _reason(exc: Any) -> str:
    return describe(f"{exc.reason or ''} {exc.body or ''}".strip(), 300, raw=True)


def _why(condition: dict[str, Any]) -> str:
    return ": ".join(str(x) for x in (condition.get("reason"), condition.get("message")) if x)


def _nodes(manifest: dict[str, Any]) -> int:
    spec = manifest["spec"]
    if "trainer" in spec:
        return int(spec["trainer"]["numNodes"])
    return sum(int(r["replicas"]) for r in spec["pytorchReplicaSpecs"].values())


__all__ = ["KINDS", "JobKind", "WaitConfig", "job_state", "kind_of", "run_job", "submit", "surface_logs"]
