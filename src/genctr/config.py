"""Typed configuration. Validated in ``__post_init__``; YAML/JSON/CLI parsed only at the edges.

``from_dict`` builds any config dataclass (nested ones too) and rejects unknown keys, so a
misspelt option is an error rather than a silent default. ``parse_assignments`` reads
command-line ``key=value`` overrides, typed from the dataclass they override.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from genctr.errors import ConfigError, describe

T = TypeVar("T")

SOURCES = ("movielens", "taobao", "synthetic", "events")
LOG_SOURCES = ("movielens", "taobao", "events")  # sources with a behaviour log (data.behaviour_log)
# ----------------------------------------------------------------------------- field types
def _bad(where: str, what: str, value: Any) -> ConfigError:
    return ConfigError(f"{where} must be {what}, got {describe(value)} ({type(value).__name__})")


def coerce(where: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the annotation ``hint`` and returned in its canonical type.

    bool is never taken for an int (``batch_size: true`` is not batch 1); an int must be
    integral (``2.0`` -> 2, ``1.5`` refused); a float must be finite; a ``tuple[T, ...]`` comes
    from a list or tuple (never a string); ``T | None`` allows None. Other annotations are
    returned unchanged for the dataclass' own ``__post_init__`` to check.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(where, inner[0], value) if len(inner) == 1 else value
    if hint is bool:
        if not isinstance(value, bool):
            raise _bad(where, "true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _bad(where, "an integer", value)
        if isinstance(value, numbers.Integral):
            return int(value)
        if not (math.isfinite(value) and float(value).is_integer()):
            raise _bad(where, "an integer", value)
        return int(float(value))  # an integral float from YAML/JSON, e.g. 2.0
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise _bad(where, "a finite number", value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _bad(where, "a string", value)
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise _bad(where, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(f"{where}[{i}]", args[0], v) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _bad(where, f"a list of {len(args)} values", value)
        return tuple(coerce(f"{where}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value, strict=True)))
    return value


def coerce_fields(cfg: Any, section: str) -> None:
    """Check (and canonicalise) every field of dataclass ``cfg`` against its annotation.

    Called first in ``__post_init__``, so the range checks after it compare numbers, never
    strings; an error names ``<section>.<field>``. A nested dataclass field may be given as a
    mapping and is built with :func:`from_dict`.
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        hint, value, where = hints[f.name], getattr(cfg, f.name), f"{section}.{f.name}"
        if dataclasses.is_dataclass(hint):
            if isinstance(value, Mapping):
                value = from_dict(hint, value, where)  # type: ignore[arg-type]  # is_dataclass(hint): a class here
            elif not isinstance(value, hint):  # type: ignore[arg-type]  # a dataclass type, as above
                raise _bad(where, f"a mapping of {where} options", value)
        else:
            value = coerce(where, hint, value)
        object.__setattr__(cfg, f.name, value)


