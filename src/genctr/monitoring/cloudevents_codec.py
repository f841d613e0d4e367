"""KServe inference-logger CloudEvents: encoded exactly as KServe's agent sends them, and decoded.

KServe's agent (the sidecar that ``spec.predictor.logger`` injects) posts two CloudEvents 1.0 per
scoring call to the logger URL, in HTTP *binary* content mode::

    POST / HTTP/1.1
    Ce-Specversion: 1.0
    Ce-Id: 5d1c...              the inference request id: the scoring call's own Ce-Id header, else a
                                new UUID (KServe reads no other header for it, X-Request-Id included)
    Ce-Type: org.kubeflow.serving.inference.request     (or ...inference.response)
    Ce-Source: <agent's --source-uri>
    Ce-Time: 2024-05-01T12:00:00.123456789Z             RFC 3339, UTC, trailing zeros cut (Go RFC3339Nano)
    Ce-Inferenceservicename: genctr-ctr
    Ce-Namespace: genctr
    Ce-Component: predictor
    Ce-Endpoint: default         "default", or "canary" for a separate canary component
    Ce-Metadata: {"X-Genctr-Randomisation":["user"]}    the logger's metadataHeaders: JSON, name -> values
    Ce-Annotations: {"internal.serving.kserve.io/...":"s3://..."}   metadataAnnotations (only when any)
    Content-Type: application/json       the scoring call's own content type
    <the scoring request's (or response's) body, unchanged>

Both events share the id. The response event is sent only when the model answered HTTP 200.
``Ce-Metadata`` and ``Ce-Annotations`` are Go ``json.Marshal`` output: compact, keys sorted, and
``<``, ``>``, ``&`` escaped as ``\\u003c`` etc.; header values are not percent-encoded.
(``pkg/logger`` of kserve/kserve: ``handler.go`` builds the request, ``worker.go`` the event.)

:func:`encode_request_event` / :func:`encode_response_event` produce those headers and body for a
sender that stands in for the agent (the local emitter, tests, benchmarks); :func:`to_structured`
re-encodes one in structured mode; :func:`decode_event` parses either mode with the ``cloudevents``
SDK and checks what the sink relies on, raising :class:`EventError` (reason + HTTP status).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
EVENT_KINDS = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
# extension attribute names (CloudEvents requires lowercase alphanumerics)
ATTR_SERVICE = "inferenceservicename"
ATTR_NAMESPACE = "namespace"
ATTR_COMPONENT = "component"
ATTR_ENDPOINT = "endpoint"
ATTR_METADATA = "metadata"
ATTR_ANNOTATIONS = "annotations"
JSON_TYPE = "application/json"
STRUCTURED_TYPE = "application/cloudevents+json"
MAX_ID_LENGTH = 256  # a request id longer than this is not one KServe or a client generated


class EventError(ValueError):
    """An event the sink refuses: ``reason`` (a metrics label), HTTP ``status`` and a message saying what to fix."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class InferenceEvent:
    """One decoded logger event; ``data`` is the scoring call's raw JSON body."""

    id: str
    kind: str  # "request" | "response"
    source: str
    time: float | None  # epoch seconds of ce-time (None when absent)
    service: str
    namespace: str
    component: str
    endpoint: str
    metadata: dict[str, list[str]] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    data: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of metadata header ``name`` (case-insensitive), None when absent."""
        for key, values in self.metadata.items():
            if key.lower() == name.lower() and values:
                return values[0]
        return None


# ----------------------------------------------------------------------------- encoding
def go_json(obj: Any) -> str:
    """``json.Marshal(obj)`` as Go writes it: compact, map keys sorted, HTML characters escaped, UTF-8."""
    text = json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def format_time(ts: float) -> str:
    """Epoch seconds -> Go's ``time.RFC3339Nano`` in UTC (``...T12:00:00.5Z``; no fraction when whole)."""
    if not math.isfinite(ts):
        raise ValueError(f"event time must be finite, got {ts!r}")
    dt = datetime.fromtimestamp(ts, UTC)
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def _body(body: bytes | str | Mapping[str, Any]) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _encode(ce_type: str, request_id: str, body: bytes | str | Mapping[str, Any], *, service: str, namespace: str,
            endpoint: str, component: str, metadata: Mapping[str, str | Sequence[str]] | None,
            annotations: Mapping[str, str] | None, time: float, source: str,
            content_type: str) -> tuple[dict[str, str], bytes]:
    meta = {k: [v] if isinstance(v, str) else list(v) for k, v in (metadata or {}).items()}
    headers = {
        "Ce-Specversion": "1.0",
        "Ce-Id": request_id,
        "Ce-Source": source or f"http://{service}-predictor.{namespace}",
        "Ce-Type": ce_type,
        "Ce-Time": format_time(time),
        "Ce-Inferenceservicename": service,
        "Ce-Namespace": namespace,
        "Ce-Component": component,
        "Ce-Endpoint": endpoint,
        "Ce-Metadata": go_json(meta),  # always sent, "{}" when no header matched
        "Content-Type": content_type,
    }
    if annotations:
        headers["Ce-Annotations"] = go_json(dict(annotations))
    return headers, _body(body)


