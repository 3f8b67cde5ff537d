"""Benchmark the block optimizer at scale: a 1.1M-block and a 12.4M-block bank, 64 buckets.

Two banks, both 5 levels of FFN memories (a small custom anchor, blocks of ~100 MB at level 1
shrinking to ~1 MB at level 5), Zipf routing (s = 1), parallel fetch:

* `1.1M`: branching 16, 16 + 256 + 4,096 + 65,536 + 1,048,576 = 1,118,480 blocks (1.29 TB);
* `12.4M`: branching 26, 26 + 676 + 17,576 + 456,976 + 11,881,376 = 12,356,630 blocks
  (13.3 TB), the smallest 5-level tree whose deepest level alone has at least 10^7 blocks.

Each is placed on a 4-tier profile (ram, flash, disk, cloud; lognormal latencies below RAM,
cloud unlimited) sized to the bank, so that the hottest blocks compete for RAM and flash and
the cold tail spills to disk and cloud. For each bank, in child processes (fresh interpreters,
each reporting its own peak RSS from getrusage(RUSAGE_SELF)):

1. `optimize_blocks(..., buckets=64, solver="auto", verify_estimate=False)`, timed whole,
   with its steps timed by wrappers installed in the child (popularity, build_problem,
   solve_buckets with its build_model / solve calls, to_block_map, greedy baseline, the
   level-granularity comparison); then the same load-aware (Policy(max_utilization=0.8) at
   the workload's 10 queries/s). Targets (issue 12, "Scale"): the 12.4M bank optimal in
   under 3 s with peak RSS under 1 GB, idle and load-aware; the load-aware run of each
   bank within 2x the idle run's time. `--baseline-src DIR` also runs the idle optimize
   with another checkout's memsim, for before/after ratios measured in the same run.
2. The steps one by one: block_popularity for every level, build_problem, solve_buckets
   (HiGHS; parallel fetch solves one ILP per candidate z), to_block_map, with the peak RSS
   after each.
3. HiGHS against CBC on the same models, each built afresh for every solve: first every
   candidate z once (the sweep solve_buckets runs), then the best z's model and the exact
   sequential-fetch model (z = None), best of --repeats solves each. Printed: both solve
   times, the ratio HiGHS / CBC, and whether both reach the same objective within 1e-6
   relative. CBC runs under --cbc-time-limit seconds per solve: on some z of these models it
   does not finish in many minutes.

Solve times are those of memsim.optimize.solver.solve: PuLP handing the model to the solver
(the highspy API for HiGHS; an MPS file and a cbc process for CBC) plus the solve.

Nothing here asserts on time: the figures, ratios and PASS/FAIL lines are printed (or given
as JSON) with the load average before and after, because the machine may be shared.

    python benchmarks/bench_optimizer.py [--skip-large] [--solver-compare-only] [--no-sweep]
                                         [--repeats R] [--cbc-time-limit S] [--profile N]
                                         [--json]

A full run takes about 6 minutes on a 2-core machine (the CBC sweep and the 21 HiGHS solves
per optimize_blocks dominate); --no-sweep, --skip-large and --solver-compare-only shorten it.
Exit status 1 if a HiGHS solve is not optimal or the two solvers' optima differ.
"""

from __future__ import annotations

# First: _common sets one-thread numeric pools before numpy is imported.
from _common import children_peak_rss, format_load, load_average

# isort: split

import argparse  # noqa: E402
import cProfile  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os
import platform  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pulp  # noqa: E402

