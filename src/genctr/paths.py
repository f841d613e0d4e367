"""Where runs write by default: ``$GENCTR_HOME`` (read when called, never at import).

``$GENCTR_HOME`` is the laptop's storage root; what runs share with other processes or pods
(registry, Feast registry, builds, A/B logs) is derived from a storage root by ``genctr.storage``,
which falls back to :func:`home` only where no ``storage_root`` / ``$GENCTR_STORAGE_ROOT`` is set.
"""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("GENCTR_HOME", ".genctr")).resolve()


def repo_root() -> Path:
    """The source checkout (for the bundled feature repo and datasets)."""
    return Path(__file__).resolve().parents[2]
