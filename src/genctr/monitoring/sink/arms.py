"""Which arm served a logged call: from the event's ``endpoint``, or from the model URI it carries.

KServe's agent stamps every event with ``endpoint``: ``canary`` for a canary component of its own
(and what genctr's local emitter sends for the canary arm), ``default`` otherwise. With
``canaryTrafficPercent`` (KServe v1beta1, Knative mode) champion and canary are two revisions of
*one* component and both say ``default``, so the endpoint cannot tell them apart. Then the sink is
given a *model map* (``--isvc NAMESPACE/NAME``: read from the InferenceService's champion and canary
annotations, refreshed every few seconds; or ``--champion-uri``/``--canary-uri``) and names the arm
by the model URI KServe put on the serving pod (:data:`~genctr.monitoring.headers.MODEL_URI_ANNOTATION`,
listed in ``logger.metadataAnnotations``, so it arrives in the event's ``annotations``).

Rules, in order: endpoint ``canary`` -> canary; an endpoint other than ``default``/empty -> refused
(unknown arm); with a model map, the event's model URI must be the champion's or the canary's
(else refused: a revision the rollout does not know, or the annotation is not listed); without one,
-> champion.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from genctr.monitoring.cloudevents_codec import EventError, InferenceEvent
from genctr.monitoring.headers import CANARY_URI_ANNOTATION, CHAMPION_URI_ANNOTATION, MODEL_URI_ANNOTATION

log = logging.getLogger(__name__)
CHAMPION, CANARY = "champion", "canary"


def _norm(uri: str) -> str:
    return uri.strip().rstrip("/")


def arms_of_annotations(annotations: Mapping[str, str]) -> dict[str, str]:
    """An InferenceService's annotations -> ``{model uri: arm}`` (champion and, when rolling out, canary)."""
    out: dict[str, str] = {}
    if annotations.get(CHAMPION_URI_ANNOTATION):
        out[_norm(annotations[CHAMPION_URI_ANNOTATION])] = CHAMPION
    if annotations.get(CANARY_URI_ANNOTATION):
        out[_norm(annotations[CANARY_URI_ANNOTATION])] = CANARY
    return out


class ModelMap:
    """``{model uri: arm}``, fixed or refreshed by ``fetch`` every ``refresh_s`` on a thread.

    A failing ``fetch`` keeps the last map (logged); until the first success the map is empty and
    events are refused as of an unknown arm, never guessed.
    """

    def __init__(self, fixed: Mapping[str, str] | None = None, fetch: Callable[[], dict[str, str]] | None = None,
                 refresh_s: float = 5.0, describe: str = "") -> None:
        self._arms = {_norm(k): v for k, v in (fixed or {}).items()}
        self._fetch = fetch
        self._refresh_s = refresh_s
        self.describe = describe or "the configured models"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if fetch is not None:
            self.refresh()
            self._thread = threading.Thread(target=self._loop, name="sink-model-map", daemon=True)
            self._thread.start()

    def refresh(self) -> None:
        assert self._fetch is not None
        try:
            arms = {_norm(k): v for k, v in self._fetch().items()}
        except Exception as exc:  # noqa: BLE001 - any API failure: keep the last known map
            log.warning("could not read %s (%s): keeping the last model map %s", self.describe, exc, self._arms)
            return
        if arms != self._arms:
            log.info("model map of %s: %s", self.describe, arms)
        self._arms = arms

    def _loop(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()

    def arm(self, uri: str) -> str | None:
        return self._arms.get(_norm(uri))

    def snapshot(self) -> dict[str, str]:
        return dict(self._arms)


def isvc_fetcher(namespace: str, name: str) -> Callable[[], dict[str, str]]:
    """Reads the InferenceService's champion/canary annotations through the Kubernetes API (in-cluster
    config, else the kubeconfig); the pod's ServiceAccount needs ``get`` on inferenceservices."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CustomObjectsApi()

    def fetch() -> dict[str, str]:
        isvc = api.get_namespaced_custom_object("serving.kserve.io", "v1beta1", namespace, "inferenceservices", name)
        return arms_of_annotations((isvc.get("metadata") or {}).get("annotations") or {})

    return fetch


class ArmResolver:
    """Names the arm of an event (rules in the module docstring)."""

    def __init__(self, models: ModelMap | None = None) -> None:
        self.models = models

    def resolve(self, event: InferenceEvent) -> str:
        endpoint = event.endpoint.strip().lower()
        if endpoint == "canary":
            return CANARY
        if endpoint not in ("default", ""):
            raise EventError("unknown_arm", f"ce-endpoint {event.endpoint[:60]!r} is neither 'default' (champion) "
                             "nor 'canary'")
        if self.models is None:
            return CHAMPION
        uri = event.annotations.get(MODEL_URI_ANNOTATION)
        if not uri:
            raise EventError("unknown_arm", f"event has no {MODEL_URI_ANNOTATION} annotation, so its model (and "
                             "arm) is unknown: list it in the InferenceService's logger.metadataAnnotations")
        arm = self.models.arm(uri)
        if arm is None:
            raise EventError("unknown_arm", f"model {uri[:120]!r} is neither the champion nor the canary of "
                             f"{self.models.describe} (known: {self.models.snapshot()})")
        return arm


def wait_for(models: ModelMap, timeout_s: float) -> bool:
    """True once the map has a champion (start-up waits for it rather than refusing the first events)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if CHAMPION in models.snapshot().values():
            return True
        time.sleep(0.2)
    return False


__all__ = ["CANARY", "CHAMPION", "ArmResolver", "ModelMap", "arms_of_annotations", "isvc_fetcher", "wait_for"]
