"""Publishing an output in one step: write beside it, then rename onto it."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def publish(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` (file or directory) onto ``out``, replacing whatever ``out`` is.

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
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
