"""The sink's own metrics, served at ``GET /metrics`` in the Prometheus text format.

    genctr_sink_events_accepted_total{type, arm}   events journaled (type: request | response | click)
    genctr_sink_events_duplicate_total{type}       redeliveries acknowledged and ignored
    genctr_sink_events_rejected_total{reason}      refused events (4xx), or accepted ones dropped later
                                                   (reason orphan_response: no request within the timeout)
    genctr_sink_requests_expired_total             requests written as failed: no response in time
    genctr_sink_rows_written_total{table}          rows in part files
    genctr_sink_parts_flushed_total{table}         part files written
    genctr_sink_flush_failures_total               part writes that failed (retried)
    genctr_sink_buffer_rows                        rows waiting for the next part
    genctr_sink_pending_events{type}               requests / responses waiting for their pair
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SinkMetrics:
    """A registry of its own (two sinks in one process, as in tests, never share counters)."""

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: a counter's start time is the process's
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter("genctr_sink_events_accepted", "Events journaled", ["type", "arm"], registry=r)
        self.duplicate = Counter("genctr_sink_events_duplicate", "Redelivered events ignored", ["type"], registry=r)
        self.rejected = Counter("genctr_sink_events_rejected", "Events refused or dropped", ["reason"], registry=r)
        self.expired = Counter("genctr_sink_requests_expired", "Requests without a response in time", registry=r)
        self.rows = Counter("genctr_sink_rows_written", "Rows written to part files", ["table"], registry=r)
        self.parts = Counter("genctr_sink_parts_flushed", "Part files written", ["table"], registry=r)
        self.flush_failures = Counter("genctr_sink_flush_failures", "Part writes that failed", registry=r)
        self.buffer_rows = Gauge("genctr_sink_buffer_rows", "Rows waiting for the next part", registry=r)
        self.pending = Gauge("genctr_sink_pending_events", "Events waiting for their pair", ["type"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "SinkMetrics"]
