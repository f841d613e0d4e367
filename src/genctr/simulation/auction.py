"""The GSP auction the simulator runs: it lives in :mod:`genctr.monitoring.auction`, shared with the
A/B log sink, which derives what the ad server showed from the scored candidates by the same rule."""
from __future__ import annotations

from genctr.monitoring.auction import AuctionResult, first_occurrence, gsp_auction

__all__ = ["AuctionResult", "first_occurrence", "gsp_auction"]
