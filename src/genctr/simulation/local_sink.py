"""The A/B log sink as a local subprocess (``python -m genctr.monitoring.sink``), for a simulated run.

On a cluster the sink is a Deployment that KServe's agent posts to. Locally a run starts one per
log directory: the payload logger of the local model server posts its CloudEvents here, the
simulated click tracker its clicks, and the sink writes ``requests/``, ``impressions/`` and
``raw_clicks/`` under ``out``. Stopping it (SIGTERM) makes it write what it buffers; :meth:`kill`
(SIGKILL) is the crash a test replays.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from genctr.errors import ArtifactError


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT does not count
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def sink_health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The sink's ``/healthz`` (buffered rows, unpaired events), None while it is not up."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/healthz", timeout=timeout) as r:
            health: dict[str, Any] = json.loads(r.read())
            return health
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_sink_idle(url: str, timeout_s: float = 120.0) -> bool:
    """True once the sink at ``url`` has paired every event and written every buffered row to parts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        h = sink_health(url)
        if h is not None and h.get("status") == "ok" and not (h.get("buffer_rows") or h.get("pending_requests")
                                                               or h.get("pending_responses")
                                                               or h.get("retrying_parts")):
            return True
        time.sleep(0.2)
    return False


class LocalSink:
    """One sink process on loopback writing ``out``; ``slots``/``reserve_price``: the ad server's auction.

    Its log goes to ``<out>.sink.log`` beside the directory, its journal to ``<out>/.sink``.
    """

    def __init__(self, out: str | Path, *, port: int = 0, host: str = "127.0.0.1", slots: int = 3,
                 reserve_price: float = 0.0, flush_seconds: float = 1.0, args: tuple[str, ...] = ()) -> None:
        self.out = Path(out)
        self.host = host
        self.port = port or free_port(host)
        self.slots = slots
        self.reserve_price = reserve_price
        self.flush_seconds = flush_seconds
        self.args = tuple(args)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Where events are posted (the payload logger's ``--logger_url``)."""
        return f"http://{self.host}:{self.port}/"

    @property
    def clicks_url(self) -> str:
        return f"{self.url}clicks"

    @property
    def log_file(self) -> Path:
        return self.out.parent / f"{self.out.name}.sink.log"

    def start(self, timeout_s: float = 90.0) -> LocalSink:
        """Start the process and wait until its journal is replayed (``/healthz`` 200)."""
        self.out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "genctr.monitoring.sink", "--out", str(self.out), "--host", self.host,
               "--port", str(self.port), "--slots", str(self.slots), "--reserve-price", repr(self.reserve_price),
               "--flush-seconds", repr(self.flush_seconds), "--log-format", "json", *self.args]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while (sink_health(self.url) or {}).get("status") != "ok":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = self.log_file.read_text(errors="replace")[-3000:]
                raise ArtifactError(f"the A/B log sink did not start on port {self.port}; log {self.log_file}:\n{tail}")
            time.sleep(0.1)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM: the sink writes what it buffers, then exits (unpaired events stay journaled)."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash; what it acknowledged is in its journal, replayed by the next start."""
        self._signal(signal.SIGKILL, 30.0)

    def _signal(self, sig: int, timeout_s: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> LocalSink:
        return self.start() if self.proc is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["LocalSink", "free_port", "port_is_free", "sink_health", "wait_sink_idle"]
