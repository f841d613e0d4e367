"""Hostile inputs replayed against the A/B logs, the canary step, the configs and the registry.

Each test feeds what a careless or hostile user could write -- duplicated or orphan log rows, an
empty or truncated log directory, a hand-edited deployment state file, wrong-typed and
out-of-range options on the command line or in a config file, odd model names, multi-megabyte
values -- and checks that the answer is one of the project's own errors, naming what to fix and
echoing at most a short preview of the value, or (for an empty log directory) a clean
``continue``; never a traceback, a credited orphan click, or a half-written decision file.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from genctr.config import DataConfig, FeatureConfig, describe, from_dict
from genctr.deploy.local import LocalDeployer
from genctr.errors import ConfigError, DataValidationError
from genctr.models.config import DecoderConfig, ModelConfig
from genctr.models.dgenctr_config import DGenCTRConfig
from genctr.monitoring.analysis import analyze
from genctr.monitoring.canary import run_canary_step
from genctr.monitoring.decision import CanaryPolicy
from genctr.monitoring.logs import append, read_logs
from genctr.registry import ModelRegistry
from genctr.training.config import TrainConfig

POLICY = CanaryPolicy(min_users_per_arm=2, min_impressions_per_arm=2)
DEDUPE = dataclasses.replace(POLICY, duplicates="dedupe")
HUGE = "x" * (5 << 20)  # 5 MiB: an error must not echo it whole
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _no_nan(text: str) -> Any:
    """Strict JSON: NaN/Infinity are refused, as a browser's JSON.parse would."""
    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------- tiny A/B logs
def write_logs(log_dir: Path, shown: list[tuple[str, int]], clicked: list[tuple[str, int]]) -> None:
    """One request per distinct request id (arm by its last digit), the given impression and click keys."""
    rids = sorted({r for r, _ in shown} | {r for r, _ in clicked})
    arm = {r: "canary" if int(r[1:]) % 2 else "champion" for r in rids}
    user = {r: int(r[1:]) for r in rids}
    append(log_dir, "requests", pd.DataFrame({
        "request_id": rids, "ts": 100, "user_id": [user[r] for r in rids], "arm": [arm[r] for r in rids],
        "status": 200, "latency_ms": 5.0, "n_candidates": 10, "randomisation": "user"}))
    append(log_dir, "impressions", pd.DataFrame({
        "request_id": [r for r, _ in shown], "ts": 100, "user_id": [user[r] for r, _ in shown],
        "arm": [arm[r] for r, _ in shown], "item_id": [i for _, i in shown], "category_id": 1,
        "position": 0, "bid": 2.0, "pctr": 0.1, "cpc": 1.0, "randomisation": "user"}))
    append(log_dir, "clicks", pd.DataFrame({"request_id": [r for r, _ in clicked], "item_id": [i for _, i in clicked],
                                            "ts": range(200, 200 + len(clicked))}))


def test_a_duplicated_impression_no_longer_absorbs_an_orphan_click(tmp_path: Path) -> None:
    # r1/7 shown twice; r9/9 was never shown. Counting rows, the duplicate made room for the orphan.
    write_logs(tmp_path, [("r1", 7), ("r1", 7), ("r2", 3)], [("r1", 7), ("r9", 9)])
    with pytest.raises(DataValidationError, match=r"impressions log has 1 duplicate .*'r1', 7.*duplicates=dedupe"):
        read_logs(tmp_path)
    logs = read_logs(tmp_path, duplicates="dedupe")
    a = analyze(logs, 50, DEDUPE)
    assert len(logs.impressions) == 2 and int(logs.impressions["clicked"].sum()) == 1
    assert a.log_quality == {"orphan_clicks": 1, "duplicate_impressions": 1, "duplicate_clicks": 0}
    assert a.arms["canary"]["clicks"] == 1 and a.arms["canary"]["impressions"] == 1  # r1: CTR 1/1, not 2/2
    assert logs.clicks[["request_id", "item_id"]].values.tolist() == [["r1", 7]]  # the orphan is not credited


