"""Every YAML under manifests/ is valid, and the pipeline runner's RBAC grants what the code calls.

* Built-in kinds are validated against the Kubernetes OpenAPI schemas (``kubernetes-validate``,
  strict: an unknown field is an error) for :data:`K8S_VERSION`; KServe's kinds through
  ``genctr.deploy.manifests.check_manifest`` (the SDK's types, strict); the recurring-run files
  (genctr's own format, no ``kind``) through genctr's own loader; kustomizations are rendered
  (their patches applied to the resources they target) and every rendered object validated.
  Files are found by glob, so a manifest added anywhere under manifests/ is covered.
* The Role's verbs are derived from the deployer: ``genctr.deploy.cluster`` is driven through a real
  ``KServeClient`` whose Kubernetes API is a recording stand-in, every API call becomes the RBAC verb
  it needs, and each must be granted; every ``self.client.<method>`` call in cluster.py must be one
  the scenario exercised.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from genctr.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
RBAC = MANIFESTS / "rbac-pipeline-runner.yaml"
GOLDEN_RBAC = ROOT / "tests" / "golden" / "rbac-pipeline-runner.yaml"
CLUSTER_PY = ROOT / "src" / "genctr" / "deploy" / "cluster.py"
K8S_VERSION = "1.31"  # the oldest Kubernetes the supported Kubeflow and KServe releases run on
RUNNER_SA = "genctr-pipeline-runner"
KSERVE_GROUP = "serving.kserve.io"
# What a kustomization may say; the ones render() applies are resources, patches (path or inline),
# patchesStrategicMerge and namespace. The others change names, labels or images, not the schema.
KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "patches", "patchesStrategicMerge", "namespace",
                  "namePrefix", "nameSuffix", "commonLabels", "labels", "commonAnnotations", "images",
                  "configMapGenerator", "secretGenerator", "generatorOptions", "components", "replicas"}


def all_yaml() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def rel_path(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for i, doc in enumerate(docs):
        assert isinstance(doc, dict), f"{rel_path(path)} document {i} is not a mapping"
    return docs


# ------------------------------------------------------------------------------------------- validation
def validate_object(doc: dict[str, Any], where: str) -> None:
    """One Kubernetes object: KServe kinds through genctr's SDK check, the rest against the OpenAPI schema."""
    from genctr.deploy.manifests import check_manifest

    api = str(doc.get("apiVersion", ""))
    if not api or "kind" not in doc:
        raise AssertionError(f"{where}: a Kubernetes object needs apiVersion and kind")
    if api.split("/")[0] == KSERVE_GROUP:
        try:
            check_manifest(doc)
        except ConfigError as exc:
            raise AssertionError(f"{where}: {exc}") from None
        return
    if api.split("/")[0] == "sparkoperator.k8s.io":  # the Spark Operator's kind: genctr's field-level check
        from genctr.features.spark_application import check_manifest as check_spark_application

        try:
            check_spark_application(doc)
        except ConfigError as exc:
            raise AssertionError(f"{where}: {exc}") from None
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise AssertionError(f"{where}: no Kubernetes {K8S_VERSION} schema for {doc['kind']} ({api}); a custom "
                             "resource needs its own check here") from None
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)  # a jsonschema error: where in the object
        raise AssertionError(f"{where}: {doc['kind']} {path or '<root>'}: {exc.message}") from None


