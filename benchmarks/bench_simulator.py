"""Benchmark the simulator: queries per second against a minimal SimPy program, and the paper
example at scale.

Part 1 (same work, two programs). Four tiers with FCFS channels and a fixed service time
(4, 4, 8 and 8 ms on 1, 1, 2 and 2 channels), Poisson arrivals at 125 queries/s (every tier
about 50% busy, so queueing adds some 15% to the mean); each query fetches one block from
each tier in parallel and waits for the slowest. The same system runs

* as a minimal idiomatic SimPy program: 4 `simpy.Resource`s, a source process, one process
  per query starting 4 sub-processes (`with res.request() as r: yield r; yield
  env.timeout(service)`) and waiting on `env.all_of`;
* through `memsim.simulate` with every feature off: constant zero latency, enough aggregate
  bandwidth that transfers never share (service = bytes / bandwidth, fixed), a 4-level bank
  with one level per tier, parallel fetch, no cache, no resident levels, no trace.

Both see the same arrival times (the baseline regenerates memsim's from the same seed, outside
its timing; memsim's timing includes drawing its arrivals and paths) and the same service
times, so their mean fetch times over the measured queries (after memsim's 10% warm-up) must
agree: exit status 1 if they differ by more than 5%. The target is memsim >= 0.5x the
baseline's queries per second. Timings are the best of --repeats runs, the two programs
alternating, after one untimed warm-up run of each.

Part 2 (scale). 1,000,000 queries (--paper-queries) of the paper example: profile
paper-hypothetical, bank paper-storage-example, layout paper-hierarchical, Poisson 20/s with
Zipf routing (s = 1). It runs in a child process (this script with a hidden flag) so that the
child's peak resident memory (getrusage RUSAGE_CHILDREN) covers that run alone. Targets: under
60 s and under 1 GiB.

Nothing here asserts on time: the figures, ratios and PASS/FAIL lines are printed (or given
as JSON) with the load average before and after, because the machine may be shared.

    python benchmarks/bench_simulator.py [--queries N] [--repeats R] [--paper-queries M]
                                         [--skip-paper] [--json]
"""

from __future__ import annotations

# First: _common sets one-thread numeric pools before numpy is imported.
from _common import children_peak_rss, format_load, load_average

# isort: split

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Generator, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import simpy  # noqa: E402

import memsim  # noqa: E402

DEFAULT_QUERIES = 200_000
DEFAULT_REPEATS = 3
DEFAULT_PAPER_QUERIES = 1_000_000
SEED = 20251002
WARMUP = 0.1  # memsim.simulate's default warm-up fraction, left out of both means
RATE = 125.0  # queries per second
TARGET_RATIO = 0.5  # memsim's queries/s over the baseline's
TARGET_PAPER_S = 60.0
TARGET_PAPER_BYTES = 1 << 30
MEAN_TOLERANCE = 0.05  # relative difference of the two mean fetch times that fails the run

# (name, kind, service time, channels): utilisation RATE * service / channels = 0.5 each.
TIERS = [
    ("flash", "flash", 0.004, 1),
    ("ssd", "flash", 0.004, 1),
    ("hdd", "disk", 0.008, 2),
    ("cloud", "cloud", 0.008, 2),
]
# A tiny custom anchor: an FFN block of multiplier 1 is 3 * layers * d_model parameters,
# bf16, so 6,000 bytes on every level.
ANCHOR = {"name": "bench-tiny", "layers": 1, "d_model": 1000, "d_ff": 4000, "heads": 16,
          "head_dim": 64, "params": 1_000_000}
BLOCK_BYTES = 3 * ANCHOR["layers"] * ANCHOR["d_model"] * 2

PAPER = {
    "profile": "paper-hypothetical",
    "bank": "paper-storage-example",
    "layout": "paper-hierarchical",
    "workload": {"arrivals": {"kind": "poisson", "rate": "20/s"},
                 "routing": {"kind": "zipf", "s": 1.0}},
}
CHILD_FLAG = "--_paper-child"


# ----------------------------------------------------------------------------- the system


