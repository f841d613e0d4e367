"""``genctr serve``: the registry's champion served over HTTP with the Feast online store, and a
clear error (exit 2) when there is nothing to serve."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import requests
from serving_fixtures import ReferenceScorer, candidates_for, known_users, model_server, serving_artifacts
from typer.testing import CliRunner

from genctr.cli import app
from genctr.registry import ModelRegistry


def test_serve_without_champion_names_the_fix(tmp_path: Any) -> None:
    result = CliRunner().invoke(app, ["serve", "--registry", str(tmp_path / "reg")])
    assert result.exit_code == 2
    assert "no champion" in result.output and "set_champion" in result.output


@pytest.mark.slow
def test_serve_champion_from_registry(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> None:
    art = serving_artifacts(tmp_path_factory, spark)
    reg_root = tmp_path_factory.mktemp("serve-registry")
    reg = ModelRegistry(str(reg_root))
    version = reg.register(art.model, "ctr")
    reg.set_champion("ctr", version)
    args = ["serve", "--registry", str(reg_root), "--feast-repo", str(art.feast_dir)]
    with model_server(args, reg_root / "serve.log", "ctr", module="genctr", port_flag="--port") as server:
        user, cands = known_users(art)[0], candidates_for(art)
        r = requests.post(f"{server.url}/v1/models/ctr:predict",
                          json={"instances": [{"user_id": user, "candidates": cands}]}, timeout=30)
        assert r.status_code == 200, r.text
        got = np.asarray(r.json()["predictions"][0], dtype=np.float64)
        np.testing.assert_allclose(got, ReferenceScorer(art)(user, cands), rtol=1e-4, atol=1e-6)
