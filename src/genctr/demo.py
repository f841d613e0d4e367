"""``make demo``: the training pipeline end to end on the bundled data, through kfp.local."""
from __future__ import annotations

import logging
import time

from genctr.paths import home

log = logging.getLogger(__name__)


def run_demo(source: str = "movielens", backbone: str = "dcnv2_ta", pretrain_method: str = "genctr",
             epochs: int = 1, max_seq_len: int = 50) -> list[str]:
    """Run the pipeline locally; returns the summary lines to print."""
    from genctr.pipeline_runner import run_local

    root = home()
    params = {
        "data_source": source, "max_seq_len": max_seq_len, "pretrain_method": pretrain_method,
        "backbone": backbone, "transfer": "integrate" if pretrain_method == "genctr" else "share",
        "pretrain_epochs": epochs, "finetune_epochs": epochs, "batch_size": 512,
        "registry_root": str(root / "registry"), "spark_master": "local[2]",
    }
    if pretrain_method == "dgenctr":
        params["transfer"] = "full"
    t0 = time.perf_counter()
    run = run_local(params, root / "pipeline-runs")
    secs = time.perf_counter() - t0
    d = run.decision or {}
    cand = d.get("candidate") or {}
    champ = d.get("champion")
    lines = [
        f"pipeline run finished in {secs:.0f}s: {run.run_dir}",
        f"candidate: AUC {cand.get('auc', float('nan')):.4f}  LogLoss {cand.get('logloss', float('nan')):.4f}"
        f"  gAUC {cand.get('gauc', float('nan')):.4f}",
    ]
    if champ:
        lines.append(f"champion:  AUC {champ['auc']:.4f}  LogLoss {champ['logloss']:.4f}  gAUC {champ['gauc']:.4f}")
    lines.append(f"gate: {'PASSED' if d.get('passed') else 'REJECTED'} - {d.get('reason', '?')}")
    lines.append(f"registered version: {run.registered_version or 'none'} (registry {root / 'registry'})")
    lines.append(f"gate report: {run.gate_report}")
    return lines
