"""Compare two feature builds table by table: the same schema and exactly the same rows."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from genctr.features.layout import BuildLayout

# every table of genctr.features.layout -> the columns that identify a row (sorted before comparing)
TABLE_KEYS = {
    "samples/train": ("sample_id",), "samples/valid": ("sample_id",), "samples/test": ("sample_id",),
    "histories": ("user_idx",), "items": ("item_idx", "item_id"),
    "vocab/user": ("raw_id",), "vocab/item": ("raw_id",), "vocab/category": ("raw_id",),
    "feast/user_behavior_seq": ("user_id",), "feast/item_features": ("item_id",),
}
ORDERED = ("histories", "items")  # one file in a guaranteed order: compared as stored, not only sorted


def read_table(path: Path) -> pa.Table:
    """All Parquet files of one table directory (Spark's part files), without Spark's schema metadata."""
    files = sorted(path.glob("*.parquet"))
    assert files, f"{path}: no Parquet files"
    table = pa.concat_tables(pq.read_table(f) for f in files)
    return table.replace_schema_metadata(None)


def assert_same_build(got: Path, want: Path) -> dict[str, int]:
    """Every table and stats.json of ``got`` equal ``want``'s; returns rows per table."""
    rows = {}
    for rel, keys in TABLE_KEYS.items():
        a, b = read_table(got / rel), read_table(want / rel)
        assert a.schema.equals(b.schema), f"{rel}: schema {a.schema} != {b.schema}"
        assert a.num_rows == b.num_rows, f"{rel}: {a.num_rows} rows != {b.num_rows}"
        if rel in ORDERED:
            assert a.equals(b), f"{rel}: rows or their order differ"
        sort = [(k, "ascending") for k in keys]
        assert a.sort_by(sort).equals(b.sort_by(sort)), f"{rel}: rows differ"
        rows[rel] = a.num_rows
    assert json.loads(BuildLayout(got).stats.read_text()) == json.loads(BuildLayout(want).stats.read_text())
    return rows
