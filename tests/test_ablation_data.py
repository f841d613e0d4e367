"""The ablation's own data preparation (benchmarks/ablation.py): each setting reads its own events."""
from __future__ import annotations

import importlib.util
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
