"""The command line's edges: key=value overrides typed from their dataclass, one error exit, help everywhere."""
from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from genctr.cli import app
from genctr.cli.errors import USER_ERROR_EXIT, fail
from genctr.config import from_dict, parse_assignments, split_assignment
from genctr.errors import ConfigError, DataValidationError, GenCTRError
from genctr.models.config import ModelConfig
from genctr.models.dgenctr_config import DGenCTRConfig
from genctr.monitoring.decision import CanaryPolicy
from genctr.training.config import TrainConfig

CLI_DIR = Path(__file__).resolve().parents[1] / "src" / "genctr" / "cli"


@dataclass
class Opts:
    name: str = "x"
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    dims: tuple[int, ...] = (4, 2)
    label: str | None = None
    limit: int | None = None


# ----------------------------------------------------------------------------- parse_assignments
def test_values_are_typed_from_the_field_annotations() -> None:
    got = parse_assignments(Opts, ["name=0001", "count=2.0", "rate=1e-3", "flag=1", "dims=[8, 4]",
                                   "label=null", "limit=7"], "opts")
    assert got == {"name": "0001", "count": 2, "rate": 0.001, "flag": True, "dims": (8, 4), "label": None,
                   "limit": 7}
    assert type(got["count"]) is int and type(got["rate"]) is float


@pytest.mark.parametrize(("text", "value"), [("true", True), ("False", False), ("yes", True), ("no", False),
                                             ("on", True), ("OFF", False), ("1", True), ("0", False)])
def test_bool_fields_read_the_usual_words(text: str, value: bool) -> None:
    assert parse_assignments(Opts, [f"flag={text}"])["flag"] is value


def test_string_fields_keep_text_yaml_would_read_otherwise() -> None:
    got = parse_assignments(Opts, ["name=true"])["name"], parse_assignments(Opts, ["name=[1"])["name"]
    assert got == ("true", "[1")
    assert parse_assignments(Opts, ["name='quoted'"])["name"] == "quoted"
    assert parse_assignments(Opts, ["name=a=b"])["name"] == "a=b"  # only the first '=' splits


def test_later_pairs_win_and_none_means_no_overrides() -> None:
    assert parse_assignments(Opts, ["count=1", "count=3"]) == {"count": 3}
    assert parse_assignments(Opts, None) == {} and parse_assignments(Opts, []) == {}


