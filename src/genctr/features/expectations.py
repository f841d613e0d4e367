"""Great Expectations (Core 1.x) suites for canonical events and for a build's samples.

Two suites, each run through a ``gx.Checkpoint`` in a fresh ephemeral GX context:

    events    on a pandas DataFrame of canonical events (``genctr.data.schema``), before the
              feature build: columns and types, no null ids/time/label, label in {0, 1}, a sane
              time range, unique request ids, enough rows, a plausible click rate; where
              present, price finite in [0, max_price] and position a non-negative integer.
    samples   on the three samples tables of a build (``genctr.features.layout``), read with
              pandas or Spark: label in {0, 1}, ``seq_len`` in [0, L] (a numeric column: GX's
              value-length expectation measures strings), ``hist_end >= seq_len``, no leakage
              (``last_beh_time < event_time``), sample ids unique across splits, click rate
              and row counts per split, indices inside the vocabularies of ``stats.json``,
              price in [0, max_price] (NaN and inf fail on both engines).

Every run writes a Markdown and an HTML report naming each expectation with its observed
value, and adds its validation result to the Great Expectations Data Docs site of the report
directory (``<report_dir>/gx/data_docs/index.html``; the results behind it in
``<report_dir>/gx/validations/``, so the site lists every run written there, both suites). Suites,
data sources and checkpoints are rebuilt from this code each run and stay in memory: the
code is their one definition. ``raise_on_failure=True`` turns a failed run into
``DataValidationError``.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit
from urllib.request import url2pathname

from genctr.data.event_time import FUTURE_SLACK_S, MIN_EVENT_TIME
from genctr.data.schema import INT32_MAX, MAX_PRICE, REQUIRED
from genctr.errors import ArtifactError, ConfigError, DataValidationError
from genctr.features.expectations_report import ExpectationOutcome, outcome_from_gx, write_reports
from genctr.features.layout import OOV, SPLITS, BuildLayout

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

GX_DIR = "gx"  # under the report directory: GX's validation results store and Data Docs site
DATA_DOCS_SITE = "genctr"
EPOCH_1990 = MIN_EVENT_TIME  # 1990-01-01T00:00:00Z: nothing in a click log is older

# Samples columns and their pandas dtypes (layout.py); Spark names the same types differently.
SAMPLE_COLUMNS = {
    "sample_id": "int64", "user_id": "int64", "item_id": "int64", "user_idx": "int32",
    "item_idx": "int32", "cate_idx": "int32", "price": "float32", "event_time": "int64",
    "label": "int8", "hist_end": "int32", "seq_len": "int32", "last_beh_time": "int64",
}
_SPARK_TYPES = {"int64": "LongType", "int32": "IntegerType", "int8": "ByteType",
                "float32": "FloatType", "float64": "DoubleType"}
_VOCAB_OF = {"user_idx": "user", "item_idx": "item", "cate_idx": "category"}
_RATE = "_label_f64"  # label as double: GX's Spark mean() rejects the ByteType label


@dataclass
class ExpectationsConfig:
    """Thresholds of both suites (bounds inclusive)."""

    min_events: int = 100  # events suite: fewer rows than this is a broken extract
    min_click_rate: float = 0.001  # mean label, events and every samples split
    max_click_rate: float = 0.9  # above this the label is almost surely not a click
    min_event_time: int = EPOCH_1990  # epoch seconds; earlier times are unit or parsing bugs
    future_slack_s: int = FUTURE_SLACK_S  # clock skew tolerated beyond "now" for event_time
    min_rows_per_split: int = 1  # samples suite: every split must have at least this many rows
    max_price: float = MAX_PRICE  # prices above this are unit or parsing bugs (and inf, NaN, < 0 fail)

    def __post_init__(self) -> None:
        if self.min_events < 0 or self.min_rows_per_split < 0:
            raise ConfigError("expectations: min_events and min_rows_per_split must be >= 0")
        if not 0.0 <= self.min_click_rate <= self.max_click_rate <= 1.0:
            raise ConfigError("expectations: need 0 <= min_click_rate <= max_click_rate <= 1, got "
                              f"{self.min_click_rate}, {self.max_click_rate}")
        if self.future_slack_s < 0:
            raise ConfigError("expectations: future_slack_s must be >= 0")
        if isinstance(self.max_price, bool) or not isinstance(self.max_price, (int, float)) \
                or not 0.0 < self.max_price < float("inf"):
            raise ConfigError("expectations: max_price must be a positive finite number, "
                              f"got {str(self.max_price)[:40]}")


@dataclass
class ValidationResult:
    """Outcome of one suite: overall success, one outcome per expectation, report paths."""

    suite: str
    success: bool
    outcomes: list[ExpectationOutcome]
    report_path: Path  # Markdown
    html_path: Path
    context: dict[str, Any] = field(default_factory=dict)  # rows, L, vocab sizes...
    data_docs: Path | None = None  # the GX Data Docs site's index.html

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def outcome(self, name: str) -> ExpectationOutcome:
        for o in self.outcomes:
            if o.name == name:
                return o
        raise KeyError(name)

    def failure_message(self) -> str:
        fails = "; ".join(f"{o.name} (observed: {o.observed})" for o in self.failures)
        return (f"{self.suite} validation failed: {len(self.failures)} of {len(self.outcomes)} "
                f"expectations failed: {fails}. Report: {self.report_path}")


def run_events_suite(df: pd.DataFrame, cfg: ExpectationsConfig | None, report_dir: str | Path, *,
                    raise_on_failure: bool = False) -> ValidationResult:
    """Run the events suite on canonical events ``df`` (one row per impression).

    ``cfg=None`` uses the defaults. Reports go to ``report_dir/events_validation.{md,html}``;
    with ``raise_on_failure`` a failed suite raises ``DataValidationError`` naming every
    failing expectation, its observed value and the report path.
    """
    cfg = cfg or ExpectationsConfig()
    specs = partial(_events_suite, cfg, int(time.time()), frozenset(df.columns))
    return _run("events", "pandas", df, specs, Path(report_dir),
                raise_on_failure, {"rows": len(df)})


def run_samples_suite(build_dir: str | Path, cfg: ExpectationsConfig | None, report_dir: str | Path, *,
                     spark: Any = None, raise_on_failure: bool = False) -> ValidationResult:
    """Run the samples suite on all splits of the build at ``build_dir``.

    The splits are validated as one table with a ``split`` column, so sample ids must be
    unique across splits. With ``spark`` (a SparkSession) GX computes on Spark (cached
    table; observed values reported for failures only), else on pandas. ``max_seq_len``
    and the vocabulary sizes come from the build's ``stats.json``. Reports and
    ``raise_on_failure`` as in ``run_events_suite``.
    """
    cfg = cfg or ExpectationsConfig()
    lay = BuildLayout(build_dir)
    stats = _read_stats(lay)
    L = int(stats["max_seq_len"])
    vocab_sizes = {k: int(v) for k, v in stats["vocab_sizes"].items()}
    engine = "spark" if spark is not None else "pandas"
    specs = partial(_samples_suite, cfg, L, vocab_sizes, engine, int(time.time()))
    ctx = {"build_dir": str(lay.root), "max_seq_len": L, "vocab_sizes": vocab_sizes,
           "rows_per_split": {s: stats.get("splits", {}).get(s, {}).get("rows") for s in SPLITS}}
    if spark is None:
        return _run("samples", engine, _read_samples_pandas(lay), specs, Path(report_dir), raise_on_failure, ctx)
    table = _read_samples_spark(spark, lay).cache()  # GX runs dozens of Spark jobs: read the Parquet once
    try:
        return _run("samples", engine, table, specs, Path(report_dir), raise_on_failure, ctx)
    finally:
        table.unpersist()


# --- suites: (name, description, expectation) triples -------------------------------------

Spec = tuple[str, str, Any]


def _events_suite(cfg: ExpectationsConfig, now: int, columns: frozenset[str]) -> list[Spec]:
    import great_expectations.expectations as E

    specs: list[Spec] = []
    for col, dtype in REQUIRED.items():
        specs.append((f"{col}_exists", f"column {col} is present", E.ExpectColumnToExist(column=col)))
        specs.append((f"{col}_type", f"column {col} has dtype {dtype}",
                      E.ExpectColumnValuesToBeOfType(column=col, type_=dtype)))
        specs.append((f"{col}_not_null", f"column {col} has no nulls",
                      E.ExpectColumnValuesToNotBeNull(column=col)))
    specs += [
        ("clicked_in_0_1", "the label is 0 or 1", E.ExpectColumnValuesToBeInSet(column="clicked", value_set=[0, 1])),
        ("event_time_in_range", f"event_time in [{cfg.min_event_time}, now + {cfg.future_slack_s} s]",
         E.ExpectColumnValuesToBeBetween(column="event_time", min_value=cfg.min_event_time,
                                         max_value=now + cfg.future_slack_s)),
        ("request_id_unique", "request_id identifies one impression",
         E.ExpectColumnValuesToBeUnique(column="request_id")),
        ("row_count", f"at least {cfg.min_events} events", E.ExpectTableRowCountToBeBetween(min_value=cfg.min_events)),
        ("click_rate", f"mean clicked in [{cfg.min_click_rate}, {cfg.max_click_rate}]",
         E.ExpectColumnMeanToBeBetween(column="clicked", min_value=cfg.min_click_rate,
                                       max_value=cfg.max_click_rate)),
    ]
    if "price" in columns:  # optional columns: checked where the events carry them
        specs += _price_specs(E, cfg)
    if "position" in columns:
        specs += [
            ("position_integer", "position has an integer dtype",
             E.ExpectColumnValuesToBeInTypeList(column="position", type_list=["int8", "int16", "int32", "int64"])),
            ("position_in_range", f"position in [0, {INT32_MAX}]",
             E.ExpectColumnValuesToBeBetween(column="position", min_value=0, max_value=INT32_MAX)),
        ]
    return specs


def _price_specs(E: Any, cfg: ExpectationsConfig) -> list[Spec]:
    # pandas GX counts NaN as null (so not_null catches it); Spark orders NaN above every
    # number, so the upper bound catches it there, and inf on both.
    return [
        ("price_not_null", "price has no nulls or NaN", E.ExpectColumnValuesToNotBeNull(column="price")),
        ("price_in_range", f"price finite and in [0, {cfg.max_price:g}]",
         E.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=cfg.max_price)),
    ]


def _samples_suite(cfg: ExpectationsConfig, L: int, vocab_sizes: dict[str, int], engine: str,
                   now: int) -> list[Spec]:
    import great_expectations.expectations as E
    from great_expectations.expectations.row_conditions import Column

    specs: list[Spec] = []
    for col, dtype in SAMPLE_COLUMNS.items():
        type_ = _SPARK_TYPES[dtype] if engine == "spark" else dtype
        specs.append((f"{col}_exists", f"column {col} is present", E.ExpectColumnToExist(column=col)))
        specs.append((f"{col}_type", f"column {col} has type {type_}",
                      E.ExpectColumnValuesToBeOfType(column=col, type_=type_)))
        specs.append((f"{col}_not_null", f"column {col} has no nulls", E.ExpectColumnValuesToNotBeNull(column=col)))
    specs += [
        ("label_in_0_1", "the label is 0 or 1", E.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1])),
        ("seq_len_in_0_L", f"seq_len in [0, max_seq_len={L}]",
         E.ExpectColumnValuesToBeBetween(column="seq_len", min_value=0, max_value=L)),
        ("hist_end_ge_seq_len", "hist_end >= seq_len (a model never sees more than the history)",
         E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="hist_end", column_B="seq_len", or_equal=True)),
        ("no_leakage", "last_beh_time < event_time (history strictly before the impression; -1 = none)",
         E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="event_time", column_B="last_beh_time", or_equal=False)),
        ("no_history_time_when_empty", "last_beh_time = -1 exactly when hist_end = 0",
         E.ExpectColumnValuesToBeInSet(column="last_beh_time", value_set=[-1],
                                       row_condition=Column(name="hist_end") == 0)),
        ("history_time_when_nonempty", "last_beh_time is a real time when hist_end > 0",
         E.ExpectColumnValuesToBeBetween(column="last_beh_time", min_value=cfg.min_event_time,
                                         row_condition=Column(name="hist_end") > 0)),
        ("event_time_in_range", f"event_time in [{cfg.min_event_time}, now + {cfg.future_slack_s} s]",
         E.ExpectColumnValuesToBeBetween(column="event_time", min_value=cfg.min_event_time,
                                         max_value=now + cfg.future_slack_s)),
        ("sample_id_unique", "sample_id unique across train/valid/test",
         E.ExpectColumnValuesToBeUnique(column="sample_id")),
        ("click_rate", f"mean label in [{cfg.min_click_rate}, {cfg.max_click_rate}]",
         E.ExpectColumnMeanToBeBetween(column=_RATE, min_value=cfg.min_click_rate, max_value=cfg.max_click_rate)),
        _price_specs(E, cfg)[1],  # price_not_null above covers NaN on pandas
    ]
    for split in SPLITS:
        in_split = Column(name="split") == split
        specs.append((f"rows_{split}", f"{split} has at least {cfg.min_rows_per_split} rows",
                      E.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows_per_split, row_condition=in_split)))
        specs.append((f"click_rate_{split}", f"{split}: mean label in [{cfg.min_click_rate}, {cfg.max_click_rate}]",
                      E.ExpectColumnMeanToBeBetween(column=_RATE, min_value=cfg.min_click_rate,
                                                    max_value=cfg.max_click_rate, row_condition=in_split)))
    for col, vocab in _VOCAB_OF.items():
        size = vocab_sizes[vocab]
        # 0 is padding and never names a sample's value; OOV (1) is a real value.
        specs.append((f"{col}_in_vocab", f"{col} in [{OOV}, {size - 1}] ({vocab} vocabulary size {size})",
                      E.ExpectColumnValuesToBeBetween(column=col, min_value=OOV, max_value=size - 1)))
    return specs


# --- running ------------------------------------------------------------------------------

def _run(suite: str, engine: str, table: Any, make_specs: Callable[[], list[Spec]], report_dir: Path,
         raise_on_failure: bool, context: dict[str, Any]) -> ValidationResult:
    """Validate ``table``; on Spark first cheaply (pass/fail only), then the failures in detail.

    A detailed result costs Spark one extra job per expectation (the unexpected values);
    a passing suite needs none of them, a failing one only for its failures.
    """
    import great_expectations as gx

    specs = make_specs()
    names = [name for name, _, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate expectation names in suite {suite}")
    described = {name: desc for name, desc, _ in specs}
    gx_ctx = gx.get_context(mode="ephemeral", project_config=_project_config(report_dir / GX_DIR))
    source = gx_ctx.data_sources.add_spark(suite) if engine == "spark" else gx_ctx.data_sources.add_pandas(suite)
    batch_def = source.add_dataframe_asset(suite).add_batch_definition_whole_dataframe("all")
    t0 = time.perf_counter()
    if engine == "spark":
        results = _validate(gx_ctx, batch_def, suite, specs, table, "BOOLEAN_ONLY")
        failed = {n for n, r in results.items() if not r.success}
        if failed:  # fresh expectation objects: a GX suite owns the ones it was given
            detail = [spec for spec in make_specs() if spec[0] in failed]
            results.update(_validate(gx_ctx, batch_def, f"{suite}_failures", detail, table, "BASIC"))
    else:
        results = _validate(gx_ctx, batch_def, suite, specs, table, "SUMMARY")
    elapsed = time.perf_counter() - t0
    present = set(table.columns)
    outcomes = [outcome_from_gx(name, described[name], results[name], present) for name in names]
    success = all(o.success for o in outcomes)
    context = {**context, "engine": engine, "seconds": round(elapsed, 3)}
    docs = _data_docs_index(gx_ctx)
    md, html = write_reports(report_dir, suite, success, outcomes, context, data_docs=docs)
    result = ValidationResult(suite, success, outcomes, md, html, context, data_docs=docs)
    if success:
        log.info("%s suite passed (%d expectations, %.2f s); report %s", suite, len(outcomes), elapsed, md)
    else:
        log.warning(result.failure_message())
        if raise_on_failure:
            raise DataValidationError(result.failure_message(), report_path=str(md))
    return result


def _project_config(root: Path) -> Any:
    """An in-memory GX project whose validation results and Data Docs site are files under ``root``.

    Only the results store is on disk (``root/validations``): the site's index is built from it, so
    it lists every run ever written there, not just this context's.
    """
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults()
    stores = {**defaults.stores, defaults.validation_results_store_name: {
        "class_name": "ValidationResultsStore",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(root / "validations")}}}
    site = {"class_name": "SiteBuilder", "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(root / "data_docs")},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}
    return DataContextConfig(store_backend_defaults=defaults, stores=stores, data_docs_sites={DATA_DOCS_SITE: site},
                             analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False))


ResultFormat = Literal["BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE"]  # GX's result detail levels


def _validate(gx_ctx: Any, batch_def: Any, name: str, specs: list[Spec], table: Any,
              result_format: ResultFormat) -> dict[str, Any]:
    """One GX checkpoint run (validation + Data Docs update); results keyed by our expectation
    names (GX reorders them)."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    for spec_name, _, exp in specs:
        exp.meta = {"name": spec_name}
    gx_suite = gx_ctx.suites.add(gx.ExpectationSuite(name=name, expectations=[e for _, _, e in specs]))
    vdef = gx_ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_def, suite=gx_suite))
    checkpoint = gx_ctx.checkpoints.add(gx.Checkpoint(
        name=name, validation_definitions=[vdef], result_format=result_format,
        actions=[UpdateDataDocsAction(name="data_docs", site_names=[DATA_DOCS_SITE])]))
    run = checkpoint.run(batch_parameters={"dataframe": table}, run_id=RunIdentifier(run_name=name))
    (res,) = run.run_results.values()
    return {r.expectation_config.meta["name"]: r for r in res.results}


