"""Fixed glibc malloc thresholds for the serving process (``ServeConfig.keep_heap``).

Changes memory behaviour only: the same bytes come back for every request with it on or off
(tests/test_serving_tuning.py).
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold
TRIM_THRESHOLD = 128 << 20
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_heap_thresholds() -> bool:
    """Stop glibc malloc from handing the forward passes' buffers back to the kernel.

    A forward pass allocates and frees activations of ~0.1-2 MB ([N, L, H] floats). glibc serves
    blocks above its mmap threshold (128 KiB at first, raised only as such blocks are freed) with
    fresh mmaps and trims free heap above 2x that threshold, so under load a large share of those
    buffers came back as new pages: page faults and zeroing were ~8 % of the server's CPU for
    dcnv2_ta L=50 (perf), gone with fixed thresholds (32 MiB / 128 MiB: the heap keeps its peak
    size). Only on glibc, and not when the environment already sets malloc tunables. Returns
    whether the thresholds were set."""
    import ctypes
    import os
    import platform

    if platform.libc_ver()[0] != "glibc" or any(k in os.environ for k in _MALLOC_ENV):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold, m_trim_threshold = -3, -1  # <malloc.h>
        ok = libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD) == 1 and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        return False
    if not ok:
        log.warning("mallopt refused the serving heap thresholds; glibc defaults stay")
    return ok
