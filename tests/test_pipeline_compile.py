"""Compiled training pipeline: golden file, GPU requests, placement, the gate condition, parameters;
the runner's parameter parsing and cron validation; submit/schedule against a recording client."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from genctr.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "training_pipeline.yaml"
TRAIN_TASKS = ("pretrain", "finetune")
REGISTRY_TASKS = ("evaluate-and-gate", "register-model", "deploy-model")
# never cached: they read the environment or write state shared across runs (Feast registry, online store)
LIVE_TASKS = (*REGISTRY_TASKS, "resolve-storage", "materialize-features")


from pipelines.placement import PlatformConfig, Toleration
from pipelines.training_pipeline import compile_pipeline, training_pipeline


def compiled(tmp_path: Path, platform: PlatformConfig | None = None) -> dict[str, Any]:
    out = compile_pipeline(tmp_path / "p.yaml", platform or PlatformConfig())
    docs = list(yaml.safe_load_all(out.read_text()))
    spec = docs[0]
    spec["platforms"] = docs[1]["platforms"] if len(docs) > 1 else None
    return spec


def normalise(spec: dict[str, Any]) -> dict[str, Any]:
    """Drop what changes without a change of meaning: the SDK version and component source text.

    Component bodies are shipped as source inside each executor's command; the golden file
    keeps the executor's image, resources and entry point, the unit tests cover the bodies.
    """
    spec = yaml.safe_load(yaml.safe_dump(spec))
    spec.pop("sdkVersion", None)
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor["container"]
        container["command"] = ["<lightweight python component source>"]
    return spec


def executors(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name.removeprefix("exec-"): e["container"] for name, e in spec["deploymentSpec"]["executors"].items()}


def k8s(spec: dict[str, Any]) -> dict[str, Any]:
    if not spec["platforms"]:
        return {}
    execs = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {n.removeprefix("exec-"): c for n, c in execs.items()}


def assert_golden(spec: dict[str, Any], golden: Path, test_file: str) -> None:
    """The normalised compiled ``spec`` equals ``golden`` (rewritten instead with GENCTR_UPDATE_GOLDEN=1)."""
    got = normalise(spec)
    if os.environ.get("GENCTR_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(f"# normalised by {test_file}; regenerate with\n"
                          f"# GENCTR_UPDATE_GOLDEN=1 pytest {test_file}\n" + yaml.safe_dump(got, sort_keys=True))
    want = yaml.safe_load(golden.read_text())
    assert got == want, (f"compiled pipeline differs from {golden.relative_to(ROOT)}; if the change is "
                         f"intended, regenerate with GENCTR_UPDATE_GOLDEN=1 pytest {test_file}")


def test_golden_file(tmp_path: Path) -> None:
    assert_golden(compiled(tmp_path), GOLDEN, "tests/test_pipeline_compile.py")


def test_gpu_requests_only_on_training_tasks(tmp_path: Path) -> None:
    ex = executors(compiled(tmp_path))
    for name, container in ex.items():
        accel = container.get("resources", {}).get("accelerator")
        if name in TRAIN_TASKS:
            assert accel["resourceType"] == "nvidia.com/gpu" and accel["resourceCount"] == "1", name
            assert container["resources"]["resourceCpuRequest"] and container["resources"]["resourceMemoryRequest"]
            assert container["image"].endswith("-cuda")
        else:
            assert accel is None, f"{name} should not request a GPU"
            assert not container["image"].endswith("-cuda")


def test_node_selector_and_tolerations_only_when_configured(tmp_path: Path) -> None:
    assert not any("nodeSelector" in c or "tolerations" in c for c in k8s(compiled(tmp_path)).values())
    platform = PlatformConfig(gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
                              gpu_tolerations=(Toleration("nvidia.com/gpu"), Toleration("team", value="ml")),
                              storage_secret="genctr-storage")
    conf = k8s(compiled(tmp_path, platform))
    for task in TRAIN_TASKS:
        assert conf[task]["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in conf[task]["tolerations"]
        assert {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in conf[task]["tolerations"]
    for task in REGISTRY_TASKS + ("ingest-events", "resolve-storage", "materialize-features"):
        assert conf[task]["secretAsEnv"][0]["secretName"] == "genctr-storage"
        assert "nodeSelector" not in conf[task]


def test_register_and_deploy_run_only_inside_the_gate_condition(tmp_path: Path) -> None:
    spec = compiled(tmp_path)
    root_tasks = spec["root"]["dag"]["tasks"]
    assert "register-model" not in root_tasks and "deploy-model" not in root_tasks
    conditions = {n: t for n, t in root_tasks.items() if "triggerPolicy" in t}
    assert len(conditions) == 1
    (name, cond), = conditions.items()
    assert cond["taskInfo"]["name"] == "gate-passed"
    expr = cond["triggerPolicy"]["condition"]
    # kfp.local resolves only the single `Output` parameter in a condition (see pipelines/training_pipeline.py)
    assert expr == "inputs.parameter_values['pipelinechannel--evaluate-and-gate-Output'] == true"
    inner = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert "evaluate-and-gate" in cond["dependentTasks"]
    # inside the gate: register, then a nested condition (deploy_target != 'none') holding the deploy step
    nested = {n: t for n, t in inner.items() if "triggerPolicy" in t}
    assert set(inner) - set(nested) == {"register-model"} and len(nested) == 1
    (_, deploy_cond), = nested.items()
    assert deploy_cond["taskInfo"]["name"] == "deploy-enabled"
    assert "'none'" in deploy_cond["triggerPolicy"]["condition"] and "!=" in deploy_cond["triggerPolicy"]["condition"]
    deploy_tasks = spec["components"][deploy_cond["componentRef"]["name"]]["dag"]["tasks"]
    assert set(deploy_tasks) == {"deploy-model"}
    # the deploy step takes the version the register step returned
    version_in = deploy_tasks["deploy-model"]["inputs"]["parameters"]["version"]
    assert "register-model" in str(version_in)


def test_shared_locations_come_from_the_storage_step(tmp_path: Path) -> None:
    """The registry, the Feast registry and the build location every later step uses are the ones the
    first step resolved: no step falls back to a default of its own pod."""
    spec = compiled(tmp_path)
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))

    def source(task: str, param: str) -> tuple[str, str]:
        value = tasks[task]["inputs"]["parameters"][param]
        if "taskOutputParameter" in value:
            ref = value["taskOutputParameter"]
            return ref["producerTask"], ref["outputParameterKey"]
        # inside a condition the value arrives as a component input named after its producer
        return "resolve-storage", value["componentInputParameter"].removeprefix("pipelinechannel--resolve-storage-")

    for task in REGISTRY_TASKS:
        assert source(task, "registry_root") == ("resolve-storage", "registry"), task
    assert source("materialize-features", "feast_registry") == ("resolve-storage", "feast_registry")
    assert source("materialize-features", "publish_to") == ("resolve-storage", "build")
    storage = tasks["resolve-storage"]["inputs"]["parameters"]
    assert storage["storage_root"] == {"componentInputParameter": "storage_root"}
    assert storage["registry_root"] == {"componentInputParameter": "registry_root"}  # the explicit override
    assert storage["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert "resolve-storage" in tasks["ingest-events"]["dependentTasks"]  # nothing runs before it


def test_caching_off_exactly_where_shared_state_is_read_or_written(tmp_path: Path) -> None:
    spec = compiled(tmp_path)
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    for name, task in tasks.items():
        if "componentRef" in task and task["componentRef"]["name"].startswith("comp-condition"):
            continue
        cached = task.get("cachingOptions", {}).get("enableCache", False)
        assert cached == (name not in LIVE_TASKS), name


def assert_parameters_exposed(spec: dict[str, Any], pipeline: Any) -> dict[str, Any]:
    """Every argument of ``pipeline`` is a run-form parameter with its type, default and a
    description; returns the declared parameters."""
    declared = spec["root"]["inputDefinitions"]["parameters"]
    signature = inspect.signature(pipeline.pipeline_func).parameters
    kinds = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN", dict: "STRUCT"}
    assert set(declared) == set(signature)
    for name, p in signature.items():
        assert declared[name]["parameterType"] == kinds[p.annotation], name
        assert declared[name]["defaultValue"] == p.default, name
        assert declared[name].get("description"), f"{name} has no description in the run form"
    return declared


def test_every_parameter_exposed_with_its_default(tmp_path: Path) -> None:
    declared = assert_parameters_exposed(compiled(tmp_path), training_pipeline)
    for must in ("data_source", "data_path", "max_seq_len", "pretrain_method", "backbone", "transfer", "negatives",
                 "pretrain_epochs", "finetune_epochs", "pretrain_lr", "finetune_lr", "batch_size", "seed",
                 "auc_margin", "alpha", "floor_auc", "storage_root", "registry_root", "model_name", "canary_percent",
                 "promote_without_canary", "deploy_target", "deployment", "kserve_namespace", "train_workers",
                 "train_gpus_per_worker", "trainer_api"):
        assert must in declared
    # one worker = train in the step's pod, as before the training-job parameters existed
    assert (declared["train_workers"]["defaultValue"], declared["train_gpus_per_worker"]["defaultValue"],
            declared["trainer_api"]["defaultValue"]) == (1, 0, "trainjob")


def test_training_steps_get_the_job_parameters_placement_and_storage(tmp_path: Path) -> None:
    """Both training steps take the run form's job parameters, the storage root the first step resolved,
    and a job placement equal to their own pod's, so a job lands where the step would have trained."""
    from pipelines.training_pipeline import job_placement

    platform = PlatformConfig(train_image="registry.example/genctr:cuda", train_cpu="6", train_memory="24Gi",
                              gpu_node_selector={"pool": "gpu"}, storage_secret="genctr-storage",
                              gpu_tolerations=(Toleration("nvidia.com/gpu"), Toleration("team", value="ml")))
    spec = compiled(tmp_path, platform)
    tasks = spec["root"]["dag"]["tasks"]
    want_placement = {"image": "registry.example/genctr:cuda", "cpu": "6", "memory": "24Gi",
                      "accelerator": "nvidia.com/gpu", "node_selector": {"pool": "gpu"},
                      "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                      {"key": "team", "operator": "Equal", "effect": "NoSchedule", "value": "ml"}],
                      "storage_secret": "genctr-storage"}
    assert job_placement(platform) == want_placement
    from genctr.orchestration.trainer_job import JobPlacement

    JobPlacement.from_dict(want_placement)  # what the step builds from it
    for name in TRAIN_TASKS:
        params = tasks[name]["inputs"]["parameters"]
        for p in ("train_workers", "train_gpus_per_worker", "trainer_api"):
            assert params[p] == {"componentInputParameter": p}, (name, p)
        assert params["storage_root"]["taskOutputParameter"] == {"producerTask": "resolve-storage",
                                                                 "outputParameterKey": "root"}
        assert params["job_placement"]["runtimeValue"]["constant"] == want_placement
        assert k8s(spec)[name]["secretAsEnv"][0]["secretName"] == "genctr-storage"  # it stages through the root