@pytest.mark.parametrize(("pair", "needle"), [
    ("count=abc", r"^opts\.count must be an integer, got 'abc'"), ("count=1.5", r"^opts\.count must be an integer"),
    ("count=true", r"^opts\.count must be an integer"), ("rate=.nan", r"^opts\.rate must be a finite number"),
    ("rate=inf", r"^opts\.rate must be a finite number"), ("flag=maybe", r"^opts\.flag must be true or false"),
    ("dims=4", r"^opts\.dims must be a list"), ("dims=[4, x]", r"^opts\.dims\[1\] must be an integer"),
    ("dims=[4", r"^--opts 'dims': value '\[4' is not valid YAML"), ("limit=ten", r"^opts\.limit must be an integer"),
])
def test_bad_values_name_the_field(pair: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_assignments(Opts, [pair], "opts")


@pytest.mark.parametrize("pair", ["count", "=3", " =3", ""])
def test_a_pair_without_key_and_equals_sign_is_refused(pair: str) -> None:
    with pytest.raises(ConfigError, match=r"^--set .*: expected key=value$"):
        parse_assignments(Opts, [pair], "opts", flag="set")
    with pytest.raises(ConfigError, match="expected key=value"):
        split_assignment(pair, "param")


def test_unknown_keys_are_refused_like_a_config_file() -> None:
    with pytest.raises(ConfigError, match=r"^opts: unknown option\(s\) 'cuont'; known: \['count', ") as err:
        parse_assignments(Opts, ["cuont=3"], "opts")
    with pytest.raises(ConfigError) as same:
        from_dict(Opts, {"cuont": 3}, "opts")
    assert str(err.value) == str(same.value)
    with pytest.raises(ConfigError, match=r"^Opts: unknown"):
        parse_assignments(Opts, ["cuont=3"])  # the section defaults to the class name


def test_extra_keys_are_typed_by_their_own_annotation() -> None:
    assert parse_assignments(DGenCTRConfig, ["max_seq_len=30", "timesteps=10"], "model",
                             extra={"max_seq_len": int}) == {"max_seq_len": 30, "timesteps": 10}
    with pytest.raises(ConfigError, match=r"^model\.max_seq_len must be an integer"):
        parse_assignments(DGenCTRConfig, ["max_seq_len=abc"], "model", extra={"max_seq_len": int})
    with pytest.raises(ConfigError, match="unknown option"):
        parse_assignments(DGenCTRConfig, ["max_seq_len=30"], "model")


def test_overrides_build_the_config_they_were_typed_for() -> None:
    model = parse_assignments(ModelConfig, ["backbone=dcnv2_ta", "mlp_dims=[64,32]", "decoder={n_heads: 2}"], "model")
    cfg = from_dict(ModelConfig, model, "model")
    assert cfg.backbone == "dcnv2_ta" and cfg.mlp_dims == (64, 32) and cfg.decoder.n_heads == 2
    train = parse_assignments(TrainConfig, ["epochs=2", "lr=1e-3"], "train")
    assert from_dict(TrainConfig, train, "train").lr == pytest.approx(1e-3)


def test_canary_policy_pairs_parse_as_the_canary_command_does() -> None:
    from genctr.cli.canary import parse_policy

    pairs = ["min_users_per_arm=100", "alpha=0.1", "rpm_must_not_be_worse=no", "duplicates=dedupe",
             "max_p99_latency_ms=250", "srm_alpha=0.01"]
    assert parse_assignments(CanaryPolicy, pairs, "policy") == parse_policy(pairs)


# ----------------------------------------------------------------------------- the error exit
@pytest.mark.parametrize("exc", [ConfigError("bad option x"), DataValidationError("bad rows", report_path="/r.html")])
def test_fail_prints_a_short_message_and_exits_2(exc: GenCTRError) -> None:
    probe = typer.Typer()

    @probe.command()
    def go() -> None:
        fail(exc)

    result = CliRunner().invoke(probe, [])
    assert result.exit_code == USER_ERROR_EXIT == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr.startswith(f"error: {exc}\n") and "Traceback" not in result.output
    assert ("report: /r.html" in result.stderr) == isinstance(exc, DataValidationError)


def test_a_bad_gate_option_fails_before_anything_is_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--build", str(tmp_path / "none"), "--candidate",
                                      str(tmp_path / "none"), "--gate", "alpha=abc"])
    assert result.exit_code == 2 and "gate.alpha must be a finite number" in result.stderr, result.output
    unknown = CliRunner().invoke(app, ["evaluate", "--build", str(tmp_path / "none"), "--candidate",
                                       str(tmp_path / "none"), "--gate", "alfa=0.1"])
    assert unknown.exit_code == 2 and "gate: unknown option(s) 'alfa'" in unknown.stderr, unknown.output


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", "foo=1"], "model: unknown option(s) 'foo'"), (["--model", "backbone"], "--model 'backbone': expected"),
    (["--train", "lr=abc"], "train.lr must be a finite number"),
])
def test_train_options_are_checked_against_their_config(tmp_path: Path, args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["train", "pretrain", "--build", str(tmp_path / "b"), "--out", str(tmp_path / "m"),
                                      *args])
    assert result.exit_code == 2 and needle in result.stderr, result.output
    assert not (tmp_path / "m").exists()


def test_an_unknown_pretrain_method_is_refused_before_training(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "pretrain", "--build", str(tmp_path / "b"), "--out", str(tmp_path / "m"),
                                      "--method", "gpt"])
    assert result.exit_code == 2 and "pretrain method must be 'genctr' or 'dgenctr'" in result.stderr


