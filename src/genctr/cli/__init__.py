"""The ``genctr`` command line: one module per command group, all user errors through :func:`fail`.

``genctr.cli:app`` is the console entry point (pyproject.toml).
"""
from genctr.cli.main import app

__all__ = ["app"]
