"""The command line's one error exit: a user error becomes a short message on stderr and exit code 2."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from genctr.errors import GenCTRError

USER_ERROR_EXIT = 2  # what every command exits with when the user can fix the problem


def fail(exc: GenCTRError) -> NoReturn:
    """Print ``error: <message>`` (and the report's path, if one was written) without a traceback; exit 2."""
    typer.secho(f"error: {exc}", fg="red", err=True)
    report = getattr(exc, "report_path", None)
    if report:
        typer.secho(f"report: {report}", err=True)
    raise typer.Exit(code=USER_ERROR_EXIT)


def print_json(step: Callable[[], dict[str, Any]]) -> None:
    """Run ``step`` and print its result as indented JSON, or :func:`fail` on a user error."""
    try:
        result = step()
    except GenCTRError as exc:
        fail(exc)
    typer.echo(json.dumps(result, indent=2, default=float))


__all__ = ["USER_ERROR_EXIT", "fail", "print_json"]