def encode_request_event(request_id: str, body: bytes | str | Mapping[str, Any], *, service: str,
                         namespace: str = "genctr", endpoint: str = "default", component: str = "predictor",
                         metadata: Mapping[str, str | Sequence[str]] | None = None,
                         annotations: Mapping[str, str] | None = None, time: float, source: str = "",
                         content_type: str = JSON_TYPE) -> tuple[dict[str, str], bytes]:
    """The request event of one scoring call, as KServe's agent sends it: ``(headers, body)``.

    ``request_id``: the inference request id (ce-id), shared with the response event. ``body``:
    the scoring request exactly as the client sent it (bytes), or a mapping (serialised compactly).
    ``metadata``: the client's headers that the logger lists in ``metadataHeaders``
    (:mod:`genctr.monitoring.headers`), name -> value or values. ``annotations``: the pod annotations
    listed in ``metadataAnnotations``. ``time``: when the agent sent it (epoch seconds).
    POST the pair to the sink: ``httpx.post(url, headers=headers, content=body)``.
    """
    return _encode(REQUEST_TYPE, request_id, body, service=service, namespace=namespace, endpoint=endpoint,
                   component=component, metadata=metadata, annotations=annotations, time=time, source=source,
                   content_type=content_type)


def encode_response_event(request_id: str, body: bytes | str | Mapping[str, Any], *, service: str,
                          namespace: str = "genctr", endpoint: str = "default", component: str = "predictor",
                          metadata: Mapping[str, str | Sequence[str]] | None = None,
                          annotations: Mapping[str, str] | None = None, time: float, source: str = "",
                          content_type: str = JSON_TYPE) -> tuple[dict[str, str], bytes]:
    """The response event of the same call (``body``: the model's response): arguments as
    :func:`encode_request_event`. KServe carries the *request's* content type and metadata on it."""
    return _encode(RESPONSE_TYPE, request_id, body, service=service, namespace=namespace, endpoint=endpoint,
                   component=component, metadata=metadata, annotations=annotations, time=time, source=source,
                   content_type=content_type)


def to_structured(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    """A binary-mode event re-encoded in structured mode (``application/cloudevents+json``)."""
    from cloudevents.conversion import to_structured as sdk_to_structured
    from cloudevents.http import CloudEvent

    attrs: dict[str, Any] = {k[3:].lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}
    attrs["datacontenttype"] = next(v for k, v in headers.items() if k.lower() == "content-type")
    out_headers, out_body = sdk_to_structured(CloudEvent(attrs, json.loads(body)))
    return dict(out_headers), out_body if isinstance(out_body, bytes) else out_body.encode("utf-8")


# ----------------------------------------------------------------------------- decoding
def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _json_attr(name: str, raw: Any, values: type) -> dict[str, Any]:
    """A JSON-object extension attribute (``metadata``: name -> [str]; ``annotations``: name -> str)."""
    if raw is None or raw == "":
        return {}
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise EventError("envelope", f"ce-{name} is not JSON ({exc.msg}); KServe sends a JSON object") from None
    ok = isinstance(parsed, dict) and all(isinstance(k, str) for k in parsed)
    if ok and values is list:
        ok = all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in parsed.values())
    elif ok:
        ok = all(isinstance(v, str) for v in parsed.values())
    if not ok:
        shape = "header name -> list of strings" if values is list else "annotation name -> string"
        raise EventError("envelope", f"ce-{name} must be a JSON object of {shape}")
    return parsed


