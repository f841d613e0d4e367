"""Online serving: a KServe predictor that reads Feast and scores candidates in one pass.

* :mod:`genctr.serving.predictor` — :class:`CTRPredictor` (``kserve.Model``)
* :mod:`genctr.serving.request` — v1 / v2 request layouts and their validation
* :mod:`genctr.serving.online` — Feast store config and the cached online reader
* :mod:`genctr.serving.server` — :func:`serve` (what ``python -m genctr.serving`` runs)
* :mod:`genctr.serving.state`, :mod:`genctr.serving.split` — a local deployment's state file and its
  arm split, which the deployers use without importing KServe or torch

The package imports neither KServe nor torch: ``ServeConfig`` and ``serve`` load
:mod:`genctr.serving.server` on first use (each module that imports KServe guards it through
:mod:`genctr.serving._kserve`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genctr.serving.server import ServeConfig, serve

__all__ = ["ServeConfig", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from genctr.serving import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