def build() -> tuple[memsim.Profile, memsim.Bank, memsim.Layout, memsim.Workload,
                     list[tuple[int, float]]]:
    """memsim's profile, bank, layout and workload, and per tier (channels, service seconds)."""
    tiers: list[dict[str, Any]] = [
        {"name": "ram", "kind": "ram", "capacity": "16 GB", "bandwidth": "38.4 GB/s",
         "latency": "100 ns", "concurrency": 8},
    ]
    for name, kind, service, channels in TIERS:
        stream = BLOCK_BYTES / service
        tiers.append({"name": name, "kind": kind, "capacity": "unlimited", "latency": 0,
                      "bandwidth": stream, "aggregate_bandwidth": stream * channels,
                      "concurrency": channels})
    profile = memsim.profile_from_dict(
        {"name": "bench-sim-4tier", "description": "four fixed-service tiers", "tiers": tiers},
        file="<bench profile>")
    bank = memsim.bank_from_dict(
        {"name": "bench-sim-4level", "branching": 16, "levels": [1, 1, 1, 1],
         "memory_type": "ffn", "anchor": ANCHOR, "dtype": "bf16"}, file="<bench bank>")
    layout = memsim.layout_from_dict(
        {"name": "bench-sim-one-level-per-tier", "fetch": "parallel",
         "placement": {d: t[0] for d, t in enumerate(TIERS, start=1)}, "resident": []},
        file="<bench layout>")
    workload = memsim.workload_from_dict(
        {"name": "bench-sim-poisson", "arrivals": {"kind": "poisson", "rate": RATE},
         "routing": "uniform"}, file="<bench workload>")
    layout.check(bank, profile)
    if layout.cache is not None or layout.resident:
        raise SystemExit("bench setup: the layout should have no cache and no resident levels")

    # Everything off: one request per block, zero constant latency, independent transfers,
    # so each request holds a channel for exactly bytes / bandwidth.
    service: list[tuple[int, float]] = []
    for lv, (name, _kind, wanted, channels) in zip(bank.active_levels, TIERS, strict=True):
        tier = profile.tier(name)
        if lv.block_bytes != BLOCK_BYTES or layout.placement[lv.depth] != name:
            raise SystemExit(f"bench setup: level {lv.depth} should be {BLOCK_BYTES} bytes on "
                             f"{name}")
        if not (tier.latency.is_constant and tier.latency.mean() == 0.0
                and tier.request_overhead == 0.0 and tier.max_request_size is None
                and tier.total_bandwidth >= tier.concurrency * tier.stream_bandwidth):
            raise SystemExit(f"bench setup: tier {name} should have fixed service")
        seconds = float(lv.block_bytes) / tier.stream_bandwidth  # as memsim computes it
        if not math.isclose(seconds, wanted, rel_tol=1e-12):
            raise SystemExit(f"bench setup: tier {name} serves in {seconds} s, not {wanted} s")
        service.append((channels, seconds))
    return profile, bank, layout, workload, service


def arrival_times(workload: memsim.Workload, queries: int, seed: int) -> np.ndarray:
    """The arrival times memsim.simulate draws for this seed (its first spawned stream)."""
    arrival_rng = np.random.default_rng(seed).spawn(4)[0]
    return workload.arrivals.arrival_times(queries, arrival_rng)


# ----------------------------------------------------------------------------- baseline


def simpy_baseline(arrivals: np.ndarray, service: Sequence[tuple[int, float]]) -> list[float]:
    """The minimal SimPy program: fetch time of every query, in arrival order."""
    env = simpy.Environment()
    tiers = [(simpy.Resource(env, capacity=channels), seconds) for channels, seconds in service]
    fetch_times = [0.0] * len(arrivals)

    def fetch(res: simpy.Resource, seconds: float) -> Generator[Any, Any, None]:
        with res.request() as req:
            yield req
            yield env.timeout(seconds)

    def query(i: int) -> Generator[Any, Any, None]:
        start = env.now
        yield env.all_of([env.process(fetch(res, seconds)) for res, seconds in tiers])
        fetch_times[i] = env.now - start  # all four started at `start`: the slowest one

    def source() -> Generator[Any, Any, None]:
        for i, t in enumerate(arrivals.tolist()):
            yield env.timeout(t - env.now)
            env.process(query(i))

    env.process(source())
    env.run()
    return fetch_times


# ----------------------------------------------------------------------------- timing




def best_times(runs: Sequence[Callable[[], Any]], repeats: int) -> list[tuple[float, Any]]:
    """Shortest wall time of each run over `repeats` rounds (runs alternating within a round,
    after one untimed warm-up round), with each run's last result."""
    results = [run() for run in runs]
    best = [math.inf] * len(runs)
    for _ in range(repeats):
        for k, run in enumerate(runs):
            start = time.perf_counter()
            results[k] = run()
            best[k] = min(best[k], time.perf_counter() - start)
    return list(zip(best, results, strict=True))


# ----------------------------------------------------------------------------- paper example


