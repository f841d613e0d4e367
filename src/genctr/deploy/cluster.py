"""Cluster deployer: an InferenceService in Knative mode, rolled out by patching it with KServeClient.

KServe has no promote helper; a rollout is three merge patches of
``spec.predictor.canaryTrafficPercent`` (read only by the Knative reconciler):

* ``start_canary(uri, N)``: ``storageUri = uri`` (a new revision) and ``canaryTrafficPercent = N``;
  the previously rolled-out revision (the champion) keeps ``100 - N`` %;
* ``promote()``: ``canaryTrafficPercent = 100`` (the latest revision takes everything);
* ``rollback()``: ``canaryTrafficPercent = 0`` (all traffic back on the previous revision).

The spec only ever names the *latest* storageUri, so the champion's and canary's URIs are kept in
two annotations (:data:`ANN_CHAMPION`, :data:`ANN_CANARY`); ``status()`` reads them with the
traffic split from the service's status. Every patch that makes a new revision (a new storageUri)
also sets ``spec.predictor.logger`` from the manifest, so each revision's pods post their calls to
the A/B log sink (an InferenceService created before the logger existed gets it on its next
rollout); the sink names the arm from those annotations and the model URI on each event. The
randomisation design is the manifest's (``ServingManifest.randomisation``): ``"request"`` —
clients call the InferenceService and Knative splits each request; ``"user"`` — clients call
the user-hash router (``manifests/ab-router``, :mod:`genctr.serving.router`) in front of the
tag-routed arm URLs, and every rollout step also sets the router Deployment's ``--percent``
through the apps API (a new ReplicaSet; the router holds no state). The order keeps users off
a canary that is not, or no longer, meant to get them: on ``start_canary`` and ``promote``
the InferenceService first, then the router; on ``rollback`` the router first. The
ServingRuntime and ServiceAccount come from the kustomize tree (``kubectl apply -k
manifests/kserve/overlays/<env>``); ``deploy()`` creates the InferenceService if it is absent.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import genctr.serving._kserve  # noqa: F401 - KServe (imported in the functions below) with sys.argv emptied
from genctr.deploy.base import CANARY, CHAMPION, ROUTER, Deployer, DeploymentStatus, check_percent
from genctr.deploy.manifests import (
    ANN_CANARY,
    ANN_CHAMPION,
    KSERVE_API,
    MODEL_FORMAT,
    RUNTIME_NAME,
    ServingManifest,
    inference_service,
    logger_spec,
)
from genctr.errors import ConfigError

log = logging.getLogger(__name__)


class KServeDeployer(Deployer):
    """Rollouts of the InferenceService ``manifest.name`` in ``manifest.namespace``.

    ``client``: a ``kserve.KServeClient`` (default: one built from the kubeconfig / in-cluster
    config on first use), or any object with the same ``create/get/patch`` methods. ``apps``: a
    ``kubernetes.client.AppsV1Api`` (default: built after ``client`` loaded the configuration),
    used only for the router of a user-sticky design.
    """

    def __init__(self, manifest: ServingManifest, client: Any | None = None, apps: Any | None = None) -> None:
        self.manifest = manifest
        self._client = client
        self._apps = apps

    @property
    def client(self) -> Any:
        if self._client is None:
            from kserve import KServeClient

            self._client = KServeClient()
        return self._client

    @property
    def apps(self) -> Any:
        if self._apps is None:
            from kubernetes.client import AppsV1Api

            _ = self.client  # KServeClient loads the kubeconfig / in-cluster configuration
            self._apps = AppsV1Api()
        return self._apps

    @property
    def user_sticky(self) -> bool:
        return self.manifest.randomisation == "user"

    # -- Deployer --------------------------------------------------------------------------

    def deploy(self, model_uri: str) -> DeploymentStatus:
        if self._get() is None:
            isvc = inference_service(dataclasses.replace(self.manifest, storage_uri=model_uri))
            self.client.create(isvc, namespace=self.manifest.namespace)
            log.info("created InferenceService %s/%s serving %s",
                     self.manifest.namespace, self.manifest.name, model_uri)
        else:
            self._patch(self.patch_object(model_uri, 100, {ANN_CHAMPION: model_uri, ANN_CANARY: None}))
        self._route(0)  # one model: every user on the champion's URL
        return self.status()

    def start_canary(self, model_uri: str, percent: int) -> DeploymentStatus:
        check_percent(percent)
        self._require()
        self._patch(self.patch_object(model_uri, percent, {ANN_CANARY: model_uri}))
        self._route(percent)
        return self.status()

    def promote(self) -> DeploymentStatus:
        canary = self._annotations(self._require()).get(ANN_CANARY)
        if not canary:
            raise ConfigError(f"{self.manifest.name}: no canary in progress to promote")
        self._patch(self.patch_object(None, 100, {ANN_CHAMPION: canary, ANN_CANARY: None}))
        self._route(100)  # the latest revision (the promoted model) for everyone
        return self.status()

    def rollback(self) -> DeploymentStatus:
        canary = self._annotations(self._require()).get(ANN_CANARY)
        if not canary:
            raise ConfigError(f"{self.manifest.name}: no canary in progress to roll back")
        self._route(0)  # users off the canary before its revision loses its traffic
        self._patch(self.patch_object(None, 0, {ANN_CANARY: None}))
        return self.status()

    def status(self) -> DeploymentStatus:
        isvc = self._require()
        ann = self._annotations(isvc)
        predictor = (isvc.get("spec") or {}).get("predictor") or {}
        state = isvc.get("status") or {}
        canary = ann.get(ANN_CANARY) or None
        percent = int(predictor.get("canaryTrafficPercent", 0) or 0) if canary else 0
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in state.get("conditions") or [])
        traffic = ((state.get("components") or {}).get("predictor") or {}).get("traffic") or []
        urls = {}
        if state.get("url"):
            urls[CHAMPION if not canary else "service"] = state["url"]
        for t in traffic:  # tag routing: "prev" = champion revision, "latest" = canary revision
            if t.get("tag") == "prev" and t.get("url"):
                urls[CHAMPION] = t["url"]
            elif t.get("tag") == "latest" and t.get("url") and canary:
                urls[CANARY] = t["url"]
        detail: dict[str, Any] = {"traffic": traffic, "namespace": self.manifest.namespace}
        if self.user_sticky:
            urls[ROUTER] = self.manifest.router_url
            detail["router_percent"] = self._router_percent()
        return DeploymentStatus(name=self.manifest.name, champion_uri=ann.get(ANN_CHAMPION), canary_uri=canary,
                                canary_percent=percent, ready=ready, urls=urls, detail=detail,
                                randomisation=self.manifest.randomisation)

    def wait_ready(self, timeout_seconds: int = 600) -> None:
        self.client.wait_isvc_ready(self.manifest.name, namespace=self.manifest.namespace,
                                    timeout_seconds=timeout_seconds)

    # -- the objects sent --------------------------------------------------------------------

    def patch_object(self, storage_uri: str | None, percent: int | None,
                     annotations: dict[str, str | None]) -> Any:
        """The merge patch: ``None`` annotation values delete the annotation; a ``None``
        storage_uri / percent leaves that field as it is; with a storage_uri (a new revision) the
        manifest's payload logger is set too."""
        from kserve.models import (
            V1beta1InferenceService,
            V1beta1InferenceServiceSpec,
            V1beta1ModelFormat,
            V1beta1ModelSpec,
            V1beta1PredictorSpec,
        )
        from kubernetes.client import V1ObjectMeta

        model = None
        if storage_uri is not None:
            model = V1beta1ModelSpec(model_format=V1beta1ModelFormat(name=MODEL_FORMAT), runtime=RUNTIME_NAME,
                                     storage_uri=storage_uri)
        logger = logger_spec(self.manifest) if storage_uri is not None else None
        predictor = V1beta1PredictorSpec(canary_traffic_percent=percent, model=model, logger=logger)
        return V1beta1InferenceService(
            api_version=KSERVE_API, kind="InferenceService",
            metadata=V1ObjectMeta(name=self.manifest.name, namespace=self.manifest.namespace, annotations=annotations),
            spec=V1beta1InferenceServiceSpec(predictor=predictor))

    # -- the router (user-sticky design) ----------------------------------------------------

    def router_patch(self, percent: int) -> dict[str, Any]:
        """The strategic merge patch that sets the router's ``--percent``: containers merge by
        name, and ``args`` (a plain list) is replaced whole, so the other args are sent as read."""
        container = self._router_container()
        args = [a for a in container.get("args") or [] if not a.startswith("--percent")]
        return {"spec": {"template": {"spec": {"containers": [
            {"name": container["name"], "args": [*args, f"--percent={percent}"]}]}}}}

    def _route(self, percent: int) -> None:
        if not self.user_sticky:
            return
        body = self.router_patch(percent)
        self.apps.patch_namespaced_deployment(self.manifest.router_name, self.manifest.namespace, body)
        log.info("router %s/%s: %d %% of users on the canary", self.manifest.namespace, self.manifest.router_name,
                 percent)

    def _router_container(self) -> dict[str, Any]:
        name, ns = self.manifest.router_name, self.manifest.namespace
        try:
            dep = self.apps.read_namespaced_deployment(name, ns)
        except Exception as exc:  # kubernetes.client.ApiException; any failure reads the same to a user
            raise ConfigError(f"randomisation 'user' needs the router Deployment {ns}/{name} "
                              f"(kubectl apply -k manifests/ab-router): {exc}") from exc
        dep = dep.to_dict() if hasattr(dep, "to_dict") else dep
        containers = ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
        if not containers:
            raise ConfigError(f"the router Deployment {ns}/{name} has no container")
        return dict(containers[0])

    def _router_percent(self) -> int | None:
        args = self._router_container().get("args") or []
        values = [a.split("=", 1)[1] for a in args if a.startswith("--percent=")]
        return int(values[-1]) if values and values[-1].isdigit() else None

    # -- helpers ---------------------------------------------------------------------------

    def _patch(self, obj: Any) -> None:
        self.client.patch(self.manifest.name, obj, namespace=self.manifest.namespace)
        log.info("patched InferenceService %s/%s: %s", self.manifest.namespace, self.manifest.name,
                 {"percent": obj.spec.predictor.canary_traffic_percent, "annotations": obj.metadata.annotations})

    def _get(self) -> dict[str, Any] | None:
        try:
            return self.client.get(self.manifest.name, namespace=self.manifest.namespace)
        except RuntimeError as exc:  # KServeClient wraps ApiException; 404 = absent
            if "404" in str(exc) or "Not Found" in str(exc):
                return None
            raise

    def _require(self) -> dict[str, Any]:
        isvc = self._get()
        if isvc is None:
            raise ConfigError(f"InferenceService {self.manifest.namespace}/{self.manifest.name} does not exist: "
                              "deploy() a champion first")
        return isvc

    @staticmethod
    def _annotations(isvc: dict[str, Any]) -> dict[str, str]:
        return dict((isvc.get("metadata") or {}).get("annotations") or {})