def merge(base: Any, patch: Any, by_name: bool) -> Any:
    """Apply a kustomize patch: RFC 7386 merge (null deletes); with ``by_name`` (built-in kinds, strategic
    merge) lists of named objects merge item by item, as kustomize does for containers, env, volumes."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(base.get(key), value, by_name) if key in base else copy.deepcopy(value)
        return out
    if by_name and isinstance(base, list) and isinstance(patch, list) and all(
            isinstance(x, dict) and "name" in x for x in [*base, *patch]):
        merged = {x["name"]: x for x in base}
        for item in patch:
            merged[item["name"]] = merge(merged[item["name"]], item, by_name) if item["name"] in merged else item
        return list(merged.values())
    return copy.deepcopy(patch)


def render(kustomization: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, as ``kubectl kustomize`` would build the directory (the subset above)."""
    spec = documents(kustomization)[0]
    unknown = sorted(set(spec) - KUSTOMIZE_KEYS)
    assert not unknown, f"{rel_path(kustomization)}: unknown or unsupported kustomization key(s) {unknown}"
    here = kustomization.parent
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for ref in spec.get("resources") or []:
        target = (here / ref).resolve()
        assert target.exists(), f"{rel_path(kustomization)}: resource {ref} does not exist"
        found = render(target / "kustomization.yaml") if target.is_dir() else {
            (d["kind"], d["metadata"]["name"]): d for d in documents(target)}
        objects.update(found)
    patches = [{"path": p} for p in spec.get("patchesStrategicMerge") or []] + list(spec.get("patches") or [])
    for entry in patches:
        if "path" in entry:
            assert (here / entry["path"]).is_file(), \
                f"{rel_path(kustomization)}: patch {entry['path']} does not exist"
            docs = documents(here / entry["path"])
        else:
            docs = [d for d in yaml.safe_load_all(entry["patch"]) if d is not None]
        for doc in docs:
            assert isinstance(doc, dict), f"{rel_path(kustomization)}: JSON6902 list patches are not rendered"
            key = (entry.get("target", {}).get("kind", doc.get("kind")),
                   entry.get("target", {}).get("name", (doc.get("metadata") or {}).get("name")))
            assert key in objects, f"{rel_path(kustomization)}: patch targets {key}, not a resource here"
            builtin = str(objects[key]["apiVersion"]).split("/")[0] != KSERVE_GROUP
            objects[key] = merge(objects[key], doc, by_name=builtin)
    if spec.get("namespace"):
        for obj in objects.values():
            obj["metadata"] = {**obj["metadata"], "namespace": spec["namespace"]}
    return objects


def kustomize_patch_files() -> set[Path]:
    """Files that kustomizations use as patches: partial objects, validated as rendered."""
    out = set()
    for path in all_yaml():
        for doc in documents(path):
            if doc.get("kind") == "Kustomization":
                out |= {(path.parent / p).resolve() for p in doc.get("patchesStrategicMerge") or []}
                out |= {(path.parent / e["path"]).resolve() for e in doc.get("patches") or [] if "path" in e}
    return out


def validate_file(path: Path) -> list[str]:
    """Validate one file under manifests/; return what was checked (``kind/name`` per object)."""
    from genctr.orchestration.remote import load_schedule_file

    rel = rel_path(path)
    docs = documents(path)
    assert docs, f"{rel} holds no document"
    if all("kind" not in d and "apiVersion" not in d for d in docs):  # genctr's recurring-run format
        assert len(docs) == 1, f"{rel}: a recurring-run definition is one document"
        try:
            spec = load_schedule_file(path)
        except ConfigError as exc:
            raise AssertionError(f"{rel}: {exc}") from None
        return [f"recurring-run/{spec['name']}"]
    if path.resolve() in kustomize_patch_files():
        return []  # a partial object: its kustomization validates the patched result
    checked = []
    for i, doc in enumerate(docs):
        where = f"{rel} document {i}"
        if doc.get("kind") == "Kustomization":
            for (kind, name), obj in render(path).items():
                validate_object(obj, f"{where} (rendered {kind} {name})")
                checked.append(f"{kind}/{name}@{path.parent.name}")
        else:
            validate_object(doc, where)
            checked.append(f"{doc['kind']}/{doc['metadata']['name']}")
    return checked


@pytest.mark.parametrize("path", all_yaml(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_manifest_is_valid(path: Path) -> None:
    checked = validate_file(path)
    assert checked or path.resolve() in kustomize_patch_files()


def test_the_glob_finds_the_manifests_and_renders_every_patch() -> None:
    names = {str(p.relative_to(MANIFESTS)) for p in all_yaml()}
    assert {"rbac-pipeline-runner.yaml", "storage-secret.yaml", "recurring-run.yaml", "recurring-run-canary.yaml",
            "kserve/base/kustomization.yaml", "kserve/base/inference-service.yaml"} <= names
    rendered = set()
    for path in all_yaml():
        if any(d.get("kind") == "Kustomization" for d in documents(path)):
            rendered |= set(validate_file(path))
    # every patch file is applied by some kustomization, so each partial object is validated as a whole
    for patch in kustomize_patch_files():
        doc = documents(patch)[0]
        assert f"{doc['kind']}/{doc['metadata']['name']}@{patch.parent.name}" in rendered, patch


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: d["rules"][0].update(verb=d["rules"][0].pop("verbs")), "verbs"),  # a typo in a Role
    (lambda d: d["metadata"].update(nmae="x"), "nmae"),  # an unknown field (strict schema)
    (lambda d: d.update(apiVersion="rbac.authorization.k8s.io/v9"), "no Kubernetes"),
])
def test_the_schema_check_catches_broken_objects(mutate: Any, needle: str) -> None:
    role = copy.deepcopy(next(d for d in documents(RBAC) if d["kind"] == "Role"))
    validate_object(role, "role")  # the real one passes
    mutate(role)
    with pytest.raises(AssertionError, match=needle):
        validate_object(role, "role")


