"""The deploy and registry steps import neither torch nor KServe: each kfp.local step is a fresh
process, and those two imports cost it about two seconds before it does any work."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What components/deploy.py and components/registry.py import at run time.
_STEP_IMPORTS = (
    "import genctr.workflow, genctr.deploy.factory, genctr.deploy.local, genctr.registry, "
    "genctr.storage, genctr.logging_setup"
)


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_deploy_step_imports_neither_torch_nor_kserve() -> None:
    loaded = _loaded_after(_STEP_IMPORTS)
    assert "torch" not in loaded
    assert "kserve" not in loaded


def test_the_serving_package_still_gives_serve_config_and_serve() -> None:
    # ServeConfig and serve load genctr.serving.server on first use, which imports KServe through
    # the guard in genctr.serving._kserve.
    loaded = _loaded_after(
        "from genctr.serving import ServeConfig, serve\n"
        "assert ServeConfig.__module__ == 'genctr.serving.server' and callable(serve)"
    )
    assert {"genctr.serving.server", "kserve"} <= loaded


def test_an_unknown_name_of_the_serving_package_is_an_attribute_error() -> None:
    import genctr.serving

    name = "no_such_name"
    with pytest.raises(AttributeError, match=name):
        getattr(genctr.serving, name)
