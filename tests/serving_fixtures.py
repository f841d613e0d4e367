"""Shared heavy fixtures of the serving and deploy tests: a real model artifact on the tiny build,
its Feast online store, a reference scorer that bypasses genctr.serving, and real model servers.

Everything is built once per test session (module-level cache, like build_fixtures.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests
import torch
from build_fixtures import MAX_SEQ_LEN, NO_CLICK_USERS, shared_build
from conftest import free_port

COLD_USER = 10**12  # never seen by the build: not in Feast, not in the user vocabulary
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ServingArtifacts:
    build: Path
    model: Path  # fine-tuned dcnv2_ta, seed 0
    model_b: Path  # model with perturbed weights (a different "canary" model)
    feast_dir: Path  # materialize() work dir: feature_store.yaml + registry + SQLite online store
    store: Any  # the FeatureStore materialize() returned


_CACHE: dict[str, ServingArtifacts] = {}


def serving_artifacts(tmp_path_factory: Any, spark: Any) -> ServingArtifacts:
    """Tiny build (L = MAX_SEQ_LEN) -> a 1-epoch dcnv2_ta artifact (+ a perturbed copy) + SQLite Feast."""
    if "a" not in _CACHE:
        from genctr.features.feast_sync import materialize
        from genctr.training.run import finetune

        build = shared_build(tmp_path_factory, spark)
        root = tmp_path_factory.mktemp("serving")
        finetune(build, root / "model_a", {"max_seq_len": MAX_SEQ_LEN, "backbone": "dcnv2_ta"},
                 {"epochs": 1, "progress": False, "device": "cpu", "seed": 0})
        perturbed_copy(root / "model_a", root / "model_b")
        store = materialize(build, work_dir=root / "feast")
        _CACHE["a"] = ServingArtifacts(build, root / "model_a", root / "model_b", root / "feast", store)
    return _CACHE["a"]


def perturbed_copy(src: Path, dest: Path, scale: float = 0.05) -> None:
    """A second valid artifact with different weights (a stand-in for a retrained model)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    gen = torch.Generator().manual_seed(1)
    weights = load_file(str(src / "model.safetensors"))
    noisy = {k: (v + scale * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
             for k, v in weights.items()}
    save_file(noisy, str(dest / "model.safetensors"))


def known_users(art: ServingArtifacts) -> list[int]:
    """Users with a full-length served sequence, then one with a shorter one."""
    fu = pd.read_parquet(art.build / "feast" / "user_behavior_seq")
    full = fu[fu["seq_len"] == MAX_SEQ_LEN]["user_id"].tolist()
    short = fu[(fu["seq_len"] > 0) & (fu["seq_len"] < MAX_SEQ_LEN)]["user_id"].tolist()
    return [int(full[0]), *([int(short[0])] if short else [])]


def item_table(art: ServingArtifacts) -> pd.DataFrame:
    return pd.read_parquet(art.build / "feast" / "item_features")


class ReferenceScorer:
    """pCTRs computed without genctr.serving: vocabularies as dicts, sequences from Feast's SDK
    (``feast_sync.get_online_sequences``), full-length [N, L] batches, the model called directly."""

    def __init__(self, art: ServingArtifacts, model_dir: Path | None = None) -> None:
        from genctr.artifacts.load import load_model

        model_dir = model_dir or art.model
        self.model = load_model(model_dir, "cpu")
        self.store = art.store
        vocab = {n: pd.read_parquet(model_dir / "vocab" / n) for n in ("user", "item", "category")}
        self.vocab = {n: dict(zip(v["raw_id"], v["idx"], strict=True)) for n, v in vocab.items()}
        self.items = item_table(art).set_index("item_id")

    def __call__(self, user_id: int, candidates: list[dict[str, Any]]) -> np.ndarray:
        from genctr.features.feast_sync import get_online_sequences

        seq = get_online_sequences(self.store, [user_id])[user_id]
        n, L = len(candidates), MAX_SEQ_LEN
        hist_item = np.zeros((n, L), np.int64)
        hist_cate = np.zeros((n, L), np.int64)
        k = len(seq["item_seq"][-L:])
        hist_item[:, :k] = [self.vocab["item"].get(x, 1) for x in seq["item_seq"][-L:]]
        hist_cate[:, :k] = [self.vocab["category"].get(x, 1) for x in seq["cate_seq"][-L:]]
        cate, price = [], []
        for c in candidates:
            row = self.items.loc[c["item_id"]] if c["item_id"] in self.items.index else None
            raw_cate = c.get("category_id", None if row is None else int(row["category_id"]))
            cate.append(1 if raw_cate is None else self.vocab["category"].get(raw_cate, 1))
            price.append(c.get("price", 0.0 if row is None else float(row["price"])))
        batch = {
            "user": torch.full((n,), self.vocab["user"].get(user_id, 1)),
            "item": torch.tensor([self.vocab["item"].get(c["item_id"], 1) for c in candidates]),
            "cate": torch.tensor(cate), "price": torch.tensor(price, dtype=torch.float32),
            "hist_item": torch.from_numpy(hist_item), "hist_cate": torch.from_numpy(hist_cate),
            "hist_len": torch.full((n,), k),
        }
        with torch.inference_mode():
            return torch.sigmoid(self.model(batch)).numpy()


def candidates_for(art: ServingArtifacts, n: int = 12, seed: int = 0) -> list[dict[str, Any]]:
    """A mix: full features, no features (Feast fills them), partial, and an unknown item."""
    items = item_table(art).sample(n=n - 1, random_state=seed)
    out: list[dict[str, Any]] = []
    for i, row in enumerate(items.itertuples()):
        c: dict[str, Any] = {"item_id": int(row.item_id)}
        if i % 3 != 1:
            c["category_id"] = int(row.category_id)
        if i % 3 == 0:
            c["price"] = round(float(row.price), 3)
        out.append(c)
    out.append({"item_id": 10**9, "category_id": 5, "price": 2.5})  # unknown item id -> OOV
    return out


@dataclass
class ServerHandle:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        try:
            return self.proc.poll() is None and requests.get(f"{self.url}/v2/health/live", timeout=5).ok
        except requests.RequestException:
            return False


@contextmanager
def model_server(args: list[str], log: Path, ready_model: str, timeout: float = 120, *,
                 module: str = "genctr.serving", port_flag: str = "--http_port") -> Iterator[ServerHandle]:
    """``python -m MODULE ARGS PORT_FLAG <free port>`` on loopback; waits for the model's readiness."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *args, port_flag, str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    handle = ServerHandle(proc, port, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{handle.url}/v2/models/{ready_model}/ready", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"model server did not start: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield handle
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = ["COLD_USER", "NO_CLICK_USERS", "ReferenceScorer", "ServingArtifacts", "candidates_for",
           "known_users", "model_server", "serving_artifacts"]
