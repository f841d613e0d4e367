"""Where runs write by default: ``$GENCTR_HOME`` (read when called, never at import)."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("GENCTR_HOME", ".genctr")).resolve()


def repo_root() -> Path:
    """The source checkout (for the bundled feature repo and datasets)."""
    return Path(__file__).resolve().parents[2]