def test_images_come_from_the_environment_at_compile_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENCTR_IMAGE", "registry.example/genctr:dev")
    monkeypatch.setenv("GENCTR_TRAIN_IMAGE", "registry.example/genctr:dev-cuda")
    monkeypatch.setenv("GENCTR_GPU_NODE_SELECTOR", "pool=gpu")
    monkeypatch.setenv("GENCTR_GPU_TOLERATIONS", "nvidia.com/gpu=present:NoSchedule")
    spec = compiled(tmp_path, PlatformConfig.from_env())
    images = {name: c["image"] for name, c in executors(spec).items()}
    assert images["finetune"] == images["pretrain"] == "registry.example/genctr:dev-cuda"
    assert images["validate-events"] == images["register-model"] == "registry.example/genctr:dev"
    assert k8s(spec)["pretrain"]["nodeSelector"]["labels"] == {"pool": "gpu"}
    assert k8s(spec)["finetune"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]


def test_module_compiles_from_the_command_line_outside_the_checkout(tmp_path: Path) -> None:
    # from another directory: pipelines/ and components/ come from the installed project
    out = tmp_path / "cli.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENCTR_")}
    subprocess.run([sys.executable, "-m", "pipelines.training_pipeline", "--out", str(out)], cwd=tmp_path, env=env,
                   check=True, capture_output=True)
    assert normalise(compiled(tmp_path)) == normalise(_load(out))


