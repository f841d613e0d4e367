"""The contract of ``genctr.features.feast_import``: Feast decorates its SDK with typeguard's
public ``typechecked``, which instruments each function at import; ``import_feast`` imports Feast
with that decorator passed through and restores it. Each check runs in a fresh interpreter (a
worker may have imported Feast already). That the stores still read and write through genctr's
code is what test_feast, the pipelines' materialise step and every model server with a Feast
store exercise (all import Feast through ``import_feast``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# typeguard's instrumented functions import its checkers inside their body: the name shows up
# in the code object's names; an uninstrumented Feast function has none. ``snap()`` records which
# of the five are instrumented and whether the decorator is typeguard's own, at that point.
_PROBE = """
import json, sys
import typeguard
before = typeguard.typechecked
snaps = []
def snap():
    from feast import Entity, FeatureView, Field
    from feast.infra.offline_stores.file_source import FileSource
    from feast.data_source import DataSource
    funcs = {{"FeatureView.__init__": FeatureView.__init__, "Entity.__init__": Entity.__init__,
              "Field.__init__": Field.__init__, "FileSource.__init__": FileSource.__init__,
              "DataSource.__init__": DataSource.__init__}}
    snaps.append({{"instrumented": sorted(n for n, f in funcs.items() if "typeguard._functions" in f.__code__.co_names),
                   "restored": typeguard.typechecked is before}})
{setup}
print(json.dumps(snaps))
"""
IMPORT_FEAST = "from genctr.features.feast_import import import_feast; import_feast()"


def _probe(setup: str, **env: str) -> list[dict[str, object]]:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(setup=setup)], capture_output=True, text=True,
                         check=True, env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


ALL = ["DataSource.__init__", "Entity.__init__", "FeatureView.__init__", "Field.__init__", "FileSource.__init__"]


@pytest.fixture(scope="module")
def plain_then_import_feast() -> list[dict[str, object]]:
    """One interpreter: a plain ``import feast`` (snapshot), then ``import_feast()`` (snapshot)."""
    return _probe(f"import feast\nsnap()\n{IMPORT_FEAST}\nsnap()")


def test_a_plain_feast_import_instruments_its_classes(plain_then_import_feast) -> None:
    # the premise: if Feast stops using typeguard this fails, and import_feast has nothing left to do
    assert plain_then_import_feast[0]["instrumented"] == ALL


def test_import_feast_leaves_feast_uninstrumented_and_restores_the_decorator() -> None:
    got = _probe(f"{IMPORT_FEAST}\nsnap()")[0]
    assert got["instrumented"] == []
    assert got["restored"] is True  # the real decorator again, for anyone after


def test_the_environment_switch_keeps_feasts_checks() -> None:
    got = _probe(f"{IMPORT_FEAST}\nsnap()", GENCTR_FEAST_TYPECHECKS="1")[0]
    assert got["instrumented"] == ALL


def test_import_feast_after_feast_is_loaded_changes_nothing(plain_then_import_feast) -> None:
    got = plain_then_import_feast[1]
    assert got["instrumented"] == ALL


def test_the_pass_through_handles_both_decorator_forms() -> None:
    from genctr.features.feast_import import _pass_through

    def f() -> int:
        return 1

    assert _pass_through(f) is f  # @typechecked
    assert _pass_through(collection_check_strategy=None)(f) is f  # @typechecked(...)
