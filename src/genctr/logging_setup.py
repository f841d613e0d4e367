"""One place that configures logging for the CLI and components (the library only logs)."""
from __future__ import annotations

import logging


def setup_logging(level: str = "INFO") -> None:
    try:
        from rich.console import Console
        from rich.logging import RichHandler

        # logs on stderr: stdout carries the commands' results (JSON a pipe can read)
        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    except ImportError:  # pragma: no cover - rich is a dependency
        handler, fmt = logging.StreamHandler(), "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)
    for noisy in ("py4j", "great_expectations", "feast", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
