"""Scoring requests: parse and validate v1 JSON and Open Inference Protocol v2 bodies.

Both protocols become one :class:`ScoringRequest` (rows = candidates, grouped into user
*slots*). Every problem a client can cause raises ``kserve.errors.InvalidInput`` (HTTP 400)
with a message naming the field, e.g. ``instances[0].candidates[3].item_id must be an
integer, got str``.

v1 (``POST /v1/models/<name>:predict``)::

    {"instances": [{"user_id": 42,
                    "candidates": [{"item_id": 7, "category_id": 3, "price": 1.5},
                                   {"item_id": 9}],            # category/price from Feast
                    "history": {"item_seq": [...], "cate_seq": [...]}}]}   # optional
    -> {"predictions": [[0.031, 0.012]]}      # one list of pCTRs per instance, input order

v2 (``POST /v2/models/<name>/infer``): one row per (user, candidate) pair, all inputs 1-D
(``[N]`` or ``[N, 1]``)::

    user_id      INT64 (any integer type)  [N] or [1] (one user for every row)   required
    item_id      INT64 (any integer type)  [N]                                    required
    category_id  INT64 (any integer type)  [N]          optional: absent -> Feast item_features
    price        FP32 / FP64 / integer     [N]          optional: absent -> Feast item_features
    -> output "pctr" FP32 [N], row order

``data`` is a flat list of N values; for shape ``[N, 1]`` also N one-value lists. Nothing
deeper is read (a tensor nested past its declared shape is a 400 before any traversal).

Prices (v1 ``price``, v2 ``price``) must be finite numbers in ``[0, MAX_PRICE]``: a price
that is finite in float64 but not in float32 (1e300) would reach the model as inf and score
pCTR 1.0, winning every pCTR x bid auction.

Raw ids are int64 (JSON integers; booleans are not ids). ``history`` (v1 only) carries a
behaviour sequence the caller already has (raw ids, oldest first; a transformer that read
Feast itself, or a real-time session); the predictor then does not read Feast for that
instance. Unknown fields are rejected, so a misspelt ``categry_id`` cannot silently fall
back to Feast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import genctr.serving._kserve  # noqa: F401 - first: KServe imported with sys.argv emptied

# isort: split
import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest

from genctr.errors import ConfigError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
V1_INSTANCE_KEYS = {"user_id", "candidates", "history"}
V1_CANDIDATE_KEYS = {"item_id", "category_id", "price"}
V1_HISTORY_KEYS = {"item_seq", "cate_seq"}
V2_INPUTS = ("user_id", "item_id", "category_id", "price")
V2_INT_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
V2_PRICE_TYPES = V2_INT_TYPES | {"FP32", "FP64"}
OUTPUT = "pctr"
MAX_PRICE = 1e6  # the largest request price accepted (a bound far above any catalogue price; finite in float32)


@dataclass(frozen=True)
class Limits:
    """Per-request bounds (HTTP 400 beyond them)."""

    max_candidates: int = 1000  # candidates (v2 rows) per request, over all instances
    max_history: int = 2000  # length of a request-supplied history (the model sees its last L; L = 2000 fits)

    def __post_init__(self) -> None:
        if self.max_candidates < 1 or self.max_history < 0:
            raise ConfigError(f"max_candidates must be >= 1 and max_history >= 0, got {self}")


@dataclass
class Slot:
    """A user whose history the rows share: from Feast, or given in the request."""

    user_id: int
    history: tuple[np.ndarray, np.ndarray] | None = None  # raw (item_seq, cate_seq) if given


@dataclass
class ScoringRequest:
    """N candidate rows of U slots (users); arrays are [N] unless noted."""

    slots: list[Slot]  # [U]
    row_slot: np.ndarray  # int64 index into slots
    item: np.ndarray  # int64 raw item ids
    cate: np.ndarray  # int64 raw category ids, valid where cate_given
    cate_given: np.ndarray  # bool
    price: np.ndarray  # float32, valid where price_given
    price_given: np.ndarray  # bool
    sizes: list[int] = field(default_factory=list)  # v1: candidates per instance (output split)

    def __len__(self) -> int:
        return int(self.item.shape[0])


# -- scalars ---------------------------------------------------------------------------------

def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _int(v: Any, where: str) -> int:
    if type(v) is not int:  # bool is an int subclass: excluded on purpose
        raise InvalidInput(f"{where} must be an integer, got {_type(v)}")
    if not INT64_MIN <= v <= INT64_MAX:
        raise InvalidInput(f"{where} must fit in a signed 64-bit integer, got {v}")
    return v


def _price(v: Any, where: str) -> float:
    if type(v) not in (int, float):
        raise InvalidInput(f"{where} must be a number, got {_type(v)}")
    x = float(v) if type(v) is float or abs(v) < 2**53 else math.inf
    if not (0.0 <= x <= MAX_PRICE):  # also NaN and inf
        raise InvalidInput(f"{where} must be a finite number in [0, {MAX_PRICE:g}], got {_short(v)}")
    return x


def _short(v: Any) -> str:
    """``repr(v)`` cut to 40 characters (a 10**4000 integer has 4000 digits)."""
    text = repr(v)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _object(v: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise InvalidInput(f"{where} must be a JSON object, got {_type(v)}")
    unknown = set(v) - allowed
    if unknown:
        raise InvalidInput(f"{where} has unknown field(s) {sorted(map(str, unknown))}; allowed: {sorted(allowed)}")
    return v


def _id_list(v: Any, where: str, limit: int) -> np.ndarray:
    if not isinstance(v, list):
        raise InvalidInput(f"{where} must be a list of integers, got {_type(v)}")
    if len(v) > limit:
        raise InvalidInput(f"{where} has {len(v)} entries; at most {limit} are accepted")
    return _ints(v, where)


def _ints(values: list[Any], where: str) -> np.ndarray:
    """int64 array of JSON integers; the message names the first bad entry ``where[i]``."""
    if all(type(x) is int for x in values):  # the common case, without a message per entry
        try:
            return np.array(values, np.int64)
        except OverflowError:  # outside int64: the loop below names the entry
            pass
    return np.array([_int(x, f"{where}[{i}]") for i, x in enumerate(values)], np.int64)


# -- v1 --------------------------------------------------------------------------------------

def parse_v1(payload: Any, limits: Limits) -> ScoringRequest:
    """``{"instances": [{"user_id", "candidates": [...], "history"?}, ...]}`` -> ScoringRequest."""
    if isinstance(payload, (bytes, bytearray, str)):  # KServe passes non-JSON content types through raw
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    body = _object(payload, "request body", {"instances"})
    if "instances" not in body:
        raise InvalidInput("request body must have an 'instances' list")
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        got = _type(instances) if not isinstance(instances, list) else "an empty list"
        raise InvalidInput(f"'instances' must be a non-empty list, got {got}")
    if len(instances) > limits.max_candidates:
        raise InvalidInput(f"{len(instances)} instances; at most {limits.max_candidates} candidates per request")

    slots: list[Slot] = []
    by_user: dict[int, int] = {}
    row_slot: list[int] = []
    item: list[int] = []
    cate: list[int] = []
    cate_given: list[bool] = []
    price: list[float] = []
    price_given: list[bool] = []
    sizes: list[int] = []
    for k, inst in enumerate(instances):
        where = f"instances[{k}]"
        inst = _object(inst, where, V1_INSTANCE_KEYS)
        for key in ("user_id", "candidates"):
            if key not in inst:
                raise InvalidInput(f"{where} is missing '{key}'")
        user = _int(inst["user_id"], f"{where}.user_id")
        cands = inst["candidates"]
        if not isinstance(cands, list) or not cands:
            got = "an empty list" if isinstance(cands, list) else _type(cands)
            raise InvalidInput(f"{where}.candidates must be a non-empty list of objects, got {got}")
        if len(item) + len(cands) > limits.max_candidates:
            raise InvalidInput(f"too many candidates: more than {limits.max_candidates} in this request "
                               f"(the limit is --max_candidates)")
        if inst.get("history") is not None:
            hist = _history(inst["history"], f"{where}.history", limits)
            slot = len(slots)
            slots.append(Slot(user, hist))
        else:
            slot = by_user.get(user, -1)
            if slot < 0:
                slot = by_user[user] = len(slots)
                slots.append(Slot(user))
        for j, c in enumerate(cands):
            # Fast path (no per-field message strings): a candidate every check below would pass.
            if type(c) is dict and c.keys() <= V1_CANDIDATE_KEYS:
                iv, cv, pv = c.get("item_id"), c.get("category_id"), c.get("price")
                if type(iv) is int and INT64_MIN <= iv <= INT64_MAX \
                        and (cv is None or (type(cv) is int and INT64_MIN <= cv <= INT64_MAX)) \
                        and (pv is None or (type(pv) is float and 0.0 <= pv <= MAX_PRICE)
                             or (type(pv) is int and 0 <= pv <= MAX_PRICE)):
                    item.append(iv)
                    cate_given.append(cv is not None)
                    cate.append(0 if cv is None else cv)
                    price_given.append(pv is not None)
                    price.append(0.0 if pv is None else float(pv))
                    continue
            cw = f"{where}.candidates[{j}]"
            c = _object(c, cw, V1_CANDIDATE_KEYS)
            if "item_id" not in c:
                raise InvalidInput(f"{cw} is missing 'item_id'")
            item.append(_int(c["item_id"], f"{cw}.item_id"))
            cv, pv = c.get("category_id"), c.get("price")
            cate_given.append(cv is not None)
            cate.append(_int(cv, f"{cw}.category_id") if cv is not None else 0)
            price_given.append(pv is not None)
            price.append(_price(pv, f"{cw}.price") if pv is not None else 0.0)
        row_slot.extend([slot] * len(cands))
        sizes.append(len(cands))
    return ScoringRequest(
        slots=slots, row_slot=np.array(row_slot, np.int64), item=np.array(item, np.int64),
        cate=np.array(cate, np.int64), cate_given=np.array(cate_given, bool),
        price=np.array(price, np.float32), price_given=np.array(price_given, bool), sizes=sizes)


def _history(v: Any, where: str, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    h = _object(v, where, V1_HISTORY_KEYS)
    for key in V1_HISTORY_KEYS:
        if key not in h:
            raise InvalidInput(f"{where} is missing '{key}'")
    items = _id_list(h["item_seq"], f"{where}.item_seq", limits.max_history)
    cates = _id_list(h["cate_seq"], f"{where}.cate_seq", limits.max_history)
    if len(items) != len(cates):
        raise InvalidInput(f"{where}.item_seq and cate_seq differ in length ({len(items)} vs {len(cates)})")
    return items, cates


# -- v2 --------------------------------------------------------------------------------------

def _flat(data: Any, shape: list[int], name: str) -> list[Any]:
    """The values of v2 JSON tensor data for a declared ``[N]`` / ``[N, 1]`` shape, row-major.

    Accepted: a flat list (either shape), N one-value lists (``[N, 1]`` only) or a bare scalar
    (N = 1). Checked one level at a time without recursion, so data nested far deeper than the
    shape (``[[[...[1]...]]]``, 900 levels) is a 400, not a traversal of the whole nesting."""
    if not isinstance(data, list):
        return [data]
    nested = [i for i, x in enumerate(data) if isinstance(x, list)]
    if not nested:
        return data
    if len(shape) == 2 and len(nested) == len(data):
        for i, row in enumerate(data):
            if len(row) != 1 or isinstance(row[0], list):
                raise InvalidInput(f"input '{name}' data[{i}] must be one value (shape {shape}), got a list of "
                                   f"{len(row)}{' lists' if row and isinstance(row[0], list) else ''}")
        return [row[0] for row in data]
    raise InvalidInput(f"input '{name}' data nests deeper than its shape {shape}: data[{nested[0]}] is a list; "
                       "send a flat list of values")


def _v2_column(inp: Any, types: set[str], is_price: bool, limits: Limits) -> np.ndarray:
    name, dtype, shape = inp.name, inp.datatype, list(inp.shape or [])
    if dtype not in types:
        raise InvalidInput(f"input '{name}' has datatype {dtype}; expected one of {sorted(types)}")
    if not shape or len(shape) > 2 or any(type(d) is not int or d < 0 for d in shape) \
            or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInput(f"input '{name}' must have shape [N] or [N, 1], got {shape}")
    n = shape[0]
    if n > limits.max_candidates:
        raise InvalidInput(f"input '{name}' has {n} rows; at most {limits.max_candidates} candidates per request")
    values = _flat(inp.data, shape, name)
    if len(values) != n:
        raise InvalidInput(f"input '{name}' has {len(values)} values but shape {shape}")
    where = f"input '{name}'"
    if is_price:
        if all(type(x) is float and 0.0 <= x <= MAX_PRICE for x in values):  # common case, no messages
            return np.array(values, np.float32)
        return np.array([_price(x, f"{where}[{i}]") for i, x in enumerate(values)], np.float32)
    return _ints(values, where)


def parse_v2(request: InferRequest, limits: Limits) -> ScoringRequest:
    """Open Inference Protocol v2 tensors (see the module docstring) -> ScoringRequest."""
    cols: dict[str, np.ndarray] = {}
    for inp in request.inputs or []:
        if inp.name not in V2_INPUTS:
            raise InvalidInput(f"unknown input '{inp.name}'; expected {list(V2_INPUTS)}")
        if inp.name in cols:
            raise InvalidInput(f"input '{inp.name}' is given twice")
        is_price = inp.name == "price"
        cols[inp.name] = _v2_column(inp, V2_PRICE_TYPES if is_price else V2_INT_TYPES, is_price, limits)
    for required in ("user_id", "item_id"):
        if required not in cols:
            raise InvalidInput(f"missing input '{required}' (INT64, shape [N])")
    item = cols["item_id"]
    n = len(item)
    if n == 0:
        raise InvalidInput("input 'item_id' is empty: send at least one candidate")
    users = cols["user_id"]
    if len(users) not in (1, n):
        raise InvalidInput(f"input 'user_id' has {len(users)} rows; expected 1 or {n} (one per item_id)")
    for opt in ("category_id", "price"):
        if opt in cols and len(cols[opt]) != n:
            raise InvalidInput(f"input '{opt}' has {len(cols[opt])} rows; expected {n} (one per item_id)")
    uniq, row_slot = np.unique(users, return_inverse=True) if len(users) > 1 else (users, np.zeros(n, np.int64))
    return ScoringRequest(
        slots=[Slot(int(u)) for u in uniq], row_slot=np.asarray(row_slot, np.int64).reshape(-1), item=item,
        cate=cols.get("category_id", np.zeros(n, np.int64)),
        cate_given=np.full(n, "category_id" in cols), price=cols.get("price", np.zeros(n, np.float32)),
        price_given=np.full(n, "price" in cols), sizes=[n])
