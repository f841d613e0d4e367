"""HTTP header and annotation names shared by the scoring clients, KServe's logger and the A/B log sink.

A client of the InferenceService (the ad server, a user-hash router, the local emitter) sends
:data:`REQUEST_ID_HEADER` and the metadata headers with every scoring call; the InferenceService
lists the metadata headers in ``spec.predictor.logger.metadataHeaders``, so KServe's agent copies
them into the ``metadata`` attribute of both CloudEvents it sends to the sink
(:mod:`genctr.monitoring.sink`).

Names are in Go's canonical MIME form (``X-Genctr-Randomisation``, not ``x-genctr-randomisation``):
the agent compares ``metadataHeaders`` entries with Go's canonicalised request header names, so a
name in any other case would never match and the header would silently not be logged.
"""
from __future__ import annotations

REQUEST_ID_HEADER = "Ce-Id"
"""The scoring call's id, chosen by the client. KServe's agent takes the inference request id from
this header (never from ``X-Request-Id``) and only makes one up when it is absent — an id the ad
server never learns, so its clicks could not be attributed. The sink's ad request ids are
``f"{ce_id}.{instance}"``; the click tracker reports clicks under them."""

RANDOMISATION_HEADER = "X-Genctr-Randomisation"
"""How the call was assigned to its arm: ``user`` (a router hashed the user: user-sticky) or
``request`` (Knative's ``canaryTrafficPercent`` split each request independently). Absent: the
sink's ``default_randomisation`` (``request``, what a bare KServe canary does)."""

REQUEST_TIME_HEADER = "X-Genctr-Request-Time"
"""When the ad request happened, epoch seconds (a decimal number, e.g. ``1717171717.25``). Absent:
the time KServe's agent stamped on the request event (``ce-time``), which lags it by the agent's
queue."""

METADATA_HEADERS: tuple[str, ...] = (RANDOMISATION_HEADER, REQUEST_TIME_HEADER)
"""What ``logger.metadataHeaders`` lists (rendered by :mod:`genctr.deploy.manifests`)."""

MODEL_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
"""The pod annotation KServe sets to the revision's ``storageUri``. Listed in
``logger.metadataAnnotations``, it reaches the sink in every event's ``annotations`` attribute,
which tells the sink which model answered: with ``canaryTrafficPercent`` both revisions carry
``endpoint: default``, so the model URI (compared with the InferenceService's champion and
canary annotations) is what names the arm."""

METADATA_ANNOTATIONS: tuple[str, ...] = (MODEL_URI_ANNOTATION,)
"""What ``logger.metadataAnnotations`` lists."""

CHAMPION_URI_ANNOTATION = "genctr.io/champion-storage-uri"
"""InferenceService annotation: the model all non-canary traffic reaches (kept by the KServe deployer)."""

CANARY_URI_ANNOTATION = "genctr.io/canary-storage-uri"
"""InferenceService annotation: the canary's model, set while a canary is rolling out."""

__all__ = ["CANARY_URI_ANNOTATION", "CHAMPION_URI_ANNOTATION", "METADATA_ANNOTATIONS", "METADATA_HEADERS",
           "MODEL_URI_ANNOTATION", "RANDOMISATION_HEADER", "REQUEST_ID_HEADER", "REQUEST_TIME_HEADER"]
