"""Components through ``component.python_func`` with temporary artifacts (no KFP runner).

Each test drives a component body exactly as the KFP executor would: artifacts are
``kfp.dsl`` objects whose ``path`` is a file or directory under ``tmp_path``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

import components
from genctr.errors import DataValidationError


def artifact(cls: type, tmp_path: Path, name: str) -> object:
    return cls(name=name, uri=str(tmp_path / name), metadata={})


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process's temporary directory, private to the test: what a component leaves there shows."""
    import tempfile

    root = tmp_path / "scratch"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def leftovers(scratch: Path, *prefixes: str) -> list[str]:
    return sorted(p.name for p in scratch.iterdir() if p.name.startswith(prefixes))


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic canonical events via the ingest component (2,000 impressions)."""
    root = tmp_path_factory.mktemp("ingest")
    out, log = artifact(Dataset, root, "events"), artifact(Dataset, root, "behaviours")
    components.ingest_events.python_func(events=out, behaviours=log, source="synthetic", synthetic_events=2_000,
                                         synthetic_users=100, synthetic_items=200, seed=3)
    assert out.metadata == {"source": "synthetic"}
    assert log.metadata == {"behaviour_log": False}
    return Path(out.path)


@pytest.fixture(scope="module")
def build_dir(events_file: Path, tmp_path_factory: pytest.TempPathFactory, spark: object) -> Path:
    """A feature build from the build component (shares the test session's Spark)."""
    build = artifact(Dataset, tmp_path_factory.mktemp("build"), "build")
    log = Dataset(uri=str(events_file.parent / "behaviours"))  # the ingest's log: no rows for a synthetic source
    components.build_features.python_func(events=Dataset(uri=str(events_file)), behaviours=log, build=build,
                                          max_seq_len=10, spark_master="local[2]")
    assert build.metadata, "the build's stats go into the artifact metadata"
    assert "behaviour_log" not in build.metadata  # a log without rows builds what no log builds
    return Path(build.path)


def test_ingest_writes_canonical_events(events_file: Path) -> None:
    df = pd.read_parquet(events_file)
    assert len(df) == 2_000
    assert {"request_id", "user_id", "item_id", "category_id", "event_time", "clicked"} <= set(df.columns)
    import pyarrow.parquet as pq

    from genctr.data.behaviours import arrow_schema

    log = pq.read_table(events_file.parent / "behaviours")  # a KFP output must exist: an empty, typed log
    assert log.num_rows == 0 and log.schema.equals(arrow_schema())


def test_ingest_writes_the_behaviour_log_when_asked(tmp_path: Path) -> None:
    from genctr.data.sources.movielens import movielens_source

    events, log = artifact(Dataset, tmp_path, "events"), artifact(Dataset, tmp_path, "behaviours")
    components.ingest_events.python_func(events=events, behaviours=log, behaviour_log=True)
    ratings = pd.read_parquet(events.path)
    assert len(pd.read_parquet(log.path)) == len(ratings) == len(movielens_source()[0])  # every rating
    assert log.metadata == {"behaviour_log": True}
    from genctr.errors import ConfigError

    with pytest.raises(ConfigError, match="data.behaviour_log"):
        components.ingest_events.python_func(events=artifact(Dataset, tmp_path, "e2"),
                                             behaviours=artifact(Dataset, tmp_path, "b2"), source="synthetic",
                                             behaviour_log=True)
    assert not (tmp_path / "e2").exists() and not (tmp_path / "b2").exists()


def test_ingest_rejects_a_bad_label(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"request_id": [1, 2], "user_id": [1, 1], "item_id": [5, 6], "category_id": [1, 1],
                  "event_time": [1_700_000_000, 1_700_000_100], "clicked": [0, 2]}).to_csv(bad, index=False)
    with pytest.raises(DataValidationError, match="clicked"):
        components.ingest_events.python_func(events=artifact(Dataset, tmp_path, "events"),
                                             behaviours=artifact(Dataset, tmp_path, "behaviours"), source="events",
                                             path=str(bad))
    assert not (tmp_path / "events").exists() and not (tmp_path / "behaviours").exists()


@pytest.mark.slow
def test_build_features_writes_a_build(build_dir: Path) -> None:
    stats = json.loads((build_dir / "stats.json").read_text())
    assert stats["max_seq_len"] == 10


def test_validate_events_passes_and_keeps_the_report(events_file: Path, tmp_path: Path, scratch: Path) -> None:
    html, md = artifact(HTML, tmp_path, "report_html"), artifact(Markdown, tmp_path, "report_md")
    components.validate_events.python_func(events=Dataset(uri=str(events_file)), report_html=html, report_md=md)
    assert "<html" in Path(html.path).read_text().lower()
    assert Path(md.path).read_text().strip()
    assert leftovers(scratch, "gx-") == []  # the report's scratch directory is gone


def test_validate_events_fails_on_millisecond_timestamps_with_a_report(events_file: Path, tmp_path: Path,
                                                                       scratch: Path) -> None:
    df = pd.read_parquet(events_file)
    df["event_time"] = df["event_time"] * 1000  # a classic unit bug: passes the schema, fails the time range
    bad = tmp_path / "ms.parquet"
    df.to_parquet(bad, index=False)
    html, md = artifact(HTML, tmp_path, "report_html"), artifact(Markdown, tmp_path, "report_md")
    with pytest.raises(DataValidationError, match="event_time"):
        components.validate_events.python_func(events=Dataset(uri=str(bad)), report_html=html, report_md=md)
    assert "event_time_in_range" in Path(md.path).read_text()  # the report survives the failure
    assert leftovers(scratch, "gx-") == []  # and its scratch directory does not


