"""Import Feast without typeguard's import-time instrumentation.

Feast decorates its SDK classes (``FeatureView``, ``Entity``, ``Field``, the data sources, ...)
with ``typeguard.typechecked``. typeguard 4 instruments each decorated function when the module
is imported: it re-reads and re-parses the *whole* module's source, rewrites the tree and compiles
it again, once per decorated function (about 240 of them). That is half of ``import feast`` on
this machine (6.4 s -> 3.2 s), paid by every process that opens a store: each model server with
an online store and each materialise step. The instrumented functions also check their arguments
on every call, in the server's reads too.

genctr builds every Feast object from its own typed configs, so those checks catch nothing
here. :func:`import_feast` imports Feast once with ``typeguard.typechecked`` (public API) swapped
for a pass-through and puts it back at once, so nothing else in the process is affected. Set
``GENCTR_FEAST_TYPECHECKS=1`` to import Feast with its checks (what a plain ``import feast``
does). ``tests/test_feast_import.py`` is the contract: Feast's classes come out uninstrumented,
typeguard's decorator is restored, and the stores still read and write.

Every genctr function that imports Feast calls :func:`import_feast` first; once Feast is imported
(by this function or by anyone else) it does nothing.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

KEEP_CHECKS_ENV = "GENCTR_FEAST_TYPECHECKS"


def _pass_through(target: Any = None, **_options: Any) -> Any:
    """``typechecked`` as a no-op: ``@typechecked`` and ``@typechecked(...)`` both return the target."""
    if target is None:
        return _keep
    return target


def _keep(target: Any) -> Any:
    return target


def import_feast() -> None:
    """Import ``feast`` (once) without typeguard instrumenting its classes."""
    if "feast" in sys.modules:
        return
    if os.environ.get(KEEP_CHECKS_ENV, "").strip().lower() in ("1", "true", "yes"):
        import feast  # noqa: F401 - imported for its side effect: the module is loaded, with its checks

        return
    import typeguard

    saved: Callable[..., Any] = typeguard.typechecked
    typeguard.typechecked = _pass_through  # the public decorator, swapped while feast imports
    try:
        import feast  # noqa: F401 - imported for its side effect: the module is loaded, uninstrumented
    finally:
        typeguard.typechecked = saved  # restored: later users get the real one
