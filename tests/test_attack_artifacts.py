"""Hostile model artifacts: this module replays tampered model directories against every
entry point that loads one.

Each case copies a real fine-tuned artifact and breaks it in one way a user, a bad copy or
an attacker could (truncated or garbage safetensors, config.json that is not the expected
JSON object, tensors that do not fit the config, NaN/inf weights, broken vocabularies,
missing files). Every case must end in an ``ArtifactError`` that names the broken file
and says what to do, never a raw SafetensorError / RuntimeError / KeyError /
JSONDecodeError / ArrowInvalid, through three doors:

* the library loader (``load_model`` + ``load_vocabularies`` + the vocabulary fit check),
* ``genctr evaluate`` (exit 2, a one-line ``error:`` and no traceback),
* ``CTRPredictor.load()`` (so a server never becomes ready with such a model).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from build_fixtures import MAX_SEQ_LEN, shared_build
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from genctr.artifacts.files import check_vocab_fits
from genctr.artifacts.load import load_model, max_seq_len_of
from genctr.champion import REJECTED_EXIT
from genctr.cli import app
from genctr.errors import ArtifactError
from genctr.serving.predictor import CTRPredictor
from genctr.serving.vocab import load_vocabularies

ITEM_TABLE = "backbone.inputs.embedding.tables.item.weight"  # (n_items, D) of the dcnv2_ta backbone
HEAD_BIAS = "backbone.head.bias"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> dict[str, Path]:
    """A real 1-epoch dcnv2_ta artifact on the tiny build (trained once for the module)."""
    from genctr.training.run import finetune

    build = shared_build(tmp_path_factory, spark)
    root = tmp_path_factory.mktemp("attack_artifacts")
    finetune(build, root / "model", {"max_seq_len": MAX_SEQ_LEN, "backbone": "dcnv2_ta"},
             {"epochs": 1, "progress": False, "device": "cpu", "seed": 0})
    return {"build": build, "model": root / "model"}


# -- tampering -----------------------------------------------------------------------------

def _weights(d: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    w = load_file(str(d / "model.safetensors"))
    change(w)
    save_file(w, str(d / "model.safetensors"))


def _set(w: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    w[key] = value


def _poison(value: float, key: str) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        def change(w: dict[str, torch.Tensor]) -> None:
            w[key] = w[key].clone()
            w[key].view(-1)[-1] = value  # one element is enough to make every score NaN
        _weights(d, change)
    return go


def _bytes(name: str, change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        (d / name).write_bytes(change((d / name).read_bytes()))
    return go


def _config(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        out = change(cfg)
        (d / "config.json").write_text(json.dumps(cfg if out is None else out))
    return go


def _replace_with_dir(name: str) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        p = d / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
        p.mkdir()
    return go


def _remove(name: str) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        p = d / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return go


def _vocab_part(d: Path, name: str) -> Path:
    return sorted((d / "vocab" / name).glob("*.parquet"))[0]


def _vocab_table(name: str, change: Callable[[pa.Table], pa.Table]) -> Callable[[Path], None]:
    def go(d: Path) -> None:
        parts = sorted((d / "vocab" / name).glob("*.parquet"))
        table = pa.concat_tables([pq.read_table(p) for p in parts])
        for p in parts:
            p.unlink()
        pq.write_table(change(table), d / "vocab" / name / "part-0.parquet")
    return go


def _with_column(table: pa.Table, col: str, values: Any) -> pa.Table:
    return table.set_column(table.schema.get_field_index(col), col, values)


def _vocab_past_table(d: Path) -> None:
    """One extra raw id whose index lies past the item table's rows (vocabulary of a bigger build)."""
    rows = load_file(str(d / "model.safetensors"))[ITEM_TABLE].shape[0]
    _vocab_table("item", lambda t: pa.concat_tables([
        t, pa.table({"raw_id": [10**12], "idx": [rows + 5]}).select(t.column_names).cast(t.schema)]))(d)


def _truncate_vocab(d: Path) -> None:
    p = _vocab_part(d, "user")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


