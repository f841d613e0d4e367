"""Typed configuration. Validated in ``__post_init__``; YAML/JSON/CLI parsed only at the edges.

``from_dict`` builds any config dataclass (nested ones too) and rejects unknown keys, so a
misspelt option is an error rather than a silent default.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from genctr.errors import ConfigError

T = TypeVar("T")

SOURCES = ("movielens", "taobao", "synthetic", "events")


@dataclass
class DataConfig:
    """Where events come from and how a source is mapped to the canonical schema."""

    source: str = "movielens"  # movielens | taobao | synthetic | events (canonical Parquet/CSV)
    path: str = ""  # dataset directory or file; "" = the bundled MovieLens data
    category: str = "combo"  # MovieLens: genre combination ("combo") or first genre ("first")
    synthetic_events: int = 200_000  # synthetic world: number of impressions to generate
    synthetic_users: int = 2_000
    synthetic_items: int = 5_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"data.source must be one of {SOURCES}, got {self.source!r}")
        if self.category not in ("combo", "first"):
            raise ConfigError(f"data.category must be 'combo' or 'first', got {self.category!r}")
        for name in ("synthetic_events", "synthetic_users", "synthetic_items"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"data.{name} must be positive")


@dataclass
class FeatureConfig:
    """How events become samples and histories."""

    max_seq_len: int = 200  # L: most recent behaviours a model sees
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # per-user time-ordered fractions
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    shuffle_partitions: int = 8

    def __post_init__(self) -> None:
        if self.max_seq_len < 1:
            raise ConfigError("features.max_seq_len must be >= 1")
        self.split = tuple(float(x) for x in self.split)  # type: ignore[assignment]
        if len(self.split) != 3 or any(x < 0 for x in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"features.split must be three non-negative fractions summing to 1, got {self.split}")
        if self.split[0] <= 0:
            raise ConfigError("features.split: the train fraction must be positive")


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build dataclass ``cls`` from a plain dict, recursing into nested dataclasses."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown option(s) {unknown}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)  # type: ignore[arg-type]
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict (the only place YAML is parsed)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            loaded = yaml.safe_load(text)
        else:
            loaded = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error becomes a ConfigError
        raise ConfigError(f"config file {p} could not be parsed: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return loaded


__all__ = ["DataConfig", "FeatureConfig", "from_dict", "to_dict", "load_file", "field"]
