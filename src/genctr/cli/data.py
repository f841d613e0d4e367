"""``genctr data ...`` and ``genctr features ...``: canonical events, the Spark build, GX checks, Feast."""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import typer

from genctr.cli.errors import fail
from genctr.errors import GenCTRError

data_app = typer.Typer(help="Canonical events: generate synthetic ones, convert sources.", no_args_is_help=True)
features_app = typer.Typer(help="Feature build (Spark), data checks (Great Expectations), Feast.", no_args_is_help=True)


def _home_default(*parts: str) -> Path:
    from genctr.paths import home

    return home().joinpath(*parts)


@data_app.command("export")
def data_export(
    source: str = typer.Option("movielens", help="movielens | taobao | synthetic | events"),
    path: str = typer.Option("", help="Source file/directory ('' = bundled MovieLens)."),
    category: str = typer.Option("combo", help="MovieLens category: genre combination or first genre."),
    events: int = typer.Option(200_000, help="Synthetic: number of impressions."),
    users: int = typer.Option(2_000, help="Synthetic: number of users."),
    items: int = typer.Option(5_000, help="Synthetic: number of items."),
    seed: int = typer.Option(0, help="Random seed."),
    out: Path | None = typer.Option(None, help="Output Parquet path (default $GENCTR_HOME/events/<source>)."),
    time_unit: str = typer.Option("s", help="Unit of numeric event_time in a canonical events file: "
                                           "s | ms | us | ns (converted to seconds)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out (atomically)."),
    behaviour_log: bool = typer.Option(False, "--behaviour-log", help=(
        "Also write the source's behaviour log (user_id, item_id, category_id, event_time, event_type) "
        "beside --out as <stem>.behaviours.parquet: movielens every rating, taobao the cart/fav/buy rows, "
        "events the file --behaviour-path names; synthetic has none.")),
    behaviour_path: str = typer.Option("", help="Source 'events' with --behaviour-log: the canonical behaviour "
                                               "log, Parquet or CSV ('' = <stem>.behaviours.parquet beside --path)."),
) -> None:
    """Write a source's events in the canonical schema (validated) as Parquet."""
    from genctr.config import DataConfig
    from genctr.data.behaviours import behaviours_path
    from genctr.data.export import export_events

    try:
        cfg = DataConfig(source=source, path=path, category=category, synthetic_events=events,
                         synthetic_users=users, synthetic_items=items, seed=seed, behaviour_log=behaviour_log,
                         behaviour_path=behaviour_path)
        dest = export_events(cfg, out or _home_default("events", source), time_unit=time_unit,
                             overwrite=overwrite)
    except GenCTRError as exc:
        fail(exc)
    typer.echo(str(dest))
    if behaviour_log:
        typer.echo(behaviours_path(dest))


@features_app.command("build")
def features_build(
    events: str = typer.Option(..., help="Canonical events (Parquet file or directory; a path or s3://... URI)."),
    out: str | None = typer.Option(None, help="Build directory, a path or s3://... URI "
                                              "(default $GENCTR_HOME/features/<events name>)."),
    max_seq_len: int = typer.Option(200, help="L: behaviours a model sees."),
    master: str = typer.Option("local[*]", help="Spark master URL: local[*], spark://host:port, sc://host:port."),
    time_unit: str = typer.Option("s", help="Unit of numeric event_time in the events: s | ms | us | ns "
                                           "(converted to seconds)."),
    behaviours: str | None = typer.Option(None, metavar="PATH", help=(
        "Behaviour log (Parquet: user_id, item_id, category_id, event_time, event_type; a path or s3://... URI, "
        "times in --time-unit), e.g. the <stem>.behaviours.parquet `genctr data export --behaviour-log` wrote: "
        "its rows join the clicked impressions as behaviours.")),
) -> None:
    """Events -> samples, per-user histories, vocabularies and splits (Spark)."""
    from genctr.config import FeatureConfig
    from genctr.features.spark_build import build_features

    try:
        cfg = FeatureConfig(max_seq_len=max_seq_len, spark_master=master, time_unit=time_unit)
        dest = out or str(_home_default("features", PurePosixPath(events.rstrip("/")).stem))
        stats = build_features(events, dest, cfg, behaviours=behaviours)
    except GenCTRError as exc:
        fail(exc)
    rows = {split: part["rows"] for split, part in stats["splits"].items()}
    summary = {"build": str(dest), "rows": stats["n_events"], "rows_per_split": rows,
               "users": stats["n_users"], "items": stats["n_items"]}
    if "behaviour_log" in stats:
        summary["behaviour_log"] = stats["behaviour_log"]
    typer.echo(json.dumps(summary))


@features_app.command("validate")
def features_validate(
    build: Path | None = typer.Option(None, help="Feature build directory to check (samples suite)."),
    events: Path | None = typer.Option(None, help="Canonical events to check (events suite)."),
    report_dir: Path | None = typer.Option(None, help="Where reports go (default beside the input)."),
) -> None:
    """Great Expectations suites; exits non-zero and names failing expectations on failure."""
    from genctr.features.checks import run_checks

    if build is None and events is None:
        fail(GenCTRError("give --build and/or --events"))
    try:
        reports = run_checks(events=events, build=build, report_dir=report_dir)
    except GenCTRError as exc:
        fail(exc)
    for r in reports:
        typer.echo(f"passed: {r}")


@features_app.command("materialize")
def features_materialize(
    build: Path = typer.Option(..., help="Feature build directory."),
    online: str = typer.Option("sqlite", help="Online store: sqlite | redis."),
    redis_url: str = typer.Option("localhost:6379", help="Redis connection string (online=redis)."),
    work_dir: Path | None = typer.Option(None, help="Feast working directory (default $GENCTR_HOME/feast)."),
) -> None:
    """Write Feast sources from a build, apply the definitions and materialise the online store."""
    from genctr.features.feast_sync import materialize

    try:
        materialize(build, online=online, redis_url=redis_url, work_dir=work_dir or _home_default("feast"))
    except GenCTRError as exc:
        fail(exc)
    typer.echo(f"materialised {build} into the {online} online store")


__all__ = ["data_app", "features_app"]
