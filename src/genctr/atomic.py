"""Writing outputs so that no reader, and no crash, ever sees half of one.

Every write goes to a unique temporary name beside its target (``.<name>.<pid>.<random>.tmp``:
two concurrent writers never share one) and is renamed onto the target only once complete;
on failure the temporary is removed and the target is untouched. ``publish`` does the same
for a finished directory (or file) built elsewhere beside its target.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_path(path: str | Path) -> Path:
    """A unique, hidden name beside ``path`` (same directory, so the final rename is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it is renamed onto ``path``.

    For writers that want a path (``fig.savefig``, ``df.to_parquet``, Evidently's ``save_html``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):  # only left when the write failed
            _remove(tmp)


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; ``fsync`` also makes it durable before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_json(path: str | Path, obj: Any, *, fsync: bool = False, **dumps: Any) -> Path:
    """``json.dumps(obj, indent=2, **dumps)`` written atomically (serialised before anything is touched)."""
    return write_text(path, json.dumps(obj, **{"indent": 2, **dumps}), fsync=fsync)


def publish(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` (file or directory) onto ``out``, replacing whatever ``out`` is.

    A file replaces a file in one ``os.replace``. Otherwise the old ``out`` is first renamed
    aside and restored if the second rename fails, so ``out`` is always either the old or
    the new output, never a mixture, and a crash in between leaves the old one beside it.
    """
    if not os.path.lexists(out) or (tmp.is_file() and out.is_file() and not out.is_symlink()):
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    _remove(old)
