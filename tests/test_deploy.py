"""Deploy: rendered KServe and A/B log sink manifests (SDK round trip, committed files, golden file,
kustomize build), the payload logger that ties them, and the cluster deployer's patches against a
fake KServeClient."""
from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kserve.models import (
    V1beta1InferenceService,
    V1beta1InferenceServiceSpec,
    V1beta1LoggerSpec,
    V1beta1ModelFormat,
    V1beta1ModelSpec,
    V1beta1PredictorSpec,
)
from kubernetes.client import V1ObjectMeta

from genctr.deploy import CANARY, CHAMPION, assign_arm, sink_manifests
from genctr.deploy.cluster import KServeDeployer
from genctr.deploy.manifests import (
    ANN_CANARY,
    ANN_CHAMPION,
    BASE,
    ENVIRONMENTS,
    HEADER,
    ServingManifest,
    check_manifest,
    inference_service,
    merge_patch,
    render_all,
    render_tree,
    to_dict,
)
from genctr.errors import ConfigError
from genctr.monitoring.headers import METADATA_ANNOTATIONS, METADATA_HEADERS, MODEL_URI_ANNOTATION

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests" / "kserve"
SINK_MANIFESTS = ROOT / "manifests" / "ab-log-sink"
GOLDEN = ROOT / "tests" / "golden" / "ab_log_sink.yaml"


# -- manifests ---------------------------------------------------------------------------------

def test_committed_manifests_equal_the_renderer() -> None:
    files = render_tree()
    for rel, text in files.items():
        path = MANIFESTS / rel
        assert path.exists(), f"{path} missing: run `python -m genctr.deploy.manifests`"
        assert path.read_text() == text, f"{path} is stale: run `python -m genctr.deploy.manifests`"
    generated = {p.relative_to(MANIFESTS).as_posix() for p in MANIFESTS.glob("**/*.yaml")
                 if p.read_text().startswith(HEADER)}
    assert generated == set(files)


@pytest.mark.parametrize("env", ["base", *ENVIRONMENTS])
def test_rendered_objects_round_trip_through_the_sdk(env: str) -> None:
    cfg = BASE if env == "base" else ENVIRONMENTS[env]
    for doc in render_all(cfg).values():
        obj = check_manifest(copy.deepcopy(doc))
        assert to_dict(obj) == doc
    for path in (MANIFESTS / "base").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc["kind"] != "Kustomization":
            check_manifest(doc)


def test_inference_service_is_knative_with_canary_support() -> None:
    isvc = render_all(ENVIRONMENTS["prod"])["inference-service.yaml"]
    ann = isvc["metadata"]["annotations"]
    assert ann["serving.kserve.io/deploymentMode"] == "Knative"  # KServe 0.21's name; "Serverless" is deprecated
    assert ann["serving.kserve.io/enable-tag-routing"] == "true"
    assert ann["autoscaling.knative.dev/metric"] == "concurrency" and ann["autoscaling.knative.dev/target"] == "8"
    pred = isvc["spec"]["predictor"]
    assert (pred["minReplicas"], pred["maxReplicas"]) == (2, 10)
    model = pred["model"]
    assert model["storageUri"] == ann[ANN_CHAMPION]
    assert model["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    env = {e["name"]: e for e in model["env"]}
    assert env["GENCTR_REDIS_CONNECTION_STRING"]["valueFrom"]["secretKeyRef"]["name"] == "genctr-redis"
    assert "canaryTrafficPercent" not in pred  # the deployer sets it during a rollout
    runtime = render_all(BASE)["serving-runtime.yaml"]
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == model["modelFormat"]["name"]
    assert runtime["metadata"]["name"] == model["runtime"]


def test_runtime_command_is_what_our_server_parses() -> None:
    """The ServingRuntime's args + the pod env parse into a valid ServeConfig."""
    from genctr.serving.__main__ import parser

    container = render_all(BASE)["serving-runtime.yaml"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "genctr.serving"]
    args = parser().parse_args([a.replace("{{.Name}}", "genctr-ctr") for a in container["args"]])
    assert (args.model_dir, args.model_name, args.http_port) == ("/mnt/models", "genctr-ctr", 8080)


def test_schema_check_rejects_unknown_fields_and_wrong_types() -> None:
    doc = render_all(BASE)["inference-service.yaml"]
    typo = copy.deepcopy(doc)
    typo["spec"]["predictor"]["canaryTrafficPrecent"] = 10
    with pytest.raises(ConfigError, match=r"\.spec\.predictor: V1beta1PredictorSpec has no field"):
        check_manifest(typo)
    wrong = copy.deepcopy(doc)
    wrong["spec"]["predictor"]["minReplicas"] = "1"
    with pytest.raises(ConfigError, match="minReplicas: expected int"):
        check_manifest(wrong)
    no_format = copy.deepcopy(doc)
    del no_format["spec"]["predictor"]["model"]["modelFormat"]
    with pytest.raises(ConfigError, match="model_format"):
        check_manifest(no_format)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")
@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_kustomize_overlay_builds_the_environment(env: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "overlays" / env)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    built = {d["kind"]: d for d in yaml.safe_load_all(out)}
    want = {d["kind"]: d for d in render_all(ENVIRONMENTS[env]).values()}
    assert built == want


def test_merge_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 4}, "e": [1]}) == \
        {"b": {"c": 4, "d": None}, "e": [1]}
    assert merge_patch({"a": [1, 2]}, {"a": [1, 2]}) is None


