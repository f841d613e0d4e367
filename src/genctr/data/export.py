"""Write any source's events as canonical Parquet (synthetic worlds chunk by chunk)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from genctr.config import DataConfig


def export_events(cfg: DataConfig, out: str | Path) -> Path:
    """Validated canonical events at ``out`` (written to a temp path, then renamed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.source == "synthetic":
        from genctr.data.sources.synthetic import SyntheticConfig, write_events

        world = SyntheticConfig(n_users=cfg.synthetic_users, n_items=cfg.synthetic_items, seed=cfg.seed)
        write_events(world, cfg.synthetic_events, str(out))
        return out
    from genctr.data.sources import load_events

    df = load_events(cfg)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".parquet", dir=out.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