def _load(path: Path) -> dict[str, Any]:
    docs = list(yaml.safe_load_all(path.read_text()))
    docs[0]["platforms"] = docs[1]["platforms"] if len(docs) > 1 else None
    return docs[0]


@pytest.mark.parametrize("text", ["nvidia.com/gpu", "nvidia.com/gpu:NoExecute", "k=v:PreferNoSchedule"])
def test_toleration_syntax(text: str) -> None:
    t = Toleration.parse(text)
    assert t.key in ("nvidia.com/gpu", "k")


@pytest.mark.parametrize("text", ["", "k=v:Sometimes", "=v"])
def test_bad_toleration_is_an_error(text: str) -> None:
    with pytest.raises(ConfigError, match="toleration"):
        Toleration.parse(text)


# ---------------------------------------------------------------------------- runner helpers
def test_cron_needs_six_fields_seconds_first() -> None:
    from genctr.orchestration.remote import validate_cron

    assert validate_cron("0 0 3 * * *") == "0 0 3 * * *"
    assert validate_cron(" 0  */15 * * * 1-5 ") == "0 */15 * * * 1-5"
    assert validate_cron("0 0 9 ? * 2-6") == "0 0 9 ? * 2-6"
    with pytest.raises(ConfigError, match=r"5 fields.*6 with seconds first.*'0 0 3 \* \* \*'"):
        validate_cron("0 3 * * *")
    with pytest.raises(ConfigError, match="7 fields"):
        validate_cron("0 0 3 * * * 2026")
    with pytest.raises(ConfigError, match="hour field"):
        validate_cron("0 0 3;rm * * *")
    with pytest.raises(ConfigError, match=r"'\?'"):
        validate_cron("? 0 3 * * *")