# -- the payload logger and the A/B log sink ---------------------------------------------------

def test_inference_service_logs_every_call_to_the_sink() -> None:
    for env, cfg in ENVIRONMENTS.items():
        logger = render_all(cfg)["inference-service.yaml"]["spec"]["predictor"]["logger"]
        assert logger["mode"] == "all"  # the sink pairs each call's request and response
        assert logger["url"] == f"http://genctr-ab-log-sink.{cfg.namespace}.svc.cluster.local", env
        assert logger["metadataHeaders"] == list(METADATA_HEADERS)
        assert logger["metadataAnnotations"] == [MODEL_URI_ANNOTATION] == list(METADATA_ANNOTATIONS)
    for name in METADATA_HEADERS:  # KServe's agent compares Go-canonical names: any other case never matches
        assert name == "-".join(part.capitalize() for part in name.split("-")), name
    no_logger = render_all(dataclasses.replace(BASE, logger_mode=""))["inference-service.yaml"]
    assert "logger" not in no_logger["spec"]["predictor"]
    for bad in ({"logger_mode": "request"}, {"logger_url": "genctr-ab-log-sink:80"}):
        with pytest.raises(ConfigError, match="logger"):
            ServingManifest(**bad)  # type: ignore[arg-type]  # the wrong type is the test


def test_committed_sink_manifests_equal_the_renderer_and_the_golden_file() -> None:
    files = sink_manifests.render_tree()
    for rel, text in files.items():
        path = SINK_MANIFESTS / rel
        assert path.exists() and path.read_text() == text, f"{path} stale: run `python -m genctr.deploy.sink_manifests`"
    docs = {name: doc for name, doc in sink_manifests.render_all(sink_manifests.SinkManifest()).items()}
    for doc in docs.values():
        assert to_dict(check_manifest(copy.deepcopy(doc))) == doc  # every object is a valid SDK object
    got = {"ab-log-sink": docs, "inference-service-prod": render_all(ENVIRONMENTS["prod"])["inference-service.yaml"]}
    if os.environ.get("GENCTR_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text("# regenerate with GENCTR_UPDATE_GOLDEN=1 pytest tests/test_deploy.py\n"
                          + yaml.safe_dump(got, sort_keys=True))
    assert got == yaml.safe_load(GOLDEN.read_text()), (
        f"rendered manifests differ from {GOLDEN.relative_to(ROOT)}; if intended, regenerate with "
        "GENCTR_UPDATE_GOLDEN=1 pytest tests/test_deploy.py")


def test_sink_objects_fit_together() -> None:
    """The logger's URL reaches the sink Service; the container's args are what the sink parses; the
    canary pipeline's recurring run reads what the sink writes; the Role grants one get, nothing more."""
    from genctr.monitoring.sink import SinkConfig
    from genctr.monitoring.sink.__main__ import parser

    cfg = sink_manifests.SinkManifest()
    docs = sink_manifests.render_all(cfg)
    service, deployment = docs["service.yaml"], docs["deployment.yaml"]
    logger_url = render_all(ENVIRONMENTS["prod"])["inference-service.yaml"]["spec"]["predictor"]["logger"]["url"]
    assert logger_url == f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80 and port["targetPort"] == "http"  # the URL has no port: 80
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["metadata"]["labels"].items() >= service["spec"]["selector"].items()
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "genctr.monitoring.sink"]
    assert container["ports"][0] == {"containerPort": 8080, "name": "http", "protocol": "TCP"}
    args = parser().parse_args(container["args"])
    sink = SinkConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SinkConfig)})
    assert (sink.out, sink.port, sink.host, sink.service) == (cfg.out, 8080, "0.0.0.0", "genctr-ctr")
    assert args.isvc == "genctr/genctr-ctr"
    mount = container["volumeMounts"][0]["mountPath"]
    assert sink.state_dir == mount and docs["journal-pvc.yaml"]["metadata"]["name"] == \
        deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    recurring = yaml.safe_load((ROOT / "manifests" / "recurring-run-canary.yaml").read_text())
    assert recurring["params"]["log_dir"] == cfg.out == "s3://genctr/prod/ab-logs/genctr-ctr"
    assert recurring["params"]["deployment"] == cfg.deployment
    (rule,) = docs["role.yaml"]["rules"]
    assert rule == {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                    "resourceNames": ["genctr-ctr"], "verbs": ["get"]}
    binding = docs["role-binding.yaml"]
    assert binding["roleRef"]["name"] == docs["role.yaml"]["metadata"]["name"]
    assert binding["subjects"][0]["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"] == \
        docs["service-account.yaml"]["metadata"]["name"]


