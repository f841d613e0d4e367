"""Great Expectations suites: good data passes; each kind of bad data fails by name, in the
error and in both reports."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from build_fixtures import MAX_SEQ_LEN, shared_build, tiny_events

from genctr.errors import ConfigError, DataValidationError
from genctr.features.expectations import ExpectationsConfig, run_events_suite, run_samples_suite
from genctr.features.layout import SPLITS, BuildLayout

L = 5  # max_seq_len of the pandas-written builds below


def good_events() -> pd.DataFrame:
    """tiny_events() coerced to the canonical dtypes (as genctr.data.schema leaves them)."""
    return tiny_events().astype({"request_id": "int64", "clicked": "int8"})


def samples_from_events(ev: pd.DataFrame) -> pd.DataFrame:
    """The layout's samples columns computed in pandas (+ ``split``), for small hand-made builds."""
    ev = ev.sort_values(["user_id", "event_time", "request_id"]).reset_index(drop=True)
    g = ev.groupby("user_id")
    rank, n = g.cumcount() + 1, g["request_id"].transform("size")
    split = np.where(rank <= np.maximum(1, (n * 0.8).astype(int)), "train",
                     np.where(rank <= np.maximum(1, (n * 0.9).astype(int)), "valid", "test"))
    hist_end = np.zeros(len(ev), dtype="int32")
    last = np.full(len(ev), -1, dtype="int64")
    for _, idx in g.indices.items():  # behaviours strictly earlier in time
        t, c = ev["event_time"].to_numpy()[idx], ev["clicked"].to_numpy()[idx]
        for j, i in enumerate(idx):
            earlier = (t < t[j]) & (c == 1)
            hist_end[i] = earlier.sum()
            last[i] = t[earlier].max() if earlier.any() else -1
    codes = {c: pd.factorize(ev[c], sort=True)[0].astype("int32") + 2 for c in ("user_id", "item_id", "category_id")}
    return pd.DataFrame({
        "sample_id": ev["request_id"].astype("int64"), "user_id": ev["user_id"], "item_id": ev["item_id"],
        "user_idx": codes["user_id"], "item_idx": codes["item_id"], "cate_idx": codes["category_id"],
        "price": ev["price"].astype("float32"), "event_time": ev["event_time"],
        "label": ev["clicked"].astype("int8"), "hist_end": hist_end,
        "seq_len": np.minimum(hist_end, L).astype("int32"), "last_beh_time": last, "split": split,
    })


def write_build(root: Path, samples: pd.DataFrame) -> Path:
    """A build directory holding the samples tables and stats.json (what the suite reads)."""
    lay = BuildLayout(root)
    for s in SPLITS:
        lay.samples(s).mkdir(parents=True)
        samples[samples["split"] == s].drop(columns="split").to_parquet(lay.samples(s) / "part-0.parquet", index=False)
    sizes = {"user": int(samples["user_idx"].max()) + 1, "item": int(samples["item_idx"].max()) + 1,
             "category": int(samples["cate_idx"].max()) + 1}
    lay.stats.write_text(json.dumps({"max_seq_len": L, "vocab_sizes": sizes,
                                     "splits": {s: {"rows": int((samples["split"] == s).sum())} for s in SPLITS}}))
    return root


@pytest.fixture(scope="module")
def good_samples() -> pd.DataFrame:
    return samples_from_events(good_events())


def assert_fails_with(err: DataValidationError, name: str, observed: str = "") -> None:
    """``name`` (and ``observed``) in the message and in both reports."""
    assert name in str(err)
    assert err.report_path is not None
    md = Path(err.report_path)
    html = md.with_suffix(".html")
    for text in (md.read_text(), html.read_text()):
        assert "FAIL" in text and name in text and observed in text
    assert not [p for p in md.parent.iterdir() if ".tmp-" in p.name]  # atomic writes left nothing behind


def test_good_events_pass_and_reports_are_written(tmp_path: Path) -> None:
    res = run_events_suite(good_events(), ExpectationsConfig(), tmp_path, raise_on_failure=True)
    assert res.success and not res.failures
    assert res.outcome("click_rate").success and res.outcome("request_id_unique").success
    assert "PASSED" in res.report_path.read_text() and "PASSED" in res.html_path.read_text()