# Measure the checkout this script lives in, not whatever copy of memsim is installed (a
# non-editable `pip install .` leaves an older one in site-packages).
# --baseline-src runs the optimize child with another checkout's memsim (e.g. `git archive
# HEAD~3 memsim | tar -x -C DIR`), for before/after figures measured in one run.
sys.path.insert(0, os.environ.get(BASELINE_ENV := "MEMSIM_BENCH_SRC")
                or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import memsim  # noqa: E402
from memsim.optimize import Policy, optimize_blocks  # noqa: E402
from memsim.optimize import buckets as bk  # noqa: E402
from memsim.popularity import block_popularity  # noqa: E402

# optimize_blocks looks its helpers up in its own module at call time, so the child can time
# them there.
opt = importlib.import_module("memsim.optimize.blocks")

BUCKETS = 64
DEFAULT_REPEATS = 3
DEFAULT_CBC_LIMIT = 30.0  # seconds per CBC solve: on some z it runs for many minutes
TARGET_CASE = "12.4M"  # the targets are the 12.4M bank's (issue 12, "Scale")
TARGET_SECONDS = 3.0
TARGET_BYTES = 10**9  # 1 GB
LOAD_CEILING = 0.8  # load-aware runs: Policy(max_utilization=0.8) at the workload's 10/s
LOAD_RATIO = 2.0  # target: load-aware within 2x the idle run's time (1.1M bank)
SAME_OBJECTIVE = 1e-6  # relative difference allowed between HiGHS's and CBC's optimum
CHILD_FLAG = "--_child"

# A small custom anchor: an FFN block of multiplier 1 is 3 * layers * d_model = 6,144
# parameters, 12,288 bytes in bf16; the anchor itself is 100 MB in RAM.
ANCHOR = {"name": "bench-small", "layers": 8, "d_model": 256, "d_ff": 1024, "heads": 4,
          "head_dim": 64, "params": 50_000_000}
# 100.7 MB, 31.5 MB, 9.8 MB, 3.1 MB and 0.98 MB blocks.
MULTIPLIERS = [8192, 2560, 800, 256, 80]


def _tiers(ram: str, flash: str, disk: str) -> list[dict[str, Any]]:
    return [
        {"name": "ram", "kind": "ram", "capacity": ram, "bandwidth": "20 GB/s",
         "latency": "100 ns", "concurrency": 8},
        {"name": "flash", "kind": "flash", "capacity": flash, "bandwidth": "4 GB/s",
         "latency": {"p50": "80 us", "p99": "400 us"}, "concurrency": 4},
        {"name": "disk", "kind": "disk", "capacity": disk, "bandwidth": "250 MB/s",
         "latency": {"p50": "6 ms", "p99": "25 ms"}, "concurrency": 2},
        {"name": "cloud", "kind": "cloud", "capacity": "unlimited", "bandwidth": "100 MB/s",
         "latency": {"p50": "30 ms", "p99": "200 ms"}, "concurrency": 16,
         "request_overhead": "1 ms"},
    ]


# Each bank on a profile sized to it: RAM and flash hold a few percent of the bank (the hot
# blocks compete for them), disk about half, cloud the rest.
CASES: dict[str, dict[str, Any]] = {
    "1.1M": {
        "large": False,
        "bank": {"name": "bench-opt-16ary", "branching": 16, "levels": MULTIPLIERS,
                 "memory_type": "ffn", "anchor": ANCHOR, "dtype": "bf16"},
        "profile": {"name": "bench-opt-4tier-1tb", "description": "ram, flash, disk, cloud",
                    "tiers": _tiers("32 GB", "256 GB", "640 GB")},
    },
    "12.4M": {
        "large": True,
        "bank": {"name": "bench-opt-26ary", "branching": 26, "levels": MULTIPLIERS,
                 "memory_type": "ffn", "anchor": ANCHOR, "dtype": "bf16"},
        "profile": {"name": "bench-opt-4tier-13tb", "description": "ram, flash, disk, cloud",
                    "tiers": _tiers("64 GB", "1 TB", "6 TB")},
    },
}
WORKLOAD = {"name": "bench-opt-zipf", "arrivals": {"kind": "poisson", "rate": "10/s"},
            "routing": {"kind": "zipf", "s": 1.0}}


def build(case: str) -> tuple[memsim.Profile, memsim.Bank, memsim.Workload]:
    """The case's profile, bank and workload, checked."""
    spec = CASES[case]
    profile = memsim.profile_from_dict(spec["profile"], file="<bench profile>")
    bank = memsim.bank_from_dict(spec["bank"], file="<bench bank>")
    workload = memsim.workload_from_dict(WORKLOAD, file="<bench workload>")
    if len(bank.active_levels) != 5 or len(profile.tiers) != 4:
        raise SystemExit("bench setup: expected 5 non-empty levels and 4 tiers")
    limited = sum(t.capacity_bytes for t in profile.tiers if t.capacity is not None)
    if not limited < bank.bank_bytes:
        raise SystemExit("bench setup: the limited tiers should not hold the whole bank")
    return profile, bank, workload


def bank_facts(bank: memsim.Bank) -> dict[str, Any]:
    return {
        "name": bank.name, "branching": bank.branching,
        "blocks": sum(lv.blocks for lv in bank.active_levels),
        "blocks_per_level": [lv.blocks for lv in bank.active_levels],
        "block_bytes": [lv.block_bytes for lv in bank.active_levels],
        "bank_bytes": bank.bank_bytes,
    }


# ----------------------------------------------------------------------------- child side


def peak_rss() -> int:
    """Peak resident bytes of this process so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # KiB on Linux, bytes on macOS


class Timings:
    """Wall time and calls per wrapped function (nested calls are counted in both)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.each: dict[str, list[float]] = {}

    def wrap(self, module: Any, attr: str, label: str) -> None:
        """Replace `module.attr` (looked up at call time by its callers) by a timed wrapper
        (nothing when the module lacks it: a baseline checkout may)."""
        inner = getattr(module, attr, None)
        if inner is None:
            return

        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                self.seconds[label] = self.seconds.get(label, 0.0) + took
                self.calls[label] = self.calls.get(label, 0) + 1
                self.each.setdefault(label, []).append(took)

        setattr(module, attr, timed)

    def report(self) -> dict[str, dict[str, Any]]:
        return {k: {"seconds": v, "calls": self.calls[k], "each_s": self.each[k]}
                for k, v in self.seconds.items()}


def model_size(model: bk.BucketModel) -> dict[str, int]:
    return {"variables": model.columns, "constraints": len(model.rows)}


def child_optimize(case: str, profile_top: int = 0, load: bool = False) -> dict[str, Any]:
    """optimize_blocks as a user calls it, timed whole and by step (or under cProfile, which
    slows the Python parts down, with its `profile_top` heaviest functions reported)."""
    rss_imports = peak_rss()
    profile, bank, workload = build(case)
    timings = Timings()
    if not profile_top:
        for attr, label in [("block_popularity", "block_popularity"),
                            ("build_problem", "build_problem"),
                            ("solve_buckets", "solve_buckets"),
                            ("to_block_map", "to_block_map"),
                            ("_check_bucket_solution", "check_solution"),
                            ("greedy_counts", "greedy_counts"),
                            ("_level_under_bucket_model", "level_ilp_comparison")]:
            timings.wrap(opt, attr, label)
        timings.wrap(bk, "build_model", "solve_buckets: build_model")
        timings.wrap(bk, "solve_arrays", "solve_buckets: solve")
        timings.wrap(bk, "solve", "solve_buckets: solve")  # a baseline's PuLP solve
        timings.wrap(memsim.Layout, "tier_counts", "layout.tier_counts")
    profiler = cProfile.Profile() if profile_top else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    policy = Policy(max_utilization=LOAD_CEILING) if load else None
    result = optimize_blocks(profile, bank, workload, buckets=BUCKETS, solver="auto",
                             verify_estimate=False, policy=policy)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - start
    hot: list[str] = []
    if profiler is not None:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        for key in ("cumulative", "tottime"):
            stats.sort_stats(key).print_stats(profile_top)
        hot = [line for line in text.getvalue().splitlines() if line.strip()]
    return {
        "bank": bank_facts(bank), "profile": profile.name,
        "seconds": seconds, "steps": timings.report(), "cprofile": hot,
        "status": result.status, "solver": result.solver,
        "objective_s": result.objective_s, "level_objective_s": result.level_objective_s,
        "baseline_s": result.baseline_s, "solves": result.solves, "buckets": result.buckets,
        "solve_time_s": result.solve_time_s,
        "model_objective_s": getattr(result, "model_objective_s", None),
        "chosen": getattr(result, "chosen", None),
        "placement": {str(d): t for d, t in sorted(result.layout.placement.items())},
        "tier_blocks": {str(d): v for d, v in result.tier_blocks.items()},
        "rss_after_imports_bytes": rss_imports, "peak_rss_bytes": peak_rss(),
        "utilization": getattr(result, "utilization", None),
        "wait_s": getattr(result, "wait_s", None),
    }


def child_stages(case: str) -> dict[str, Any]:
    """The pipeline step by step, with the peak RSS after each."""
    rss_imports = peak_rss()
    profile, bank, workload = build(case)
    stages: list[dict[str, Any]] = []

    def stage(name: str, run: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = run()
        stages.append({"stage": name, "seconds": time.perf_counter() - start,
                       "peak_rss_bytes": peak_rss()})
        return out

    popularity = stage("block_popularity (all levels)", lambda: {
        lv.depth: block_popularity(bank, workload.routing, lv.depth)
        for lv in bank.active_levels})
    problem = stage("build_problem (sort, buckets)", lambda: bk.build_problem(
        profile, bank, "parallel", popularity, BUCKETS, Policy()))
    timings = Timings()
    timings.wrap(bk, "build_model", "build_model")
    timings.wrap(bk, "solve_arrays", "solve")
    solution = stage("solve_buckets (auto)", lambda: bk.solve_buckets(problem, "auto"))
    _placement, block_map, masses = stage("to_block_map",
                                          lambda: bk.to_block_map(problem, solution.counts))
    moved = sum(int(ids.shape[0]) for ids in block_map.ids.values())
    return {
        "bank": bank_facts(bank), "profile": profile.name, "stages": stages,
        "solve_breakdown": timings.report(),
        "items": len(problem.items), "candidates": len(problem.candidates()),
        "model": model_size(bk.build_model(problem, None)),
        "status": solution.outcome.status, "solves": solution.solves,
        "solver_seconds": getattr(solution, "seconds", None),
        "objective_s": solution.objective_s, "objective_exact_s": problem.bound(masses),
        "moved_blocks": moved,
        "rss_after_imports_bytes": rss_imports, "peak_rss_bytes": peak_rss(),
    }


def best_z(problem: bk.BucketProblem, counts: np.ndarray) -> float:
    """The candidate z at which the parallel bound of these counts is smallest."""
    masses = problem.masses(counts)

    def value(z: float) -> float:
        return z + sum(float(masses[d] @ np.maximum(problem.tau[d] - z, 0.0)) for d in masses)

    return min(problem.candidates(), key=value)


def solve_fresh(problem: bk.BucketProblem, z: float | None, name: str,
                time_limit: float | None) -> dict[str, Any]:
    """Build the model for z afresh and solve it with one solver."""
    start = time.perf_counter()
    model = bk.build_model(problem, z)
    build_s = time.perf_counter() - start
    outcome, _x = bk.solve_arrays(model.arrays, name, time_limit)  # type: ignore[arg-type]
    internal = None
    return {"build_s": build_s, "solve_s": outcome.seconds, "internal_s": internal,
            "status": outcome.status, "objective_ms": outcome.objective,
            "size": model_size(model)}


def same(a: float | None, b: float | None) -> bool:
    return (a is not None and b is not None
            and abs(a - b) <= SAME_OBJECTIVE * max(abs(a), abs(b), 1e-300))


def comparable(hi: dict[str, Any], cb: dict[str, Any]) -> bool | None:
    """Whether both solvers reached the same optimum; None when there is nothing to compare
    (a solve stopped at its limit, or CBC gave no objective value: PuLP puts a `__dummy`
    variable, whose value stays None, into an objective without variables)."""
    if hi["status"] != "optimal" or cb["status"] != "optimal" or cb["objective_ms"] is None:
        return None
    return same(hi["objective_ms"], cb["objective_ms"])


def time_fixed_model(problem: bk.BucketProblem, z: float | None, repeats: int,
                     cbc_limit: float) -> dict[str, Any]:
    """One model, built afresh per solver and per repeat (solvers alternate), best time kept.

    CBC runs under `cbc_limit` seconds; a solve that hits it is not repeated."""
    runs: dict[str, list[dict[str, Any]]] = {"highs": [], "cbc": []}
    for _ in range(repeats):
        for name in ("highs", "cbc"):
            if runs[name] and runs[name][-1]["status"] != "optimal":
                continue
            runs[name].append(solve_fresh(problem, z, name,
                                          cbc_limit if name == "cbc" else None))
    hi = min(runs["highs"], key=lambda r: r["solve_s"])
    cb = min(runs["cbc"], key=lambda r: r["solve_s"])
    return {
        "z_s": z, "size": hi["size"], "build_model_s": min(r["build_s"] for r in runs["highs"]),
        "highs_solve_s": hi["solve_s"], "cbc_solve_s": cb["solve_s"],
        "ratio_highs_to_cbc": hi["solve_s"] / cb["solve_s"],
        "highs_internal_run_s": hi["internal_s"], "cbc_time_limit_s": cbc_limit,
        "highs_status": hi["status"], "cbc_status": cb["status"],
        "highs_objective_ms": hi["objective_ms"], "cbc_objective_ms": cb["objective_ms"],
        "same_objective": comparable(hi, cb),
        "repeats": {"highs": len(runs["highs"]), "cbc": len(runs["cbc"])},
    }


def child_compare(case: str, repeats: int, cbc_limit: float, sweep: bool) -> dict[str, Any]:
    """HiGHS against CBC on the same models: every candidate z once (the sweep), then the
    best z's model and the sequential one, best of `repeats`."""
    rss_imports = peak_rss()
    profile, bank, workload = build(case)
    start = time.perf_counter()
    popularity = {lv.depth: block_popularity(bank, workload.routing, lv.depth)
                  for lv in bank.active_levels}
    problem = bk.build_problem(profile, bank, "parallel", popularity, BUCKETS, Policy())
    del popularity
    setup = time.perf_counter() - start
    per_z: list[dict[str, Any]] = []
    if sweep:
        for z in problem.candidates():
            row: dict[str, Any] = {"z_s": z}
            for name in ("highs", "cbc"):
                row[name] = solve_fresh(problem, z, name, cbc_limit if name == "cbc" else None)
            row["same_objective"] = comparable(row["highs"], row["cbc"])
            per_z.append(row)
            print(f"[{case}] z = {1e3 * z:.4f} ms: HiGHS {row['highs']['solve_s']:.3f} s "
                  f"{row['highs']['status']}, CBC {row['cbc']['solve_s']:.3f} s "
                  f"{row['cbc']['status']}", file=sys.stderr, flush=True)
        z_best = min(per_z, key=lambda r: r["highs"]["objective_ms"])["z_s"]
    else:
        z_best = best_z(problem, bk.solve_buckets(problem, "highs").counts)
    models = [time_fixed_model(problem, z_best, repeats, cbc_limit),
              time_fixed_model(problem, None, repeats, cbc_limit)]
    summary = None
    if per_z:
        hs = sum(r["highs"]["solve_s"] for r in per_z)
        cs = sum(r["cbc"]["solve_s"] for r in per_z)
        summary = {
            "solves": len(per_z), "highs_solve_s": hs, "cbc_solve_s": cs,
            "ratio_highs_to_cbc": hs / cs,
            "highs_build_model_s": sum(r["highs"]["build_s"] for r in per_z),
            "cbc_not_optimal": sum(r["cbc"]["status"] != "optimal" for r in per_z),
            "highs_not_optimal": sum(r["highs"]["status"] != "optimal" for r in per_z),
            "highs_faster": sum(r["highs"]["solve_s"] < r["cbc"]["solve_s"] for r in per_z),
            "compared": sum(r["same_objective"] is not None for r in per_z),
            "all_same_objective": all(r["same_objective"] is not False for r in per_z),
        }
    return {
        "bank": bank_facts(bank), "setup_s": setup, "best_z_s": z_best, "models": models,
        "sweep": summary, "per_z": per_z, "cbc_time_limit_s": cbc_limit,
        "rss_after_imports_bytes": rss_imports, "peak_rss_bytes": peak_rss(),
    }


def child_main(argv: Sequence[str]) -> int:
    mode, case = argv[0], argv[1]
    if mode in ("optimize", "load"):
        out = child_optimize(case, profile_top=int(argv[2]), load=mode == "load")
    elif mode == "stages":
        out = child_stages(case)
    else:
        out = child_compare(case, int(argv[2]), float(argv[3]), argv[4] == "sweep")
    print(json.dumps(out))
    return 0


# ----------------------------------------------------------------------------- parent side





def run_child(*args: str, src: str | None = None) -> dict[str, Any]:
    """This script in a fresh interpreter; its JSON report, with the process's wall time.

    `src`: a checkout whose memsim the child imports (the baseline). The child's progress
    lines (starting with "[") are passed on to stderr as they come."""
    start = time.perf_counter()
    env = dict(os.environ)
    if src is not None:
        env[BASELINE_ENV] = os.path.abspath(src)
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), CHILD_FLAG, *args],
                                stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stderr is not None
        errors = []
        for line in proc.stderr:
            errors.append(line)
            if line.startswith("["):
                print(line, end="", file=sys.stderr, flush=True)
        code = proc.wait()
        out.seek(0)
        text = out.read()
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"child {' '.join(args)} failed (exit {code}):\n{''.join(errors)}")
    report = json.loads(text.strip().splitlines()[-1])
    report["process_seconds"] = wall
    return report


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def fmt_obj(x: float | None) -> str:
    return "-" if x is None else f"{x:.10g}"


