"""`make demo` at a small size: both training pipelines, the gate, the canary with simulated
traffic, the decision, and the HTML report, which a real headless browser (Debian's chromium)
must render with the decision in it."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genctr.demo import DemoConfig, run_demo

pytestmark = pytest.mark.slow

SMALL = DemoConfig(world_users=400, world_items=800, champion_events=16_000, candidate_events=40_000, seq_len=20,
                   requests=8_000, skip_movielens=True, pretrain_max_steps=30)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("no chromium on PATH: `apt-get install -y chromium` (.ci/run does)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, spark_connect: str) -> Any:
    home = tmp_path_factory.mktemp("demo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENCTR_HOME", str(home))
        # the builds on the session's warm Spark Connect server (the CLI's default is local[2])
        yield run_demo(dataclasses.replace(SMALL, spark_master=spark_connect))


def test_the_demo_runs_the_loop_and_stops_its_server(demo: Any) -> None:
    from genctr.demo import DEPLOYMENT
    from genctr.deploy.factory import DeployTarget, make_deployer

    saved = json.loads((demo.root / "demo.json").read_text())
    assert saved["champion"]["deployment"], saved["champion"]["gate"]["reason"]
    assert saved["champion"]["deployment"]["action"] == "deploy"  # the first model became the champion
    gate = saved["candidate"]["gate"]
    assert gate["champion"] is not None  # the candidate was compared with the deployed champion
    if gate["passed"]:
        assert saved["canary"]["action"] in ("promote", "rollback", "continue")
        assert saved["canary"]["analysis"]["arms"]["canary"]["impressions"] > 0
    status = make_deployer(DeployTarget(kind="local", name=DEPLOYMENT,
                                        state_dir=str(demo.root.parent / "deploy"))).status()
    assert not status.ready  # the demo stops the server it started
    # its builds ran on the Connect server, in the pipeline steps' processes; this one opened no Connect
    # session (pyspark would then refuse local Spark here, and in every process started from here)
    assert "SPARK_CONNECT_MODE_ENABLED" not in os.environ and "SPARK_REMOTE" not in os.environ


def test_the_report_renders_in_a_headless_browser_with_the_decision(demo: Any, tmp_path: Path) -> None:
    from PIL import Image

    saved = json.loads((demo.root / "demo.json").read_text())
    action = (saved["canary"] or {}).get("action", "none").upper()
    url = demo.report.resolve().as_uri()
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f"Canary decision: <b>{action}</b>" in dom.stdout
    assert dom.stdout.count("data:image/png;base64,") >= 2  # ROC + training curves at least
    shot = tmp_path / "report.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1100,1400", url], capture_output=True,
                   timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    # the decision banner is drawn: a solid coloured block near the top, not a blank page
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    assert colourful[:400].mean() > 0.01, "the top of the rendered report has no coloured banner"


def test_a_bad_spark_master_fails_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from genctr.cli import app
    from genctr.errors import ConfigError

    monkeypatch.setenv("GENCTR_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"Spark master 'local\[0\]' is not one of local\[\*\]"):
        run_demo(DemoConfig(spark_master="local[0]"))
    quieted = logging.getLogger("genctr")  # `genctr demo` quiets genctr's INFO logs: put them back for later tests
    level = quieted.level
    try:
        result = CliRunner().invoke(app, ["demo", "--spark-master", "yarn-ish"])
    finally:
        quieted.setLevel(level)
    assert result.exit_code == 2 and "Spark master 'yarn-ish' is not one of" in result.output, result.output
    assert not (tmp_path / "demo").exists()  # nothing started, nothing cleared