def test_params_are_typed_and_unknown_ones_rejected() -> None:
    from genctr.orchestration.catalog import check_params, parse_params

    got = parse_params(["finetune_epochs=3", "finetune_lr=0.01", "promote_without_canary=false",
                        "data_source=synthetic", "data_path=/x=y.parquet"])
    assert got == {"finetune_epochs": 3, "finetune_lr": 0.01, "promote_without_canary": False,
                   "data_source": "synthetic", "data_path": "/x=y.parquet"}
    with pytest.raises(ConfigError, match="unknown pipeline parameter.*'epochs'"):
        parse_params(["epochs=3"])
    with pytest.raises(ConfigError, match="finetune_epochs must be integer"):
        parse_params(["finetune_epochs=two"])
    with pytest.raises(ConfigError, match="promote_without_canary must be boolean"):
        check_params({"promote_without_canary": "maybe"})
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_params(["finetune_epochs"])


def test_recurring_run_definition_is_valid() -> None:
    from genctr.orchestration.remote import load_schedule_file

    spec = load_schedule_file(ROOT / "manifests" / "recurring-run.yaml")
    assert spec["cron"].split()[0] == "0" and len(spec["cron"].split()) == 6
    assert spec["enable_caching"] is False and spec["max_concurrency"] == 1
    assert spec["params"]["promote_without_canary"] is False
    # one storage root for everything a cluster run shares; the cluster profile's defaults, not the laptop's
    from genctr.orchestration.profiles import get_profile

    assert spec["params"]["storage_root"].startswith("s3://") and "registry_root" not in spec["params"]
    cluster = get_profile("cluster").defaults_for("training")
    assert {k: spec["params"][k] for k in cluster} == dict(cluster)


class RecordingClient:
    """Stands in for kfp.Client: records calls, checks the package it is given compiles to our pipeline."""

    calls: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, host: str | None = None, namespace: str | None = None) -> None:
        self.calls.append(("init", {"host": host, "namespace": namespace}))

    def create_run_from_pipeline_package(self, pipeline_file: str, **kw: Any) -> Any:
        spec = next(yaml.safe_load_all(Path(pipeline_file).read_text()))
        assert spec["pipelineInfo"]["name"] == "genctr-training"
        self.calls.append(("run", kw))
        return type("Run", (), {"run_id": "run-1"})()

    def create_experiment(self, name: str, namespace: str | None = None) -> Any:
        self.calls.append(("experiment", {"name": name}))
        return type("Exp", (), {"experiment_id": "exp-1"})()

    def create_recurring_run(self, **kw: Any) -> Any:
        assert Path(kw["pipeline_package_path"]).is_file()
        self.calls.append(("recurring", kw))
        return type("Job", (), {"recurring_run_id": "job-1"})()


