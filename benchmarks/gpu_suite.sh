#!/usr/bin/env bash
# Every GPU check of the project in one run, one JSON file (see benchmarks/gpu_suite.py):
# training throughput vs FuxiCTR at batch 4096 and 16384, GenCTR pretraining at L = 200 / d = 64,
# bf16 autocast, the fused optimizer, and DDP over all visible GPUs (torchrun).
#
#   benchmarks/gpu_suite.sh OUT.json                      # one GPU node, <= 8 minutes
#   benchmarks/gpu_suite.sh OUT.json --device cpu --quick # tiny sizes on a CPU, well under a minute
#
# The interpreter is $PYTHON, else the repository's .venv, else python3 (a GPU image's torch).
# The JSON is rewritten atomically after every check; a hard stop at 8 minutes keeps what is done.
set -euo pipefail
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $0 OUT.json [--device cpu|cuda] [--quick] [--ddp-procs N] [--budget-s S]" >&2
  exit 2
fi
out="$1"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$here/../.venv/bin/python" ]]; then py="$here/../.venv/bin/python"; else py="python3"; fi
fi
# the repository's genctr, also where it is not installed (a GPU image); torchrun's workers inherit it
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"
# 480 s: the whole suite's limit; the checks themselves stop starting new work after --budget-s (450)
exec timeout --signal=TERM --kill-after=10 480 "$py" "$here/gpu_suite.py" --out "$out" "$@"
