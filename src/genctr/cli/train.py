"""``genctr train pretrain`` and ``genctr train finetune``: training runs from typed options.

Options come from a config file's ``model``/``train`` sections, overridden by ``--model`` /
``--train`` ``key=value`` pairs typed from the config dataclass they set. Every config is
built before any data is read, so a bad option fails at once.

Both commands run unchanged under ``torchrun --nproc-per-node N [--nnodes M]`` (data-parallel,
see ``genctr.training.distributed``); only rank 0 prints the result, so a job prints one JSON
document.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from genctr.cli.errors import fail, print_json
from genctr.errors import ConfigError, GenCTRError

train_app = typer.Typer(help="Pretraining (GenCTR / DGenCTR) and CTR fine-tuning.", no_args_is_help=True)

SECTIONS = ("model", "train", "gate")
SET_HELP = "Override one option, e.g. --model backbone=dcnv2_ta or --train epochs=2 (repeatable)."
METHODS = ("genctr", "dgenctr")
# dgenctr model options: DGenCTRConfig fields plus the history length of the build's batches
DGENCTR_EXTRA: dict[str, Any] = {"max_seq_len": int}


def load_sections(config: Path | None) -> dict[str, Any]:
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


def model_sets(method: str, pairs: list[str]) -> dict[str, Any]:
    """``--model`` pairs typed from the config of ``method``: ModelConfig (genctr), DGenCTRConfig (dgenctr)."""
    from genctr.config import describe, parse_assignments
    from genctr.models.config import ModelConfig
    from genctr.models.dgenctr_config import DGenCTRConfig

    if method == "genctr":
        return parse_assignments(ModelConfig, pairs, "model")
    if method == "dgenctr":
        return parse_assignments(DGenCTRConfig, pairs, "model", extra=DGENCTR_EXTRA)
    raise ConfigError(f"pretrain method must be 'genctr' or 'dgenctr', got {describe(method)}")


def train_sets(pairs: list[str]) -> dict[str, Any]:
    """``--train`` pairs typed from TrainConfig."""
    from genctr.config import parse_assignments
    from genctr.training.config import TrainConfig

    return parse_assignments(TrainConfig, pairs, "train")


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


@train_app.command("pretrain")
def pretrain_cmd(
    build: Path = typer.Option(..., help="Feature build directory."),
    out: Path = typer.Option(..., help="Output model artifact directory."),
    method: str = typer.Option("genctr", help="genctr (next-item) | dgenctr (discrete diffusion)."),
    config: Path | None = typer.Option(None, help="YAML/JSON with 'model' and 'train' sections."),
    model: list[str] = typer.Option([], "--model", help=SET_HELP),
    train: list[str] = typer.Option([], "--train", help=SET_HELP),
) -> None:
    """Pretrain on the training period and write a model artifact (resumes from OUT.ckpt)."""
    from genctr.training.run import pretrain

    def go() -> dict[str, Any]:
        s = load_sections(config)
        m = {**s.get("model", {}), **model_sets(method, model)}
        t = {"epochs": 3, **s.get("train", {}), **train_sets(train)}
        check_configs(method, m, t)
        return {"artifact": str(out), **pretrain(build, out, method, m, t)}

    report(go)


@train_app.command("finetune")
def finetune_cmd(
    build: Path = typer.Option(..., help="Feature build directory."),
    out: Path = typer.Option(..., help="Output model artifact directory."),
    pretrained: Path | None = typer.Option(None, help="Pretrained artifact (GenCTR or DGenCTR)."),
    config: Path | None = typer.Option(None, help="YAML/JSON with 'model' and 'train' sections."),
    model: list[str] = typer.Option([], "--model", help=SET_HELP),
    train: list[str] = typer.Option([], "--train", help=SET_HELP),
) -> None:
    """Fine-tune a CTR model (backbone x transfer) and report test AUC / LogLoss / gAUC."""
    from genctr.training.run import finetune

    def go() -> dict[str, Any]:
        s = load_sections(config)
        t = {**s.get("train", {}), **train_sets(train)}
        base = _dgenctr_model(pretrained)  # a DGenCTR model's options are overrides of its config
        method = "genctr" if base is None else "dgenctr"
        m = {**s.get("model", {}), **model_sets(method, model)}
        check_configs(method, m if base is None else {**base, **m}, t)
        return {"artifact": str(out), **finetune(build, out, m, t, pretrained)}

    report(go)


def report(step: Callable[[], dict[str, Any]]) -> None:
    """:func:`print_json` in a plain run and on torchrun's rank 0; the other ranks run ``step`` with
    the same error exit but print nothing (their result is rank 0's)."""
    from genctr.training.distributed import launch_env

    try:
        env = launch_env()
    except GenCTRError as exc:
        fail(exc)
    if env is None or env.is_main:
        print_json(step)
        return
    try:
        step()
    except GenCTRError as exc:
        fail(exc)


def _dgenctr_model(pretrained: Path | None) -> dict[str, Any] | None:
    """The model options of a DGenCTR pretrained artifact; None without one or for GenCTR."""
    if pretrained is None:
        return None
    from genctr.artifacts.files import read_config
    from genctr.artifacts.kinds import KIND_DGENCTR

    meta = read_config(pretrained)
    return meta["model"] if meta["kind"] == KIND_DGENCTR else None


__all__ = ["check_configs", "load_sections", "model_sets", "report", "train_app", "train_sets"]