@pytest.mark.slow
def test_validate_samples_passes(build_dir: Path, tmp_path: Path, scratch: Path) -> None:
    html, md = artifact(HTML, tmp_path, "report_html"), artifact(Markdown, tmp_path, "report_md")
    components.validate_samples.python_func(build=Dataset(uri=str(build_dir)), report_html=html, report_md=md)
    assert Path(html.path).is_file() and Path(md.path).is_file()
    assert leftovers(scratch, "gx-") == []


@pytest.mark.slow
def test_materialize_features_fills_a_feast_repo(build_dir: Path, tmp_path: Path) -> None:
    repo = artifact(Artifact, tmp_path, "feast_repo")
    components.materialize_features.python_func(build=Dataset(uri=str(build_dir)), feast_repo=repo)
    assert repo.metadata["online"] == "sqlite"
    assert any(Path(repo.path).rglob("feature_store.yaml"))


def test_pretrain_none_writes_only_a_marker(tmp_path: Path) -> None:
    pre, metrics = artifact(Model, tmp_path, "pretrained"), artifact(Metrics, tmp_path, "metrics")
    components.pretrain.python_func(build=Dataset(uri=str(tmp_path / "unused")), pretrained=pre, metrics=metrics,
                                    method="none")
    assert json.loads((Path(pre.path) / "pretrain.json").read_text()) == {"method": "none"}
    assert pre.metadata["method"] == "none" and metrics.metadata == {}


@pytest.fixture(scope="module")
def trained(build_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Pretrain (GenCTR) then fine-tune through the components, 1 epoch on CPU."""
    tmp = tmp_path_factory.mktemp("train")
    common = {"max_seq_len": 10, "epochs": 1, "batch_size": 256, "seed": 0, "device": "cpu"}
    pre, pre_metrics = artifact(Model, tmp, "pretrained"), artifact(Metrics, tmp, "pre_metrics")
    components.pretrain.python_func(build=Dataset(uri=str(build_dir)), pretrained=pre, metrics=pre_metrics,
                                    method="genctr", **common)
    model, metrics = artifact(Model, tmp, "model"), artifact(Metrics, tmp, "metrics")
    components.finetune.python_func(build=Dataset(uri=str(build_dir)), pretrained=pre, model=model, metrics=metrics,
                                    pretrain_method="genctr", backbone="dnn", transfer="share", **common)
    return {"pretrained": pre, "pre_metrics": pre_metrics, "model": model, "metrics": metrics}


@pytest.mark.slow
def test_pretrain_and_finetune_write_model_dirs_and_metrics(trained: dict[str, object]) -> None:
    pre, model, metrics = trained["pretrained"], trained["model"], trained["metrics"]
    for art in (pre, model):
        assert (Path(art.path) / "model.safetensors").is_file() and (Path(art.path) / "config.json").is_file()
    assert any(k.startswith("pretrain_") for k in trained["pre_metrics"].metadata)
    assert set(metrics.metadata) == {"auc", "logloss", "gauc"}
    assert 0.0 <= metrics.metadata["auc"] <= 1.0
    assert model.metadata["test_auc"] == metrics.metadata["auc"]


@pytest.mark.slow
def test_gate_then_register(build_dir: Path, trained: dict[str, object], tmp_path: Path, scratch: Path) -> None:
    from genctr.registry import ModelRegistry

    registry = tmp_path / "registry"
    outs = {n: artifact(c, tmp_path, n) for n, c in (("metrics", Metrics), ("candidate_roc", ClassificationMetrics),
                                                      ("champion_roc", ClassificationMetrics), ("report", HTML),
                                                      ("decision", Artifact))}
    passed = components.evaluate_and_gate.python_func(
        build=Dataset(uri=str(build_dir)), candidate=trained["model"], registry_root=str(registry),
        model_name="unit", min_auc_gain=0.001, alpha=0.05, floor_auc=0.0, **outs)
    assert passed is True  # first model, floor 0
    decision = json.loads(Path(outs["decision"].path).read_text())
    assert decision["passed"] is True and outs["decision"].metadata["reason"]
    assert {"candidate_auc", "candidate_logloss", "candidate_gauc", "passed"} <= set(outs["metrics"].metadata)
    assert outs["candidate_roc"].metadata["confidenceMetrics"]
    assert outs["champion_roc"].metadata == {}  # no champion yet
    assert "<html" in Path(outs["report"].path).read_text().lower()
    assert leftovers(scratch, "gate-") == []  # the gate's working directory is gone once copied

    version = components.register_model.python_func(candidate=trained["model"], decision=outs["decision"],
                                                    registry_root=str(registry), model_name="unit",
                                                    set_champion=True, pipeline_run="unit-test")
    reg = ModelRegistry(registry)
    assert reg.list_versions("unit") == [int(version)] and reg.champion("unit") == int(version)
    meta = reg.get("unit", int(version)).metadata
    assert meta["gate"]["passed"] is True and meta["pipeline_run"] == "unit-test"


@pytest.mark.slow
def test_dgenctr_pretrain_step_sees_only_the_labelled_share_and_its_corpus(build_dir: Path, tmp_path: Path) -> None:
    # the step once dropped label_fraction: DGenCTR's label field then pretrained on every label while
    # fine-tuning used a share of them
    pre, metrics = artifact(Model, tmp_path, "pretrained"), artifact(Metrics, tmp_path, "metrics")
    components.pretrain.python_func(build=Dataset(uri=str(build_dir)), pretrained=pre, metrics=metrics,
                                    method="dgenctr", max_seq_len=10, epochs=1, batch_size=256, seed=0,
                                    device="cpu", label_fraction=0.1, pretrain_samples="behaviours")
    config = json.loads((Path(pre.path) / "config.json").read_text())
    assert config["train"]["label_fraction"] == 0.1
    assert config["model"]["pretrain_samples"] == "behaviours"