def test_duplicate_clicks_are_refused_or_counted_once(tmp_path: Path) -> None:
    write_logs(tmp_path, [("r1", 7), ("r2", 3)], [("r1", 7), ("r1", 7), ("r1", 7)])
    with pytest.raises(DataValidationError, match=r"clicks log has 2 duplicate"):
        read_logs(tmp_path)
    logs = read_logs(tmp_path, duplicates="dedupe")
    assert logs.quality.duplicate_clicks == 2 and int(logs.impressions["clicked"].sum()) == 1
    assert logs.clicks["ts"].tolist() == [200]  # the earliest click is the one kept


def test_an_orphan_click_is_counted_in_the_analysis_not_an_error(tmp_path: Path) -> None:
    write_logs(tmp_path, [("r1", 7), ("r2", 3)], [("r2", 3), ("r2", 4)])  # r2/4 was never shown
    a = analyze(read_logs(tmp_path), 50, POLICY)
    assert a.log_quality["orphan_clicks"] == 1 and a.arms["champion"]["clicks"] == 1
    assert a.to_dict()["log_quality"]["orphan_clicks"] == 1


def test_a_bad_duplicates_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="duplicates"):
        CanaryPolicy(duplicates="ignore")


KEYS = st.tuples(st.sampled_from(["r1", "r2", "r3", "r4"]), st.integers(0, 3))


@FAST
@given(shown=st.lists(KEYS, min_size=1, max_size=12), clicked=st.lists(KEYS, max_size=12))
def test_clicks_are_credited_by_key_only(tmp_path_factory: pytest.TempPathFactory, shown: list[tuple[str, int]],
                                         clicked: list[tuple[str, int]]) -> None:
    d = tmp_path_factory.mktemp("logs")
    write_logs(d, shown, clicked)
    logs = read_logs(d, duplicates="dedupe")
    credited = set(clicked) & set(shown)  # the reference: plain sets of keys
    assert int(logs.impressions["clicked"].sum()) == len(credited)
    assert len(logs.impressions) == len(set(shown))
    assert logs.quality.orphan_clicks == len(set(clicked) - set(shown))
    assert logs.quality.duplicate_impressions == len(shown) - len(set(shown))
    assert logs.quality.duplicate_clicks == len(clicked) - len(set(clicked))
    if len(set(shown)) < len(shown) or len(set(clicked)) < len(clicked):
        with pytest.raises(DataValidationError, match="duplicate"):
            read_logs(d)


# ----------------------------------------------------------------------------- the canary step
def deployment(tmp_path: Path, **state: Any) -> LocalDeployer:
    """A local deployment whose state file is written by hand (no server: status() still works)."""
    path = tmp_path / "deploy" / "ctr.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": "ctr", "champion": "/models/a", "canary": "/models/b",
                                "canary_percent": 50, **state}))
    return LocalDeployer(path, name="ctr")