def check_range(where: str, value: float, *, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """ConfigError naming ``where`` unless ``value`` lies in the interval (open ends as given)."""
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        if hi is None:
            bound = f"{'>' if lo_open else '>='} {lo:g}"
        elif lo is None:
            bound = f"{'<' if hi_open else '<='} {hi:g}"
        else:
            bound = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ConfigError(f"{where} must be {bound}, got {describe(value)}")


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
    # also export the source's behaviour log (genctr.data.behaviours): movielens every rating,
    # taobao the cart/fav/buy rows, events the file behaviour_path names; synthetic has none
    behaviour_log: bool = False
    behaviour_path: str = ""  # source 'events': the log file ('' = <events stem>.behaviours.parquet beside path)

    def __post_init__(self) -> None:
        coerce_fields(self, "data")
        if self.source not in SOURCES:
            raise ConfigError(f"data.source must be one of {SOURCES}, got {describe(self.source)}")
        if self.behaviour_log and self.source not in LOG_SOURCES:
            raise ConfigError(f"data.behaviour_log: source {self.source!r} has no behaviour log; sources with "
                              f"one: {LOG_SOURCES} (set data.behaviour_log false)")
        if self.behaviour_path and self.source != "events":
            raise ConfigError(f"data.behaviour_path applies to source 'events' only, not {self.source!r}")
        if self.behaviour_path and not self.behaviour_log:
            raise ConfigError("data.behaviour_path is set but data.behaviour_log is false: set it true to read the log")
        if self.category not in ("combo", "first"):
            raise ConfigError(f"data.category must be 'combo' or 'first', got {describe(self.category)}")
        for name in ("synthetic_events", "synthetic_users", "synthetic_items"):
            check_range(f"data.{name}", getattr(self, name), lo=1)
        check_range("data.seed", self.seed, lo=0, hi=2**32 - 1)  # numpy seeds are non-negative


@dataclass
class FeatureConfig:
    """How events become samples and histories."""

    max_seq_len: int = 200  # L: most recent behaviours a model sees
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # per-user time-ordered fractions
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    shuffle_partitions: int = 8
    time_unit: str = "s"  # unit of numeric event_time in the events: s | ms | us | ns (converted to s)

    def __post_init__(self) -> None:
        coerce_fields(self, "features")
        check_range("features.max_seq_len", self.max_seq_len, lo=1)
        if self.time_unit not in ("s", "ms", "us", "ns"):
            raise ConfigError(f"features.time_unit must be one of s, ms, us, ns, got {describe(self.time_unit)}")
        check_range("features.shuffle_partitions", self.shuffle_partitions, lo=1)
        for name in ("spark_master", "spark_driver_memory"):
            if not getattr(self, name).strip():
                raise ConfigError(f"features.{name} must not be empty")
        if any(x < 0 for x in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError("features.split must be three non-negative fractions summing to 1, "
                              f"got {describe(self.split)}")
        if self.split[0] <= 0:
            raise ConfigError("features.split: the train fraction must be positive")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, section: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping, recursing into nested dataclasses.

    ``section`` names the mapping in errors (``"model"``, ``"train"``; default: the class name).
    A ``data`` that is not a mapping (a YAML list, a scalar) is a ConfigError naming the section;
    None means "all defaults".
    """
    section = section or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _bad(section, "a mapping of options (key: value)", data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # cls: a dataclass type (T is unbounded)
    unknown = [k for k in data if k not in names]
    if unknown:
        raise _unknown_options(section, unknown, names)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = from_dict(hint, value, f"{section}.{key}")  # type: ignore[arg-type]  # is_dataclass(hint): a class
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{section}: {describe(str(exc), 200, raw=True)}") from exc


def _unknown_options(section: str, keys: Collection[Any], names: Collection[str]) -> ConfigError:
    """``<section>: unknown option(s) 'a', 'b'; known: [...]`` (at most ten keys echoed, each cut short)."""
    unknown = sorted(describe(k) for k in keys)  # keys of any type sort as text
    shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
    return ConfigError(f"{section}: unknown option(s) {shown}; known: {sorted(names)}")


# ----------------------------------------------------------------------------- key=value text
BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}  # case-insensitive


def split_assignment(pair: str, flag: str) -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")``: the key stripped, the value as given (it may hold ``=``).

    ``flag`` names the option in the error, e.g. ``"model"`` -> ``--model 'x': expected key=value``.
    """
    key, sep, value = pair.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--{flag} {describe(pair)}: expected key=value")
    return key, value


def parse_assignments(cls: type, pairs: Iterable[str] | None, section: str = "", *, flag: str = "",
                      extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``["epochs=2", "mlp_dims=[64,32]"]`` -> ``{"epochs": 2, "mlp_dims": (64, 32)}``, typed from ``cls``.

    Keys must be fields of dataclass ``cls`` (or of ``extra``: key -> annotation, for options
    a command takes beside the dataclass); values are read as YAML scalars/lists and then
    converted by the field's annotation (:func:`coerce`), so an error names ``<section>.<key>``.
    Text is taken at its type where YAML would guess another: a ``str`` field keeps ``0001``,
    a float field reads ``1e-3``, a bool field also reads ``1``/``0``. A nested dataclass
    field takes a YAML mapping, checked when the config is built. Ranges are left to the
    dataclass' ``__post_init__`` (build it with :func:`from_dict`). Later pairs win.
    ``section`` defaults to the class name, ``flag`` (the option in syntax errors) to ``section``.
    """
    section = section or cls.__name__
    flag = flag or section
    annotations = typing.get_type_hints(cls)
    hints = {f.name: annotations[f.name] for f in dataclasses.fields(cls)}
    hints.update(extra or {})
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, text = split_assignment(pair, flag)
        if key not in hints:
            raise _unknown_options(section, [key], hints)
        out[key] = _parse_value(f"{section}.{key}", hints[key], text, f"--{flag} {describe(key)}")
    return out


def _parse_value(where: str, hint: Any, text: str, option: str) -> Any:
    """One value's text -> the canonical value of annotation ``hint`` (see :func:`parse_assignments`)."""
    import yaml

    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    inner = [a for a in args if a is not type(None)] if optional else [hint]
    kind = inner[0] if len(inner) == 1 else None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        if kind is str:
            return text.strip()  # a string field takes any text, YAML or not
        reason = describe(str(exc).splitlines()[0], raw=True)
        raise ConfigError(f"{option}: value {describe(text)} is not valid YAML ({reason})") from None
    if value is None and optional:
        return None
    if kind is str and not isinstance(value, str):
        value = text.strip()  # "0001", "1.0", "true": the text, not YAML's number or bool
    elif kind in (int, float) and isinstance(value, str):
        try:
            value = kind(value.strip())  # forms YAML 1.1 leaves as text: 1e-3, 1E5, inf
        except ValueError:
            pass  # coerce names the field and the text
    elif kind is bool and not isinstance(value, bool) and str(value).lower() in BOOL_WORDS:
        value = BOOL_WORDS[str(value).lower()]
    if dataclasses.is_dataclass(kind):
        return value  # a mapping of the nested config's options: from_dict builds and checks it
    return coerce(where, hint, value)


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
        raise ConfigError(f"config file {p} could not be parsed: {describe(str(exc), 200, raw=True)}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return loaded


__all__ = ["DataConfig", "FeatureConfig", "check_range", "coerce", "coerce_fields", "describe", "field",
           "from_dict", "load_file", "parse_assignments", "split_assignment", "to_dict"]