def _future(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(event_time=d["event_time"].where(d.index != 3, 4_102_444_800))  # year 2100


@pytest.mark.parametrize("mutate, cfg, name, observed", [
    (lambda d: d.assign(clicked=d["clicked"].where(d.index != 5, 2)), None, "clicked_in_0_1", "[2]"),
    (lambda d: d.assign(user_id=d["user_id"].where(d.index != 7)), None, "user_id_not_null", "1 of"),
    (lambda d: d.assign(request_id=d["request_id"].where(d.index != 9, d["request_id"][8])), None,
     "request_id_unique", "2 of"),
    (lambda d: d.assign(clicked=np.int8(1)), None, "click_rate", "1"),
    (lambda d: d, ExpectationsConfig(min_click_rate=0.5), "click_rate", "0.2"),
    (lambda d: d.drop(columns="item_id"), None, "item_id_exists", "column item_id not found"),
    (_future, None, "event_time_in_range", "4102444800"),
    (lambda d: d.head(50), None, "row_count", "50"),
])
def test_bad_events_fail_by_name(tmp_path: Path, mutate: Callable[[pd.DataFrame], pd.DataFrame],
                                 cfg: ExpectationsConfig | None, name: str, observed: str) -> None:
    with pytest.raises(DataValidationError) as exc:
        run_events_suite(mutate(good_events()), cfg, tmp_path, raise_on_failure=True)
    assert_fails_with(exc.value, name, observed)


def test_failure_without_raising_returns_outcomes(tmp_path: Path) -> None:
    bad = good_events().assign(clicked=lambda d: d["clicked"].where(d.index != 0, 2))
    res = run_events_suite(bad, None, tmp_path)
    assert not res.success
    assert [o.name for o in res.failures] == ["clicked_in_0_1"]
    assert res.outcome("clicked_in_0_1").details["unexpected_count"] == 1


def test_good_samples_pass(tmp_path: Path, good_samples: pd.DataFrame) -> None:
    res = run_samples_suite(write_build(tmp_path / "b", good_samples), None, tmp_path / "r", raise_on_failure=True)
    assert res.success and res.context["max_seq_len"] == L
    assert (tmp_path / "r" / "samples_validation.html").exists()


def _row_with_history(d: pd.DataFrame) -> int:
    return int(d.index[d["hist_end"] > 0][0])


def _leak(d: pd.DataFrame) -> pd.DataFrame:  # the latest behaviour is the impression itself
    i = _row_with_history(d)
    return d.assign(last_beh_time=d["last_beh_time"].where(d.index != i, d["event_time"][i]))


def _too_long(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(seq_len=d["seq_len"].where(d.index != 0, L + 1).astype("int32"),
                    hist_end=d["hist_end"].where(d.index != 0, L + 1).astype("int32"))


def _dup_across_splits(d: pd.DataFrame) -> pd.DataFrame:
    test_row = d.index[d["split"] == "test"][0]
    return d.assign(sample_id=d["sample_id"].where(d.index != test_row, d["sample_id"][0]))


@pytest.mark.parametrize("mutate, cfg, name, observed", [
    (lambda d: d.assign(label=d["label"].where(d.index != 3, 2).astype("int8")), None, "label_in_0_1", "[2]"),
    (_leak, None, "no_leakage", "1 of"),
    (_too_long, None, "seq_len_in_0_L", f"[{L + 1}]"),
    (lambda d: d.assign(seq_len=(d["hist_end"] + 1).clip(upper=L).astype("int32")), None, "hist_end_ge_seq_len", "of"),
    (lambda d: d, ExpectationsConfig(max_click_rate=0.1), "click_rate_train", "0.3"),
    (lambda d: d.drop(columns="seq_len"), None, "seq_len_exists", "column seq_len not found"),
    (_dup_across_splits, None, "sample_id_unique", "2 of"),
    (lambda d: d[d["split"] != "valid"], None, "rows_valid", "0"),
])
def test_bad_samples_fail_by_name(tmp_path: Path, good_samples: pd.DataFrame,
                                  mutate: Callable[[pd.DataFrame], pd.DataFrame], cfg: ExpectationsConfig | None,
                                  name: str, observed: str) -> None:
    build = write_build(tmp_path / "b", good_samples)
    bad = mutate(good_samples.copy())
    lay = BuildLayout(build)
    for s in SPLITS:  # rewrite the tables, keep stats.json (L and the vocabulary sizes)
        (lay.samples(s) / "part-0.parquet").unlink()
        bad[bad["split"] == s].drop(columns="split").to_parquet(lay.samples(s) / "part-0.parquet", index=False)
    with pytest.raises(DataValidationError) as exc:
        run_samples_suite(build, cfg, tmp_path / "r", raise_on_failure=True)
    assert_fails_with(exc.value, name, observed)


def test_index_outside_vocabulary_fails(tmp_path: Path, good_samples: pd.DataFrame) -> None:
    build = write_build(tmp_path / "b", good_samples)
    stats = json.loads(BuildLayout(build).stats.read_text())
    stats["vocab_sizes"]["item"] -= 1  # the largest item_idx is now out of range
    BuildLayout(build).stats.write_text(json.dumps(stats))
    with pytest.raises(DataValidationError) as exc:
        run_samples_suite(build, None, tmp_path / "r", raise_on_failure=True)
    assert_fails_with(exc.value, "item_idx_in_vocab")


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="min_click_rate"):
        ExpectationsConfig(min_click_rate=0.5, max_click_rate=0.1)


@pytest.mark.slow
def test_real_build_passes_on_pandas_and_fails_by_name_on_spark(
        tmp_path_factory: pytest.TempPathFactory, spark: object, tmp_path: Path) -> None:
    build = shared_build(tmp_path_factory, spark)
    on_pandas = run_samples_suite(build, None, tmp_path / "pandas", raise_on_failure=True)
    assert on_pandas.context["max_seq_len"] == MAX_SEQ_LEN
    # Spark: everything but the (deliberately too tight) click-rate bounds passes
    tight = ExpectationsConfig(max_click_rate=0.05)
    on_spark = run_samples_suite(build, tight, tmp_path / "spark", spark=spark)
    assert on_spark.context["engine"] == "spark"
    assert {o.name for o in on_spark.failures} == {"click_rate", *(f"click_rate_{s}" for s in SPLITS)}
    rate = on_pandas.outcome("click_rate_train").observed
    assert on_spark.outcome("click_rate_train").observed == rate  # detailed second pass
    assert rate in on_spark.report_path.read_text()


def _data_docs_rows(index_html: str) -> list[dict[str, str]]:
    """The validation rows of a GX Data Docs index page (a JavaScript table's data: one dict per run)."""
    rows = []
    for chunk in index_html.split("{'validation_success'")[1:]:
        fields = dict(re.findall(r"'(_validation_success_text|_expectation_suite_name_sort|_table_row_link_path)': "
                                 r"'([^']*)'", chunk))
        rows.append({"suite": fields["_expectation_suite_name_sort"], "result": fields["_validation_success_text"],
                     "page": fields["_table_row_link_path"]})
    return rows


def test_data_docs_site_lists_every_suite_run_with_its_result(tmp_path: Path, good_samples: pd.DataFrame) -> None:
    passed = run_events_suite(good_events(), None, tmp_path)
    bad = good_events().assign(clicked=lambda d: d["clicked"].where(d.index != 0, 2))
    failed = run_events_suite(bad, None, tmp_path)
    samples = run_samples_suite(write_build(tmp_path / "b", good_samples), None, tmp_path)
    index = tmp_path / "gx" / "data_docs" / "index.html"
    assert passed.data_docs == failed.data_docs == samples.data_docs == index and index.is_file()
    rows = _data_docs_rows(index.read_text(encoding="utf-8"))
    assert sorted((r["suite"], r["result"]) for r in rows) == [("events", "Failed"), ("events", "Success"),
                                                               ("samples", "Success")]
    (bad_row,) = [r for r in rows if r["result"] == "Failed"]
    page = (index.parent / bad_row["page"]).read_text(encoding="utf-8")  # the run's own Data Docs page
    assert "clicked" in page and "values must belong to this set" in page
    for report in (failed.report_path, failed.html_path):  # genctr's reports link to the site
        assert "gx/data_docs/index.html" in report.read_text()