def _time(raw: Any) -> float | None:
    if raw in (None, ""):
        return None
    try:
        dt = datetime.fromisoformat(str(raw))
    except ValueError:
        raise EventError("envelope", f"ce-time {str(raw)[:60]!r} is not an RFC 3339 timestamp") from None
    if dt.tzinfo is None:
        raise EventError("envelope", f"ce-time {str(raw)[:60]!r} has no time zone (RFC 3339 needs Z or +hh:mm)")
    return dt.timestamp()


def decode_event(headers: Mapping[str, str], body: bytes) -> InferenceEvent:
    """Parse a binary- or structured-mode logger event; raises :class:`EventError` naming the problem."""
    from cloudevents import exceptions as ce_errors
    from cloudevents.http import from_http

    lower = {k.lower(): v for k, v in headers.items()}
    media = _media_type(lower.get("content-type"))
    binary = "ce-specversion" in lower
    if media == "application/cloudevents-batch+json":
        raise EventError("content_type", "batched CloudEvents are not accepted: send one event per POST "
                         "(KServe's agent does)", 415)
    if not binary and media != STRUCTURED_TYPE:
        raise EventError("content_type", f"not a CloudEvent: Content-Type {media or '(none)'!r} without ce-* "
                         f"headers; send binary mode (ce-specversion, ce-id, ... and {JSON_TYPE}) or "
                         f"structured mode ({STRUCTURED_TYPE})", 415)
    try:
        event = from_http(lower, body, data_unmarshaller=lambda raw: raw)  # keep the body's bytes: checked below
    except (ce_errors.GenericException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise EventError("envelope", f"malformed CloudEvent: {str(exc)[:200]}") from None
    attrs = event.get_attributes()
    if attrs.get("specversion") != "1.0":
        raise EventError("envelope", f"specversion {attrs.get('specversion')!r} is not 1.0")
    ce_type = attrs.get("type")
    if ce_type not in EVENT_KINDS:
        raise EventError("unknown_type", f"event type {str(ce_type)[:80]!r} is not {REQUEST_TYPE} or {RESPONSE_TYPE}")
    ce_id = attrs.get("id")
    if not isinstance(ce_id, str) or not ce_id.strip() or len(ce_id) > MAX_ID_LENGTH:
        raise EventError("envelope", f"ce-id must be a non-empty string of at most {MAX_ID_LENGTH} characters")
    data_type = _media_type(attrs.get("datacontenttype")) if not binary else media
    if data_type != JSON_TYPE:
        raise EventError("content_type", f"event data must be {JSON_TYPE} (genctr's v1 scoring protocol), got "
                         f"{data_type or '(none)'!r}: the scoring client must send Content-Type: {JSON_TYPE}", 415)
    data = event.get_data()
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif data is None:
        data = b""
    elif not isinstance(data, (bytes, bytearray)):  # structured mode hands the SDK's re-serialised JSON
        data = json.dumps(data).encode("utf-8")
    texts = {}
    for name in (ATTR_SERVICE, ATTR_NAMESPACE, ATTR_COMPONENT, ATTR_ENDPOINT):
        value = attrs.get(name, "")
        if not isinstance(value, str):
            raise EventError("envelope", f"ce-{name} must be a string")
        texts[name] = value
    return InferenceEvent(
        id=ce_id, kind=EVENT_KINDS[ce_type], source=str(attrs.get("source", "")), time=_time(attrs.get("time")),
        service=texts[ATTR_SERVICE], namespace=texts[ATTR_NAMESPACE], component=texts[ATTR_COMPONENT],
        endpoint=texts[ATTR_ENDPOINT], metadata=_json_attr(ATTR_METADATA, attrs.get(ATTR_METADATA), list),
        annotations=_json_attr(ATTR_ANNOTATIONS, attrs.get(ATTR_ANNOTATIONS), str), data=bytes(data))


__all__ = ["EVENT_KINDS", "REQUEST_TYPE", "RESPONSE_TYPE", "EventError", "InferenceEvent", "decode_event",
           "encode_request_event", "encode_response_event", "format_time", "go_json", "to_structured"]