def test_kserve_objects_and_recurring_runs_are_checked_by_their_own_loaders(tmp_path: Path) -> None:
    isvc = documents(MANIFESTS / "kserve" / "base" / "inference-service.yaml")[0]
    validate_object(isvc, "isvc")
    isvc["spec"]["predictor"]["canaryTrafficPercentt"] = 10
    with pytest.raises(AssertionError, match="canaryTrafficPercentt"):
        validate_object(isvc, "isvc")
    good = validate_file(MANIFESTS / "recurring-run.yaml")
    assert good == ["recurring-run/genctr-training-nightly"]
    bad = tmp_path / "recurring.yaml"
    bad.write_text((MANIFESTS / "recurring-run.yaml").read_text().replace('"0 0 3 * * *"', '"0 3 * * *"'))
    with pytest.raises(AssertionError, match="seconds first"):
        validate_file(bad)
    bad.write_text((MANIFESTS / "recurring-run.yaml").read_text().replace("max_concurrency:", "max_concurency:"))
    with pytest.raises(AssertionError, match="unknown key"):
        validate_file(bad)


def test_a_patch_is_validated_after_it_is_applied(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    role = next(d for d in documents(RBAC) if d["kind"] == "Role")
    (tmp_path / "base" / "role.yaml").write_text(yaml.safe_dump(role))
    (tmp_path / "base" / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["role.yaml"]}))
    patch = {"apiVersion": role["apiVersion"], "kind": "Role", "metadata": {"name": role["metadata"]["name"]},
             "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": "get"}]}  # verbs must be a list
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": ["base"], "namespace": "other", "patches": [{"patch": yaml.safe_dump(patch)}]}))
    objects = render(tmp_path / "kustomization.yaml")
    obj = objects[("Role", role["metadata"]["name"])]
    assert obj["metadata"]["namespace"] == "other" and obj["rules"] == patch["rules"]
    with pytest.raises(AssertionError, match="rules/0/verbs"):
        validate_object(obj, "patched role")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["base", "missing.yaml"]}))
    with pytest.raises(AssertionError, match="resource missing.yaml does not exist"):
        render(tmp_path / "kustomization.yaml")


# ------------------------------------------------------------------------------------------- RBAC
def granted(path: Path = RBAC, service_account: str = RUNNER_SA) -> dict[str, list[str]]:
    """``group/resource`` -> verbs the ServiceAccount holds through the file's RoleBindings."""
    docs = documents(path)
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    out: dict[str, set[str]] = {}
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        assert ref["kind"] == "Role" and ref["name"] in roles, f"{binding['metadata']['name']} binds a missing role"
        for rule in roles[ref["name"]]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault(f"{group or 'core'}/{resource}", set()).update(rule["verbs"])
    return {k: sorted(v) for k, v in sorted(out.items())}


def test_rbac_golden_file() -> None:
    got = {RUNNER_SA: granted()}
    if os.environ.get("GENCTR_UPDATE_GOLDEN") == "1":
        GOLDEN_RBAC.write_text("# what genctr-pipeline-runner may do (manifests/rbac-pipeline-runner.yaml); "
                               "regenerate with\n# GENCTR_UPDATE_GOLDEN=1 pytest tests/test_manifests.py\n"
                               + yaml.safe_dump(got, sort_keys=True))
    assert got == yaml.safe_load(GOLDEN_RBAC.read_text()), (
        "the runner's permissions differ from tests/golden/rbac-pipeline-runner.yaml; if intended, "
        "regenerate with GENCTR_UPDATE_GOLDEN=1 pytest tests/test_manifests.py")


