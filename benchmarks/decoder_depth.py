"""What a second decoder layer costs at serving: GenCTR integration with decoder.n_layers 1 vs 2.

With model integration the decoder runs on every request: one layer reads the history once for
all candidates (``GenCTR.encode_target``'s shared path); a deeper stack runs the whole query
stream per candidate. This times ``CTRPredictor.score`` (100 candidates, an L-long history in the
request, torch on 1 thread, as ``long_sequences.py`` serves) for both depths side by side, in
alternating rounds so machine load hits both alike, and reports the ratio. The quality side of
the question is the ablation's ``--model-set decoder.n_layers=2`` run (RESULTS.md).

    python benchmarks/decoder_depth.py --json benchmarks/results/decoder_depth.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from genctr.models.config import DecoderConfig, ModelConfig
from genctr.training.data import FeatureData
from long_sequences import score_latency  # the sibling benchmark's timing loop (this folder is on sys.path)

HERE = Path(__file__).resolve().parent


def config(backbone: str, L: int, layers: int, vocab: dict[str, int]) -> ModelConfig:
    return ModelConfig(backbone=backbone, transfer="integrate", max_seq_len=L, embed_dim=16,
                       decoder=DecoderConfig(n_layers=layers)).with_vocab(vocab["user"], vocab["item"],
                                                                           vocab["category"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", type=Path, default=HERE / "data" / "movielens-first-L50",
                   help="a feature build (its vocabularies and items; benchmarks/ablation.py makes this one)")
    p.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    p.add_argument("--backbones", nargs="+", default=["dnn", "dcnv2_ta"])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per (backbone, L)")
    p.add_argument("--requests", type=int, default=200, help="timed requests per round")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    rows = []
    for backbone in args.backbones:
        for L in args.lengths:
            data = FeatureData(str(args.build), L)
            times: dict[int, list[dict]] = {1: [], 2: []}
            for _ in range(args.rounds):
                for layers in (1, 2):
                    times[layers].append(score_latency(data, args.build, L, config(backbone, L, layers,
                                                                                     data.vocab_sizes),
                                                       args.requests, args.warmup))
            row = {"backbone": backbone, "L": L}
            for layers, rs in times.items():
                for key in ("p50_ms", "p99_ms", "cpu_p50_ms", "cpu_p99_ms"):
                    row[f"{key}_{layers}layer"] = statistics.median(r[key] for r in rs)
            row["cpu_p50_ratio"] = round(row["cpu_p50_ms_2layer"] / row["cpu_p50_ms_1layer"], 2)
            row["p99_ratio"] = round(row["p99_ms_2layer"] / row["p99_ms_1layer"], 2)
            rows.append(row)
            print(json.dumps(row))
    out = {"rows": rows, "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
           "command": "python benchmarks/decoder_depth.py", "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        tmp.rename(args.json)


if __name__ == "__main__":
    main()
