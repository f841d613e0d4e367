"""The FuxiCTR side of the throughput benchmark: its DNN, DCNv2 and DIN, its data loader, its loop.

PyPI ``fuxictr`` ships the layers, ``BaseModel`` (model = trainer) and the loaders but not the
``model_zoo`` classes, so the three models are rebuilt here from its layers exactly as the
model zoo wires them (FeatureEmbedding -> MLP_Block; CrossNetV2 parallel with MLP_Block -> fc;
DIN_Attention with Dice over the (item, category) history -> MLP_Block). Training runs
``BaseModel.train_epoch`` over ``RankDataLoader(..., data_format="npz")`` batches: FuxiCTR's own
loader, step (Adam, BCE on the sigmoid output, grad-norm clipping) and per-step ``loss.item()``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from throughput_data import fuxictr_feature_map

FUXI_MODELS = ("dnn", "dcnv2", "din")


def _imports():
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.layers import CrossNetV2, DIN_Attention, FeatureEmbedding, FeatureEmbeddingDict, MLP_Block
    from fuxictr.pytorch.models import BaseModel
    return FeatureMap, RankDataLoader, CrossNetV2, DIN_Attention, FeatureEmbedding, FeatureEmbeddingDict, \
        MLP_Block, BaseModel


def build_model(name: str, feature_map, gpu: int, model_root: str, embedding_dim: int = 16,
                hidden: tuple[int, ...] = (1024, 512, 256)) -> nn.Module:
    """FuxiCTR DNN / DCNv2 (parallel, 3 cross layers) / DIN ([64] Dice attention MLP)."""
    _, _, CrossNetV2, DIN_Attention, FeatureEmbedding, FeatureEmbeddingDict, MLP_Block, BaseModel = _imports()
    common = dict(model_id=name, gpu=gpu, verbose=0, model_root=model_root, metrics=["AUC"])

    class DNN(BaseModel):
        def __init__(self) -> None:
            super().__init__(feature_map, **common)
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1, hidden_units=list(hidden),
                                 hidden_activations="ReLU", output_activation=self.output_activation)
            self.compile("adam", "binary_crossentropy", 1e-3)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            return {"y_pred": self.mlp(self.embedding_layer(X, flatten_emb=True))}

    class DCNv2(BaseModel):
        def __init__(self) -> None:
            super().__init__(feature_map, **common)
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            d = feature_map.sum_emb_out_dim()
            self.crossnet = CrossNetV2(d, 3)
            self.parallel_dnn = MLP_Block(input_dim=d, output_dim=None, hidden_units=list(hidden),
                                          hidden_activations="ReLU", output_activation=None)
            self.fc = nn.Linear(d + hidden[-1], 1)
            self.compile("adam", "binary_crossentropy", 1e-3)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            x = self.embedding_layer(X, flatten_emb=True)
            out = torch.cat([self.crossnet(x), self.parallel_dnn(x)], dim=-1)
            return {"y_pred": self.output_activation(self.fc(out))}

    class DIN(BaseModel):
        def __init__(self) -> None:
            super().__init__(feature_map, **common)
            self.embedding_layer = FeatureEmbeddingDict(feature_map, embedding_dim)
            self.attention = DIN_Attention(2 * embedding_dim, attention_units=[64], hidden_activations="Dice",
                                           output_activation=None, dropout_rate=0, use_softmax=False)
            self.dnn = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1, hidden_units=list(hidden),
                                 hidden_activations="ReLU", output_activation=self.output_activation)
            self.compile("adam", "binary_crossentropy", 1e-3)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            emb = self.embedding_layer(X)
            target = torch.cat([emb["item_id"], emb["cate_id"]], dim=-1)
            seq = torch.cat([emb["item_history"], emb["cate_history"]], dim=-1)
            mask = X["item_history"].long() != 0
            pooled = self.attention(target, seq, mask)
            emb["item_history"], emb["cate_history"] = pooled.split(embedding_dim, dim=-1)
            return {"y_pred": self.dnn(self.embedding_layer.dict2tensor(emb, flatten_emb=True))}

    return {"dnn": DNN, "dcnv2": DCNv2, "din": DIN}[name]()


def run(name: str, npz_dir: Path, vocab: tuple[int, int, int], seq_len: int, batch_size: int,
        device: str, workers: int, epochs: int = 1, seed: int = 0) -> dict:
    """Train ``name`` for ``epochs`` on train.npz with FuxiCTR's loop; AUC on test.npz."""
    from sklearn.metrics import roc_auc_score

    FeatureMap, RankDataLoader, *_ = _imports()
    logging.getLogger().setLevel(logging.WARNING)
    fmap_path = npz_dir / f"feature_map_{'seq' if name == 'din' else 'pooled'}.json"
    fmap_path.write_text(json.dumps(fuxictr_feature_map(npz_dir, seq_len, *vocab, pooled=name != "din")))
    fmap = FeatureMap("genctr_synth", str(npz_dir))
    fmap.load(str(fmap_path), {"embedding_dim": 16})
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = build_model(name, fmap, gpu=0 if device == "cuda" else -1, model_root=str(npz_dir / "models"))
    train_gen, _ = RankDataLoader(fmap, stage="train", train_data=str(npz_dir / "train.npz"), batch_size=batch_size,
                                  shuffle=True, data_format="npz", num_workers=workers)
    test_gen = RankDataLoader(fmap, stage="test", test_data=str(npz_dir / "test.npz"), batch_size=8192,
                              shuffle=False, data_format="npz", num_workers=workers)
    # BaseModel.fit's state, minus its per-epoch evaluation, checkpointing and best-weights reload
    model._max_gradient_norm = 10.0
    model._total_steps, model._stop_training, model._eval_steps = 0, False, 1 << 62
    ticks: list[float] = []
    secs = 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train_epoch(_Ticking(train_gen, ticks))
        if device == "cuda":
            torch.cuda.synchronize()
        secs += time.perf_counter() - t0
    y = np.concatenate([b["clicked"].numpy().reshape(-1) for b in test_gen])
    p = model.predict(test_gen)
    rows = train_gen.num_samples
    step = float(np.median(np.diff(ticks[1:]))) if len(ticks) > 2 else float("nan")
    return {"rows": rows, "epochs": epochs, "batch_size": batch_size, "seconds": round(secs, 2),
            "samples_per_s_epoch": rows * epochs / secs, "samples_per_s_step": batch_size / step,
            "steps": len(ticks), "test_auc": float(roc_auc_score(y, p))}


class _Ticking:
    """Wraps a loader: records the time each batch is handed to the training step."""

    def __init__(self, loader, ticks: list[float]) -> None:
        self.loader, self.ticks = loader, ticks

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.ticks.append(time.perf_counter())
            yield batch
