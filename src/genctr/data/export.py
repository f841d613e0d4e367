"""Write any source's events as canonical Parquet (synthetic worlds chunk by chunk), and its
behaviour log (``genctr.data.behaviours``) beside them when asked."""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from genctr.atomic import publish
from genctr.config import DataConfig
from genctr.data.event_time import check_time_unit
from genctr.errors import ConfigError

log = logging.getLogger(__name__)


def export_events(cfg: DataConfig, out: str | Path, *, time_unit: str = "s", overwrite: bool = True,
                  behaviours_out: str | Path | None = None) -> Path:
    """Validated canonical events at ``out`` (written to a temp path, then renamed).

    ``time_unit`` is the unit of numeric event times in a file source (converted to
    seconds). An existing ``out`` is replaced atomically, or with ``overwrite=False``
    refused with a ConfigError; nothing is written before the events are validated.

    With ``cfg.behaviour_log`` the source's behaviour log goes to ``behaviours_out`` (default
    :func:`~genctr.data.behaviours.behaviours_path` of ``out``: ``<stem>.behaviours.parquet`` beside
    it), validated together with the events and renamed into place just before them. A
    ``behaviours_out`` without ``cfg.behaviour_log`` gets an empty log (a pipeline step's outputs
    must all exist). Otherwise a log an earlier export left beside ``out`` is removed once the new
    events are in place: it described other events.
    """
    from genctr.data.behaviours import behaviours_path

    out = Path(out).expanduser()
    check_time_unit(time_unit)
    log_out = (Path(behaviours_out).expanduser() if behaviours_out is not None
               else Path(behaviours_path(out)) if cfg.behaviour_log else None)
    for target in (out, log_out):
        if target is not None and os.path.lexists(target) and not overwrite:
            kind = "directory" if target.is_dir() else "file"
            raise ConfigError(f"output {target} already exists (a {kind}): choose another --out or pass --overwrite")
    if log_out is not None and log_out.absolute() == out.absolute():
        raise ConfigError(f"the behaviour log and the events cannot both be written to {out}")
    for target in (out, log_out):
        if target is not None:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the directory of output {target}: {exc.strerror or exc}") from exc
    if cfg.source == "synthetic":
        from genctr.data.sources.synthetic import SyntheticConfig, write_events

        if time_unit != "s":
            raise ConfigError("time_unit applies to file sources; the synthetic world writes seconds")
        world = SyntheticConfig(n_users=cfg.synthetic_users, n_items=cfg.synthetic_items, seed=cfg.seed)
        _write_log(None, log_out)
        _guard_os(out, lambda: write_events(world, cfg.synthetic_events, str(out)))
        _drop_stale_log(out, log_out)
        return out
    from genctr.data.sources import load_source

    df, behaviours = load_source(cfg, time_unit=time_unit)

    def write() -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".parquet", dir=out.parent)
        os.close(fd)
        try:
            df.to_parquet(tmp, index=False)
            publish(Path(tmp), out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    _write_log(behaviours, log_out)
    _guard_os(out, write)
    _drop_stale_log(out, log_out)
    log.info("wrote %d events to %s", len(df), out)
    return out


def _write_log(behaviours: pd.DataFrame | None, log_out: Path | None) -> None:
    """The log (an empty one for None) at ``log_out``, atomically; nothing without a ``log_out``."""
    from genctr.data.behaviours import empty_behaviours, write_behaviours

    if log_out is None:
        return
    frame = empty_behaviours() if behaviours is None else behaviours
    _guard_os(log_out, lambda: write_behaviours(frame, log_out))
    log.info("wrote %d behaviour-log rows to %s", len(frame), log_out)


def _drop_stale_log(out: Path, log_out: Path | None) -> None:
    from genctr.data.behaviours import behaviours_path

    stale = Path(behaviours_path(out))
    if log_out is None and stale.is_file():
        stale.unlink()
        log.info("removed %s: a behaviour log of the events %s replaced", stale, out)


def _guard_os(out: Path, write: Callable[[], object]) -> None:
    """Run ``write``; an OS error (no space, no permission) becomes a ConfigError naming ``out``."""
    try:
        write()
    except OSError as exc:
        raise ConfigError(f"cannot write output {out}: {exc.strerror or exc}") from exc
