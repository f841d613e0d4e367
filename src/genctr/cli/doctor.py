"""``genctr doctor``: check Java, Spark, Feast, Redis, the registry and the Kubeflow host; say what to fix."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from genctr.cli.errors import fail
from genctr.errors import GenCTRError

NOT_READY_EXIT = 1  # a required check failed (2 stays "bad flags", as for every command)


def doctor_cmd(
    registry: str = typer.Option("", help="Registry root to check, path or fsspec URI "
                                          "(default $GENCTR_HOME/registry)."),
    feast_repo: Path | None = typer.Option(None, help="Directory with the Feast config (default the bundled "
                                                      "feature_repo/)."),
    feast_config: str = typer.Option("feature_store.yaml", help="Feast config file in --feast-repo "
                                                                "(feature_store.redis.yaml: Redis)."),
    redis_url: str = typer.Option("", help="Redis to PING, host:port[,password=...] (default: the Feast "
                                           "config's, when its online store is Redis)."),
    kfp_host: str | None = typer.Option(None, help="Kubeflow Pipelines API URL to check (default: not checked)."),
    kfp_namespace: str | None = typer.Option(None, help="Kubeflow profile namespace for --kfp-host."),
    kfp_token_file: Path | None = typer.Option(None, help="Bearer token file for --kfp-host."),
    kfp_cookies: str | None = typer.Option(None, help="Cookie header for --kfp-host behind an auth proxy."),
    spark_timeout: float = typer.Option(120.0, help="Seconds the local Spark session may take to start."),
    skip: list[str] | None = typer.Option(None, "--skip", help="Leave a check out (repeatable): python, java, "
                                                               "spark, feast, redis, registry, kfp."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON instead of a table."),
) -> None:
    """Check that this machine or pod can run genctr: a table of ok / fail / skip with what to fix.

    Exit code: 0 every check passed or was skipped, 1 a check failed, 2 bad flags.
    """
    from genctr.doctor import DoctorConfig, format_table, required_failed, run_checks
    from genctr.orchestration.connection import KFPConnection

    try:
        kfp = None
        if kfp_host:
            kfp = KFPConnection(host=kfp_host, namespace=kfp_namespace,
                                token_file=str(kfp_token_file) if kfp_token_file else None, cookies=kfp_cookies)
        cfg = DoctorConfig(registry=registry, feast_repo=str(feast_repo) if feast_repo else "",
                           feast_config=feast_config, redis_url=redis_url, kfp=kfp,
                           spark_timeout_s=spark_timeout, skip=tuple(skip or ()))
    except GenCTRError as exc:
        fail(exc)
    checks = run_checks(cfg)
    if as_json:
        typer.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for line in format_table(checks):
            typer.echo(line)
    if required_failed(checks):
        raise typer.Exit(code=NOT_READY_EXIT)


__all__ = ["NOT_READY_EXIT", "doctor_cmd"]
