"""Raw id -> model index lookup tables, vectorised (no per-id Python on the request path).

A model artifact carries its feature build's vocabularies (``vocab/{user,item,category}``,
Parquet ``raw_id int64 -> idx int32``; see :mod:`genctr.artifacts.files`). Serving maps
raw ids from requests and from Feast through them: a binary search over the sorted raw ids,
``OOV`` (1) for anything the training period never saw, ``PAD`` (0) never produced.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from genctr.artifacts.files import VOCABS, read_vocabulary
from genctr.errors import ArtifactError
from genctr.features.layout import FIRST_ID, OOV

__all__ = ["VOCABS", "IdIndex", "load_vocabularies"]


class IdIndex:
    """One vocabulary: ``lookup(raw [N] int64) -> idx [N] int64``; unknown ids -> ``OOV``."""

    def __init__(self, raw_ids: np.ndarray, idx: np.ndarray, name: str = "") -> None:
        raw_ids = np.asarray(raw_ids, np.int64)
        idx = np.asarray(idx, np.int64)
        if raw_ids.shape != idx.shape:
            raise ArtifactError(f"vocabulary {name!r}: raw_id and idx columns differ in length")
        order = np.argsort(raw_ids, kind="stable")
        self.raw = raw_ids[order]  # sorted, for searchsorted
        self.idx = idx[order]
        if len(self.raw) and (np.diff(self.raw) == 0).any():
            raise ArtifactError(f"vocabulary {name!r} maps one raw id to several indices")
        if len(self.idx) and self.idx.min() < FIRST_ID:
            raise ArtifactError(f"vocabulary {name!r} uses reserved indices (< {FIRST_ID})")
        self.name = name
        self.size = int(self.idx.max()) + 1 if len(self.idx) else FIRST_ID  # table rows incl. PAD/OOV

    def __len__(self) -> int:
        return len(self.raw)

    def lookup(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, np.int64)
        if len(self.raw) == 0:
            return np.full(raw.shape, OOV, np.int64)
        pos = np.searchsorted(self.raw, raw)  # [N] insertion points
        pos = np.minimum(pos, len(self.raw) - 1)
        hit = self.raw[pos] == raw
        return np.where(hit, self.idx[pos], OOV)


def load_vocabularies(model_dir: str | Path) -> dict[str, IdIndex]:
    """The artifact's ``vocab/{user,item,category}`` as lookup tables (ArtifactError naming a bad file)."""
    return {name: IdIndex(*read_vocabulary(model_dir, name), name) for name in VOCABS}
