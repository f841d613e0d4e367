"""The bodies a logger event carries: genctr's v1 scoring request and response, checked for the sink.

Request (each instance is one ad request; a candidate's ``price`` is the advertiser's bid)::

    {"instances": [{"user_id": 42, "candidates": [{"item_id": 7, "category_id": 3, "price": 1.5}, ...],
                    "history": {...}}]}            # history optional, not logged

Response: ``{"predictions": [[pctr, ...], ...]}``, one list per instance in candidate order.

The predictor accepts candidates without ``category_id``/``price`` (Feast fills them in); the sink
does not: without the bid there is no auction to replay, so such a request is refused (HTTP 400
naming the field) rather than logged with invented values. Parsed here without importing the
serving stack (torch, kserve): the sink is a small process.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from genctr.monitoring.cloudevents_codec import EventError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_PRICE = 1e6  # as genctr.serving.request.MAX_PRICE (a test keeps the two equal)
INSTANCE_KEYS = {"user_id", "candidates", "history"}
CANDIDATE_KEYS = {"item_id", "category_id", "price"}


@dataclass(frozen=True)
class Instance:
    """One ad request of a scoring call: its user and K candidates (lists of length K)."""

    user_id: int
    items: list[int]
    cates: list[int]
    bids: list[float]


def _bad(message: str) -> EventError:
    return EventError("schema", message)


def _int(v: Any, where: str) -> int:
    if type(v) is not int or not INT64_MIN <= v <= INT64_MAX:  # bool is excluded on purpose
        raise _bad(f"{where} must be a 64-bit integer, got {type(v).__name__}")
    return v


def _json(data: bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"{what} body is not valid JSON ({str(exc)[:120]})") from None


def parse_request(data: bytes, max_candidates: int) -> list[Instance]:
    """The v1 request body -> its instances; EventError("schema") names the first bad field."""
    body = _json(data, "request")
    if not isinstance(body, dict) or set(body) != {"instances"}:
        raise _bad("request body must be {\"instances\": [...]} (genctr's v1 scoring request)")
    raw = body["instances"]
    if not isinstance(raw, list) or not raw:
        raise _bad("request 'instances' must be a non-empty list")
    out: list[Instance] = []
    total = 0
    for k, inst in enumerate(raw):
        where = f"instances[{k}]"
        if not isinstance(inst, dict) or not set(inst) <= INSTANCE_KEYS or "candidates" not in inst \
                or "user_id" not in inst:
            raise _bad(f"{where} must be an object with user_id and candidates (optional history) only")
        user = _int(inst["user_id"], f"{where}.user_id")
        cands = inst["candidates"]
        if not isinstance(cands, list) or not cands:
            raise _bad(f"{where}.candidates must be a non-empty list")
        total += len(cands)
        if total > max_candidates:
            raise _bad(f"more than {max_candidates} candidates in one scoring request")
        items, cates, bids = [], [], []
        for j, c in enumerate(cands):
            cw = f"{where}.candidates[{j}]"
            if not isinstance(c, dict) or set(c) != CANDIDATE_KEYS:
                raise _bad(f"{cw} must have exactly item_id, category_id and price (the bid): the sink "
                           "replays the auction, so the ad server must send the bid it ran it with")
            items.append(_int(c["item_id"], f"{cw}.item_id"))
            cates.append(_int(c["category_id"], f"{cw}.category_id"))
            p = c["price"]
            if type(p) not in (int, float) or not 0 <= p <= MAX_PRICE or (type(p) is float and math.isnan(p)):
                raise _bad(f"{cw}.price must be a number in [0, {MAX_PRICE:g}]")
            bids.append(float(p))
        out.append(Instance(user, items, cates, bids))
    return out


def parse_response(data: bytes) -> list[list[float]]:
    """The v1 response body -> one list of pCTRs in [0, 1] per instance."""
    body = _json(data, "response")
    preds = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(preds, list) or not preds or not all(isinstance(p, list) for p in preds):
        raise _bad("response body must be {\"predictions\": [[pctr, ...], ...]} (one list per instance)")
    for i, row in enumerate(preds):
        for j, p in enumerate(row):
            if type(p) not in (int, float) or not 0.0 <= p <= 1.0:  # NaN fails both comparisons
                raise _bad(f"response predictions[{i}][{j}] must be a probability in [0, 1]")
    return [[float(p) for p in row] for row in preds]


def check_pair(instances: list[Instance], predictions: list[list[float]]) -> None:
    """The response must score exactly the request's candidates: one pCTR per candidate, in order."""
    if len(predictions) != len(instances):
        raise _bad(f"response has {len(predictions)} prediction lists for {len(instances)} instances")
    for i, (inst, row) in enumerate(zip(instances, predictions, strict=True)):
        if len(row) != len(inst.items):
            raise _bad(f"response predictions[{i}] has {len(row)} scores for {len(inst.items)} candidates")


__all__ = ["MAX_PRICE", "Instance", "check_pair", "parse_request", "parse_response"]
