"""One place that configures logging for the CLI and components (the library only logs).

Two formats, on stderr (stdout carries the commands' results):

* ``json`` — one JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
  ``exc`` (the traceback, when there is one) and any ``extra=`` fields; what a log collector
  reads from a pod;
* ``plain`` — Rich on a terminal, ``time level logger: message`` lines elsewhere.

The format is the argument, else ``$GENCTR_LOG_FORMAT``, else ``plain`` when stderr is a terminal
and ``json`` when it is not (a pod, a pipe, a kfp.local step). The KFP components call
:func:`setup_logging` with no argument, so they follow the same rule.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from genctr.errors import ConfigError

LOG_FORMATS = ("plain", "json")
LOG_FORMAT_ENV = "GENCTR_LOG_FORMAT"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
NOISY = ("py4j", "great_expectations", "feast", "urllib3", "matplotlib")
# attributes every LogRecord has: anything else on a record came from ``extra=``
_RECORD_FIELDS = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime"}


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def resolve_format(fmt: str | None = None, stream: TextIO | None = None) -> str:
    """``plain`` or ``json``: ``fmt``, else ``$GENCTR_LOG_FORMAT``, else by whether ``stream`` is a terminal."""
    chosen = (fmt or os.environ.get(LOG_FORMAT_ENV) or "").strip().lower()
    if chosen and chosen not in LOG_FORMATS:
        source = "--log-format" if fmt else f"${LOG_FORMAT_ENV}"
        raise ConfigError(f"{source} must be one of {' | '.join(LOG_FORMATS)}, got {chosen!r}")
    if chosen:
        return chosen
    return "plain" if _is_tty(stream if stream is not None else sys.stderr) else "json"


def check_level(level: str) -> str:
    name = level.strip().upper()
    if name not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {' | '.join(LOG_LEVELS)}, got {level!r}")
    return name


class JsonFormatter(logging.Formatter):
    """A record as one JSON line (never more than one line: newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in doc:
                doc[key] = value
        return json.dumps(doc, default=str, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever ``sys.stderr`` is when each record is written (it may be redirected
    after logging is set up: a test runner, a notebook), never a stream closed since."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always sys.stderr


def make_handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """The handler for ``fmt`` on ``stream`` (None: sys.stderr, looked up at each write)."""
    if fmt == "plain" and _is_tty(stream if stream is not None else sys.stderr):
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(stderr=True) if stream is None else Console(file=stream)
        return RichHandler(console=console, show_path=False, rich_tracebacks=False)
    handler: logging.Handler = StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def setup_logging(level: str = "INFO", fmt: str | None = None, stream: TextIO | None = None) -> str:
    """Configure the root logger on ``stream`` (default: stderr); return the format chosen."""
    chosen = resolve_format(fmt, stream if stream is not None else sys.stderr)
    logging.basicConfig(level=check_level(level), handlers=[make_handler(chosen, stream)], force=True)
    logging.captureWarnings(True)  # warnings become records: one format for everything on stderr
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return chosen