def test_the_argo_executor_minimum_and_the_inferenceservice_verbs_are_granted() -> None:
    perms = granted()
    assert {"create", "patch"} <= set(perms["argoproj.io/workflowtaskresults"])
    assert {"get", "watch", "patch"} <= set(perms["core/pods"])
    assert {"get", "watch"} <= set(perms["core/pods/log"])
    assert {"create", "get", "list", "watch", "patch", "update"} <= set(perms["serving.kserve.io/inferenceservices"])
    assert "delete" not in perms["serving.kserve.io/inferenceservices"]  # nothing in genctr deletes a service
    sa = next(d for d in documents(RBAC) if d["kind"] == "ServiceAccount")
    namespaces = {d["metadata"]["namespace"] for d in documents(RBAC)}
    assert sa["metadata"]["name"] == RUNNER_SA and namespaces == {"genctr"}
    for run in ("recurring-run.yaml", "recurring-run-canary.yaml"):  # the schedules run as this account
        assert yaml.safe_load((MANIFESTS / run).read_text())["service_account"] == RUNNER_SA


# the Kubernetes API calls KServeClient makes -> the RBAC verb each needs (Kubernetes' REST semantics)
VERB_OF = {"get_namespaced_custom_object": "get", "list_namespaced_custom_object": "list",
           "create_namespaced_custom_object": "create", "patch_namespaced_custom_object": "patch",
           "replace_namespaced_custom_object": "update", "delete_namespaced_custom_object": "delete",
           "read_namespaced_deployment": "get", "patch_namespaced_deployment": "patch"}


class RecordingApps:
    """Stands in for kubernetes' AppsV1Api on the user-hash router's Deployment (the user-sticky
    design's rollouts set its --percent); records each call as (method, group, plural)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.deployment = yaml.safe_load((MANIFESTS / "ab-router" / "deployment.yaml").read_text())

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"KServeDeployer called AppsV1Api.{name}: map it to an RBAC verb in VERB_OF")

    def read_namespaced_deployment(self, name: str, namespace: str) -> Any:
        self.calls.append(("read_namespaced_deployment", "apps", "deployments"))
        return copy.deepcopy(self.deployment)

    def patch_namespaced_deployment(self, name: str, namespace: str, body: Any) -> Any:
        self.calls.append(("patch_namespaced_deployment", "apps", "deployments"))
        return copy.deepcopy(self.deployment)


class RecordingCustomObjects:
    """Stands in for kubernetes' CustomObjectsApi: a one-namespace store that records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []  # (api method, group, plural)
        self.store: dict[str, dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"KServeClient called CustomObjectsApi.{name}: map it to an RBAC verb in VERB_OF")

    def _record(self, method: str, group: str, plural: str) -> None:
        self.calls.append((method, group, plural))

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        from kubernetes.client.rest import ApiException

        self._record("get_namespaced_custom_object", group, plural)
        if name not in self.store:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.store[name])

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str,
                                        body: Any) -> Any:
        from genctr.deploy.manifests import to_dict

        self._record("create_namespaced_custom_object", group, plural)
        obj = to_dict(body)
        obj["status"] = {"conditions": [{"type": "Ready", "status": "True"}], "url": "http://isvc"}
        self.store[obj["metadata"]["name"]] = obj
        return obj

    def patch_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                       body: Any) -> Any:
        from genctr.deploy.manifests import to_dict

        self._record("patch_namespaced_custom_object", group, plural)
        self.store[name] = merge(self.store[name], to_dict(body), by_name=False)
        return self.store[name]


def deployer_calls(monkeypatch: pytest.MonkeyPatch) -> tuple[set[str], list[tuple[str, str, str]]]:
    """Drive every KServeDeployer operation through a real KServeClient; return the KServeClient
    methods it called and the Kubernetes API calls those made."""
    import time

    from kserve import KServeClient

    from genctr.deploy.cluster import KServeDeployer
    from genctr.deploy.manifests import BASE

    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
                  "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                  "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                  "users": [{"name": "u", "user": {"token": "t"}}]}
    client = KServeClient(config_dict=kubeconfig)
    api = RecordingCustomObjects()
    client.api_instance = api  # the one attribute the InferenceService methods talk through
    used: set[str] = set()
    for method in ("create", "get", "patch", "replace", "delete", "wait_isvc_ready", "is_isvc_ready"):
        real = getattr(client, method)

        def spy(*args: Any, _real: Any = real, _name: str = method, **kwargs: Any) -> Any:
            used.add(_name)
            return _real(*args, **kwargs)

        setattr(client, method, spy)
    monkeypatch.setattr(time, "sleep", lambda s: None)  # wait_isvc_ready polls
    deployer = KServeDeployer(BASE, client=client)
    deployer.deploy("s3://m/1")  # absent: created
    deployer.deploy("s3://m/1")  # present: patched
    deployer.start_canary("s3://m/2", 10)
    deployer.promote()
    deployer.start_canary("s3://m/3", 10)
    deployer.rollback()
    deployer.status()
    deployer.wait_ready(timeout_seconds=10)
    apps = RecordingApps()  # the user-sticky design also moves the router's split
    sticky = KServeDeployer(dataclasses.replace(BASE, name="sticky", randomisation="user"), client=client, apps=apps)
    sticky.deploy("s3://m/1")
    sticky.start_canary("s3://m/2", 10)
    sticky.promote()
    sticky.start_canary("s3://m/3", 10)
    sticky.rollback()
    used |= {f"apps.{method}" for method, _, _ in apps.calls}
    return used, api.calls + apps.calls


