"""The canary pipeline and CLI: the compiled pipeline (golden file, run form, condition, caching),
the components on hand-made logs, ``genctr pipeline --pipeline canary`` and ``genctr canary``, and
kfp.local runs against a real local ModelServer with a planted better canary (shared fixture of
tests/canary_fixtures.py: trained vs random model).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from canary_fixtures import MODEL, canary_world, plant, traffic, uri
from kfp.dsl import HTML, Artifact, Dataset, Metrics
from test_monitoring import T0, make_logs
from test_pipeline_compile import assert_golden, assert_parameters_exposed  # shared with the training pipeline's
from typer.testing import CliRunner

import components
from components.canary import analyze_canary
from genctr.errors import ConfigError, DataValidationError
from genctr.monitoring.canary import load_policy
from genctr.monitoring.decision import CanaryPolicy
from pipelines.canary_pipeline import canary_pipeline, compile_pipeline
from pipelines.placement import PlatformConfig

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "canary_pipeline.yaml"
TASKS = ("resolve-storage", "collect-logs", "analyze-canary", "act-on-canary")


def compiled(tmp_path: Path, platform: PlatformConfig | None = None) -> dict[str, Any]:
    docs = list(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", platform or PlatformConfig()).read_text()))
    spec = docs[0]
    spec["platforms"] = docs[1]["platforms"] if len(docs) > 1 else None
    return spec


def all_tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


# ---------------------------------------------------------------------------- compiled pipeline
def test_golden_file(tmp_path: Path) -> None:
    assert_golden(compiled(tmp_path), GOLDEN, "tests/test_canary_pipeline.py")


def test_every_parameter_exposed_with_description_and_default(tmp_path: Path) -> None:
    declared = assert_parameters_exposed(compiled(tmp_path), canary_pipeline)
    # the policy is one run-form field whose default is the library's CanaryPolicy defaults, and the
    # components' "no policy" is the same policy
    assert declared["policy"]["defaultValue"] == dataclasses.asdict(CanaryPolicy())
    for component in (analyze_canary, components.collect_logs):
        assert load_policy(inspect.signature(component.python_func).parameters["policy"].default) == CanaryPolicy()
    described = declared["policy"]["description"]
    for f in dataclasses.fields(CanaryPolicy):
        assert f.name in described, f"{f.name} is not described in the run form's policy field"
        assert f.name not in declared, f"{f.name} is a field of policy, not a parameter of its own"
    assert {"log_dir", "since_ts", "deploy_target", "deployment", "kserve_namespace", "kserve_env", "registry_root",
            "model_name", "policy", "drift", "dry_run"} <= set(declared)


def test_the_policy_parameter_parses_json_and_refuses_what_is_not_a_mapping() -> None:
    from genctr.orchestration.catalog import check_params, parse_params

    got = parse_params(['policy={"min_users_per_arm": 100, "max_p99_latency_ms": 10000}'], "canary")
    assert got == {"policy": {"min_users_per_arm": 100, "max_p99_latency_ms": 10000}}
    assert check_params({"policy": {"alpha": 0.1}}, "canary") == {"policy": {"alpha": 0.1}}  # from a YAML file
    for bad in ("policy=[1, 2]", "policy=min_users_per_arm=3", "policy=7"):
        with pytest.raises(ConfigError, match="pipeline parameter policy must be dict"):
            parse_params([bad], "canary")


def test_load_policy_takes_the_run_forms_doubles_and_validates() -> None:
    # a KFP struct carries 200 as 200.0: an integral double is the integer, anything else an error
    assert load_policy({"min_users_per_arm": 200.0, "alpha": 0.1}) == CanaryPolicy(min_users_per_arm=200, alpha=0.1)
    with pytest.raises(ConfigError, match="min_users_per_arm must be an integer"):
        load_policy({"min_users_per_arm": 200.5})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'min_users'"):
        load_policy({"min_users": 3})
    with pytest.raises(ConfigError, match="mapping"):
        load_policy([1, 2])  # type: ignore[arg-type]  # a wrong type on purpose


def test_act_runs_only_inside_the_decision_condition(tmp_path: Path) -> None:
    spec = compiled(tmp_path)
    root_tasks = spec["root"]["dag"]["tasks"]
    assert {"collect-logs", "analyze-canary"} <= set(root_tasks) and "act-on-canary" not in root_tasks
    conditions = {n: t for n, t in root_tasks.items() if "triggerPolicy" in t}
    assert len(conditions) == 1
    (_, cond), = conditions.items()
    assert cond["taskInfo"]["name"] == "canary-decided"
    assert sorted(cond["dependentTasks"]) == ["analyze-canary", "resolve-storage"]  # the registry comes from it
    assert cond["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--analyze-canary-Output'] != 'continue'"
    inner = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inner) == {"act-on-canary"}
    assert "analyze-canary" in str(inner["act-on-canary"]["inputs"]["artifacts"]["analysis"])
    assert "collect-logs" in str(root_tasks["analyze-canary"]["inputs"]["artifacts"]["logs"])


def test_caching_off_on_every_step_and_secrets_where_storage_is_read(tmp_path: Path) -> None:
    spec = compiled(tmp_path, PlatformConfig(storage_secret="genctr-storage", image="registry.example/genctr:dev"))
    tasks = {n: t for n, t in all_tasks(spec).items() if not t["componentRef"]["name"].startswith("comp-condition")}
    assert set(tasks) == set(TASKS)
    for name, task in tasks.items():
        assert task.get("cachingOptions", {}).get("enableCache", False) is False, name
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert executor["container"]["image"] == "registry.example/genctr:dev", name
        assert "accelerator" not in executor["container"].get("resources", {}), name
    k8s = spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {n.removeprefix("exec-") for n in k8s} == set(TASKS)
    assert all(c["secretAsEnv"][0]["secretName"] == "genctr-storage" for c in k8s.values())


# ---------------------------------------------------------------------------- components on hand-made logs
def art(cls: type, tmp_path: Path, name: str) -> Any:
    return cls(name=name, uri=str(tmp_path / name), metadata={})


def write_state(state_dir: Path, canary: str | None = "/models/b", percent: int = 50) -> None:
    """A local deployment's state file without a server: enough for status() (ready False)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "ab.json").write_text(json.dumps({"name": "ab", "champion": "/models/a", "canary": canary,
                                                   "canary_percent": percent}))