def test_an_empty_log_dir_is_no_traffic_yet(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    out = tmp_path / "out"
    for _ in range(2):  # two turns: two whole lines
        outcome = run_canary_step(tmp_path / "logs", deployment(tmp_path), POLICY, out, dry_run=True)
    assert outcome.decision.action == "continue" and outcome.decision.reasons[0].startswith("no traffic yet")
    lines = (out / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(_no_nan(line)["action"] == "continue" for line in lines)
    assert _no_nan((out / "decision.json").read_text())["numbers"]["ctr_uplift"] is None
    assert not list(out.glob(".*.tmp"))


def test_a_truncated_parquet_part_names_the_file(tmp_path: Path) -> None:
    write_logs(tmp_path / "logs", [("r1", 7), ("r2", 3)], [("r1", 7)])
    part = next((tmp_path / "logs" / "impressions").glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:40])  # a writer killed mid-file, renamed by a careless copy
    with pytest.raises(DataValidationError, match=f"impressions log part .*{part.name} is not a readable Parquet"):
        run_canary_step(tmp_path / "logs", deployment(tmp_path), POLICY, tmp_path / "out", dry_run=True)
    assert not (tmp_path / "out" / "decisions.jsonl").exists()


def test_a_part_with_a_bad_column_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "logs" / "clicks" / "part-0-bad.parquet"
    bad.parent.mkdir(parents=True)
    pd.DataFrame({"request_id": ["r1"], "item_id": ["seven"], "ts": [1]}).to_parquet(bad)
    with pytest.raises(DataValidationError, match=r"part-0-bad.parquet: clicks log column 'item_id' is not int64"):
        read_logs(tmp_path / "logs")


def test_a_decision_line_left_without_its_newline_stays_a_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "decisions.jsonl").write_text('{"action": "continue"}')  # an older writer, killed after the line
    (tmp_path / "logs").mkdir()
    run_canary_step(tmp_path / "logs", deployment(tmp_path), POLICY, out, dry_run=True)
    assert [_no_nan(x)["action"] for x in (out / "decisions.jsonl").read_text().splitlines()] == ["continue"] * 2


BAD_STATES = [
    ({"canary_percent": "fifty"}, "canary_percent"), ({"canary_percent": 50.5}, "canary_percent"),
    ({"canary_percent": True}, "canary_percent"), ({"canary_percent": -1}, "canary_percent"),
    ({"canary_percent": 101}, "canary_percent"), ({"canary": None, "canary_percent": 30}, "canary_percent"),
    ({"canary": 5}, "canary"), ({"canary": ""}, "canary"), ({"champion": ["/m"]}, "champion"),
    ({"name": 7}, "name"), ({"server": "localhost"}, "server"), ({"server": {"port": "80"}}, "server.port"),
    ({"server": {"pid": 1.5}}, "server.pid"), ({"events": "none"}, "events"),
    ({"canary_percent": HUGE}, "canary_percent"),
]


@pytest.mark.parametrize(("state", "key"), BAD_STATES)
def test_a_hand_edited_state_file_is_a_config_error(tmp_path: Path, state: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        deployment(tmp_path, **state).status()
    assert len(str(err.value)) < 400


def _cli(args: list[str]) -> Any:
    from genctr.cli import app

    return CliRunner().invoke(app, args)


def _clean_failure(result: Any, *needles: str) -> None:
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and "error:" in result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_cli_canary_step_on_bad_logs_and_state(tmp_path: Path) -> None:
    deployment(tmp_path)
    (tmp_path / "logs").mkdir()
    common = ["canary", "step", "--deployment", "ctr", "--state-dir", str(tmp_path / "deploy"),
              "--registry", str(tmp_path / "reg"), "--out-dir", str(tmp_path / "out"), "--dry-run", "--no-drift"]
    ok = _cli([*common, "--log-dir", str(tmp_path / "logs"), "--json"])
    assert ok.exit_code == 0, ok.output
    assert _no_nan(ok.stdout)["action"] == "continue"
    write_logs(tmp_path / "bad", [("r1", 7)], [])
    part = next((tmp_path / "bad" / "requests").glob("part-*.parquet"))
    part.write_bytes(b"PAR1 not really")
    _clean_failure(_cli([*common, "--log-dir", str(tmp_path / "bad")]), part.name)
    _clean_failure(_cli([*common, "--log-dir", str(tmp_path / "logs"), "--policy", "duplicates=maybe"]),
                   "duplicates")
    deployment(tmp_path, canary_percent="fifty")
    _clean_failure(_cli(["canary", "status", "--deployment", "ctr", "--state-dir", str(tmp_path / "deploy")]),
                   "canary_percent")


# ----------------------------------------------------------------------------- configs
CONFIGS = {ModelConfig: "model", DecoderConfig: "model.decoder", TrainConfig: "train", DGenCTRConfig: "dgenctr",
           FeatureConfig: "features", DataConfig: "data"}
ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=3), st.just({"a": 1}))


