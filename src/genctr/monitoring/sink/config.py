"""The A/B log sink's settings (``genctr canary sink`` options map one to one onto these fields)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genctr.config import check_range, coerce_fields
from genctr.errors import ConfigError, describe
from genctr.monitoring.logs import RANDOMISATION_UNITS


@dataclass
class SinkConfig:
    """Where the sink writes, how it buffers, and the auction that turns scores into impressions."""

    out: str  # log directory: local path or fsspec URI (s3://bucket/ab-logs/<deployment>)
    host: str = "127.0.0.1"  # the pod passes 0.0.0.0
    port: int = 8080
    state_dir: str = ""  # local directory of the write-ahead journal ("" = <out>/.sink for a local out)
    flush_rows: int = 5_000  # write a part file once this many rows are buffered ...
    flush_seconds: float = 30.0  # ... or when the oldest buffered row is this old
    max_buffer_rows: int = 200_000  # beyond this (the store is down) new events get 503 + Retry-After
    pairing_timeout_s: float = 60.0  # a request whose response has not come by then is logged as failed (504)
    dedupe_ttl_s: float = 7 * 86_400.0  # how long a seen event id is remembered (redeliveries are ignored)
    max_body_bytes: int = 1 << 20  # a larger POST body is refused with 413
    max_candidates: int = 1_000  # per scoring request, as the predictor's own limit
    slots: int = 3  # K: ads shown per ad request (the auction's slots)
    reserve_price: float = 0.0  # the auction's reserve: bids below it never show; the least a click costs
    default_randomisation: str = "request"  # when a call carries no X-Genctr-Randomisation header
    service: str = ""  # accept only events of this InferenceService ("" = any)
    sink_id: str = ""  # names this sink's part files ("" = a random id kept in the journal)

    def __post_init__(self) -> None:
        coerce_fields(self, "sink")
        if not self.out.strip():
            raise ConfigError("sink.out must name the log directory (a path or an fsspec URI such as "
                              "s3://bucket/ab-logs/genctr-ctr)")
        check_range("sink.port", self.port, lo=0, hi=65_535)
        check_range("sink.flush_rows", self.flush_rows, lo=1)
        check_range("sink.flush_seconds", self.flush_seconds, lo=0, lo_open=True)
        check_range("sink.max_buffer_rows", self.max_buffer_rows, lo=self.flush_rows)
        check_range("sink.pairing_timeout_s", self.pairing_timeout_s, lo=0, lo_open=True)
        check_range("sink.dedupe_ttl_s", self.dedupe_ttl_s, lo=self.pairing_timeout_s)
        check_range("sink.max_body_bytes", self.max_body_bytes, lo=1_024)
        check_range("sink.max_candidates", self.max_candidates, lo=1)
        check_range("sink.slots", self.slots, lo=1, hi=100)
        check_range("sink.reserve_price", self.reserve_price, lo=0)
        if self.default_randomisation not in RANDOMISATION_UNITS:
            raise ConfigError(f"sink.default_randomisation must be one of {list(RANDOMISATION_UNITS)}, "
                              f"got {describe(self.default_randomisation)}")
        if self.sink_id and not self.sink_id.replace("-", "").isalnum():
            raise ConfigError(f"sink.sink_id must be letters, digits and '-', got {describe(self.sink_id)}")
        if not self.state_dir and is_remote(self.out):
            raise ConfigError(f"sink.state_dir: {self.out} is not a local path, so the write-ahead journal needs "
                              "a local directory (a persistent volume in the pod): pass --state-dir")

    @property
    def journal_dir(self) -> Path:
        return Path(self.state_dir) if self.state_dir else Path(self.out) / ".sink"


def is_remote(out: str) -> bool:
    """True for an fsspec URI other than a plain local path (``file://`` counts as local)."""
    return "://" in out and not out.startswith("file://")


__all__ = ["SinkConfig", "is_remote"]
