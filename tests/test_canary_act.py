"""The act step of a canary turn and the registry's aliases: promotion moves ``champion`` to the
canary's version and clears ``canary``; a rollback clears ``canary`` and leaves ``champion``.

The deployer here is an in-memory one (the real deployers have their own tests); the registry
is the real fsspec store on a temporary directory.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from genctr.deploy.base import Deployer, DeploymentStatus
from genctr.errors import ConfigError
from genctr.monitoring.canary import act
from genctr.monitoring.canary_record import CanaryDecision
from genctr.registry import ModelRegistry

NAME = "genctr-ctr"


class MemoryDeployer(Deployer):
    def __init__(self, champion: str, canary: str | None) -> None:
        self.champion, self.canary, self.calls = champion, canary, []

    def deploy(self, model_uri: str) -> DeploymentStatus:
        self.champion, self.canary = model_uri, None
        return self.status()

    def start_canary(self, model_uri: str, percent: int) -> DeploymentStatus:
        self.canary = model_uri
        return self.status()

    def promote(self) -> DeploymentStatus:
        self.calls.append("promote")
        self.champion, self.canary = self.canary or self.champion, None
        return self.status()

    def rollback(self) -> DeploymentStatus:
        self.calls.append("rollback")
        self.canary = None
        return self.status()

    def status(self) -> DeploymentStatus:
        return DeploymentStatus("ctr", self.champion, self.canary, 10 if self.canary else 0, True)


def _model(root: Path, tag: str) -> Path:
    d = root / f"model-{tag}"
    (d / "vocab").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(os.urandom(256) + tag.encode())
    (d / "config.json").write_text(json.dumps({"backbone": "dnn", "tag": tag}))
    (d / "vocab" / "item.parquet").write_bytes(b"PAR1" + tag.encode())
    return d


def _setup(tmp_path: Path) -> tuple[ModelRegistry, MemoryDeployer]:
    reg = ModelRegistry(tmp_path / "registry")
    v1 = reg.register(_model(tmp_path, "a"), NAME)
    v2 = reg.register(_model(tmp_path, "b"), NAME)
    reg.set_champion(NAME, v1)
    reg.set_canary(NAME, v2)
    return reg, MemoryDeployer(reg.get(NAME, v1).uri, reg.get(NAME, v2).uri)


def _decision(deployer: MemoryDeployer, action: str) -> CanaryDecision:
    st = deployer.status()
    return CanaryDecision(time=0.0, deployment=st.name, target=None, champion_uri=st.champion_uri,
                          canary_uri=st.canary_uri, canary_percent=st.canary_percent, action=action,
                          reasons=[f"{action} for the test"])


def test_promotion_moves_champion_and_clears_canary(tmp_path: Path) -> None:
    reg, deployer = _setup(tmp_path)
    result = act(_decision(deployer, "promote"), deployer, registry=reg, model_name=NAME)
    assert result.acted == "promoted" and deployer.calls == ["promote"]
    assert reg.champion(NAME) == 2 and reg.canary(NAME) is None and result.registry_champion == 2


def test_rollback_clears_canary_and_keeps_champion(tmp_path: Path) -> None:
    reg, deployer = _setup(tmp_path)
    result = act(_decision(deployer, "rollback"), deployer, registry=reg, model_name=NAME)
    assert result.acted == "rolled back" and deployer.calls == ["rollback"]
    assert reg.champion(NAME) == 1 and reg.canary(NAME) is None


def test_dry_run_and_continue_leave_the_aliases(tmp_path: Path) -> None:
    reg, deployer = _setup(tmp_path)
    act(_decision(deployer, "rollback"), deployer, registry=reg, model_name=NAME, dry_run=True)
    act(_decision(deployer, "continue"), deployer, registry=reg, model_name=NAME)
    assert (reg.champion(NAME), reg.canary(NAME)) == (1, 2) and deployer.calls == []


def test_a_decision_about_another_canary_changes_nothing(tmp_path: Path) -> None:
    reg, deployer = _setup(tmp_path)
    stale = _decision(deployer, "rollback")
    deployer.start_canary(str(tmp_path / "elsewhere"), 10)
    with pytest.raises(ConfigError, match="nothing done"):
        act(stale, deployer, registry=reg, model_name=NAME)
    assert (reg.champion(NAME), reg.canary(NAME)) == (1, 2) and deployer.calls == []
