"""Canary statistics: error rates, power and time to decision of the canary's decision rule, by simulation.

    python benchmarks/canary_stats.py                    # 500 runs x 24 looks per setting (a few minutes)
    python benchmarks/canary_stats.py --runs 100 --users 8000 --out-dir /tmp/cs   # a smoke run

Every setting is ``--runs`` seeded canaries, each looked at ``--looks`` times as its traffic
accrues (the hourly schedule over a day), simulated at aggregate level and vectorised across runs
(:mod:`genctr.monitoring.ab_simulation`: per-unit totals drawn directly, heterogeneous users, a
pre-period whose CTR is correlated with the in-period one; no HTTP, no Parquet). Each setting is
drawn once and judged by four policies, with the canary step's own interval and decision
functions (``uplift_arrays``, ``statistical_actions``): ``sequential`` (the always-valid
confidence sequence, the default) and ``fixed_horizon``, each with and without CUPED. The
settings: both randomisation units (``user``: user-sticky split, user-level analysis;
``request``: request-randomised, request-level analysis), an A/A canary (``--lift`` 0) and a
``+5 %`` CTR canary, at each of ``--users`` (users of both arms).

Reported per setting and policy: the share of runs whose *first* decision is a promotion or a
rollback (the canary acts and stops), the median look of those decisions, the same rates had the
last look been the only one, and CUPED's median variance reduction. How alpha is spent: each
uplift interval is two-sided at (1 - alpha); a promotion reads the CTR interval's lower side
(A/A bound alpha/2), a rollback the CTR or RPM interval's upper side (bound alpha/2 + alpha/2 =
alpha). Guardrails (errors, latency, SRM) are outside the simulation.

Writes ``canary_stats.md`` (tables) and ``canary_stats.json`` (every figure) under ``--out-dir``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from genctr.atomic import write_json, write_text
from genctr.monitoring.ab_simulation import CanarySimulation, judge, simulate, summarise
from genctr.monitoring.analysis import json_safe
from genctr.monitoring.decision import CanaryPolicy

HERE = Path(__file__).resolve().parent


def policies(base: CanaryPolicy) -> dict[tuple[str, bool], CanaryPolicy]:
    """(method, cuped) -> the policy judged under; everything else as ``base``."""
    return {(m, c): dataclasses.replace(base, method=m, cuped=c)
            for m in ("sequential", "fixed_horizon") for c in (False, True)}


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    base = CanaryPolicy(alpha=args.alpha, sequential_tuning_n=args.tuning_n)
    rows = []
    for unit in ("user", "request"):
        for users in args.users:
            for lift in (0.0, args.lift):
                cfg = CanarySimulation(runs=args.runs, looks=args.looks, users=users, unit=unit, ctr_lift=lift,
                                       seed=args.seed)
                t0 = time.perf_counter()
                looks = simulate(cfg)
                for (method, cuped), policy in policies(base).items():
                    rows.append({"unit": unit, "users": users, "ctr_lift": lift, "method": method, "cuped": cuped,
                                 **summarise(judge(looks, policy))})
                seconds = time.perf_counter() - t0
                print(f"{unit:7s} users={users:6d} lift={lift:+.2f}: {seconds:5.1f} s "
                      + "  ".join(f"{r['method'][:3]}{'+C' if r['cuped'] else '  '} P={r['promote_rate']:.3f} "
                                  f"R={r['rollback_rate']:.3f}" for r in rows[-4:]), flush=True)
    return rows


def _pct(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def _look(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:g}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    alpha, runs = meta["alpha"], meta["runs"]
    margin = 3 * math.sqrt(alpha / 2 * (1 - alpha / 2) / runs)
    head = ("| unit | users | method | CUPED | false promote | false rollback | one look: promote / rollback |\n"
            "|---|---:|---|---|---:|---:|---:|\n")
    aa = [r for r in rows if r["ctr_lift"] == 0]
    lines = [f"### A/A canaries: false decisions over {meta['looks']} looks ({runs} runs each)", "",
             f"Bounds: false promotion <= alpha/2 = {_pct(alpha / 2)}, false rollback <= alpha = {_pct(alpha)} "
             f"(3 binomial sd at {runs} runs: ±{_pct(margin)} on the promotion rate).", "", head.rstrip("\n")]
    lines += [f"| {r['unit']} | {r['users']} | {r['method']} | {'yes' if r['cuped'] else 'no'} | "
              f"{_pct(r['promote_rate'])} | {_pct(r['rollback_rate'])} | "
              f"{_pct(r['one_look_promote_rate'])} / {_pct(r['one_look_rollback_rate'])} |" for r in aa]
    lift = [r for r in rows if r["ctr_lift"] != 0]
    lines += ["", f"### A {meta['lift']:+.0%} CTR canary: power and time to decision ({runs} runs each)", "",
              "| unit | users | method | CUPED | promoted | median look of promotion | wrongly rolled back | "
              "CUPED variance reduction (median) |", "|---|---:|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['unit']} | {r['users']} | {r['method']} | {'yes' if r['cuped'] else 'no'} | "
              f"{_pct(r['promote_rate'])} | {_look(r['promote_median_look'])} | {_pct(r['rollback_rate'])} | "
              f"{_pct(r['ctr_variance_reduction_median']) if r['cuped'] else '–'} |" for r in lift]
    lines += ["", f"alpha {alpha}, sequential n* = {meta['tuning_n']} units, min {meta['min_users_per_arm']} users "
              f"per arm, seed {meta['seed']}; {meta['seconds']:.0f} s on {meta['cpus']} CPU(s), load average "
              f"{meta['loadavg']}.", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--looks", type=int, default=24)
    ap.add_argument("--users", type=int, nargs="+", default=[8_000, 80_000], help="users of both arms, per setting")
    ap.add_argument("--lift", type=float, default=0.05, help="relative CTR lift of the non-A/A canary")
    ap.add_argument("--alpha", type=float, default=CanaryPolicy().alpha)
    ap.add_argument("--tuning-n", type=int, default=CanaryPolicy().sequential_tuning_n)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = measure(args)
    meta = {"runs": args.runs, "looks": args.looks, "lift": args.lift, "alpha": args.alpha, "tuning_n": args.tuning_n,
            "min_users_per_arm": CanaryPolicy().min_users_per_arm, "seed": args.seed,
            "seconds": time.perf_counter() - t0, "cpus": os.cpu_count(), "python": platform.python_version(),
            "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists()
            else "n/a", "simulation": dataclasses.asdict(CanarySimulation())}
    md, js = args.out_dir / "canary_stats.md", args.out_dir / "canary_stats.json"
    write_text(md, markdown(rows, meta))
    write_json(js, json_safe({"meta": meta, "rows": rows}), allow_nan=False)  # NaN (no decision) -> null
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