# -- KServeDeployer against a fake client ------------------------------------------------------

def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies application/merge-patch+json."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_merge_patch(out.get(k), v)
    return out


class FakeKServeClient:
    """Records calls; keeps the object as the API server would (merge patches applied)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}

    def create(self, inferenceservice: Any, namespace: str | None = None) -> dict[str, Any]:
        self.calls.append(("create", inferenceservice, {"namespace": namespace}))
        obj = to_dict(inferenceservice)
        obj["status"] = {"url": "http://genctr-ctr.genctr.example.com",
                         "conditions": [{"type": "Ready", "status": "True"}]}
        self.objects[(namespace, obj["metadata"]["name"])] = obj
        return obj

    def get(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        self.calls.append(("get", name, {"namespace": namespace}))
        if (namespace, name) not in self.objects:
            raise RuntimeError("Exception when calling CustomObjectsApi->get_namespaced_custom_object: (404)\n"
                               "Reason: Not Found")
        return copy.deepcopy(self.objects[(namespace, name)])

    def patch(self, name: str, inferenceservice: Any, namespace: str | None = None) -> dict[str, Any]:
        self.calls.append(("patch", inferenceservice, {"name": name, "namespace": namespace}))
        key = (namespace, name)
        self.objects[key] = apply_merge_patch(self.objects[key], to_dict(inferenceservice))
        return self.objects[key]

    def sent(self, verb: str) -> list[Any]:
        return [obj for v, obj, _ in self.calls if v == verb]


LOGGER = V1beta1LoggerSpec(mode="all", url="http://genctr-ab-log-sink.genctr.svc.cluster.local",
                           metadata_headers=["X-Genctr-Randomisation", "X-Genctr-Request-Time"],
                           metadata_annotations=["internal.serving.kserve.io/storage-initializer-sourceuri"])


def expected_patch(annotations: dict[str, Any], percent: int,
                   storage_uri: str | None = None) -> V1beta1InferenceService:
    model = None if storage_uri is None else V1beta1ModelSpec(
        model_format=V1beta1ModelFormat(name="genctr"), runtime="genctr-ctr", storage_uri=storage_uri)
    logger = None if storage_uri is None else LOGGER  # every new revision logs to the sink
    return V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1", kind="InferenceService",
        metadata=V1ObjectMeta(name="genctr-ctr", namespace="genctr", annotations=annotations),
        spec=V1beta1InferenceServiceSpec(predictor=V1beta1PredictorSpec(canary_traffic_percent=percent, model=model,
                                                                        logger=logger)))


def test_cluster_deployer_sends_exactly_these_objects() -> None:
    client = FakeKServeClient()
    d = KServeDeployer(ENVIRONMENTS["prod"], client=client)
    v1, v2 = "s3://genctr-models/ctr/versions/1", "s3://genctr-models/ctr/versions/2"

    st = d.deploy(v1)
    (created,) = client.sent("create")
    assert created == inference_service(dataclasses.replace(ENVIRONMENTS["prod"], storage_uri=v1))
    assert (st.champion_uri, st.canary_uri, st.canary_percent, st.ready) == (v1, None, 0, True)

    st = d.start_canary(v2, 10)
    sent = client.sent("patch")[-1]
    assert sent == expected_patch({ANN_CANARY: v2}, 10, v2)
    assert to_dict(sent) == {  # the JSON merge patch body on the wire
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"annotations": {ANN_CANARY: v2}, "name": "genctr-ctr", "namespace": "genctr"},
        "spec": {"predictor": {"canaryTrafficPercent": 10, "logger": {
            "metadataAnnotations": ["internal.serving.kserve.io/storage-initializer-sourceuri"],
            "metadataHeaders": ["X-Genctr-Randomisation", "X-Genctr-Request-Time"], "mode": "all",
            "url": "http://genctr-ab-log-sink.genctr.svc.cluster.local"}, "model": {
            "modelFormat": {"name": "genctr"}, "name": "", "runtime": "genctr-ctr", "storageUri": v2}}}}
    assert (st.champion_uri, st.canary_uri, st.canary_percent) == (v1, v2, 10)
    live = client.objects[("genctr", "genctr-ctr")]
    assert live["spec"]["predictor"]["model"]["storageUri"] == v2
    assert live["spec"]["predictor"]["model"]["env"] == to_dict(created)["spec"]["predictor"]["model"]["env"]

    st = d.promote()
    sent = client.sent("patch")[-1]
    assert sent == expected_patch({ANN_CHAMPION: v2, ANN_CANARY: None}, 100)
    assert to_dict(sent)["metadata"]["annotations"] == {ANN_CHAMPION: v2, ANN_CANARY: None}  # null deletes
    assert (st.champion_uri, st.canary_uri, st.canary_percent) == (v2, None, 0)

    v3 = "s3://genctr-models/ctr/versions/3"
    d.start_canary(v3, 25)
    st = d.rollback()
    sent = client.sent("patch")[-1]
    assert sent == expected_patch({ANN_CANARY: None}, 0)
    assert to_dict(sent)["spec"] == {"predictor": {"canaryTrafficPercent": 0}}
    assert (st.champion_uri, st.canary_uri, st.canary_percent) == (v2, None, 0)
    assert [v for v, _, _ in client.calls if v != "get"] == ["create", "patch", "patch", "patch", "patch"]
    assert all(kw.get("namespace") == "genctr" for _, _, kw in client.calls)


def test_cluster_deployer_redeploy_patches_and_refuses_bad_requests() -> None:
    client = FakeKServeClient()
    d = KServeDeployer(BASE, client=client)
    with pytest.raises(ConfigError, match="does not exist"):
        d.start_canary("s3://m/2", 10)
    d.deploy("s3://m/1")
    with pytest.raises(ConfigError, match="no canary"):
        d.promote()
    with pytest.raises(ConfigError, match="no canary"):
        d.rollback()
    for bad in (0, 100, "10", 10.0):
        with pytest.raises(ConfigError, match="1..99"):
            d.start_canary("s3://m/2", bad)
    d.deploy("s3://m/4")  # exists: a full rollout by patch, not a second create
    assert client.sent("patch")[-1] == KServeDeployer(BASE).patch_object(
        "s3://m/4", 100, {ANN_CHAMPION: "s3://m/4", ANN_CANARY: None})
    assert len(client.sent("create")) == 1


def test_status_reads_tag_routed_urls() -> None:
    client = FakeKServeClient()
    d = KServeDeployer(BASE, client=client)
    d.deploy("s3://m/1")
    d.start_canary("s3://m/2", 30)
    obj = client.objects[("genctr", "genctr-ctr")]
    obj["status"]["components"] = {"predictor": {"traffic": [
        {"tag": "prev", "percent": 70, "url": "http://prev-genctr-ctr.example.com", "revisionName": "r1"},
        {"tag": "latest", "percent": 30, "url": "http://latest-genctr-ctr.example.com", "revisionName": "r2",
         "latestRevision": True}]}}
    st = d.status()
    assert st.urls == {"service": "http://genctr-ctr.genctr.example.com",
                       CHAMPION: "http://prev-genctr-ctr.example.com", CANARY: "http://latest-genctr-ctr.example.com"}
    assert st.canary_percent == 30 and st.detail["traffic"][1]["revisionName"] == "r2"


def test_assign_arm_is_stable_and_splits_by_percent() -> None:
    arms = [assign_arm(u, 20) for u in range(20_000)]
    assert arms == [assign_arm(u, 20) for u in range(20_000)]
    assert 0.18 < arms.count(CANARY) / len(arms) < 0.22
    assert {assign_arm(u, 0) for u in range(1000)} == {CHAMPION}
    assert {assign_arm(u, 100) for u in range(1000)} == {CANARY}


class FakeAppsApi:
    """Records AppsV1Api calls on the router Deployment; applies strategic merge patches the way
    the API server does for a container list (merge by name, ``args`` replaced whole)."""

    def __init__(self, percent: int = 10, order: list[str] | None = None) -> None:
        doc = yaml.safe_load((ROOT / "manifests" / "ab-router" / "deployment.yaml").read_text())
        self.deployment = doc
        self.order = order if order is not None else []  # "router" per patch, shared with the client's log
        self.calls: list[tuple[str, str, str]] = []
        self.patches: list[dict[str, Any]] = []
        self._set(percent)

    def _set(self, percent: int) -> None:
        container = self.deployment["spec"]["template"]["spec"]["containers"][0]
        container["args"] = [a for a in container["args"] if not a.startswith("--percent")] + [f"--percent={percent}"]

    def read_namespaced_deployment(self, name: str, namespace: str) -> dict[str, Any]:
        self.calls.append(("read", name, namespace))
        if name != self.deployment["metadata"]["name"]:
            raise RuntimeError("(404) Reason: Not Found")
        return copy.deepcopy(self.deployment)

    def patch_namespaced_deployment(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", name, namespace))
        self.order.append("router")
        self.patches.append(body)
        (patch,) = body["spec"]["template"]["spec"]["containers"]
        (live,) = [c for c in self.deployment["spec"]["template"]["spec"]["containers"] if c["name"] == patch["name"]]
        live["args"] = list(patch["args"])
        return copy.deepcopy(self.deployment)

    def percent(self) -> int:
        args = self.deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return int(next(a for a in args if a.startswith("--percent=")).split("=")[1])


class OrderedKServeClient(FakeKServeClient):
    """Also logs "isvc" per patch into a list shared with :class:`FakeAppsApi`."""

    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order

    def patch(self, name: str, inferenceservice: Any, namespace: str | None = None) -> dict[str, Any]:
        self.order.append("isvc")
        return super().patch(name, inferenceservice, namespace=namespace)


def test_user_sticky_rollouts_move_the_routers_split_in_a_safe_order() -> None:
    from genctr.deploy.base import ROUTER

    order: list[str] = []
    client, apps = OrderedKServeClient(order), FakeAppsApi(percent=10, order=order)
    manifest = dataclasses.replace(ENVIRONMENTS["prod"], randomisation="user")
    d = KServeDeployer(manifest, client=client, apps=apps)

    st = d.deploy("s3://m/1")
    assert apps.percent() == 0 and st.randomisation == "user"
    assert st.urls[ROUTER] == "http://genctr-ab-router.genctr.svc.cluster.local/v1/models/genctr-ctr:predict"
    assert st.detail["router_percent"] == 0
    order.clear()
    st = d.start_canary("s3://m/2", 25)
    assert apps.percent() == 25 and order == ["isvc", "router"]  # the canary's revision exists before users go
    assert st.detail["router_percent"] == 25 == st.canary_percent
    order.clear()
    d.rollback()
    assert apps.percent() == 0 and order == ["router", "isvc"]  # users leave before its revision's traffic does
    d.start_canary("s3://m/3", 10)
    order.clear()
    d.promote()
    assert apps.percent() == 100 and order == ["isvc", "router"]
    # the other args travel unchanged (args is replaced whole by a strategic merge patch)
    args = apps.deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(a.startswith("--champion=http://prev-") for a in args) and args.count("--percent=100") == 1
    assert all(ns == "genctr" and name == "genctr-ab-router" for _, name, ns in apps.calls)


def test_request_randomised_rollouts_leave_the_router_alone_and_a_missing_router_is_named() -> None:
    from genctr.deploy.base import ROUTER

    client, apps = FakeKServeClient(), FakeAppsApi()
    d = KServeDeployer(ENVIRONMENTS["prod"], client=client, apps=apps)
    d.deploy("s3://m/1")
    st = d.start_canary("s3://m/2", 25)
    assert apps.calls == [] and st.randomisation == "request" and ROUTER not in st.urls
    sticky = dataclasses.replace(ENVIRONMENTS["prod"], randomisation="user", router_name="no-such-router")
    with pytest.raises(ConfigError, match="needs the router Deployment genctr/no-such-router"):
        KServeDeployer(sticky, client=FakeKServeClient(), apps=apps).deploy("s3://m/1")
    with pytest.raises(ConfigError, match="randomisation must be one of"):
        dataclasses.replace(ENVIRONMENTS["prod"], randomisation="users")


def test_the_deploy_target_carries_the_design_to_the_cluster_deployer() -> None:
    from genctr.deploy.factory import DeployTarget, make_deployer

    sticky, plain = make_deployer(DeployTarget(kind="kserve", randomisation="user")), make_deployer(
        DeployTarget(kind="kserve"))
    assert isinstance(sticky, KServeDeployer) and isinstance(plain, KServeDeployer)
    assert (sticky.manifest.randomisation, plain.manifest.randomisation) == ("user", "request")
