"""Write any source's events as canonical Parquet (synthetic worlds chunk by chunk)."""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from genctr.atomic import publish
from genctr.config import DataConfig
from genctr.data.event_time import check_time_unit
from genctr.errors import ConfigError

log = logging.getLogger(__name__)


def export_events(cfg: DataConfig, out: str | Path, *, time_unit: str = "s", overwrite: bool = True) -> Path:
    """Validated canonical events at ``out`` (written to a temp path, then renamed).

    ``time_unit`` is the unit of numeric event times in a file source (converted to
    seconds). An existing ``out`` is replaced atomically, or with ``overwrite=False``
    refused with a ConfigError; nothing is written before the events are validated.
    """
    out = Path(out).expanduser()
    check_time_unit(time_unit)
    if os.path.lexists(out) and not overwrite:
        kind = "directory" if out.is_dir() else "file"
        raise ConfigError(f"output {out} already exists (a {kind}): choose another --out or pass --overwrite")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory of output {out}: {exc.strerror or exc}") from exc
    if cfg.source == "synthetic":
        from genctr.data.sources.synthetic import SyntheticConfig, write_events

        if time_unit != "s":
            raise ConfigError("time_unit applies to file sources; the synthetic world writes seconds")
        world = SyntheticConfig(n_users=cfg.synthetic_users, n_items=cfg.synthetic_items, seed=cfg.seed)
        _guard_os(out, lambda: write_events(world, cfg.synthetic_events, str(out)))
        return out
    from genctr.data.sources import load_events

    df = load_events(cfg, time_unit=time_unit)

    def write() -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".parquet", dir=out.parent)
        os.close(fd)
        try:
            df.to_parquet(tmp, index=False)
            publish(Path(tmp), out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    _guard_os(out, write)
    log.info("wrote %d events to %s", len(df), out)
    return out


def _guard_os(out: Path, write: Callable[[], object]) -> None:
    """Run ``write``; an OS error (no space, no permission) becomes a ConfigError naming ``out``."""
    try:
        write()
    except OSError as exc:
        raise ConfigError(f"cannot write output {out}: {exc.strerror or exc}") from exc
