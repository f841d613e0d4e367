"""Part files of the A/B log tables, written so that a reader never sees half of one.

Local directory: the part is written under a hidden temporary name beside its target, fsync'ed,
renamed, and the directory fsync'ed (durable before the sink forgets the events it holds).
fsspec URI: the part is written to a local temporary file and uploaded; object stores whose PUT is
atomic (s3, gcs, azure) get it under its final name in one PUT, so a reader's ``part-*.parquet``
listing shows it complete or not at all; other filesystems get a hidden temporary name, then a move.
Writing the same name again replaces the part (the sink's recovery rewrites a part it may have
written before the crash, with the same rows).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from genctr.atomic import atomic_path
from genctr.monitoring.logs import conform
from genctr.monitoring.sink.config import is_remote

ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PartWriter:
    """Writes ``<out>/<table>/<name>`` (``out``: local path, ``file://`` path or fsspec URI)."""

    def __init__(self, out: str) -> None:
        self.out = out.removeprefix("file://") if out.startswith("file://") else out
        self.remote = is_remote(self.out)
        if self.remote:
            import fsspec

            self.fs, self.root = fsspec.core.url_to_fs(self.out)
            protocol = self.fs.protocol
            self.atomic_put = bool(set([protocol] if isinstance(protocol, str) else protocol) & ATOMIC_PUT)

    def write(self, table: str, name: str, df: pd.DataFrame) -> str:
        """Check ``df`` against the table's schema, write it as one part; the part's path or URI."""
        data = pa.Table.from_pandas(conform(df, "clicks" if table == "raw_clicks" else table),
                                    preserve_index=False)
        if not self.remote:
            target = Path(self.out) / table / name
            with atomic_path(target) as tmp:
                pq.write_table(data, tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            _fsync_dir(target.parent)
            return str(target)
        final = f"{self.root.rstrip('/')}/{table}/{name}"
        with tempfile.TemporaryDirectory(prefix="genctr-part-") as tmp:
            local = Path(tmp) / name
            pq.write_table(data, local)
            if self.atomic_put:
                self.fs.put_file(str(local), final)
            else:
                staging = f"{self.root.rstrip('/')}/{table}/.{name}.tmp"
                self.fs.makedirs(f"{self.root.rstrip('/')}/{table}", exist_ok=True)
                self.fs.put_file(str(local), staging)
                self.fs.mv(staging, final)
        return f"{self.out.rstrip('/')}/{table}/{name}"


__all__ = ["PartWriter"]