def client_calls_in_cluster_py() -> set[str]:
    """Every ``self.client.<method>(...)`` call in genctr/deploy/cluster.py, and every
    ``self.apps.<method>(...)`` call as ``apps.<method>``."""
    found = set()
    for node in ast.walk(ast.parse(CLUSTER_PY.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and owner.attr in ("client", "apps") and \
                    isinstance(owner.value, ast.Name) and owner.value.id == "self":
                found.add(node.func.attr if owner.attr == "client" else f"apps.{node.func.attr}")
    return found


def missing_verbs(api_calls: list[tuple[str, str, str]], rbac: Path = RBAC) -> dict[str, list[str]]:
    """``group/resource`` -> verbs the API calls need that ``rbac`` does not grant the runner."""
    perms = granted(rbac)
    needed: dict[str, set[str]] = {}
    for method, group, plural in api_calls:
        needed.setdefault(f"{group}/{plural}", set()).add(VERB_OF[method])
    missing = {res: sorted(verbs - set(perms.get(res, []))) for res, verbs in needed.items()}
    return {res: verbs for res, verbs in missing.items() if verbs}


def test_the_role_grants_every_verb_the_deployer_needs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    in_source = client_calls_in_cluster_py()
    assert "create" in in_source and "patch" in in_source, in_source  # the AST scan sees the calls
    used, api_calls = deployer_calls(monkeypatch)
    unexercised = in_source - used
    assert not unexercised, f"cluster.py calls KServeClient.{sorted(unexercised)}, which deployer_calls() does not " \
                            "exercise: add the operation there so its RBAC verb is derived"
    assert {VERB_OF[m] for m, _, _ in api_calls} >= {"create", "get", "patch"}
    assert missing_verbs(api_calls) == {}, f"{RBAC.name} lacks verbs the deployer uses"
    # the Role as it was before (no create): the first deploy would be forbidden, and the check says so
    before = RBAC.read_text().replace('verbs: ["create", "get", "list", "watch", "patch", "update"]',
                                      'verbs: ["get", "list", "watch", "patch"]')
    assert before != RBAC.read_text()
    (tmp_path / "rbac.yaml").write_text(before)
    assert missing_verbs(api_calls, tmp_path / "rbac.yaml") == {"serving.kserve.io/inferenceservices": ["create"]}


def test_the_prod_manifests_share_one_storage_root() -> None:
    """The training schedule's root, the serving pods' model and Feast registry, the sink's output
    and the canary schedule's logs and registry all sit under one root (genctr.storage's layout)."""
    from genctr.deploy.manifests import PROD_STORAGE_ROOT
    from genctr.storage import StorageLayout

    root = Path(__file__).resolve().parents[1] / "manifests"
    layout = StorageLayout(PROD_STORAGE_ROOT)
    training = yaml.safe_load((root / "recurring-run.yaml").read_text())["params"]
    canary = yaml.safe_load((root / "recurring-run-canary.yaml").read_text())["params"]
    isvc = yaml.safe_load((root / "kserve" / "base" / "inference-service.yaml").read_text())
    sink = yaml.safe_load((root / "ab-log-sink" / "deployment.yaml").read_text())
    assert training["storage_root"] == PROD_STORAGE_ROOT
    deployment = canary["deployment"]
    assert canary["log_dir"] == layout.ab_logs(deployment) and canary["registry_root"] == layout.registry
    predictor = isvc["spec"]["predictor"]
    env = {e["name"]: e.get("value") for e in predictor["model"]["env"]}
    assert env["GENCTR_FEAST_REGISTRY"] == layout.feast_registry("redis")
    assert predictor["model"]["storageUri"].startswith(layout.registry + "/")
    args = sink["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--out={layout.ab_logs(deployment)}" in args
