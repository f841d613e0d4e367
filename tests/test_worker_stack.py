"""The pytest worker's own stack stays cheap to inspect: kfp calls ``inspect.stack()`` in every task
setter (``set_container_image``, ``set_cpu_request``, ...), and a frame whose file no module in
``sys.modules`` claims makes :func:`inspect.getmodule` walk all of them (~7,000 in a worker), 34 ms a
setter before ``tests/conftest.py`` had the worker's bottom frames claimed."""
from __future__ import annotations

import inspect
import os

import pytest


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="about pytest-xdist's workers (`make test`)")
def test_every_frame_of_a_workers_stack_has_a_module() -> None:
    frames = inspect.stack(0)
    # frozen modules (importlib's bootstrap) carry no file; nothing can claim them
    unclaimed = [f.filename for f in frames
                 if not f.filename.startswith("<frozen ") and inspect.getmodule(f.frame, f.filename) is None]
    assert len(frames) > 10 and not unclaimed, unclaimed