@pytest.fixture(scope="module")
def better_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 users, half on a canary whose CTR is 40 % higher, timestamps over one day from T0."""
    log_dir = tmp_path_factory.mktemp("ab") / "logs"
    make_logs(log_dir, canary_lift=0.4, seed=3)
    return log_dir


def test_collect_logs_windows_checks_and_counts(better_logs: Path, tmp_path: Path) -> None:
    from genctr.monitoring.logs import read_logs

    logs = art(Dataset, tmp_path, "logs")
    since = T0 + 43_200
    summary = json.loads(components.collect_logs.python_func(log_dir=f"file://{better_logs}", logs=logs,
                                                             since_ts=since))
    everything = read_logs(better_logs)
    copy = read_logs(logs.path)  # reads back clean: clicks on dropped impressions are dropped too
    assert len(copy.requests) == int((everything.requests["ts"] >= since).sum()) < len(everything.requests)
    assert copy.requests["ts"].min() >= since and copy.impressions["ts"].min() >= since
    for table in ("requests", "impressions", "clicks"):
        assert list((Path(logs.path) / table).glob("part-*.parquet")), table
    for arm in ("champion", "canary"):
        n = int((copy.requests["arm"] == arm).sum())
        assert summary["requests"][arm] == logs.metadata[f"requests_{arm}"] == n > 0
        assert logs.metadata[f"clicks_{arm}"] == int(copy.impressions.loc[copy.impressions["arm"] == arm,
                                                                          "clicked"].sum())


def test_collect_logs_fails_on_a_malformed_log(better_logs: Path, tmp_path: Path) -> None:
    from genctr.monitoring.logs import read_table

    bad = tmp_path / "bad"
    for table in ("requests", "impressions", "clicks"):
        df = read_table(better_logs, table)
        if table == "impressions":
            df.loc[5, "arm"] = "shadow"
        (bad / table).mkdir(parents=True)
        df.to_parquet(bad / table / "part-0.parquet", index=False)
    with pytest.raises(DataValidationError, match=r"impressions log has unknown arm\(s\) \['shadow'\]"):
        components.collect_logs.python_func(log_dir=str(bad), logs=art(Dataset, tmp_path, "logs"))
    with pytest.raises(ConfigError, match="does not exist"):
        components.collect_logs.python_func(log_dir=str(tmp_path / "nowhere"), logs=art(Dataset, tmp_path, "l2"))


def test_analyze_then_act_dry_run_and_a_stale_canary(better_logs: Path, tmp_path: Path) -> None:
    state_dir = tmp_path / "deploy"
    write_state(state_dir)
    outs = {"metrics": art(Metrics, tmp_path, "metrics"), "report": art(HTML, tmp_path, "report"),
            "analysis": art(Artifact, tmp_path, "analysis")}
    action = components.analyze_canary.python_func(
        logs=Dataset(uri=str(better_logs)), deployment="ab", state_dir=str(state_dir), **outs)
    assert action == "promote"
    m = outs["metrics"].metadata
    assert m["ctr_lo"] > 0 and m["ctr_lo"] < m["ctr_uplift"] < m["ctr_hi"] and 0 <= m["srm_p"] <= 1
    assert m["users_champion"] > 500 and m["users_canary"] > 500
    html = Path(outs["report"].path).read_text()
    assert "Canary decision: PROMOTE" in html and html.count("data:image/png;base64,") == 2
    assert "Drift: canary vs champion" in html and "<iframe srcdoc=" in html
    decision = json.loads((Path(outs["analysis"].path) / "decision.json").read_text())
    assert decision["canary_uri"] == "/models/b" and decision["canary_percent"] == 50
    assert (Path(outs["analysis"].path) / decision["files"]["drift_arms"]).is_file()

    acted = json.loads(components.act_on_canary.python_func(
        analysis=outs["analysis"], registry_root=str(tmp_path / "reg"), model_name="ab", deployment="ab",
        state_dir=str(state_dir), dry_run=True))
    assert acted["action"] == "promote" and acted["acted"] == "none" and acted["dry_run"] is True
    assert json.loads((state_dir / "ab.json").read_text())["canary"] == "/models/b"  # untouched

    write_state(state_dir, canary="/models/c")  # another rollout started since the analysis
    with pytest.raises(ConfigError, match="analysis judged /models/b"):
        components.act_on_canary.python_func(analysis=outs["analysis"], registry_root=str(tmp_path / "reg"),
                                             model_name="ab", deployment="ab", state_dir=str(state_dir))


def test_analyze_without_a_canary_continues(better_logs: Path, tmp_path: Path) -> None:
    write_state(tmp_path / "deploy", canary=None, percent=0)
    outs = {"metrics": art(Metrics, tmp_path, "metrics"), "report": art(HTML, tmp_path, "report"),
            "analysis": art(Artifact, tmp_path, "analysis")}
    action = components.analyze_canary.python_func(logs=Dataset(uri=str(better_logs)), deployment="ab",
                                                   state_dir=str(tmp_path / "deploy"), **outs)
    assert action == "continue" and "no canary in progress" in Path(outs["report"].path).read_text()
    decision = json.loads((Path(outs["analysis"].path) / "decision.json").read_text())
    assert decision["reasons"] == ["deployment ab has no canary in progress: nothing to judge"]
    assert decision["canary_uri"] is None and outs["metrics"].metadata == {}


def test_the_pipeline_steps_and_the_one_call_turn_write_one_decision_schema(better_logs: Path,
                                                                          tmp_path: Path) -> None:
    from genctr.deploy.local import LocalDeployer
    from genctr.monitoring.canary import run_canary_step
    from genctr.monitoring.canary_record import CanaryDecision, CanaryResult

    state_dir = tmp_path / "deploy"
    write_state(state_dir)
    outs = {"metrics": art(Metrics, tmp_path, "metrics"), "report": art(HTML, tmp_path, "report"),
            "analysis": art(Artifact, tmp_path, "analysis")}
    # the run form's struct: partial, numbers as doubles
    policy = {"min_users_per_arm": 300.0, "ctr_uplift_threshold": 0.01}
    components.analyze_canary.python_func(logs=Dataset(uri=str(better_logs)), deployment="ab",
                                          state_dir=str(state_dir), policy=policy, drift=False, **outs)
    acted = json.loads(components.act_on_canary.python_func(
        analysis=outs["analysis"], registry_root=str(tmp_path / "reg"), model_name="ab", deployment="ab",
        state_dir=str(state_dir), dry_run=True))
    turn = run_canary_step(better_logs, LocalDeployer(state_dir / "ab.json", name="ab"), load_policy(policy),
                           tmp_path / "one-call", drift=False, dry_run=True, target="local")
    stepped = json.loads((Path(outs["analysis"].path) / "decision.json").read_text())
    one_call = json.loads((tmp_path / "one-call" / "decision.json").read_text())
    fields = {f.name for f in dataclasses.fields(CanaryDecision)}
    assert set(stepped) == set(one_call) == fields
    assert stepped["policy"] == one_call["policy"] == dataclasses.asdict(CanaryPolicy(min_users_per_arm=300,
                                                                                      ctr_uplift_threshold=0.01))
    same = ("action", "reasons", "numbers", "analysis", "deployment", "target", "canary_uri", "canary_percent")
    assert {k: stepped[k] for k in same} == {k: one_call[k] for k in same}  # same logs, same policy, same verdict
    assert set(acted) == {f.name for f in dataclasses.fields(CanaryResult)}
    assert acted == {**turn.result.to_dict(), "registry_champion": None}  # the one-call turn had no registry
    assert (Path(outs["analysis"].path) / stepped["files"]["uplift_png"]).is_file()


def test_a_bad_policy_fails_the_analysis_with_the_policys_message(better_logs: Path, tmp_path: Path) -> None:
    write_state(tmp_path / "deploy")
    outs = {"metrics": art(Metrics, tmp_path, "metrics"), "report": art(HTML, tmp_path, "report"),
            "analysis": art(Artifact, tmp_path, "analysis")}
    for policy, message in (({"alpha": 2.0}, r"alpha must be in \(0, 1\)"), ({"min_users": 3}, "unknown option")):
        with pytest.raises(ConfigError, match=message):
            components.analyze_canary.python_func(logs=Dataset(uri=str(better_logs)), deployment="ab",
                                                  state_dir=str(tmp_path / "deploy"), policy=policy, **outs)
    assert not (Path(outs["analysis"].path) / "decision.json").exists()


def test_collect_drops_duplicates_on_request_and_carries_their_count(better_logs: Path, tmp_path: Path) -> None:
    import shutil

    from genctr.monitoring.collect import read_collected
    from genctr.monitoring.logs import read_logs

    doubled = tmp_path / "doubled"
    shutil.copytree(better_logs, doubled)
    part = next((doubled / "impressions").glob("part-*.parquet"))
    shutil.copy(part, part.with_name("part-9-again.parquet"))  # every impression of that part logged twice
    n = len(pd.read_parquet(part))
    with pytest.raises(DataValidationError, match="duplicate"):
        components.collect_logs.python_func(log_dir=str(doubled), logs=art(Dataset, tmp_path, "refused"))
    logs = art(Dataset, tmp_path, "logs")
    components.collect_logs.python_func(log_dir=str(doubled), logs=logs, policy={"duplicates": "dedupe"})
    copy = read_collected(logs.path)
    assert copy.quality.duplicate_impressions == n and len(copy.impressions) == len(read_logs(better_logs).impressions)
    assert read_logs(logs.path).quality.duplicate_impressions == 0  # what the analysis would see without it


# ---------------------------------------------------------------------------- genctr pipeline --pipeline canary
def cli() -> Any:
    from genctr.cli import app

    return app


def test_cli_compile_params_and_an_unknown_pipeline(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "canary.yaml"
    result = runner.invoke(cli(), ["pipeline", "compile", "--pipeline", "canary", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert next(yaml.safe_load_all(out.read_text()))["pipelineInfo"]["name"] == "genctr-canary"
    result = runner.invoke(cli(), ["pipeline", "params", "--pipeline", "canary"])
    assert result.exit_code == 0, result.output
    listed = {line.split()[0] for line in result.output.splitlines() if line.strip()}
    assert listed == set(inspect.signature(canary_pipeline.pipeline_func).parameters)
    assert "data_source" in runner.invoke(cli(), ["pipeline", "params"]).output  # training stays the default
    for args in (["params"], ["compile", "--out", str(tmp_path / "x.yaml")], ["run", "--local"],
                 ["submit", "--host", "http://kfp"]):
        result = runner.invoke(cli(), ["pipeline", *args, "--pipeline", "serving"])
        assert result.exit_code == 2, (args, result.output)
        assert "unknown pipeline 'serving'" in result.output and "['canary', 'training']" in result.output, args
    result = runner.invoke(cli(), ["pipeline", "params", "--pipeline", "canary", "--help"])
    assert result.exit_code == 0 and "--pipeline" in result.output


def last_json(stdout: str) -> Any:
    """The indented JSON document a command printed last (log lines share stdout with it)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