def ms(x: float | None) -> str:
    return "-" if x is None else memsim.format_time(x)


def print_case(case: str, res: dict[str, Any]) -> None:
    opt_run, stages, compare = res.get("optimize"), res.get("stages"), res.get("compare")
    facts = (opt_run or stages or compare)["bank"]
    tiers = CASES[case]["profile"]["tiers"]
    levels = " + ".join(f"{b:,}" for b in facts["blocks_per_level"])
    sizes = ", ".join(memsim.format_size(b) for b in facts["block_bytes"])
    print(f"bank {case}: {facts['name']}, branching {facts['branching']}, 5 levels, "
          f"{levels} = {facts['blocks']:,} blocks")
    print(f"  blocks of {sizes}; {memsim.format_size(facts['bank_bytes'])} in all; profile "
          f"{CASES[case]['profile']['name']}: ram {tiers[0]['capacity']}, flash "
          f"{tiers[1]['capacity']}, disk {tiers[2]['capacity']}, cloud unlimited")
    if opt_run is not None:
        print(f"  optimize_blocks(buckets={BUCKETS}, solver=auto, verify_estimate=False): "
              f"{opt_run['seconds']:.3f} s (whole child process "
              f"{opt_run['process_seconds']:.2f} s), status {opt_run['status']}, "
              f"{opt_run['solves']} solves, peak RSS {mib(opt_run['peak_rss_bytes'])} "
              f"(after imports {mib(opt_run['rss_after_imports_bytes'])})")
        print(f"    objective (bound) {ms(opt_run['objective_s'])}; greedy "
              f"{ms(opt_run['baseline_s'])}; best whole-level placement "
              f"{ms(opt_run['level_objective_s'])}")
        for label, st in opt_run["steps"].items():
            print(f"    {label:<34}{st['seconds']:>9.3f} s  ({st['calls']} calls)")
        print("    blocks per tier: " + "; ".join(
            f"L{d} " + ", ".join(f"{t} {n:,}" for t, n in v.items())
            for d, v in opt_run["tier_blocks"].items()))
        for line in opt_run["cprofile"]:
            print(f"    | {line}")
    if stages is not None:
        print(f"  steps one by one ({stages['items']} buckets, {stages['candidates']} "
              f"candidate z, each ILP {stages['model']['variables']:,} integer variables and "
              f"{stages['model']['constraints']:,} constraints):")
        for st in stages["stages"]:
            print(f"    {st['stage']:<34}{st['seconds']:>9.3f} s   peak RSS after "
                  f"{mib(st['peak_rss_bytes']):>10}")
        br = stages["solve_breakdown"]
        if br:
            each = br["solve"]["each_s"]
            extra = ""
            if len(each) == stages["candidates"] + 1:
                extra = f" (an LP per candidate z, then the integer solve: {each[-1]:.3f} s)"
            print(f"      of which build_model {br['build_model']['seconds']:.3f} s, solve "
                  f"{br['solve']['seconds']:.3f} s, over {br['solve']['calls']} solves{extra}")
        print(f"    status {stages['status']}, {stages['solves']} solves, objective "
              f"{ms(stages['objective_s'])} (bucket-average popularity), "
              f"{ms(stages['objective_exact_s'])} (the blocks placed); "
              f"{stages['moved_blocks']:,} blocks off their level's default tier")
    if compare is not None:
        limit = compare["cbc_time_limit_s"]
        print(f"  HiGHS vs CBC on the same models (a fresh model per solve; CBC limited to "
              f"{limit:g} s per solve):")
        for m in compare["models"]:
            what = ("sequential, z = None" if m["z_s"] is None
                    else f"best z = {ms(m['z_s'])}")
            print(f"    {what:<24} HiGHS {m['highs_solve_s']:7.3f} s (in HiGHS "
                  f"{fmt_s(m['highs_internal_run_s'])} s) {m['highs_status']}, CBC "
                  f"{m['cbc_solve_s']:7.3f} s {m['cbc_status']}; ratio HiGHS/CBC "
                  f"{m['ratio_highs_to_cbc']:.2f}; objectives {fmt_obj(m['highs_objective_ms'])} / "
                  f"{fmt_obj(m['cbc_objective_ms'])} ms: "
                  + {True: "same within 1e-6", False: "NOT the same",
                     None: "not compared"}[m["same_objective"]])
        sw = compare["sweep"]
        if sw is not None:
            print(f"    {'sweep, every z once':<24} HiGHS {sw['highs_solve_s']:7.3f} s, CBC "
                  f"{sw['cbc_solve_s']:7.3f} s over {sw['solves']} solves; ratio HiGHS/CBC "
                  f"{sw['ratio_highs_to_cbc']:.2f}; HiGHS faster on {sw['highs_faster']}; CBC "
                  f"hit its limit {sw['cbc_not_optimal']} times; objectives "
                  + ("same within 1e-6" if sw["all_same_objective"] else "NOT all the same")
                  + f" where both have one ({sw['compared']} z)")
            print("      z (ms):     " + " ".join(f"{1e3 * r['z_s']:>7.3g}"
                                                  for r in compare["per_z"]))
            print("      HiGHS (s):  " + " ".join(f"{r['highs']['solve_s']:>7.2f}"
                                                  for r in compare["per_z"]))
            print("      CBC (s):    " + " ".join(
                f"{r['cbc']['solve_s']:>7.2f}" if r["cbc"]["status"] == "optimal"
                else f"{'>' + format(r['cbc']['solve_s'], '.0f'):>7}"
                for r in compare["per_z"]))