# ----------------------------------------------------------------------------- structure and help
def _commands(group: Any, ctx: typer.Context, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path below ``group`` (itself included), e.g. ``("pipeline", "compile")``."""
    found = [path]
    for name in group.list_commands(ctx) if hasattr(group, "list_commands") else []:
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        found += _commands(cmd, typer.Context(cmd, parent=ctx, info_name=name), (*path, name))
    return found


def test_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    paths = _commands(root, typer.Context(root, info_name="genctr"))
    names = {" ".join(p) for p in paths}
    assert {"data export", "features build", "features validate", "features materialize", "train pretrain",
            "train finetune", "evaluate", "serve", "demo", "pipeline compile", "pipeline run", "pipeline submit",
            "pipeline schedule", "pipeline params", "canary simulate", "canary step", "canary status"} <= names
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output)


def test_version() -> None:
    from genctr import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"genctr {__version__}"


def _cli_imports(module: Path) -> set[str]:
    """Modules of genctr.cli that ``module`` imports (at any depth of the file)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "genctr.cli" or n.startswith("genctr.cli.")}


def test_command_modules_import_only_the_shared_error_exit() -> None:
    commands = [p for p in CLI_DIR.glob("*.py") if p.stem not in ("__init__", "__main__", "main", "errors")]
    assert {p.stem for p in commands} >= {"data", "train", "evaluate", "serve", "pipeline"}
    for path in commands:
        assert _cli_imports(path) <= {"genctr.cli.errors"}, path.name  # no way back to the root app
    assert _cli_imports(CLI_DIR / "errors.py") == set()


@pytest.mark.parametrize("old", ["genctr.cli_train", "genctr.cli_serve", "genctr.cli_pipeline"])
def test_the_single_module_command_files_are_gone(old: str) -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


def test_the_entry_point_resolves() -> None:
    entry: Any = importlib.import_module("genctr.cli")
    assert entry.app is app and isinstance(app, typer.Typer)


# ----------------------------------------------------------------------------- the gate's exit code
def test_evaluate_exits_3_when_the_gate_rejects_and_0_when_it_passes(spark: Any, tmp_path_factory: Any,
                                                                     tmp_path: Path) -> None:
    """A real gate run on the tiny shared build: an untrained model (AUC about 0.5) against a first-model
    floor it cannot reach is rejected (exit 3, the decision still printed), and passes a floor it reaches."""
    import json
    from dataclasses import asdict

    from build_fixtures import MAX_SEQ_LEN, shared_build

    from genctr.artifacts.files import save_artifact
    from genctr.artifacts.kinds import KIND_CTR
    from genctr.champion import REJECTED_EXIT
    from genctr.training.data import FeatureData
    from genctr.training.run import init_ctr, with_vocab

    build = shared_build(tmp_path_factory, spark)
    data = FeatureData(str(build), MAX_SEQ_LEN)
    cfg = ModelConfig(backbone="dnn", max_seq_len=MAX_SEQ_LEN)
    save_artifact(tmp_path / "model", init_ctr(data, cfg, None, 0), {"kind": KIND_CTR,
                  "model": asdict(with_vocab(cfg, data))}, build, {"history": []})
    args = ["evaluate", "--build", str(build), "--candidate", str(tmp_path / "model"), "--registry",
            str(tmp_path / "registry"), "--name", "ctr"]
    rejected = CliRunner().invoke(app, [*args, "--gate", "floor_auc=0.99", "--out", str(tmp_path / "g1")])
    assert rejected.exit_code == REJECTED_EXIT == 3, rejected.output
    decision = json.loads(rejected.stdout[rejected.stdout.index("{"):])
    assert decision["passed"] is False and decision["candidate"]["auc"] < 0.99 and decision["champion"] is None
    assert (tmp_path / "g1" / "decision.json").is_file()
    passed = CliRunner().invoke(app, [*args, "--gate", "floor_auc=0.01", "--out", str(tmp_path / "g2")])
    assert passed.exit_code == 0, passed.output
    assert json.loads(passed.stdout[passed.stdout.index("{"):])["passed"] is True
    from genctr.cli.evaluate import evaluate_cmd

    assert "3 the gate rejected it" in (evaluate_cmd.__doc__ or "")  # documented in `genctr evaluate --help`
