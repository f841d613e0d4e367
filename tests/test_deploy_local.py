"""LocalDeployer: champion and canary as two models of one real local ModelServer; the split in a
JSON state file; promote/rollback swap models in the running process."""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from serving_fixtures import ReferenceScorer, ServingArtifacts, candidates_for, known_users, serving_artifacts

from genctr.deploy import CANARY, CHAMPION
from genctr.deploy.local import LocalDeployer
from genctr.errors import ArtifactError, ConfigError
from genctr.serving.online import FeastConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> ServingArtifacts:
    return serving_artifacts(tmp_path_factory, spark)


@pytest.fixture(scope="module")
def deployer(art: ServingArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployer]:
    d = LocalDeployer(tmp_path_factory.mktemp("deploy") / "state.json", name="ctr",
                      feast=FeastConfig(str(art.feast_dir)))
    try:
        yield d
    finally:
        d.stop()


def scores(url: str, user: int, cands: list[dict[str, Any]]) -> list[float]:
    r = requests.post(url, json={"instances": [{"user_id": user, "candidates": cands}]}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


def test_canary_rollout_promote_and_rollback(art: ServingArtifacts, deployer: LocalDeployer, tmp_path: Path) -> None:
    a, b = str(art.model), str(art.model_b)
    user, cands = known_users(art)[0], candidates_for(art, 10)
    want_a, want_b = ReferenceScorer(art, art.model)(user, cands), ReferenceScorer(art, art.model_b)(user, cands)
    assert not np.allclose(want_a, want_b)  # two different models

    st = deployer.deploy(a)
    assert (st.champion_uri, st.canary_uri, st.canary_percent, st.ready) == (a, None, 0, True)
    pid = st.detail["server"]["pid"]
    np.testing.assert_allclose(scores(st.urls[CHAMPION], user, cands), want_a, rtol=1e-5, atol=1e-6)

    st = deployer.start_canary(b, 10)
    assert (st.champion_uri, st.canary_uri, st.canary_percent, st.ready) == (a, b, 10, True)
    np.testing.assert_allclose(scores(st.urls[CANARY], user, cands), want_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores(st.urls[CHAMPION], user, cands), want_a, rtol=1e-5, atol=1e-6)
    saved = json.loads(deployer.state_file.read_text())
    assert (saved["champion"], saved["canary"], saved["canary_percent"]) == (a, b, 10)
    assert [e["action"] for e in saved["events"]] == ["deploy", "start_canary"]

    assert deployer.start_canary(b, 50).canary_percent == 50

    broken = tmp_path / "broken"  # passes the artifact check, fails to load in the server
    shutil.copytree(art.model_b, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="refused"):
        deployer.start_canary(str(broken), 20)
    st = deployer.status()
    assert (st.canary_uri, st.canary_percent, st.ready) == (b, 50, True)  # previous state restored
    np.testing.assert_allclose(scores(st.urls[CANARY], user, cands), want_b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ArtifactError):
        deployer.start_canary(str(tmp_path / "missing"), 20)  # refused before touching the state

    st = deployer.promote()
    assert (st.champion_uri, st.canary_uri, st.canary_percent, st.ready) == (b, None, 0, True)
    np.testing.assert_allclose(scores(st.urls[CHAMPION], user, cands), want_b, rtol=1e-5, atol=1e-6)
    gone = requests.post(st.urls[CHAMPION].replace(CHAMPION, CANARY), json={"instances": []}, timeout=10)
    assert gone.status_code == 404  # the canary model was unloaded

    deployer.start_canary(a, 20)
    st = deployer.rollback()
    assert (st.champion_uri, st.canary_uri, st.canary_percent, st.ready) == (b, None, 0, True)
    assert CANARY not in st.urls
    np.testing.assert_allclose(scores(st.urls[CHAMPION], user, cands), want_b, rtol=1e-5, atol=1e-6)
    assert st.detail["server"]["pid"] == pid  # one server process throughout
    with pytest.raises(ConfigError, match="no canary"):
        deployer.promote()
    with pytest.raises(ConfigError, match="1..99"):
        deployer.start_canary(a, 100)


def test_a_second_deployer_attaches_to_the_running_server(art: ServingArtifacts, deployer: LocalDeployer) -> None:
    other = LocalDeployer(deployer.state_file, name="ctr")
    st = other.status()
    assert st.ready and st.champion_uri == str(art.model_b)
    st = other.start_canary(str(art.model), 5)
    assert deployer.status().canary_percent == 5
    other.rollback()
    other.stop()  # did not start the server: leaves it running
    assert deployer.status().ready