def _data_docs_index(gx_ctx: Any) -> Path | None:
    """The Data Docs site's index.html (as GX reports it), None if GX built none."""
    for site in gx_ctx.get_docs_sites_urls(site_name=DATA_DOCS_SITE):
        url = urlsplit(site.get("site_url") or "")
        if url.scheme == "file":
            path = Path(url2pathname(url.path))
            return path if path.is_file() else None
    return None


def _read_stats(lay: BuildLayout) -> dict[str, Any]:
    if not lay.stats.exists():
        raise ArtifactError(f"{lay.stats} is missing: {lay.root} is not a complete feature build")
    stats = json.loads(lay.stats.read_text())
    missing = [k for k in ("max_seq_len", "vocab_sizes") if k not in stats]
    vocabs = [v for v in _VOCAB_OF.values() if v not in stats.get("vocab_sizes", {})]
    if missing or vocabs:
        raise ArtifactError(f"{lay.stats} lacks {missing + [f'vocab_sizes.{v}' for v in vocabs]}")
    return stats


def _check_splits(lay: BuildLayout) -> None:
    absent = [s for s in SPLITS if not lay.samples(s).exists()]
    if absent:
        raise ArtifactError(f"build {lay.root} has no samples table for split(s) {absent}")


def _read_samples_pandas(lay: BuildLayout) -> pd.DataFrame:
    import pandas as pd

    _check_splits(lay)
    frames = [pd.read_parquet(lay.samples(s)).assign(split=s) for s in SPLITS]
    table = pd.concat(frames, ignore_index=True)
    if "label" in table.columns:
        table[_RATE] = table["label"].astype("float64")
    return table


def _read_samples_spark(spark: Any, lay: BuildLayout) -> Any:
    from functools import reduce

    from pyspark.sql import functions as F

    _check_splits(lay)
    frames = [spark.read.parquet(lay.samples(s).absolute().as_uri()).withColumn("split", F.lit(s)) for s in SPLITS]
    table = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    if "label" in table.columns:
        table = table.withColumn(_RATE, F.col("label").cast("double"))
    return table