class RecordingClient:
    """Stands in for kfp.Client: records the calls and the compiled package's pipeline name."""

    calls: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, host: str | None = None, namespace: str | None = None) -> None:
        self.calls.append(("init", {"host": host}))

    def create_experiment(self, name: str, namespace: str | None = None) -> Any:
        return type("Exp", (), {"experiment_id": "exp-1"})()

    def create_recurring_run(self, **kw: Any) -> Any:
        spec = next(yaml.safe_load_all(Path(kw["pipeline_package_path"]).read_text()))
        self.calls.append(("recurring", {**kw, "pipeline_name": spec["pipelineInfo"]["name"]}))
        return type("Job", (), {"recurring_run_id": "job-1"})()

    def create_run_from_pipeline_package(self, pipeline_file: str, **kw: Any) -> Any:
        spec = next(yaml.safe_load_all(Path(pipeline_file).read_text()))
        self.calls.append(("run", {**kw, "pipeline_name": spec["pipelineInfo"]["name"]}))
        return type("Run", (), {"run_id": "run-1"})()


def test_schedule_and_submit_the_canary_pipeline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import kfp

    RecordingClient.calls = []
    monkeypatch.setattr(kfp, "Client", RecordingClient)
    runner = CliRunner()
    manifest = ROOT / "manifests" / "recurring-run-canary.yaml"
    result = runner.invoke(cli(), ["pipeline", "schedule", "--host", "http://kfp", "-f", str(manifest),
                                   "--pipeline", "canary", "-p", "dry_run=true"])
    assert result.exit_code == 0, result.output
    job = dict(RecordingClient.calls)["recurring"]
    assert job["pipeline_name"] == "genctr-canary" and job["cron_expression"] == "0 0 * * * *"
    assert job["params"]["deploy_target"] == "kserve" and job["params"]["dry_run"] is True
    assert job["enable_caching"] is False and job["max_concurrency"] == 1
    # the file names its pipeline: --pipeline may be left out, but must not contradict it
    assert runner.invoke(cli(), ["pipeline", "schedule", "--host", "http://kfp", "-f", str(manifest)]).exit_code == 0
    result = runner.invoke(cli(), ["pipeline", "schedule", "--host", "http://kfp", "-f", str(manifest),
                                   "--pipeline", "training"])
    assert result.exit_code == 2 and "canary pipeline, not training" in result.output
    # a training-pipeline parameter is not a canary one
    result = runner.invoke(cli(), ["pipeline", "submit", "--host", "http://kfp", "--pipeline", "canary",
                                   "-p", "finetune_epochs=2"])
    assert result.exit_code == 2 and "finetune_epochs" in result.output
    # a package must be the pipeline its parameters are checked against
    package = compile_pipeline(tmp_path / "canary.yaml", PlatformConfig())
    result = runner.invoke(cli(), ["pipeline", "submit", "--host", "http://kfp", "--package", str(package)])
    assert result.exit_code == 2 and "not the training pipeline" in result.output
    result = runner.invoke(cli(), ["pipeline", "submit", "--host", "http://kfp", "--pipeline", "canary",
                                   "--package", str(package), "-p", "since_ts=1700000000"])
    assert result.exit_code == 0, result.output
    run = dict(RecordingClient.calls)["run"]
    assert run["pipeline_name"] == "genctr-canary" and run["arguments"] == {"since_ts": 1_700_000_000}


