"""The ablation's own data preparation (benchmarks/ablation.py): each setting reads its own events."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def ablation():
    # the script imports its sibling ablation_report by name, as it does when run from benchmarks/
    spec = importlib.util.spec_from_file_location("ablation_under_test", BENCH / "ablation.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_each_wrong_category_share_gets_its_own_file_with_that_share(ablation, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    items = np.arange(200)
    cate_of = items % 10
    item = rng.choice(items, size=5_000)
    events = tmp_path / "events.parquet"
    pd.DataFrame({"item_id": item, "category_id": cate_of[item]}).to_parquet(events)
    wrong = {}
    for frac in (0.1, 0.3):
        out = ablation.corrupt_categories(events, frac, tmp_path / f"ev-wc{frac:g}")
        df = pd.read_parquet(out)
        per_item = df.groupby("item_id")["category_id"].agg(["first", "nunique"])
        assert (per_item["nunique"] == 1).all()  # a catalogue error: one wrong category per item
        changed = per_item["first"].to_numpy() != cate_of[per_item.index.to_numpy()]
        wrong[frac] = (out, changed.mean())
    assert wrong[0.1][0] != wrong[0.3][0]  # 0.1 and 0.3 must not share (and reuse) one file
    assert wrong[0.1][1] == pytest.approx(0.1, abs=0.01) and wrong[0.3][1] == pytest.approx(0.3, abs=0.01)


def _write_table(results: Path, tag: str, command: str, rows: list[dict]) -> None:
    (results / f"{tag}.commands").write_text(command + "\n")
    (results / f"{tag}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(backbone: str, arm: str, seed: int, f: float, auc: float) -> dict:
    return {"backbone": backbone, "arm": arm, "seed": seed, "label_fraction": f, "auc": auc,
            "logloss": 0.6, "gauc": 0.55}


SETTINGS = "--max-seq-len 50 --category first --backbones dnn --transfers none integrate --negatives cs --dgenctr-arms"


def test_pool_copies_only_the_named_rows_and_refuses_mixed_settings(ablation, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ablation, "RESULTS", tmp_path)
    a = [_row("dnn", arm, s, f, 0.6 + s / 100) for arm in ("none", "integrate_cs", "share_cs")
         for s in (0, 1) for f in (0.02, 0.25)]
    b = [_row("dnn", arm, s, 0.02, 0.7 + s / 100) for arm in ("none", "integrate_cs") for s in (5, 6)]
    _write_table(tmp_path, "first", f"--seeds 0 1 --fractions 0.02 0.25 {SETTINGS} --tag first", a)
    _write_table(tmp_path, "second", f"--seeds 5 6 --fractions 0.02 {SETTINGS} --tag second", b)
    parser_args = ["--pool", "first", "second", "--seeds", "0", "1", "5", "6", "--fractions", "0.02",
                   *SETTINGS.split(), "--tag", "pooled"]

    def run(argv: list[str]) -> None:
        monkeypatch.setattr(sys, "argv", ["ablation.py", *argv])
        ablation.main()

    run(parser_args)
    pooled = [json.loads(line) for line in (tmp_path / "pooled.jsonl").read_text().splitlines()]
    keys = {(r["arm"], r["seed"], r["label_fraction"]) for r in pooled}
    # share_cs is not an arm the command names, and f = 0.25 is not one of its fractions
    assert keys == {(arm, s, 0.02) for arm in ("none", "integrate_cs") for s in (0, 1, 5, 6)}
    source = {(r["arm"], r["seed"], r["label_fraction"]): r for r in a + b}
    assert all(r == source[(r["arm"], r["seed"], r["label_fraction"])] for r in pooled)  # copied unchanged
    report = (tmp_path / "pooled.md").read_text()
    assert "pooled unchanged from the tables first, second" in report and "| 4 |" in report  # 4 seeds a cell

    # a source run with another setting (here L) would mix two protocols in one table
    _write_table(tmp_path, "other", f"--seeds 7 --fractions 0.02 {SETTINGS.replace('50', '200')} --tag other",
                 [_row("dnn", "none", 7, 0.02, 0.7)])
    before = (tmp_path / "pooled.jsonl").read_text()
    with pytest.raises(SystemExit, match="max_seq_len=200 here 50"):
        run([*parser_args[:3], "other", *parser_args[3:]])
    # two sources holding the same seed would count it twice
    _write_table(tmp_path, "first2", f"--seeds 0 --fractions 0.02 {SETTINGS} --tag first2", a[:1])
    with pytest.raises(SystemExit, match="in two of the pooled tables"):
        run(["--pool", "first", "first2", *parser_args[3:]])
    assert (tmp_path / "pooled.jsonl").read_text() == before  # a refused pool leaves the table as it was
