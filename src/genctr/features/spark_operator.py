"""Submit a SparkApplication through the Kubernetes API and wait until the Spark Operator finishes it.

``api`` is a ``kubernetes.client.CustomObjectsApi`` (or anything with its
``create_namespaced_custom_object`` / ``get_namespaced_custom_object``); ``core`` optionally a
``CoreV1Api``, used to quote the end of the driver's log when the application fails (the
operator's own ``errorMessage`` usually says only "driver container failed with ExitCode: 2").

The object is created with ``metadata.generateName`` (its name plus ``-``), so a retried
pipeline step never collides with the application of an earlier attempt. States (the
operator's ``status.applicationState.state``): COMPLETED returns; FAILED and SUBMISSION_FAILED
raise :class:`SparkApplicationFailed` with the operator's message and the driver's log tail;
anything else (new, SUBMITTED, RUNNING, PENDING_RERUN, SUCCEEDING, FAILING, UNKNOWN) is waited
on until ``timeout_s``. The application is left in place either way: the operator's
``timeToLiveSeconds`` removes it, and a failed one stays for ``kubectl describe``.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genctr.errors import ConfigError, GenCTRError, describe

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
DONE = "COMPLETED"
FAILED = ("FAILED", "SUBMISSION_FAILED")
LOG_TAIL_LINES = 20
POLL_S = 10.0  # seconds between status reads (read at call time)
TIMEOUT_S = 6 * 3600.0  # the longest a feature build may take before the step gives up
RETRY_STATUSES = (429, 500, 502, 503, 504)  # API-server hiccups: polled again, not fatal


class SparkApplicationFailed(GenCTRError):
    """The Spark Operator reports the application FAILED (or it never finished in time)."""

    def __init__(self, message: str, run: SparkRun) -> None:
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class SparkRun:
    """Where an application ended up."""

    name: str
    namespace: str
    state: str
    error_message: str = ""
    driver_pod: str = ""
    seconds: float = 0.0


def submit(api: Any, manifest: dict[str, Any]) -> str:
    """Create the application (under a generated name) and return that name."""
    from kubernetes.client.rest import ApiException

    body = copy.deepcopy(manifest)
    meta = body.setdefault("metadata", {})
    namespace = meta.get("namespace") or "default"
    base = meta.pop("name", None) or meta.get("generateName", "genctr-features-").rstrip("-")
    meta["generateName"] = f"{base}-"
    try:
        created = api.create_namespaced_custom_object(group=GROUP, version=VERSION, namespace=namespace,
                                                      plural=PLURAL, body=body)
    except ApiException as exc:
        raise _api_error(exc, "create", namespace) from None
    name = str(created["metadata"]["name"])
    log.info("submitted SparkApplication %s/%s", namespace, name)
    return name


def wait(api: Any, name: str, namespace: str, *, timeout_s: float | None = None, poll_s: float | None = None,
         core: Any = None, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> SparkRun:
    """Poll until the application is COMPLETED (returned) or FAILED (raised); see the module docstring."""
    from kubernetes.client.rest import ApiException

    timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
    poll_s = POLL_S if poll_s is None else poll_s
    start = clock()
    state, last = "", ""
    while True:
        try:
            obj = api.get_namespaced_custom_object(group=GROUP, version=VERSION, namespace=namespace,
                                                   plural=PLURAL, name=name)
        except ApiException as exc:
            if exc.status not in RETRY_STATUSES:
                raise _api_error(exc, "get", namespace, name) from None
            log.warning("SparkApplication %s/%s: API server answered %s; polling again", namespace, name, exc.status)
            obj = None
        if obj is not None:
            status = obj.get("status") or {}
            app_state = status.get("applicationState") or {}
            state = str(app_state.get("state") or "")
            run = SparkRun(name, namespace, state or "NEW", str(app_state.get("errorMessage") or ""),
                           str((status.get("driverInfo") or {}).get("podName") or ""), clock() - start)
            if state != last:
                log.info("SparkApplication %s/%s: %s", namespace, name, run.state)
                last = state
            if state == DONE:
                return run
            if state in FAILED:
                raise SparkApplicationFailed(_failure_message(run, core), run)
        if clock() - start >= timeout_s:
            run = SparkRun(name, namespace, state or "NEW", seconds=clock() - start)
            raise SparkApplicationFailed(
                f"SparkApplication {namespace}/{name} did not finish within {timeout_s:g} s (state {run.state}); "
                f"see `kubectl -n {namespace} describe sparkapplication {name}`; delete it with "
                f"`kubectl -n {namespace} delete sparkapplication {name}`", run)
        sleep(poll_s)


def run_application(manifest: dict[str, Any], api: Any = None, *, core: Any = None, timeout_s: float | None = None,
                    poll_s: float | None = None, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> SparkRun:
    """:func:`submit` then :func:`wait`; ``api`` / ``core`` default to this pod's in-cluster clients."""
    if api is None:
        api, core = kubernetes_clients()
    name = submit(api, manifest)
    namespace = manifest.get("metadata", {}).get("namespace") or "default"
    return wait(api, name, namespace, timeout_s=timeout_s, poll_s=poll_s, core=core, sleep=sleep, clock=clock)


def kubernetes_clients() -> tuple[Any, Any]:
    """(CustomObjectsApi, CoreV1Api) from the pod's service account, else from ~/.kube/config."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise ConfigError(f"no Kubernetes credentials: not in a pod and no usable kubeconfig ({exc}); "
                              "spark_submit=operator needs a cluster with the Spark Operator") from None
    return client.CustomObjectsApi(), client.CoreV1Api()


def _failure_message(run: SparkRun, core: Any) -> str:
    text = (f"SparkApplication {run.namespace}/{run.name} {run.state}: "
            f"{run.error_message or 'the operator gave no message'}")
    if run.driver_pod and core is not None:
        tail = _driver_log_tail(core, run)
        if tail:
            text += f"\n--- last lines of driver pod {run.driver_pod} ---\n{tail}"
    elif run.driver_pod:
        text += f"; driver log: `kubectl -n {run.namespace} logs {run.driver_pod}`"
    return text


def _driver_log_tail(core: Any, run: SparkRun) -> str:
    from kubernetes.client.rest import ApiException

    try:
        text = core.read_namespaced_pod_log(name=run.driver_pod, namespace=run.namespace, tail_lines=LOG_TAIL_LINES)
    except ApiException as exc:  # the pod may be gone already; the operator's message still stands
        log.warning("cannot read the log of driver pod %s: %s %s", run.driver_pod, exc.status, exc.reason)
        return ""
    return str(text).rstrip()


def _api_error(exc: Any, verb: str, namespace: str, name: str = "") -> GenCTRError:
    what = f"sparkapplications.{GROUP}" + (f" {name}" if name else "")
    if exc.status == 403:
        return ConfigError(f"may not {verb} {what} in namespace {namespace}: grant this step's service account "
                           f"'{verb}' on {GROUP}/{PLURAL} (a Role bound to the pipeline runner)")
    if exc.status == 404 and verb == "create":
        return ConfigError(f"the cluster has no {PLURAL}.{GROUP} resource in namespace {namespace}: install the "
                           "Kubeflow Spark Operator (its CRDs) or check the namespace")
    if exc.status == 404:
        return GenCTRError(f"SparkApplication {namespace}/{name} disappeared before it finished (deleted?)")
    if exc.status == 422:
        return ConfigError(f"the API server refused the SparkApplication: {describe(str(exc.body), 400, raw=True)}")
    return GenCTRError(f"Kubernetes API: {verb} {what} in {namespace} failed: {exc.status} {exc.reason}")