# (case id, tampering, a substring the message must hold: the file it names)
CASES: list[tuple[str, Callable[[Path], None], str]] = [
    # model.safetensors
    ("weights-truncated-half", _bytes("model.safetensors", lambda b: b[: len(b) // 2]), "model.safetensors"),
    ("weights-truncated-5-bytes", _bytes("model.safetensors", lambda b: b[:5]), "model.safetensors"),
    ("weights-empty", _bytes("model.safetensors", lambda b: b""), "model.safetensors"),
    ("weights-garbage", _bytes("model.safetensors", lambda b: os.urandom(4096)), "model.safetensors"),
    ("weights-header-not-json", _bytes("model.safetensors", lambda b: (16).to_bytes(8, "little") + b"{not json}      "),
     "model.safetensors"),
    ("weights-header-huge-length", _bytes("model.safetensors", lambda b: (2**62).to_bytes(8, "little") + b[8:]),
     "model.safetensors"),
    ("weights-pickle-instead", _bytes("model.safetensors", lambda b: b"\x80\x04\x95" + b"\x00" * 64),
     "model.safetensors"),
    ("weights-missing", _remove("model.safetensors"), "model.safetensors"),
    ("weights-is-a-directory", _replace_with_dir("model.safetensors"), "model.safetensors"),
    ("weights-nan", _poison(float("nan"), ITEM_TABLE), "model.safetensors"),
    ("weights-inf", _poison(float("inf"), ITEM_TABLE), "model.safetensors"),
    ("weights-neg-inf-bias", _poison(float("-inf"), HEAD_BIAS), "model.safetensors"),
    ("weights-wrong-shape", lambda d: _weights(d, lambda w: _set(w, ITEM_TABLE, w[ITEM_TABLE][:-3].clone())),
     "model.safetensors"),
    ("weights-wrong-dtype-f64", lambda d: _weights(d, lambda w: _set(w, HEAD_BIAS, w[HEAD_BIAS].double())),
     "model.safetensors"),
    ("weights-wrong-dtype-int", lambda d: _weights(d, lambda w: _set(w, HEAD_BIAS, w[HEAD_BIAS].long())),
     "model.safetensors"),
    ("weights-missing-tensor", lambda d: _weights(d, lambda w: w.pop(HEAD_BIAS)), "model.safetensors"),
    ("weights-extra-tensor", lambda d: _weights(d, lambda w: _set(w, "backdoor.weight", torch.zeros(3))),
     "model.safetensors"),
    # config.json
    ("config-missing", _remove("config.json"), "config.json"),
    ("config-is-a-directory", _replace_with_dir("config.json"), "config.json"),
    ("config-truncated", _bytes("config.json", lambda b: b[: len(b) // 2]), "config.json"),
    ("config-not-utf8", _bytes("config.json", lambda b: b"\xff\xfe\x00garbage"), "config.json"),
    ("config-empty", _bytes("config.json", lambda b: b""), "config.json"),
    ("config-a-list", _config(lambda c: [c]), "config.json"),
    ("config-null", _bytes("config.json", lambda b: b"null"), "config.json"),
    ("config-format-missing", _config(lambda c: c.pop("format") and None), "config.json"),
    ("config-format-2", _config(lambda c: c.update(format=2)), "config.json"),
    ("config-format-huge-string", _config(lambda c: c.update(format="x" * 100_000)), "config.json"),
    ("config-kind-unknown", _config(lambda c: c.update(kind="xgboost")), "config.json"),
    ("config-kind-not-a-string", _config(lambda c: c.update(kind=["ctr"])), "config.json"),
    ("config-kind-pretrain", _config(lambda c: c.update(kind="genctr_pretrain")), "config.json"),
    ("config-kind-dgenctr-without-vocab", _config(lambda c: c.update(kind="dgenctr_ctr")), "config.json"),
    ("config-model-missing", _config(lambda c: c.pop("model") and None), "config.json"),
    ("config-model-a-list", _config(lambda c: c.update(model=[1, 2])), "config.json"),
    ("config-model-unknown-option", _config(lambda c: c["model"].update(rm_rf=True)), "config.json"),
    ("config-model-bad-value", _config(lambda c: c["model"].update(embed_dim=-3)), "config.json"),
    ("config-model-wrong-type", _config(lambda c: c["model"].update(embed_dim="sixteen")), "config.json"),
    ("config-vocab-size-mismatch", _config(lambda c: c["model"].update(n_items=c["model"]["n_items"] + 7)),
     "model.safetensors"),
    ("config-vocab-size-absurd", _config(lambda c: c["model"].update(n_items=10**12)), "model.safetensors"),
    # vocab/
    ("vocab-missing", _remove("vocab/item"), "vocab/item"),
    ("vocab-dir-missing", _remove("vocab"), "vocab"),
    ("vocab-truncated-parquet", _truncate_vocab, "vocab/user"),
    ("vocab-wrong-columns", _vocab_table("item", lambda t: t.rename_columns(["a", "b"])), "vocab/item"),
    ("vocab-string-ids", _vocab_table("item", lambda t: _with_column(
        t, "raw_id", pc.cast(t.column("raw_id"), pa.string()))), "vocab/item"),
    ("vocab-null-ids", _vocab_table("item", lambda t: _with_column(
        t, "idx", pa.array([None] + t.column("idx").to_pylist()[1:], t.schema.field("idx").type))), "vocab/item"),
    ("vocab-duplicate-raw-ids", _vocab_table("category", lambda t: _with_column(
        t, "raw_id", pa.array([t.column("raw_id")[0].as_py()] * len(t), t.schema.field("raw_id").type))),
     "vocab/category"),
    ("vocab-reserved-index", _vocab_table("item", lambda t: _with_column(
        t, "idx", pa.array([0] + t.column("idx").to_pylist()[1:], t.schema.field("idx").type))), "vocab/item"),
    ("vocab-past-weights-table", _vocab_past_table, "vocab/item"),
    # the directory itself
    ("dir-missing", lambda d: shutil.rmtree(d), "missing"),
    ("dir-is-a-file", lambda d: (shutil.rmtree(d), d.write_text("not a directory")), "model"),
]

IDS = [c[0] for c in CASES]


def tampered(good: dict[str, Path], tmp_path: Path, tamper: Callable[[Path], None]) -> Path:
    d = tmp_path / "model"
    shutil.copytree(good["model"], d)
    tamper(d)
    return d


def check_message(exc: BaseException | str, names: str) -> None:
    msg = str(exc)
    assert names in msg, msg
    assert len(msg) < 1200, msg[:300]  # offending values echoed at most ~200 chars each
    assert "Traceback" not in msg


# -- the three entry points ----------------------------------------------------------------

def test_the_untampered_artifact_loads_everywhere(good: dict[str, Path], tmp_path: Path) -> None:
    """Control: the same steps succeed on the real artifact (so every failure below is the tampering)."""
    model = load_model(good["model"])
    check_vocab_fits(good["model"], {k: v.size for k, v in load_vocabularies(good["model"]).items()}, model)
    assert max_seq_len_of(good["model"]) == MAX_SEQ_LEN
    assert CTRPredictor("ctr", good["model"]).load()
    result = CliRunner().invoke(app, ["evaluate", "--build", str(good["build"]), "--candidate", str(good["model"]),
                                      "--registry", str(tmp_path / "reg"), "--out", str(tmp_path / "gate")])
    passed = json.loads((tmp_path / "gate" / "decision.json").read_text())["passed"]
    assert passed in (True, False)
    assert result.exit_code == (0 if passed else REJECTED_EXIT), result.output  # a decision, not an error (2)


@pytest.mark.parametrize(("case", "tamper", "names"), CASES, ids=IDS)
def test_library_loader_raises_artifact_error(good: dict[str, Path], tmp_path: Path, case: str,
                                              tamper: Callable[[Path], None], names: str) -> None:
    d = tampered(good, tmp_path, tamper)
    with pytest.raises(ArtifactError) as err:
        model = load_model(d)
        max_seq_len_of(d)
        check_vocab_fits(d, {k: v.size for k, v in load_vocabularies(d).items()}, model)
        if case == "config-kind-pretrain":  # loads as a pretrained model; serving and the gate refuse it
            CTRPredictor("ctr", d).load()
    check_message(err.value, names)


@pytest.mark.parametrize(("case", "tamper", "names"), CASES, ids=IDS)
def test_predictor_load_refuses(good: dict[str, Path], tmp_path: Path, case: str,
                                tamper: Callable[[Path], None], names: str) -> None:
    d = tampered(good, tmp_path, tamper)
    predictor = CTRPredictor("ctr", d)
    with pytest.raises(ArtifactError) as err:
        predictor.load()
    check_message(err.value, names)
    assert not predictor.ready and predictor.forward is None and predictor.assembler is None


@pytest.mark.parametrize(("case", "tamper", "names"), CASES, ids=IDS)
def test_evaluate_cli_exits_cleanly(good: dict[str, Path], tmp_path: Path, case: str,
                                    tamper: Callable[[Path], None], names: str) -> None:
    d = tampered(good, tmp_path, tamper)
    result = CliRunner().invoke(app, ["evaluate", "--build", str(good["build"]), "--candidate", str(d),
                                      "--registry", str(tmp_path / "reg"), "--out", str(tmp_path / "gate")])
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an escaped exception
    assert "error:" in result.output
    check_message(result.output, names)
    assert not (tmp_path / "gate" / "decision.json").exists()


def test_evaluate_subprocess_refuses_nan_weights_without_traceback(good: dict[str, Path], tmp_path: Path) -> None:
    d = tampered(good, tmp_path, _poison(float("nan"), ITEM_TABLE))
    proc = subprocess.run([sys.executable, "-m", "genctr", "evaluate", "--build", str(good["build"]),
                           "--candidate", str(d), "--registry", str(tmp_path / "reg")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "NaN" in proc.stderr and "model.safetensors" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr[-2000:]