def paper_child(queries: int) -> int:
    """Run the paper example once (in the child process) and print its figures as JSON."""
    profile = memsim.load_profile(PAPER["profile"])
    bank = memsim.load_bank(PAPER["bank"])
    layout = memsim.load_layout(PAPER["layout"])
    workload = memsim.workload_from_dict(PAPER["workload"], file="<bench paper workload>")
    start = time.perf_counter()
    result = memsim.simulate(profile, bank, layout, workload, queries=queries, seed=SEED)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "queries": queries, "measured_queries": result.queries, "simulate_seconds": seconds,
        "fetch_time_s": result.fetch_time_s, "utilization": result.utilization,
        "offered_load": result.offered_load, "simulated_s": result.simulated_s,
        "unstable": result.unstable,
    }))
    return 0



def run_paper(queries: int) -> dict[str, Any]:
    """The paper example in a child process: its figures, wall time and peak RSS."""
    before = children_peak_rss()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), CHILD_FLAG, str(queries)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak = children_peak_rss()
    if proc.returncode != 0:
        raise RuntimeError(f"paper run failed (exit {proc.returncode}):\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    seconds = out["simulate_seconds"]
    out.update({
        "process_seconds": wall,
        "queries_per_s": queries / seconds,
        "peak_rss_bytes": peak,
        # RUSAGE_CHILDREN keeps the largest child ever waited for (even a pyenv shim's helpers
        # from before this interpreter started): the peak is this run's if it grew.
        "children_peak_rss_before_bytes": before,
        "peak_rss_is_this_run": peak > before,
        "time_target_s": TARGET_PAPER_S,
        "memory_target_bytes": TARGET_PAPER_BYTES,
        "time_target_met": seconds < TARGET_PAPER_S,
        "memory_target_met": peak < TARGET_PAPER_BYTES,
    })
    return out


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [CHILD_FLAG]:
        return paper_child(int(argv[1]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES,
                        help=f"queries per run of each program (default {DEFAULT_QUERIES:,})")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help=f"timed runs per program, best kept (default {DEFAULT_REPEATS})")
    parser.add_argument("--paper-queries", type=int, default=DEFAULT_PAPER_QUERIES,
                        help="queries of the paper example (default "
                             f"{DEFAULT_PAPER_QUERIES:,})")
    parser.add_argument("--skip-paper", action="store_true",
                        help="skip the paper example at scale")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.queries < 100 or args.repeats < 1 or args.paper_queries < 1:
        parser.error("--queries must be at least 100, --repeats and --paper-queries at least 1")

    load_before = load_average()
    profile, bank, layout, workload, service = build()
    n = args.queries
    arrivals = arrival_times(workload, n, SEED)
    warm = int(n * WARMUP)

    def baseline() -> list[float]:
        return simpy_baseline(arrivals, service)

    def with_memsim() -> memsim.SimulationResult:
        return memsim.simulate(profile, bank, layout, workload, queries=n, seed=SEED,
                               warmup=WARMUP)

    (t_base, base_times), (t_mem, mem_result) = best_times([baseline, with_memsim],
                                                          args.repeats)
    base_qps, mem_qps = n / t_base, n / t_mem
    ratio = mem_qps / base_qps
    ratio_met = ratio >= TARGET_RATIO

    measured = np.asarray(base_times[warm:])
    base_mean = float(measured.mean())
    base_p99 = float(np.quantile(measured, 0.99))
    mem_mean = mem_result.mean_s
    rel_diff = abs(mem_mean - base_mean) / base_mean
    # What queueing adds to the mean, beyond the slowest tier's service: the part of the
    # fetch time that the FCFS channels (not the fixed service) produce.
    slowest = max(seconds for _channels, seconds in service)
    base_queueing, mem_queueing = base_mean - slowest, mem_mean - slowest
    agree = rel_diff <= MEAN_TOLERANCE and mem_result.queries == len(measured)
    utilization = {k: round(v, 4) for k, v in mem_result.utilization.items()}

    paper = None if args.skip_paper else run_paper(args.paper_queries)
    load_after = load_average()

    rows = [
        {"program": "minimal SimPy baseline", "queries": n, "seconds": t_base,
         "queries_per_s": base_qps},
        {"program": "memsim.simulate (features off)", "queries": n, "seconds": t_mem,
         "queries_per_s": mem_qps},
    ]
    report = {
        "same_work": {
            "programs": rows,
            "ratio_memsim_to_baseline": ratio,
            "target_ratio": TARGET_RATIO,
            "target_met": ratio_met,
            "rate_per_s": RATE,
            "tiers": [{"name": name, "channels": c, "service_s": s}
                      for (name, *_), (c, s) in zip(TIERS, service, strict=True)],
            "utilization": utilization,
            "cross_check": {
                "measured_queries": len(measured),
                "baseline_mean_s": base_mean, "memsim_mean_s": mem_mean,
                "baseline_p99_s": base_p99, "memsim_p99_s": mem_result.fetch_time_s["p99"],
                "slowest_service_s": slowest,
                "baseline_queueing_s": base_queueing, "memsim_queueing_s": mem_queueing,
                "relative_difference": rel_diff, "allowed_relative": MEAN_TOLERANCE,
                "agree": agree,
            },
        },
        "paper_example": paper,
        "repeats": args.repeats,
        "seed": SEED,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "simpy": simpy.__version__,
        "numpy": np.__version__,
        "memsim": memsim.__version__,
    }

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        tiers = ", ".join(f"{name} {1e3 * s:g} ms x{c}"
                          for (name, *_), (c, s) in zip(TIERS, service, strict=True))
        print(f"memsim {memsim.__version__} simulator benchmark (simpy {simpy.__version__}, "
              f"Python {platform.python_version()}), best of {args.repeats}")
        print(f"same work: 4 parallel fetches per query from 4 FCFS tiers ({tiers}), "
              f"Poisson {RATE:g}/s, seed {SEED}")
        print()
        print(f"{'program':<34}{'queries':>10}{'seconds':>10}{'queries/s':>12}")
        for row in rows:
            print(f"{row['program']:<34}{row['queries']:>10,}{row['seconds']:>10.3f}"
                  f"{row['queries_per_s']:>12,.0f}")
        print()
        print(f"ratio memsim / baseline: {ratio:.2f}x (target >= {TARGET_RATIO}x)")
        print("utilisation (memsim): "
              + ", ".join(f"{k} {v:.3f}" for k, v in utilization.items()))
        print(f"mean fetch time over {len(measured):,} measured queries: baseline "
              f"{memsim.format_time(base_mean)}, memsim {memsim.format_time(mem_mean)} "
              f"(difference {100 * rel_diff:.3f}%, allowed {100 * MEAN_TOLERANCE:.0f}%): "
              f"{'agree' if agree else 'MISMATCH'}; p99 baseline "
              f"{memsim.format_time(base_p99)}, memsim "
              f"{memsim.format_time(mem_result.fetch_time_s['p99'])}")
        print(f"queueing beyond the slowest service ({memsim.format_time(slowest)}): baseline "
              f"{memsim.format_time(base_queueing)}, memsim {memsim.format_time(mem_queueing)} "
              f"({100 * base_queueing / base_mean:.1f}% of the mean)")
        if paper is not None:
            pct = paper["fetch_time_s"]
            print()
            print(f"paper example: {paper['queries']:,} queries of {PAPER['layout']} "
                  f"({PAPER['bank']} on {PAPER['profile']}), Poisson 20/s, Zipf s=1, "
                  "in a child process")
            print(f"  simulate(): {paper['simulate_seconds']:.2f} s "
                  f"({paper['queries_per_s']:,.0f} queries/s); whole child process "
                  f"{paper['process_seconds']:.2f} s")
            print(f"  peak RSS of the child: {paper['peak_rss_bytes'] / 2**20:,.0f} MiB")
            print(f"  fetch time over {paper['measured_queries']:,} measured queries: mean "
                  f"{memsim.format_time(pct['mean'])}, p50 {memsim.format_time(pct['p50'])}, "
                  f"p99 {memsim.format_time(pct['p99'])}; utilisation "
                  + ", ".join(f"{k} {v:.3f}" for k, v in paper["utilization"].items()))
        print()
        verdict = "PASS" if ratio_met else "FAIL"
        print(f"{verdict}: memsim {mem_qps:,.0f} queries/s = {ratio:.2f}x the SimPy baseline "
              f"({base_qps:,.0f}/s); target >= {TARGET_RATIO}x")
        if paper is not None:
            verdict = "PASS" if paper["time_target_met"] else "FAIL"
            print(f"{verdict}: paper example, {paper['queries']:,} queries in "
                  f"{paper['simulate_seconds']:.1f} s; target < {TARGET_PAPER_S:.0f} s")
            verdict = "PASS" if paper["memory_target_met"] else "FAIL"
            print(f"{verdict}: paper example peak RSS {paper['peak_rss_bytes'] / 2**20:,.0f} MiB; "
                  f"target < {TARGET_PAPER_BYTES / 2**20:,.0f} MiB")
        print(f"note: wall-clock timings on a possibly shared machine ({os.cpu_count()} CPUs); "
              f"load average (1, 5, 15 min) before {format_load(load_before)}, after "
              f"{format_load(load_after)}")
    if not agree:
        print("error: the SimPy baseline and memsim disagree on the mean fetch time",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