def test_canary_cli_help() -> None:
    runner = CliRunner()
    for cmd in ("simulate", "step", "status"):
        result = runner.invoke(cli(), ["canary", cmd, "--help"])
        assert result.exit_code == 0 and "--deployment" in result.output, result.output
    result = runner.invoke(cli(), ["canary", "step", "--policy", "min_users=3"])
    assert result.exit_code == 2 and "unknown" in result.output
    result = runner.invoke(cli(), ["canary", "step", "--policy", "alpha=2"])
    assert result.exit_code == 2 and "alpha must be in (0, 1)" in result.output


# ---------------------------------------------------------------------------- against a real deployment
@pytest.fixture(scope="module")
def world(synthetic_build: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
          pytestconfig: pytest.Config) -> dict[str, Any]:
    return canary_world(synthetic_build, tmp_path_factory, pytestconfig)


@pytest.fixture(scope="module")
def planted(world: dict[str, Any], spark_connect: str) -> dict[str, Any]:
    """Random champion, trained canary at 50 %, and simulated traffic through both (A/B logs); the
    pipelines' attribution join runs on the session's warm Spark Connect server."""
    from genctr.simulation import simulate_deployment

    plant(world, "random", "trained", 50)
    logs = world["root"] / "logs-pipeline"
    summary = simulate_deployment(world["deployer"], world["world"], world["n_events"], traffic(seed=1, n=8_000), logs)
    return {**world, "logs": logs, "since_ts": summary.start_ts, "spark_master": spark_connect}


