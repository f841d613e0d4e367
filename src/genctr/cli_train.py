"""``genctr train ...`` and ``genctr evaluate``: training runs and the champion gate."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from genctr.errors import ConfigError, GenCTRError

train_app = typer.Typer(help="Pretraining (GenCTR / DGenCTR) and CTR fine-tuning.", no_args_is_help=True)

SECTIONS = ("model", "train", "gate")
SET_HELP = "Override one option, e.g. --model backbone=dcnv2_ta or --train epochs=2 (repeatable)."


def parse_sets(pairs: list[str], what: str) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as YAML scalars/lists (``3``, ``true``, ``[64,32]``).

    Only the syntax is checked here; types and ranges are the config dataclass' own checks.
    """
    import yaml

    from genctr.config import describe

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--{what} expects key=value, got {describe(pair)}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            reason = describe(str(exc).splitlines()[0], raw=True)
            raise ConfigError(f"--{what} {describe(key)}: value {describe(value)} is not valid YAML ({reason})") from None
    return out


def load_sections(config: Optional[Path]) -> dict[str, Any]:
    """The ``model``/``train``/``gate`` sections of a config file, each a mapping (or absent)."""
    from genctr.config import describe, load_file

    if config is None:
        return {}
    sections = load_file(config)
    unknown = sorted(describe(k) for k in sections if k not in SECTIONS)
    if unknown:
        raise ConfigError(f"{config}: unknown section(s) {', '.join(unknown[:10])}; use {', '.join(SECTIONS)}")
    for name, value in sections.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{config}: section {name!r} must be a mapping of options (key: value), "
                              f"got {describe(value)} ({type(value).__name__})")
    return sections


def check_configs(method: str, model: dict[str, Any], train: dict[str, Any]) -> None:
    """Build the configs a run will use, so a bad option fails before any data is read.

    For ``dgenctr`` the model options are DGenCTRConfig fields plus ``max_seq_len`` (the
    history length of the feature build's batches).
    """
    from genctr.config import coerce, from_dict
    from genctr.models.config import ModelConfig
    from genctr.models.dgenctr_config import DGenCTRConfig
    from genctr.training.config import TrainConfig

    from_dict(TrainConfig, train, "train")
    if method == "dgenctr":
        if "max_seq_len" in model and coerce("model.max_seq_len", int, model["max_seq_len"]) < 1:
            raise ConfigError(f"model.max_seq_len must be >= 1, got {model['max_seq_len']}")
        from_dict(DGenCTRConfig, {k: v for k, v in model.items() if k != "max_seq_len"}, "model")
    elif method == "genctr":
        from_dict(ModelConfig, model, "model")


def _run(fn) -> None:
    from genctr.cli import fail

    try:
        result = fn()
    except GenCTRError as exc:
        fail(exc)
    typer.echo(json.dumps(result, indent=2, default=float))


@train_app.command("pretrain")
def pretrain_cmd(
    build: Path = typer.Option(..., help="Feature build directory."),
    out: Path = typer.Option(..., help="Output model artifact directory."),
    method: str = typer.Option("genctr", help="genctr (next-item) | dgenctr (discrete diffusion)."),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON with 'model' and 'train' sections."),
    model: list[str] = typer.Option([], "--model", help=SET_HELP),
    train: list[str] = typer.Option([], "--train", help=SET_HELP),
) -> None:
    """Pretrain on the training period and write a model artifact (resumes from OUT.ckpt)."""
    from genctr.training.run import pretrain

    def go() -> dict[str, Any]:
        s = load_sections(config)
        m = {**s.get("model", {}), **parse_sets(model, "model")}
        t = {"epochs": 3, **s.get("train", {}), **parse_sets(train, "train")}
        check_configs(method, m, t)
        return {"artifact": str(out), **pretrain(build, out, method, m, t)}

    _run(go)


@train_app.command("finetune")
def finetune_cmd(
    build: Path = typer.Option(..., help="Feature build directory."),
    out: Path = typer.Option(..., help="Output model artifact directory."),
    pretrained: Optional[Path] = typer.Option(None, help="Pretrained artifact (GenCTR or DGenCTR)."),
    config: Optional[Path] = typer.Option(None, help="YAML/JSON with 'model' and 'train' sections."),
    model: list[str] = typer.Option([], "--model", help=SET_HELP),
    train: list[str] = typer.Option([], "--train", help=SET_HELP),
) -> None:
    """Fine-tune a CTR model (backbone x transfer) and report test AUC / LogLoss / gAUC."""
    from genctr.training.run import finetune

    def go() -> dict[str, Any]:
        s = load_sections(config)
        m = {**s.get("model", {}), **parse_sets(model, "model")}
        t = {**s.get("train", {}), **parse_sets(train, "train")}
        base = _dgenctr_model(pretrained)  # a DGenCTR model's options are overrides of its config
        check_configs("genctr" if base is None else "dgenctr", m if base is None else {**base, **m}, t)
        return {"artifact": str(out), **finetune(build, out, m, t, pretrained)}

    _run(go)


def _dgenctr_model(pretrained: Optional[Path]) -> dict[str, Any] | None:
    """The model options of a DGenCTR pretrained artifact; None without one or for GenCTR."""
    if pretrained is None:
        return None
    from genctr.training.artifacts import read_config
    from genctr.training.run import KIND_DGENCTR

    meta = read_config(pretrained)
    return meta["model"] if meta["kind"] == KIND_DGENCTR else None


def evaluate_cmd(
    build: Path = typer.Option(..., help="Feature build directory (its test split is scored)."),
    candidate: Path = typer.Option(..., help="Candidate model artifact."),
    registry: str = typer.Option("", help="Registry root (path or fsspec URI); default $GENCTR_HOME/registry."),
    name: str = typer.Option("ctr", help="Model name in the registry."),
    out: Optional[Path] = typer.Option(None, help="Report directory (default CANDIDATE.gate)."),
    gate: list[str] = typer.Option([], "--gate", help="Gate option, e.g. --gate min_auc_gain=0.002."),
) -> None:
    """Evaluate a candidate against the registry's champion on the same rows (the AUC gate)."""
    from genctr.paths import home
    from genctr.workflow import evaluate_gate

    def go() -> dict[str, Any]:
        root = registry or str(home() / "registry")
        dest = out or candidate.with_name(candidate.name + ".gate")
        res = evaluate_gate(build, candidate, root, name, parse_sets(gate, "gate"), dest)
        s = res.summary
        return {"passed": s["passed"], "reason": s["reason"], "report": res.path,
                "candidate": s["candidate"], "champion": s["champion"]}

    _run(go)