def check(results: dict[str, dict[str, Any]]
          ) -> tuple[list[tuple[bool | None, str]], list[str]]:
    """PASS/FAIL verdicts against the targets, and inconsistencies (exit status 1)."""
    verdicts: list[tuple[bool | None, str]] = []
    problems: list[str] = []
    for case, res in results.items():
        run = res.get("optimize")
        base = res.get("baseline")
        if run is not None and base is not None:
            verdicts.append((None, f"bank {case}: before/after in this run: baseline "
                                   f"{base['seconds']:.2f} s, peak RSS "
                                   f"{mib(base['peak_rss_bytes'])}; now {run['seconds']:.2f} s "
                                   f"({base['seconds'] / run['seconds']:.1f}x faster), "
                                   f"{mib(run['peak_rss_bytes'])}"))
        aware = res.get("load")
        if run is not None and aware is not None:
            ratio = aware["seconds"] / run["seconds"]
            util = ", ".join(f"{t} {u:.0%}" for t, u in (aware["utilization"] or {}).items())
            verdicts.append((aware["status"] == "optimal" and ratio <= LOAD_RATIO,
                             f"bank {case}: load-aware (max utilisation {LOAD_CEILING:g}, "
                             f"10/s) {aware['status']} in {aware['seconds']:.2f} s, "
                             f"{ratio:.2f}x the idle run's {run['seconds']:.2f} s; target <= "
                             f"{LOAD_RATIO:g}x (utilisation {util}; wait "
                             f"{ms(aware['wait_s'])}; bound {ms(aware['objective_s'])} vs "
                             f"{ms(run['objective_s'])} idle)"))
            if case == TARGET_CASE:
                verdicts.append((aware["seconds"] < TARGET_SECONDS
                                 and aware["peak_rss_bytes"] < TARGET_BYTES,
                                 f"bank {case}: load-aware in {aware['seconds']:.2f} s, peak "
                                 f"RSS {mib(aware['peak_rss_bytes'])}; target < "
                                 f"{TARGET_SECONDS:.0f} s and < {TARGET_BYTES / 1e9:.0f} GB"))
        if run is not None and case != TARGET_CASE:
            verdicts.append((None, f"bank {case}: optimize_blocks {run['status']} in "
                                   f"{run['seconds']:.2f} s, peak RSS "
                                   f"{mib(run['peak_rss_bytes'])} (no target)"))
        elif run is not None:
            ok_time = run["status"] == "optimal" and run["seconds"] < TARGET_SECONDS
            ok_mem = run["peak_rss_bytes"] < TARGET_BYTES
            run.update({"time_target_met": ok_time, "memory_target_met": ok_mem})
            verdicts.append((ok_time, f"bank {case}: optimize_blocks {run['status']} in "
                                      f"{run['seconds']:.2f} s; target optimal in < "
                                      f"{TARGET_SECONDS:.0f} s"))
            verdicts.append((ok_mem, f"bank {case}: peak RSS {mib(run['peak_rss_bytes'])} "
                                     f"({run['peak_rss_bytes'] / 1e9:.2f} GB); target < "
                                     f"{TARGET_BYTES / 1e9:.0f} GB"))
        if "stages" in res and res["stages"]["status"] != "optimal":
            problems.append(f"bank {case}: solve_buckets ended {res['stages']['status']}")
        comp = res.get("compare")
        if comp is None:
            continue
        rows = [(m["z_s"], m["highs_status"], m["cbc_status"], m["highs_objective_ms"],
                 m["cbc_objective_ms"]) for m in comp["models"]]
        rows += [(r["z_s"], r["highs"]["status"], r["cbc"]["status"],
                  r["highs"]["objective_ms"], r["cbc"]["objective_ms"]) for r in comp["per_z"]]
        for z, hs, cs, ho, co in rows:
            if hs != "optimal":
                problems.append(f"bank {case}, z = {z}: HiGHS ended {hs}")
            elif cs == "optimal" and co is not None and not same(ho, co):
                problems.append(f"bank {case}, z = {z}: HiGHS {ho} ms, CBC {co} ms")
    return verdicts, problems


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [CHILD_FLAG]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true",
                        help="skip the 12.4M-block bank")
    parser.add_argument("--solver-compare-only", action="store_true",
                        help="only compare HiGHS and CBC on the same models")
    parser.add_argument("--no-sweep", action="store_true",
                        help="compare the solvers on the best z's and the sequential model "
                             "only, not on every candidate z")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help="solves per solver of each fixed model, best kept "
                             f"(default {DEFAULT_REPEATS})")
    parser.add_argument("--cbc-time-limit", type=float, default=DEFAULT_CBC_LIMIT,
                        help="seconds per CBC solve, which can take very long on some z "
                             f"(default {DEFAULT_CBC_LIMIT:g})")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="run optimize_blocks under cProfile and show its N heaviest "
                             "functions (the timings then include cProfile's overhead)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--baseline-src", metavar="DIR",
                        help="also run optimize_blocks with the memsim package under DIR "
                             "(e.g. `git archive <commit> memsim | tar -x -C DIR`), for "
                             "before/after ratios from one run")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the HiGHS/CBC comparison")
    args = parser.parse_args(argv)
    if args.repeats < 1 or not args.cbc_time_limit > 0 or args.profile < 0:
        parser.error("--repeats must be at least 1, --cbc-time-limit positive, --profile >= 0")

    load_before = load_average()
    cases = [c for c in CASES if not (args.skip_large and CASES[c]["large"])]
    results: dict[str, dict[str, Any]] = {}
    for case in cases:
        res: dict[str, Any] = {}
        if not args.solver_compare_only:
            if args.baseline_src:
                res["baseline"] = run_child("optimize", case, "0", src=args.baseline_src)
                print(f"[{case}] baseline optimize_blocks {res['baseline']['seconds']:.2f} s",
                      file=sys.stderr, flush=True)
            res["optimize"] = run_child("optimize", case, str(args.profile))
            res["load"] = run_child("load", case, "0")
            print(f"[{case}] load-aware optimize_blocks {res['load']['seconds']:.2f} s, "
                  f"{res['load']['status']}", file=sys.stderr, flush=True)
            print(f"[{case}] optimize_blocks {res['optimize']['seconds']:.2f} s, "
                  f"{res['optimize']['status']}, peak RSS "
                  f"{mib(res['optimize']['peak_rss_bytes'])}", file=sys.stderr, flush=True)
            res["stages"] = run_child("stages", case)
            print(f"[{case}] steps: " + ", ".join(
                f"{st['stage'].split()[0]} {st['seconds']:.2f} s"
                for st in res["stages"]["stages"]), file=sys.stderr, flush=True)
        if not args.no_compare:
            res["compare"] = run_child("compare", case, str(args.repeats),
                                       str(args.cbc_time_limit),
                                       "nosweep" if args.no_sweep else "sweep")
        results[case] = res
    load_after = load_average()
    verdicts, problems = check(results)

    report = {
        "cases": results,
        "buckets_per_level": BUCKETS,
        "time_target_s": TARGET_SECONDS,
        "memory_target_bytes": TARGET_BYTES,
        "all_targets_met": all(ok is not False for ok, _ in verdicts),
        "problems": problems,
        "children_peak_rss_bytes": children_peak_rss(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pulp": getattr(pulp, "__version__", None),
        "highspy": version_of("highspy"),
        "memsim": memsim.__version__,
    }

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"memsim {memsim.__version__} block-optimizer benchmark (Python "
              f"{platform.python_version()}, PuLP {report['pulp']}, highspy "
              f"{report['highspy']}): Zipf s=1 routing, parallel fetch, {BUCKETS} buckets "
              "per level, each run in a fresh child process")
        for case, res in results.items():
            print()
            print_case(case, res)
        print()
        print(f"{'bank':<7}{'blocks':>12}{'popul. s':>10}{'bucket s':>10}{'solve s':>9}"
              f"{'solves':>7}{'map s':>7}{'total s':>9}{'peak RSS':>11}{'HiGHS/CBC':>11}"
              "  status")
        for case, res in results.items():
            comp, st, run = res.get("compare"), res.get("stages"), res.get("optimize")
            cols = [f"{x['seconds']:.3f}" for x in st["stages"]] if st else ["-"] * 4
            total = f"{run['seconds']:.3f}" if run else "-"
            peak = mib(run["peak_rss_bytes"]) if run else "-"
            facts = (run or st or comp)["bank"]
            ratio = f"{comp['models'][0]['ratio_highs_to_cbc']:.2f}" if comp else "-"
            print(f"{case:<7}{facts['blocks']:>12,}{cols[0]:>10}{cols[1]:>10}"
                  f"{cols[2]:>9}{(st['solves'] if st else '-'):>7}{cols[3]:>7}{total:>9}"
                  f"{peak:>11}{ratio:>11}  {run['status'] if run else '-'}")
        print("(HiGHS/CBC: solve-time ratio on the best z's model; total: optimize_blocks)")
        print()
        for ok, line in verdicts:
            print(f"{ {True: 'PASS', False: 'FAIL', None: 'INFO'}[ok]}: {line}")
        for line in problems:
            print(f"MISMATCH: {line}")
        print(f"note: wall-clock timings on a possibly shared machine ({os.cpu_count()} CPUs); "
              f"load average (1, 5, 15 min) before {format_load(load_before)}, after "
              f"{format_load(load_after)}")
    return 1 if problems else 0


def version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
