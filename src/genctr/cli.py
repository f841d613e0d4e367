"""The ``genctr`` command line. Every command has ``--help``; options map onto typed configs."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from genctr.errors import GenCTRError
from genctr.logging_setup import setup_logging

app = typer.Typer(help="Generative-pretrained CTR models: features, training, pipelines, serving.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Canonical events: generate synthetic ones, convert sources.", no_args_is_help=True)
features_app = typer.Typer(help="Feature build (Spark), data checks (Great Expectations), Feast.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")


def _register_subcommands() -> None:
    from genctr.cli_canary import canary_app
    from genctr.cli_pipeline import pipeline_app
    from genctr.cli_serve import serve_cmd
    from genctr.cli_train import evaluate_cmd, train_app

    app.add_typer(train_app, name="train")
    app.command("evaluate")(evaluate_cmd)
    app.add_typer(pipeline_app, name="pipeline")
    app.command("serve")(serve_cmd)
    app.add_typer(canary_app, name="canary")


_register_subcommands()

log = logging.getLogger("genctr")


@app.callback()
def main(log_level: str = typer.Option("INFO", help="Logging level.")) -> None:
    setup_logging(log_level.upper())


def fail(exc: GenCTRError) -> None:
    """Print a user error without a traceback and exit non-zero."""
    typer.secho(f"error: {exc}", fg="red", err=True)
    report = getattr(exc, "report_path", None)
    if report:
        typer.secho(f"report: {report}", err=True)
    raise typer.Exit(code=2)


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
    out: Optional[Path] = typer.Option(None, help="Output Parquet path (default $GENCTR_HOME/events/<source>)."),
    time_unit: str = typer.Option("s", help="Unit of numeric event_time in a canonical events file: "
                                           "s | ms | us | ns (converted to seconds)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out (atomically)."),
) -> None:
    """Write a source's events in the canonical schema (validated) as Parquet."""
    from genctr.config import DataConfig
    from genctr.data.export import export_events

    try:
        cfg = DataConfig(source=source, path=path, category=category, synthetic_events=events,
                         synthetic_users=users, synthetic_items=items, seed=seed)
        dest = export_events(cfg, out or _home_default("events", source), time_unit=time_unit,
                             overwrite=overwrite)
    except GenCTRError as exc:
        fail(exc)
    typer.echo(str(dest))


@features_app.command("build")
def features_build(
    events: Path = typer.Option(..., help="Canonical events (Parquet file or directory)."),
    out: Optional[Path] = typer.Option(None, help="Build directory (default $GENCTR_HOME/features/<events name>)."),
    max_seq_len: int = typer.Option(200, help="L: behaviours a model sees."),
    master: str = typer.Option("local[*]", help="Spark master URL."),
    time_unit: str = typer.Option("s", help="Unit of numeric event_time in the events: s | ms | us | ns "
                                           "(converted to seconds)."),
) -> None:
    """Events -> samples, per-user histories, vocabularies and splits (Spark)."""
    from genctr.config import FeatureConfig
    from genctr.features.spark_build import build_features

    try:
        cfg = FeatureConfig(max_seq_len=max_seq_len, spark_master=master, time_unit=time_unit)
        dest = out or _home_default("features", events.stem)
        stats = build_features(events, dest, cfg)
    except GenCTRError as exc:
        fail(exc)
    rows = {split: part["rows"] for split, part in stats["splits"].items()}
    typer.echo(json.dumps({"build": str(dest), "rows": stats["n_events"], "rows_per_split": rows,
                           "users": stats["n_users"], "items": stats["n_items"]}))


@features_app.command("validate")
def features_validate(
    build: Optional[Path] = typer.Option(None, help="Feature build directory to check (samples suite)."),
    events: Optional[Path] = typer.Option(None, help="Canonical events to check (events suite)."),
    report_dir: Optional[Path] = typer.Option(None, help="Where reports go (default beside the input)."),
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
    work_dir: Optional[Path] = typer.Option(None, help="Feast working directory (default $GENCTR_HOME/feast)."),
) -> None:
    """Write Feast sources from a build, apply the definitions and materialise the online store."""
    from genctr.features.feast_sync import materialize

    try:
        materialize(build, online=online, redis_url=redis_url, work_dir=work_dir or _home_default("feast"))
    except GenCTRError as exc:
        fail(exc)
    typer.echo(f"materialised {build} into the {online} online store")


@app.command("demo")
def demo(
    requests: int = typer.Option(40_000, help="Simulated ad requests during the canary."),
    canary_percent: int = typer.Option(50, help="Share of users on the canary."),
    skip_movielens: bool = typer.Option(False, help="Skip the offline MovieLens run (synthetic world only)."),
    keep_serving: bool = typer.Option(False, help="Leave the local model server running afterwards."),
    seed: int = typer.Option(0, help="Seed of the synthetic world, training and traffic."),
) -> None:
    """The whole loop on this machine: training pipelines (kfp.local), gate, canary, A/B analysis,
    promotion, and one HTML report."""
    from genctr.demo import DemoConfig, run_demo

    try:
        result = run_demo(DemoConfig(requests=requests, canary_percent=canary_percent, seed=seed,
                                     skip_movielens=skip_movielens, keep_serving=keep_serving))
    except GenCTRError as exc:
        fail(exc)
    for line in result.summary_lines():
        typer.echo(line)


if __name__ == "__main__":  # pragma: no cover
    app()
