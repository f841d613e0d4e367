"""A recording stand-in of the Kubernetes API as the Spark Operator's users see it.

No Kubernetes cluster or Spark Operator can run here, so ``genctr.features.spark_operator`` is
tested against this class: the methods of ``kubernetes.client.CustomObjectsApi`` it calls
(``create_namespaced_custom_object``, ``get_namespaced_custom_object``) and of ``CoreV1Api``
(``read_namespaced_pod_log``), with the real clients' parameter names (a contract test compares
them with ``inspect.signature``), raising the real ``kubernetes.client.rest.ApiException``.

It behaves like the API server and the operator where genctr relies on it: ``generateName``
gets a random five-character suffix, a taken name is a 409, an unknown group/plural a 404; each
``get`` moves the application one step along ``script`` (the operator's states), and the last
step is the outcome. ``driver`` (optional) plays the driver pod when the application is created:
it receives the created object and either returns (COMPLETED) or raises (FAILED, the exception's
text becoming the driver's log and the operator's errorMessage its usual one-liner).
"""
from __future__ import annotations

import copy
import random
import string
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes.client.rest import ApiException

GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
METHODS = {"CustomObjectsApi": ("create_namespaced_custom_object", "get_namespaced_custom_object"),
           "CoreV1Api": ("read_namespaced_pod_log",)}
RUNNING = ("", "SUBMITTED", "RUNNING")  # what the operator reports while a driver runs


class RecordingSparkOperator:
    """CustomObjectsApi (sparkapplications) + CoreV1Api (pod logs) in memory; ``calls`` records each call."""

    def __init__(self, script: Sequence[str] = (*RUNNING, "COMPLETED"), *, error_message: str = "",
                 driver: Callable[[dict[str, Any]], None] | None = None,
                 fail_gets: Sequence[int] = ()) -> None:
        self.script = list(script)
        self.error_message = error_message
        self.driver = driver
        self.fail_gets = list(fail_gets)  # HTTP statuses the next gets answer with, in order
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self._steps: dict[tuple[str, str], int] = {}

    def called(self, method: str) -> list[dict[str, Any]]:
        return [kw for m, kw in self.calls if m == method]

    # ------------------------------------------------------------------ CustomObjectsApi
    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, body: Any,
                                        **kwargs: Any) -> Any:
        self.calls.append(("create_namespaced_custom_object", {"group": group, "version": version,
                                                               "namespace": namespace, "plural": plural,
                                                               "body": copy.deepcopy(body)}))
        self._check_kind(group, version, plural)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiException(status=422, reason="metadata.name or generateName is required")
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits,
                                                                          k=5))
        key = (namespace, meta["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        meta["namespace"] = namespace
        obj["status"] = {}
        self.objects[key] = obj
        self._steps[key] = 0
        outcome = self.script[-1]
        if self.driver is not None:  # the driver pod runs the application now; its result is the outcome
            try:
                self.driver(copy.deepcopy(obj))
                outcome = "COMPLETED"
            except Exception as exc:  # the driver's failure, whatever it is, becomes the app's FAILED state
                self.logs[(namespace, f"{meta['name']}-driver")] = "".join(traceback.format_exception(exc))
                self.error_message = "driver container failed with ExitCode: 1, Reason: Error"
                outcome = "FAILED"
        self.script = [*self.script[:-1], outcome]
        return copy.deepcopy(obj)

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                     **kwargs: Any) -> Any:
        self.calls.append(("get_namespaced_custom_object", {"group": group, "version": version,
                                                            "namespace": namespace, "plural": plural, "name": name}))
        self._check_kind(group, version, plural)
        if self.fail_gets:
            raise ApiException(status=self.fail_gets.pop(0), reason="injected")
        key = (namespace, name)
        if key not in self.objects:
            raise ApiException(status=404, reason="NotFound")
        step = min(self._steps[key], len(self.script) - 1)
        self._steps[key] += 1
        state = self.script[step]
        obj = self.objects[key]
        obj["status"] = {"applicationState": {"state": state}, "driverInfo": {"podName": f"{name}-driver"}}
        if state in ("FAILED", "SUBMISSION_FAILED"):
            obj["status"]["applicationState"]["errorMessage"] = self.error_message
        return copy.deepcopy(obj)

    # ------------------------------------------------------------------ CoreV1Api
    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> str:
        self.calls.append(("read_namespaced_pod_log", {"name": name, "namespace": namespace, **kwargs}))
        if (namespace, name) not in self.logs:
            raise ApiException(status=404, reason="NotFound")
        lines = self.logs[(namespace, name)].splitlines()
        tail = kwargs.get("tail_lines")
        return "\n".join(lines[-tail:] if tail else lines)

    @staticmethod
    def _check_kind(group: str, version: str, plural: str) -> None:
        if (group, version, plural) != (GROUP, VERSION, PLURAL):
            raise ApiException(status=404, reason=f"the server could not find {plural}.{group}/{version}")