def test_submit_and_schedule_call_the_kfp_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import kfp

    from genctr.orchestration import remote

    RecordingClient.calls = []
    monkeypatch.setattr(kfp, "Client", RecordingClient)
    assert remote.submit("http://kfp:8080", {"finetune_epochs": "2"}, "exp") == "run-1"
    run = dict(RecordingClient.calls)["run"]
    assert run["arguments"] == {"finetune_epochs": 2} and run["experiment_name"] == "exp"
    assert remote.schedule("http://kfp:8080", "0 0 3 * * *", {}, "nightly") == "job-1"
    job = dict(RecordingClient.calls)["recurring"]
    assert job["cron_expression"] == "0 0 3 * * *" and job["experiment_id"] == "exp-1"
    assert job["enable_caching"] is False and job["job_name"] == "nightly" and job["max_concurrency"] == 1
    with pytest.raises(ConfigError, match="seconds first"):
        remote.schedule("http://kfp:8080", "0 3 * * *", {}, "nightly")


def test_manifests_grant_inferenceservice_patching() -> None:
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "rbac-pipeline-runner.yaml").read_text()))
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding"}
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    rule = roles["genctr-inferenceservice-editor"]["rules"][0]
    assert rule["apiGroups"] == ["serving.kserve.io"] and rule["resources"] == ["inferenceservices"]
    assert {"get", "patch"} <= set(rule["verbs"])
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == set(roles)  # every Role is bound to the runner
    assert all(b["subjects"][0]["name"] == sa for b in bindings)
    secret = yaml.safe_load((ROOT / "manifests" / "storage-secret.yaml").read_text())
    assert secret["kind"] == "Secret" and set(secret["stringData"]) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert secret["stringData"]["AWS_SECRET_ACCESS_KEY"] == "REPLACE_ME"


def test_cli_commands_have_help() -> None:
    from typer.testing import CliRunner

    from genctr.cli.pipeline import pipeline_app

    runner = CliRunner()
    for cmd in ("compile", "run", "submit", "schedule", "params"):
        result = runner.invoke(pipeline_app, [cmd, "--help"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(pipeline_app, ["run"])
    assert result.exit_code == 2 and "--local" in result.output
    result = runner.invoke(pipeline_app, ["schedule", "--host", "http://kfp", "--cron", "0 3 * * *", "--name", "n"])
    assert result.exit_code == 2 and "seconds first" in result.output


def test_the_cached_data_and_training_steps_take_no_per_run_input(tmp_path: Path) -> None:
    """KFP caches a step by its inputs: one that takes this run's own location (the storage step's
    ``build`` / ``reports``, named by the run id) is rerun every time, and so is everything after it."""
    tasks = compiled(tmp_path)["root"]["dag"]["tasks"]
    per_run = {"build", "reports"}
    for name in ("ingest-events", "validate-events", "build-features", "validate-samples", "pretrain", "finetune"):
        params = tasks[name]["inputs"].get("parameters", {})
        taken = {(p["taskOutputParameter"]["producerTask"], p["taskOutputParameter"]["outputParameterKey"])
                 for p in params.values() if "taskOutputParameter" in p}
        assert not {key for task, key in taken if task == "resolve-storage"} & per_run, (name, taken)
        assert tasks[name].get("cachingOptions", {}).get("enableCache", True) is not False, name


def test_a_cluster_build_without_a_uri_stages_under_the_object_store_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from genctr.features.build_step import _default_shared
    from genctr.storage import STORAGE_ROOT_ENV

    monkeypatch.setenv(STORAGE_ROOT_ENV, "s3://genctr/prod")
    a, b = _default_shared("minio://mlpipeline/v2/artifacts/run-1/ingest-events/events"), _default_shared(
        "minio://mlpipeline/v2/artifacts/run-2/ingest-events/events")
    assert a.startswith("s3://genctr/prod/builds/spark-") and a != b
    assert a == _default_shared("minio://mlpipeline/v2/artifacts/run-1/ingest-events/events")  # a rerun: the same
    monkeypatch.setenv(STORAGE_ROOT_ENV, "/data/genctr")
    assert _default_shared("minio://x/y") == ""  # a local root: the executors cannot see it; the step says so
