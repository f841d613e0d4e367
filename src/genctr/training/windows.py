"""Which behaviour windows GenCTR pretrains on and is evaluated on (pure numpy on per-user counts).

A window is a user's behaviours ``[end - length, end)`` (user-local positions, oldest first);
the causal decoder predicts every position of it from the positions before it in the window.

* :func:`strided_windows`, for pretraining: windows ending at ``n, n - stride, n - 2 stride, ...``
  down to the one that starts at the user's first behaviour. Every behaviour is predicted at
  least once, and a behaviour at position p at least once with ``min(p, L - stride)``
  behaviours of context (non-overlapping windows, stride = L, predict the first position of
  each window from nothing). With stride < L the windows overlap and positions repeat.
* :func:`heldout_windows`, for evaluation: each held-out target (a behaviour after the
  training period) is predicted exactly once, with at least ``L - chunk`` behaviours of
  context where the user has them, so the held-out loss weighs every target once.
"""
from __future__ import annotations

import numpy as np


def _enumerate(count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """count (U,) -> (owner, k), each (sum count,): the k-th of owner's ``count`` items."""
    owner = np.repeat(np.arange(len(count)), count)
    k = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return owner, k


def strided_windows(n: np.ndarray, max_len: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pretraining windows over each user's first ``n[u]`` behaviours.

    n (U,) int, 1 <= stride <= max_len -> (user, end, length), each (W,) int64: windows end at
    ``n - k * stride`` for k = 0, 1, ... until one reaches position 0; users with n = 0 get none.
    """
    if not 1 <= stride <= max_len:
        raise ValueError(f"window stride must lie in [1, max_len = {max_len}], got {stride}")
    n = np.asarray(n, np.int64)
    more = np.maximum(0, -(-(n - max_len) // stride))  # ceil((n - L) / stride) windows behind the newest
    count = np.where(n > 0, 1 + more, 0)
    user, k = _enumerate(count)
    end = n[user] - k * stride
    return user, end, np.minimum(end, max_len)


def heldout_windows(first: np.ndarray, n_targets: np.ndarray, max_len: int,
                    chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Evaluation windows for each user's targets at positions ``[first[u], first[u] + n_targets[u])``.

    Targets are cut into pieces of ``chunk`` (1 <= chunk <= max_len); each piece gets the window
    that ends with it. Returns (user, end, length, target_from), each (W,) int64, where
    ``target_from`` is the window-relative index of the piece's first target: positions before it
    are context only.
    """
    if not 1 <= chunk <= max_len:
        raise ValueError(f"held-out chunk must lie in [1, max_len = {max_len}], got {chunk}")
    first, n_targets = np.asarray(first, np.int64), np.asarray(n_targets, np.int64)
    user, k = _enumerate(-(-n_targets // chunk))
    start = first[user] + k * chunk  # first target of the piece
    end = np.minimum(start + chunk, first[user] + n_targets[user])
    length = np.minimum(end, max_len)
    return user, end, length, length - (end - start)


__all__ = ["heldout_windows", "strided_windows"]
