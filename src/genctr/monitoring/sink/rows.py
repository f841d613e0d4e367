"""From a logged scoring call to A/B log rows: one ``requests`` row per ad request and the ads shown.

Request ids: the ``i``-th instance of the scoring call with inference request id ``ce_id`` (the
CloudEvent id KServe gives both events of the call) is the ad request ``f"{ce_id}.{i}"``. The click
tracker must use the same id for a click on an ad of that request, so the ad server chooses
``ce_id`` itself and sends it as the scoring call's ``Ce-Id`` header
(:data:`genctr.monitoring.headers.REQUEST_ID_HEADER`; without it KServe makes one up that nobody
downstream knows).

What was shown is derived by the project's auction rule (:func:`genctr.monitoring.auction.gsp_auction`):
candidates ranked by pCTR x bid, ``slots`` slots, generalised second price with the reserve, each
item at most once per page — the rule the ad server runs on the scores it got back.

A call whose response never came (KServe logs a response only for HTTP 200) is written as its
requests rows with status 504 and ``latency_ms`` = the pairing timeout (pessimistic on purpose: a
failing arm must not look fast) and no impressions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from genctr.monitoring.auction import first_occurrence, gsp_auction
from genctr.monitoring.sink.payload import Instance

STATUS_OK = 200
STATUS_NO_RESPONSE = 504  # no response event within the pairing timeout


@dataclass(frozen=True)
class LoggedRequest:
    """The request event of one scoring call, checked; what the journal keeps of it."""

    ce_id: str
    arm: str
    randomisation: str
    ts: int  # the ad request's time, epoch seconds
    sent: float  # the request event's ce-time (epoch seconds; the receive time when absent)
    instances: list[Instance]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.ce_id, "arm": self.arm, "rand": self.randomisation, "ts": self.ts, "sent": self.sent,
                "inst": [[i.user_id, i.items, i.cates, i.bids] for i in self.instances]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LoggedRequest:
        return cls(d["id"], d["arm"], d["rand"], int(d["ts"]), float(d["sent"]),
                   [Instance(int(u), list(it), list(c), list(b)) for u, it, c, b in d["inst"]])


@dataclass(frozen=True)
class LoggedResponse:
    """The response event of a call: its pCTRs per instance and when it was sent."""

    ce_id: str
    arm: str
    sent: float
    predictions: list[list[float]]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.ce_id, "arm": self.arm, "sent": self.sent, "pred": self.predictions}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LoggedResponse:
        return cls(d["id"], d["arm"], float(d["sent"]), [list(map(float, r)) for r in d["pred"]])


def request_rows(req: LoggedRequest, status: int, latency_ms: float) -> list[dict[str, Any]]:
    """One ``requests`` row per instance."""
    return [{"request_id": f"{req.ce_id}.{i}", "ts": req.ts, "user_id": inst.user_id, "arm": req.arm,
             "status": status, "latency_ms": latency_ms, "n_candidates": len(inst.items),
             "randomisation": req.randomisation} for i, inst in enumerate(req.instances)]


def impression_rows(req: LoggedRequest, resp: LoggedResponse, slots: int, reserve: float) -> list[dict[str, Any]]:
    """The ads the auction shows for each instance (slot order), priced by generalised second price."""
    k = max(len(inst.items) for inst in req.instances)
    b = len(req.instances)
    items = np.full((b, k), -1, np.int64)  # padding: never eligible (its pCTR is NaN)
    cates = np.zeros((b, k), np.int64)
    bids = np.zeros((b, k))
    pctr = np.full((b, k), np.nan)
    for i, (inst, p) in enumerate(zip(req.instances, resp.predictions, strict=True)):
        n = len(inst.items)
        items[i, :n], cates[i, :n], bids[i, :n], pctr[i, :n] = inst.items, inst.cates, inst.bids, p
    auction = gsp_auction(pctr, bids, slots, reserve, first_occurrence(items))  # (B, S) each
    r, pos = np.nonzero(auction.shown)  # row-major: instance order, then slot order
    col = auction.column[r, pos]
    return [{"request_id": f"{req.ce_id}.{int(i)}", "ts": req.ts, "user_id": req.instances[i].user_id,
             "arm": req.arm, "item_id": int(items[i, c]), "category_id": int(cates[i, c]), "position": int(s),
             "bid": float(bids[i, c]), "pctr": float(pctr[i, c]), "cpc": float(auction.cpc[i, s]),
             "randomisation": req.randomisation}
            for i, s, c in zip(r.tolist(), pos.tolist(), col.tolist(), strict=True)]


def paired_rows(req: LoggedRequest, resp: LoggedResponse, slots: int,
                reserve: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(requests rows, impressions rows) of a call with its response; latency from the two events' times."""
    latency_ms = max(0.0, (resp.sent - req.sent) * 1000.0)
    return request_rows(req, STATUS_OK, latency_ms), impression_rows(req, resp, slots, reserve)


__all__ = ["STATUS_NO_RESPONSE", "STATUS_OK", "LoggedRequest", "LoggedResponse", "impression_rows", "paired_rows",
           "request_rows"]
