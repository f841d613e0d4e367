"""How fast this machine is right now: a fixed reference workload to record beside wall-clock figures.

The same 2-core machine has run the same test suite in 12 and in 19 minutes on different days
with nothing else running. A wall-clock figure is only comparable with another taken at the same
machine speed, so record this script's output with it (`RESULTS.md`, "The test suite's time"):

    python benchmarks/machine_speed.py            # ~30 s; prints one JSON line
    python benchmarks/machine_speed.py --json F   # also writes it to F (atomically)

Each probe is the best of ``--repeats`` runs (the least disturbed one), in seconds; lower is faster:

- ``python_loop_s``: 10 million integer additions in the interpreter (one core, no libraries);
- ``import_torch_s``: ``import torch`` in a fresh interpreter (disk cache, dynamic linking, Python);
- ``matmul_s``: 200 float32 (512 x 512) @ (512 x 512) products on one torch thread;
- ``jvm_start_s``: ``java -version`` (what every Spark step pays first), when java is on PATH.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from genctr.atomic import write_json


def python_loop() -> float:
    t0 = time.perf_counter()
    s = 0
    for i in range(10_000_000):
        s += i
    return time.perf_counter() - t0


def fresh(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def matmul() -> float:
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b  # warm-up
    t0 = time.perf_counter()
    for _ in range(200):
        a @ b
    return time.perf_counter() - t0


def measure(repeats: int) -> dict[str, Any]:
    probes = {"python_loop_s": python_loop,
              "import_torch_s": lambda: fresh([sys.executable, "-c", "import torch"]),
              "matmul_s": matmul}
    if shutil.which("java"):
        probes["jvm_start_s"] = lambda: fresh(["java", "-version"])
    load0 = os.getloadavg()
    out: dict[str, Any] = {name: round(min(fn() for _ in range(repeats)), 3) for name, fn in probes.items()}
    out.update(cpus=os.cpu_count(), load_before=[round(x, 2) for x in load0],
               load_after=[round(x, 2) for x in os.getloadavg()], when=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="runs per probe; the best is kept (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    result = measure(args.repeats)
    print(json.dumps(result))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
