"""``python -m genctr.monitoring.sink --out URI [...]``: the sink's container entry point.

The options are ``genctr canary sink``'s (one per :class:`~genctr.monitoring.sink.config.SinkConfig`
field, plus the model map); a bad value exits with status 2 and one line naming it.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from genctr.errors import GenCTRError
from genctr.logging_setup import setup_logging
from genctr.monitoring.sink import SinkConfig, model_map, serve_sink

HELP = {
    "host": "Address to listen on (the pod passes 0.0.0.0).",
    "port": "HTTP port.",
    "out": "A/B log directory: local path or fsspec URI (s3://bucket/ab-logs/<deployment>).",
    "state_dir": "Local directory of the write-ahead journal (default <out>/.sink; required for a URI).",
    "flush_rows": "Write a part file once this many rows are buffered.",
    "flush_seconds": "... or once the oldest buffered row is this old.",
    "max_buffer_rows": "Rows held while parts cannot be written; beyond it new events get 503.",
    "pairing_timeout_s": "A request without its response after this long is logged with status 504.",
    "dedupe_ttl_s": "How long seen event ids are remembered (redeliveries ignored).",
    "max_body_bytes": "Largest accepted POST body (413 beyond).",
    "max_candidates": "Most candidates per scoring request.",
    "slots": "K: ads shown per ad request (the auction's slots).",
    "reserve_price": "The auction's reserve price.",
    "default_randomisation": "Randomisation unit of calls without the X-Genctr-Randomisation header.",
    "service": "Accept only events of this InferenceService ('' = any).",
    "sink_id": "Name of this sink's part files ('' = a random id kept in the journal).",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m genctr.monitoring.sink",
                                description="A/B log sink: KServe inference-logger CloudEvents and clicks in, "
                                            "A/B log tables out.")
    hints = typing.get_type_hints(SinkConfig)
    for f in dataclasses.fields(SinkConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if f.default is dataclasses.MISSING:
            p.add_argument(flag, dest=f.name, type=kind, required=True, help=HELP.get(f.name, ""))
        else:
            p.add_argument(flag, dest=f.name, type=kind, default=f.default, help=HELP.get(f.name, f.name))
    p.add_argument("--isvc", default="", help="NAMESPACE/NAME: name arms by the model URI, from this "
                   "InferenceService's champion/canary annotations (KServe canaryTrafficPercent).")
    p.add_argument("--champion-uri", default="", help="Fixed champion model URI (instead of --isvc).")
    p.add_argument("--canary-uri", default="", help="Fixed canary model URI (with --champion-uri).")
    p.add_argument("--model-map-refresh-s", type=float, default=5.0, help="How often --isvc is read.")
    p.add_argument("--log-format", choices=["plain", "json"], default=None, help="Log format (default: json "
                   "when stderr is not a terminal).")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(fmt=args.log_format)
    try:
        cfg = SinkConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SinkConfig)})
        models = model_map(args.isvc, args.champion_uri, args.canary_uri, args.model_map_refresh_s)
    except GenCTRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve_sink(cfg, models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