def wrong_for(hint: Any) -> st.SearchStrategy[Any]:
    """Values that are never of type ``hint`` (None allowed only where the hint allows it)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return ANYTHING.filter(lambda v: not isinstance(v, bool))
    if hint is int:
        return st.one_of(st.booleans(), st.text(max_size=8), st.none(), st.lists(st.integers(), max_size=2),
                         st.floats().filter(lambda x: not float(x).is_integer()),
                         st.sampled_from([float("nan"), float("inf"), "1", 1.5]))
    if hint is float:
        return st.one_of(st.booleans(), st.text(max_size=8), st.none(), st.lists(st.floats(), max_size=2),
                         st.sampled_from([float("nan"), float("inf"), -float("inf"), "0.1"]))
    if hint is str:
        return ANYTHING.filter(lambda v: not isinstance(v, str))
    if origin is tuple:
        return st.one_of(st.text(min_size=1, max_size=4), st.integers(), st.none(), st.booleans(),
                         st.just({"a": 1}), st.lists(st.sampled_from(["a", None, True, float("nan")]),
                                                     min_size=1, max_size=3))
    if origin in (typing.Union, __import__("types").UnionType):
        inner = [a for a in args if a is not type(None)][0]
        return wrong_for(inner).filter(lambda v: v is not None)
    if dataclasses.is_dataclass(hint):
        return st.one_of(st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2), st.booleans())
    raise AssertionError(f"no strategy for {hint}")


FIELDS = [(cls, f.name) for cls in CONFIGS for f in dataclasses.fields(cls)]
# per-field values of the right type that are out of range
OUT_OF_RANGE = {
    "epochs": [0, -1], "batch_size": [0], "eval_batch_size": [0], "lr": [0.0, -1e-3], "weight_decay": [-5.0],
    "grad_clip": [-1.0], "seed": [-1, 2**40], "device": ["tpu", ""], "embed_dim": [0, -16], "n_heads": [0],
    "mlp_dims": [[], [64, 0]], "attention_dims": [[-1]], "dropout": [1.0, -0.1], "attn_dropout": [1.0],
    "temperature": [0.0], "backbone": ["resnet", HUGE], "max_seq_len": [0], "n_users": [1], "split": [[0.5, 0.5, 0.5]],
    "price_boundaries": [[], [2.0, 1.0], [-1.0]], "fixed_mask_ratio": [0.0, 1.5], "timesteps": [0],
    "schedule": ["cubic"], "shuffle_partitions": [0], "spark_master": [""], "source": ["s3"],
    "synthetic_events": [0], "transfer": ["all"], "d_model": [0], "time_unit": ["h"],
}


@pytest.mark.parametrize(("cls", "name"), FIELDS, ids=[f"{c.__name__}.{n}" for c, n in FIELDS])
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_every_config_field_refuses_wrong_types_with_a_config_error(cls: type, name: str, data: st.DataObject) -> None:
    value = data.draw(wrong_for(typing.get_type_hints(cls)[name]), label=name)
    with pytest.raises(ConfigError, match=rf"{CONFIGS[cls]}\.{name}\b") as err:
        from_dict(cls, {name: value}, CONFIGS[cls])
    assert len(str(err.value)) < 600


@pytest.mark.parametrize(("cls", "name", "value"),
                         [(c, n, v) for c, n in FIELDS for v in OUT_OF_RANGE.get(n, [])],
                         ids=lambda x: x.__name__ if isinstance(x, type) else describe(x, 12))
def test_every_config_field_refuses_out_of_range_values(cls: type, name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"{CONFIGS[cls]}\.{name}\b") as err:
        from_dict(cls, {name: value}, CONFIGS[cls])
    assert len(str(err.value)) < 600


def test_documented_edge_values_are_accepted() -> None:
    assert TrainConfig(grad_clip=0.0).grad_clip == 0.0  # 0 = clipping off, as documented
    assert TrainConfig(epochs=2.0).epochs == 2 and isinstance(TrainConfig(lr=1).lr, float)
    assert ModelConfig(mlp_dims=[32, 16], decoder={"n_heads": 4}).decoder.n_heads == 4
    assert FeatureConfig(split=[0.5, 0.25, 0.25]).split == (0.5, 0.25, 0.25)


@pytest.mark.parametrize("section", [[1, 2], "dnn", 3, True])
def test_a_section_that_is_not_a_mapping_names_the_section(section: Any) -> None:
    with pytest.raises(ConfigError, match="^model must be a mapping"):
        from_dict(ModelConfig, section, "model")


def test_unknown_keys_of_any_type_are_listed_short() -> None:
    with pytest.raises(ConfigError, match=r"model: unknown option\(s\) .*chars\), 1; known") as err:
        from_dict(ModelConfig, {1: 2, HUGE: 3}, "model")
    assert len(str(err.value)) < 600


CLI_BAD = [
    (["--model", "embed_dim=abc"], "model.embed_dim"), (["--train", "epochs=1.5"], "train.epochs"),
    (["--train", "lr=.nan"], "train.lr"), (["--train", "lr=.inf"], "train.lr"),
    (["--train", "weight_decay=-5"], "train.weight_decay"), (["--train", "grad_clip=-1"], "train.grad_clip"),
    (["--train", "batch_size=true"], "train.batch_size"), (["--model", "mlp_dims=[64"], "--model 'mlp_dims'"),
    (["--model", "mlp_dims=64"], "model.mlp_dims"), (["--model", f"backbone={HUGE}"], "chars)"),
]


@pytest.mark.parametrize(("args", "needle"), CLI_BAD, ids=[describe(a[1], 20) for a, _ in CLI_BAD])
def test_cli_finetune_refuses_bad_options_before_training(tmp_path: Path, args: list[str], needle: str) -> None:
    # the build does not exist: an error about the option proves nothing was read or trained yet
    result = _cli(["train", "finetune", "--build", str(tmp_path / "no-build"), "--out", str(tmp_path / "m"), *args])
    _clean_failure(result, needle)
    assert len(result.output) < 1_000 and not (tmp_path / "m").exists()


@pytest.mark.parametrize(("text", "needle"), [("model: [1, 2]\n", "section 'model'"), ("model:\n", "section 'model'"),
                                              ("train: 3\n", "section 'train'"), ("- 1\n", "mapping"),
                                              ("model: {embed_dim: abc}\n", "model.embed_dim")])
def test_cli_config_file_sections_must_be_mappings(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    _clean_failure(_cli(["train", "finetune", "--build", str(tmp_path / "b"), "--out", str(tmp_path / "m"),
                         "--config", str(tmp_path / "c.yaml")]), needle)


def test_cli_dgenctr_pretrain_checks_max_seq_len(tmp_path: Path) -> None:
    _clean_failure(_cli(["train", "pretrain", "--method", "dgenctr", "--build", str(tmp_path / "b"),
                         "--out", str(tmp_path / "m"), "--model", "max_seq_len=abc"]), "model.max_seq_len")


# ----------------------------------------------------------------------------- registry names
@pytest.mark.parametrize("name", ["ctr\n", "ctr\r", "", "../x", "a" * 300, "ctr/../x", " ctr", HUGE, 7, None],
                         ids=lambda n: describe(n, 12))
def test_registry_names_are_matched_whole(tmp_path: Path, name: Any) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    with pytest.raises(ConfigError, match="model name") as err:
        reg.list_versions(name)
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("version", ["1", 0, -1, True, 1.0])
def test_registry_versions_must_be_positive_integers(tmp_path: Path, version: Any) -> None:
    with pytest.raises(ConfigError, match="model version"):
        ModelRegistry(tmp_path / "reg").get("ctr", version)


def test_describe_cuts_long_values() -> None:
    assert describe("ctr") == "'ctr'"
    assert describe(HUGE) == "'" + "x" * 79 + f"... ({len(HUGE) + 2} chars)"
    assert describe("x" * 300, 200, raw=True).endswith("... (300 chars)")