def pipeline_params(ctx: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {"log_dir": str(ctx["logs"]), "since_ts": ctx["since_ts"], "deploy_target": "local", "deployment": MODEL,
            "deploy_state_dir": str(ctx["state_dir"]), "registry_root": ctx["reg"].root, "model_name": MODEL,
            "policy": {"min_users_per_arm": 100, "min_impressions_per_arm": 2_000,
                       "max_p99_latency_ms": 10_000.0},  # a loaded test machine is slow, not the canary
            "spark_master": ctx["spark_master"], **overrides}


@pytest.mark.slow
def test_local_run_in_dry_run_decides_but_changes_nothing(planted: dict[str, Any], tmp_path: Path) -> None:
    plant(planted, "random", "trained", 50)
    params = [f"-p{k}={json.dumps(v) if isinstance(v, dict) else v}"
              for k, v in pipeline_params(planted, dry_run=True, drift=False).items()]
    result = CliRunner().invoke(cli(), ["pipeline", "run", "--local", "--pipeline", "canary", *params,
                                        "--pipeline-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "canary decision: PROMOTE" in result.stdout and "acted: none (dry run)" in result.stdout
    assert "CTR uplift" in result.stdout and "canary report:" in result.stdout
    status = planted["deployer"].status()
    assert status.champion_uri == uri(planted, "random") and status.canary_uri == uri(planted, "trained")
    assert status.canary_percent == 50 and planted["reg"].champion(MODEL) == planted["v"]["random"]


@pytest.mark.slow
def test_local_run_promotes_a_better_canary(planted: dict[str, Any], tmp_path: Path) -> None:
    from genctr.orchestration.local import run_local

    plant(planted, "random", "trained", 50)
    run = run_local(pipeline_params(planted), tmp_path, pipeline="canary")
    decision = run.canary_decision
    assert run.canary_action == "promote" and decision is not None, decision
    assert decision["numbers"]["ctr_lo"] > 0 and decision["canary_uri"] == uri(planted, "trained")
    assert run.canary_acted == {**run.canary_acted, "action": "promote", "acted": "promoted", "dry_run": False,
                                "canary_version": planted["v"]["trained"]}
    status = planted["deployer"].status()
    assert status.champion_uri == uri(planted, "trained") and status.canary_uri is None
    assert planted["reg"].champion(MODEL) == planted["v"]["trained"]  # the registry pointer moved too
    metrics = run.outputs["analyze-canary"]["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert metrics["ctr_lo"] > 0 and metrics["users_canary"] >= 100
    logs_meta = run.outputs["collect-logs"]["artifacts"]["logs"]["artifacts"][0]["metadata"]
    assert logs_meta["requests_champion"] + logs_meta["requests_canary"] == 8_000
    assert run.canary_report is not None and "drift_arms.html" in run.canary_report.read_text()


@pytest.mark.slow
def test_a_malformed_log_stops_the_pipeline_at_collect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    from genctr.orchestration.local import PipelineRunError, run_local

    bad = tmp_path / "bad"
    (bad / "clicks").mkdir(parents=True)
    pd.DataFrame({"request_id": ["r1"], "item_id": [1]}).to_parquet(bad / "clicks" / "part-0.parquet")  # no ts
    monkeypatch.setenv("GENCTR_HOME", str(tmp_path / "home"))
    with pytest.raises(PipelineRunError) as err:
        run_local({"log_dir": str(bad)}, tmp_path / "runs", pipeline="canary")
    assert err.value.failed_task == "collect-logs"
    log = Path(err.value.log_path or "").read_text()  # kfp.local's output goes to the run's executor log
    assert "DataValidationError: clicks log lacks column(s) ['ts']" in log  # the step's own message
    assert not (Path(err.value.run_dir) / "analyze-canary").exists()


@pytest.mark.slow
def test_canary_cli_status_step_dry_run_and_simulate(planted: dict[str, Any], tmp_path: Path) -> None:
    plant(planted, "random", "trained", 50)
    runner = CliRunner()
    target = ["--deployment", MODEL, "--state-dir", str(planted["state_dir"])]
    result = runner.invoke(cli(), ["canary", "status", *target])
    assert result.exit_code == 0, result.output
    status = last_json(result.stdout)
    assert status["canary_uri"] == uri(planted, "trained") and status["canary_percent"] == 50
    assert set(status["urls"]) == {"champion", "canary", "router"}  # user-sticky: the router in front

    result = runner.invoke(cli(), ["canary", "step", *target, "--log-dir", str(planted["logs"]), "--registry",
                                   planted["reg"].root, "--model-name", MODEL, "--policy", "min_users_per_arm=100",
                                   "--policy", "max_p99_latency_ms=10000", "--no-drift", "--dry-run",
                                   "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "decision: PROMOTE (dry run)" in result.output and "acted: none" in result.output
    assert "CTR uplift" in result.output and (tmp_path / "out" / "decision.json").is_file()
    assert planted["deployer"].status().canary_uri == uri(planted, "trained")  # nothing changed

    result = runner.invoke(cli(), ["canary", "simulate", *target, "--n-users", "400", "--n-items", "800",
                                   "--n-cates", "20", "--world-seed", "7", "--train-events", str(planted["n_events"]),
                                   "--n-requests", "200", "--no-progress", "--log-dir", str(tmp_path / "logs")])
    assert result.exit_code == 0, result.output
    summary = last_json(result.stdout)
    assert summary["requests"] == 200 and summary["errors"] == 0
    assert summary["arms"]["canary"]["requests"] > 0 and list((tmp_path / "logs" / "impressions").glob("part-*"))
