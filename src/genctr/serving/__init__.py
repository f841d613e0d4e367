"""Online serving: a KServe predictor that reads Feast and scores candidates in one pass.

* :mod:`genctr.serving.predictor` — :class:`CTRPredictor` (``kserve.Model``)
* :mod:`genctr.serving.request` — v1 / v2 request layouts and their validation
* :mod:`genctr.serving.online` — Feast store config and the cached online reader
* :mod:`genctr.serving.server` — :func:`serve` (what ``python -m genctr.serving`` runs)
"""
from genctr.serving._kserve import import_kserve

import_kserve()  # before any module below imports kserve

from genctr.serving.server import ServeConfig, serve  # noqa: E402 - import_kserve() must run first

__all__ = ["ServeConfig", "serve"]
