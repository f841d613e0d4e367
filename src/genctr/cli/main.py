"""The root ``genctr`` app: logging (``--log-level``, ``--log-format``), ``--version``, ``genctr demo``,
``genctr doctor``, and every command group."""
from __future__ import annotations

import typer

from genctr.cli.canary import canary_app
from genctr.cli.data import data_app, features_app
from genctr.cli.doctor import doctor_cmd
from genctr.cli.errors import fail
from genctr.cli.evaluate import evaluate_cmd
from genctr.cli.pipeline import pipeline_app
from genctr.cli.serve import serve_app
from genctr.cli.train import train_app
from genctr.errors import GenCTRError
from genctr.logging_setup import setup_logging

app = typer.Typer(help="Generative-pretrained CTR models: features, training, pipelines, serving.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
# registration order is the order of `genctr --help`: commands first, then groups, each as added
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(train_app, name="train")
app.command("evaluate")(evaluate_cmd)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(serve_app, name="serve")  # a group with a default: `genctr serve` and `genctr serve router`
app.add_typer(canary_app, name="canary")
app.command("doctor")(doctor_cmd)


def _print_version(value: bool) -> None:
    if value:
        from genctr import __version__

        typer.echo(f"genctr {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    log_level: str = typer.Option("INFO", help="Logging level: DEBUG | INFO | WARNING | ERROR."),
    log_format: str | None = typer.Option(None, help="Logs on stderr as plain | json lines (default: plain on a "
                                                        "terminal, json otherwise, e.g. in a pod; "
                                                        "$GENCTR_LOG_FORMAT). Pipeline steps run here follow it."),
    version: bool | None = typer.Option(None, "--version", callback=_print_version, is_eager=True,
                                           help="Print the version and exit."),
) -> None:
    import os

    from genctr.logging_setup import LOG_FORMAT_ENV

    try:
        chosen = setup_logging(log_level, log_format)
    except GenCTRError as exc:
        fail(exc)
    if log_format:  # kfp.local steps are subprocesses: they read the choice from the environment
        os.environ[LOG_FORMAT_ENV] = chosen


@app.command("demo")
def demo(
    requests: int = typer.Option(40_000, help="Simulated ad requests during the canary."),
    canary_percent: int = typer.Option(50, help="Share of users on the canary."),
    skip_movielens: bool = typer.Option(False, help="Skip the offline MovieLens run (synthetic world only)."),
    keep_serving: bool = typer.Option(False, help="Leave the local model server running afterwards."),
    seed: int = typer.Option(0, help="Seed of the synthetic world, training and traffic."),
    spark_master: str = typer.Option("local[2]", help="Spark master of the pipelines' feature builds: "
                                                      "local[N], or a cluster or Spark Connect server on "
                                                      "this machine (spark://, sc://)."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show genctr's INFO logs (default: one line per "
                                                          "stage, warnings, and the summary)."),
) -> None:
    """The whole loop on this machine: training pipelines (kfp.local), gate, canary, A/B analysis,
    promotion, and one HTML report. Prints one line per stage (with where its step logs go) and a
    summary; kfp.local's output goes to $GENCTR_HOME/demo/logs/."""
    import logging

    from genctr.demo import DemoConfig, run_demo

    if not verbose:
        logging.getLogger("genctr").setLevel(max(logging.WARNING, logging.getLogger().getEffectiveLevel()))
    try:
        result = run_demo(DemoConfig(requests=requests, canary_percent=canary_percent, seed=seed,
                                     skip_movielens=skip_movielens, keep_serving=keep_serving,
                                     spark_master=spark_master), progress=typer.echo)
    except GenCTRError as exc:
        fail(exc)
    for line in result.summary_lines():
        typer.echo(line)


__all__ = ["app"]
