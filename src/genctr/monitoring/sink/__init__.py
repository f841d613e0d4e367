"""The A/B log sink: KServe inference-logger CloudEvents and clicks in, A/B log tables out.

KServe's agent posts a request and a response CloudEvent per scoring call
(:mod:`genctr.monitoring.cloudevents_codec`); the sink journals each one durably before it answers,
pairs the two, replays the ad server's auction on the scores and appends ``requests`` and
``impressions`` (:mod:`genctr.monitoring.logs` schema) under ``--out``; ``POST /clicks`` appends
``raw_clicks``, which :mod:`genctr.monitoring.attribution` credits to impressions.

    genctr canary sink --out s3://genctr-logs/ab-logs/genctr-ctr --state-dir /var/lib/sink --host 0.0.0.0
    python -m genctr.monitoring.sink --out DIR            # the container entry point (same options)

Modules: ``config`` (SinkConfig), ``payload`` (v1 bodies), ``rows`` (request ids, the auction,
failed calls), ``arms`` (which arm served), ``journal`` (write-ahead log, dedupe, exactly-once
parts), ``parts`` (atomic part files), ``service`` (pairing and buffering), ``app`` (HTTP),
``metrics`` (Prometheus).
"""
from __future__ import annotations

import logging

from genctr.errors import ConfigError
from genctr.monitoring.sink.arms import CANARY, CHAMPION, ArmResolver, ModelMap, isvc_fetcher
from genctr.monitoring.sink.config import SinkConfig

log = logging.getLogger(__name__)


def model_map(isvc: str = "", champion_uri: str = "", canary_uri: str = "", refresh_s: float = 5.0
              ) -> ModelMap | None:
    """The arm-by-model-URI map of the options (None: arms by ``endpoint`` only).

    ``isvc``: ``NAMESPACE/NAME`` of the InferenceService whose champion/canary annotations are read
    (refreshed every ``refresh_s``); or fixed ``champion_uri`` (and ``canary_uri``).
    """
    if isvc and (champion_uri or canary_uri):
        raise ConfigError("give either --isvc or --champion-uri/--canary-uri, not both")
    if isvc:
        namespace, sep, name = isvc.partition("/")
        if not sep or not namespace or not name:
            raise ConfigError(f"--isvc must be NAMESPACE/NAME, got {isvc!r}")
        if refresh_s <= 0:
            raise ConfigError(f"--model-map-refresh-s must be > 0, got {refresh_s}")
        return ModelMap(fetch=isvc_fetcher(namespace, name), refresh_s=refresh_s,
                        describe=f"InferenceService {namespace}/{name}")
    if canary_uri and not champion_uri:
        raise ConfigError("--canary-uri needs --champion-uri")
    if champion_uri:
        fixed = {champion_uri: CHAMPION, **({canary_uri: CANARY} if canary_uri else {})}
        return ModelMap(fixed=fixed, describe="--champion-uri/--canary-uri")
    return None


def serve_sink(cfg: SinkConfig, models: ModelMap | None = None) -> None:
    """Serve the sink until SIGTERM/SIGINT (then it writes what it buffers and exits)."""
    import uvicorn

    from genctr.monitoring.sink.app import create_app
    from genctr.monitoring.sink.service import LogSink

    app = create_app(LogSink(cfg, ArmResolver(models)))
    log.info("A/B log sink on http://%s:%d -> %s (journal %s)", cfg.host, cfg.port, cfg.out, cfg.journal_dir)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False, lifespan="on",
                timeout_graceful_shutdown=30)
    if models is not None:
        models.stop()


__all__ = ["SinkConfig", "model_map", "serve_sink"]
