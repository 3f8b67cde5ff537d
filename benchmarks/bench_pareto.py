"""Benchmark Pareto fronts: 10 points on the paper bank, against one plain optimize.

For the paper's storage-example bank on the phone and laptop profiles, under the zipf-topic
workload at its own rate (Poisson 10/s; utilisation ceiling 0.8), compute the cost-p99 and
energy-p99 fronts (`pareto_front(..., points=10)`, 64 latency scenarios as `optimize` uses by
default) and time each whole. The baselines are one `optimize` call with the same goal, options
and workload, and one idle `optimize` (no goal), measured in the same run (best of --repeats):
the ratios say how many plain solves a front costs. Target (issue 12): under 30 s per front.
Each front is printed: its points with the two metrics and the placement, the number of
solves and seconds.

Nothing here asserts on time: the figures, ratios and PASS/FAIL lines are printed (or given
as JSON) with the load average before and after, because the machine may be shared.

    python benchmarks/bench_pareto.py [--points N] [--repeats R] [--rate-scale K] [--synthetic]
                                      [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import _common  # noqa: F401  (one-thread numeric pools; import before numpy)

import memsim
from memsim.cli.pareto import front_text
from memsim.errors import InfeasibleError, OverloadWarning
from memsim.optimize.goal import Goal
from memsim.optimize.pareto import pareto_front

TARGET_S = 30.0
PROFILES = ("phone", "laptop")
PAIRS = (("cost", "p99"), ("energy", "p99"))
# On the paper bank the shipped profiles' fronts are short (local tiers are free and fastest),
# so --synthetic adds the 4-tier, 4-level instance of tests/test_pareto.py, whose cost-p99 and
# energy-p99 fronts have several points: the cost of a front that is not a single layout.
# the test's instance: cost, time and energy pull apart
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
from test_pareto import ANCHOR as SYNTHETIC_ANCHOR  # noqa: E402
from test_pareto import TIERS as SYNTHETIC_TIERS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate-scale", type=float, default=1.0,
                        help="Multiply the workload's rate (1: its own rate).")
    parser.add_argument("--synthetic", action="store_true",
                        help="Also time the fronts of the synthetic instance (5 queries/s).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore", OverloadWarning)
    load_before = _common.load_average()
    bank = memsim.load_bank("paper-storage-example")
    workload = memsim.load_workload("zipf-topic")
    rate = workload.arrivals.mean_rate() * args.rate_scale
    if args.rate_scale != 1.0:
        workload = workload.at_rate(rate)
    goal = Goal(rate=rate)
    rows = []
    cases = [(memsim.load_profile(name), bank, workload, goal) for name in PROFILES]
    if args.synthetic:
        synthetic = memsim.workload_from_dict({"name": "poisson-5", "arrivals": {
            "kind": "poisson", "rate": 5.0}})
        cases.append((memsim.profile_from_dict({"name": "synthetic", "tiers": SYNTHETIC_TIERS}),
                      memsim.bank_from_dict({"name": "synthetic", "levels": [50, 100, 100, 20],
                                             "anchor": SYNTHETIC_ANCHOR, "branching": 16}),
                      synthetic, Goal(rate=5.0)))
    for profile, bank, workload, goal in cases:
        name = profile.name
        memsim.optimize(profile, bank, workload=workload, goal=goal)  # warm the imports
        plain, idle = [], []
        for _ in range(max(args.repeats, 1)):
            start = time.perf_counter()
            memsim.optimize(profile, bank, workload=workload, goal=goal)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            memsim.optimize(profile, bank, workload=workload)
            idle.append(time.perf_counter() - start)
        base, base_idle = min(plain), min(idle)
        for x, y in PAIRS:
            start = time.perf_counter()
            try:
                front = pareto_front(profile, bank, (x, y), goal=goal, points=args.points,
                                     workload=workload)
            except InfeasibleError as exc:
                rows.append({"profile": name, "x": x, "y": y, "error": exc.message})
                if not args.json:
                    print(f"{name} {x},{y}: infeasible: {exc.message}\n")
                continue
            seconds = time.perf_counter() - start
            row = {"profile": name, "x": x, "y": y, "points": len(front.points),
                   "solves": front.solves, "seconds": seconds, "optimize_s": base,
                   "ratio": seconds / base, "per_solve_ratio": seconds / base / front.solves,
                   "idle_optimize_s": base_idle, "idle_ratio": seconds / base_idle,
                   "pass": seconds < TARGET_S, "front": front.to_json()}
            rows.append(row)
            if not args.json:
                print(front_text(front, bank, profile))
                print(f"{name} {x},{y}: {seconds:.2f} s for the front ({front.solves} solves, "
                      f"{len(front.points)} point(s)); one optimize {base:.3f} s (same "
                      f"goal), ratio {seconds / base:.1f}x ({seconds / base / front.solves:.2f}x"
                      f" per solve); idle optimize {base_idle:.3f} s, ratio "
                      f"{seconds / base_idle:.1f}x; "
                      f"{'PASS' if seconds < TARGET_S else 'FAIL'} (under {TARGET_S:g} s)\n")
    load_after = _common.load_average()
    if args.json:
        print(json.dumps({"rate": rate, "points": args.points, "target_s": TARGET_S,
                          "load_before": load_before, "load_after": load_after,
                          "fronts": rows}, indent=2, default=str))
        return
    print(f"load average before: {_common.format_load(load_before)}; after: "
          f"{_common.format_load(load_after)}")
    timed = [r for r in rows if "seconds" in r]
    if timed:
        worst = max(r["seconds"] for r in timed)
        print(f"slowest front {worst:.2f} s: {'PASS' if worst < TARGET_S else 'FAIL'} "
              f"(under {TARGET_S:g} s)")


if __name__ == "__main__":
    main()
