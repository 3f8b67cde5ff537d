"""Benchmark the estimator: queries per second on one core, vectorized vs a pure-Python loop.

A 4-level bank (160M anchor, multipliers 256, 64, 16, 4) is placed one level per tier on a
profile whose four fetched tiers (flash, ssd, hdd, cloud) all have lognormal latencies, fetched
in parallel. The script times

* memsim's vectorized path, `memsim.cost_model.sample_fetch`, for --queries queries;
* the full `memsim.estimate` (sampling plus mean and percentiles) for the same number;
* a plain Python loop computing the same model query by query (lognormal latency + bytes /
  bandwidth per tier, max over tiers) for --python-queries queries;

checks that the vectorized path and the loop agree on the mean fetch time within sampling error
(exit status 1 if not), and reports whether the vectorized path reaches the target of
5 million queries per second. Timings are the best of --repeats runs; the machine may be
shared, so the load average is printed beside them.

    python benchmarks/bench_estimator.py [--queries N] [--repeats R] [--json]
"""

from __future__ import annotations

# First: _common sets one-thread numeric pools before numpy is imported.
from _common import format_load, load_average

# isort: split

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import memsim  # noqa: E402
from memsim.cost_model import Request, fetch_requests, sample_fetch  # noqa: E402

TARGET_QPS = 5_000_000
DEFAULT_QUERIES = 1_000_000
DEFAULT_PYTHON_QUERIES = 100_000
DEFAULT_REPEATS = 5
SEED = 20251002
REL_TOLERANCE = 0.01  # the means must agree within 1% ...
SIGMAS = 4.0  # ... or within 4 standard errors of their difference, whichever is wider

PROFILE = {
    "name": "bench-4tier",
    "description": "RAM plus four lognormal-latency tiers, for the estimator benchmark",
    "tiers": [
        {"name": "ram", "kind": "ram", "capacity": "16 GB", "bandwidth": "38.4 GB/s",
         "latency": "100 ns", "concurrency": 8},
        {"name": "flash", "kind": "flash", "capacity": "64 GB", "bandwidth": "4 GB/s",
         "latency": {"p50": "80 us", "p99": "400 us"}, "concurrency": 4},
        {"name": "ssd", "kind": "flash", "capacity": "512 GB", "bandwidth": "2 GB/s",
         "latency": {"p50": "150 us", "p99": "1 ms"}, "concurrency": 4},
        {"name": "hdd", "kind": "disk", "capacity": "4 TB", "bandwidth": "200 MB/s",
         "latency": {"p50": "8 ms", "p99": "30 ms"}, "concurrency": 2},
        {"name": "cloud", "kind": "cloud", "capacity": "unlimited", "bandwidth": "100 MB/s",
         "latency": {"p50": "30 ms", "p99": "200 ms"}, "concurrency": 16,
         "request_overhead": "1 ms"},
    ],
}
BANK = {
    "name": "bench-4level",
    "branching": 16,
    "levels": [256, 64, 16, 4],
    "memory_type": "ffn",
    "anchor": "160M",
    "dtype": "bf16",
}
LAYOUT = {
    "name": "bench-one-level-per-tier",
    "fetch": "parallel",
    "placement": {1: "flash", 2: "ssd", 3: "hdd", 4: "cloud"},
    "resident": [],
}


def build() -> tuple[memsim.Profile, memsim.Bank, memsim.Layout, list[Request]]:
    """The benchmark's profile, bank, layout and per-query requests, checked."""
    profile = memsim.profile_from_dict(PROFILE, file="<bench profile>")
    bank = memsim.bank_from_dict(BANK, file="<bench bank>")
    layout = memsim.layout_from_dict(LAYOUT, file="<bench layout>")
    layout.check(bank, profile)
    used: dict[str, int] = {}
    for lv in bank.active_levels:
        tier = layout.placement[lv.depth]
        used[tier] = used.get(tier, 0) + lv.bytes
    for name, size in used.items():
        cap = profile.tier(name).capacity_bytes
        if size > cap:
            raise SystemExit(f"bench setup: {memsim.format_size(size)} placed on {name}, "
                             f"which holds {memsim.format_size(cap)}")
    requests = fetch_requests(bank, layout)
    if len(requests) != 4 or len({r.tier for r in requests}) != 4:
        raise SystemExit("bench setup: expected one fetched level on each of four tiers")
    for r in requests:
        if profile.tier(r.tier).latency.distribution != "lognormal":
            raise SystemExit(f"bench setup: tier {r.tier} should have a lognormal latency")
    return profile, bank, layout, requests


def pin_one_core(cpu: int | None) -> int | None:
    """Restrict this process to one CPU; the CPU used, or None where unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    choice = allowed[0] if cpu is None else cpu
    if choice not in allowed:
        raise SystemExit(f"--cpu {cpu}: this process may run on CPUs {allowed}")
    os.sched_setaffinity(0, {choice})
    return choice


def best_time(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Shortest wall time of `repeats` calls (after one untimed warm-up) and the last result."""
    result = run()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def python_loop(params: Sequence[tuple[float, float, float]], queries: int,
                seed: int) -> list[float]:
    """The same model in plain Python: per tier exp(mu + sigma z) + overhead + bytes/bandwidth,
    the query waiting for the slowest tier (parallel fetch, one request per tier)."""
    gauss = random.Random(seed).gauss
    exp = math.exp
    times = []
    append = times.append
    for _ in range(queries):
        slowest = 0.0
        for mu, sigma, fixed in params:
            t = exp(mu + sigma * gauss(0.0, 1.0)) + fixed
            if t > slowest:
                slowest = t
        append(slowest)
    return times


def loop_params(profile: memsim.Profile,
                requests: Sequence[Request]) -> list[tuple[float, float, float]]:
    """(mu, sigma, fixed seconds) per request for `python_loop`."""
    out = []
    for r in requests:
        tier = profile.tier(r.tier)
        lat = tier.latency
        fixed = tier.request_overhead + r.bytes / tier.stream_bandwidth
        out.append((lat.mu, lat.sigma, fixed))
    return out




def mean_and_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES,
                        help=f"queries for the vectorized runs (default {DEFAULT_QUERIES:,})")
    parser.add_argument("--python-queries", type=int, default=None,
                        help="queries for the pure-Python loop (default "
                             f"min({DEFAULT_PYTHON_QUERIES:,}, --queries))")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help=f"timed runs per method, best kept (default {DEFAULT_REPEATS})")
    parser.add_argument("--cpu", type=int, default=None,
                        help="CPU to pin to (default: the first one allowed)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--strict", action="store_true",
                        help="also exit with status 2 when the 5M queries/s target is missed")
    args = parser.parse_args(argv)
    if args.queries < 2 or args.repeats < 1:
        parser.error("--queries must be at least 2 and --repeats at least 1")
    py_queries = (min(DEFAULT_PYTHON_QUERIES, args.queries) if args.python_queries is None
                  else args.python_queries)
    if py_queries < 2:
        parser.error("--python-queries must be at least 2")

    cpu = pin_one_core(args.cpu)
    load_before = load_average()
    profile, bank, layout, requests = build()
    n = args.queries

    def vectorized() -> np.ndarray:
        rng = np.random.default_rng(SEED)
        return sample_fetch(profile, requests, layout.fetch, n, rng).total

    def full_estimate() -> memsim.Estimate:
        return memsim.estimate(profile, bank, layout, samples=n, seed=SEED)

    params = loop_params(profile, requests)

    def pure_python() -> list[float]:
        return python_loop(params, py_queries, SEED)

    t_vec, totals = best_time(vectorized, args.repeats)
    t_est, est = best_time(full_estimate, args.repeats)
    t_py, py_times = best_time(pure_python, max(1, min(args.repeats, 3)))

    rows = [
        {"method": "vectorized sample_fetch", "queries": n, "seconds": t_vec,
         "queries_per_s": n / t_vec},
        {"method": "full memsim.estimate", "queries": n, "seconds": t_est,
         "queries_per_s": n / t_est},
        {"method": "pure-Python loop", "queries": py_queries, "seconds": t_py,
         "queries_per_s": py_queries / t_py},
    ]
    ratio = rows[0]["queries_per_s"] / rows[2]["queries_per_s"]
    target_met = rows[0]["queries_per_s"] >= TARGET_QPS

    vec_mean, vec_se = mean_and_se(totals)
    py_mean, py_se = mean_and_se(py_times)
    diff = abs(vec_mean - py_mean)
    allowed = max(REL_TOLERANCE * py_mean, SIGMAS * math.hypot(vec_se, py_se))
    est_mean = est.fetch_time_s["mean"]
    agree = diff <= allowed and math.isclose(est_mean, vec_mean, rel_tol=1e-9)
    load = load_average()

    report = {
        "methods": rows,
        "ratio_vectorized_to_python": ratio,
        "target_queries_per_s": TARGET_QPS,
        "target_met": target_met,
        "cross_check": {
            "vectorized_mean_s": vec_mean, "vectorized_se_s": vec_se,
            "python_mean_s": py_mean, "python_se_s": py_se,
            "estimate_mean_s": est_mean,
            "relative_difference": diff / py_mean, "allowed_relative": allowed / py_mean,
            "agree": agree,
        },
        "estimate_percentiles_s": est.fetch_time_s,
        "repeats": args.repeats,
        "seed": SEED,
        "cpu": cpu,
        "load_average_before": load_before,
        "load_average_after": load,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "memsim": memsim.__version__,
    }

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"memsim {memsim.__version__} estimator benchmark: 4-level bank "
              f"({', '.join(f'L{r.depth}->{r.tier}' for r in requests)}), lognormal latencies, "
              f"{layout.fetch} fetch, pinned to CPU {cpu if cpu is not None else '(unpinned)'}, "
              f"best of {args.repeats}")
        print()
        print(f"{'method':<26}{'queries':>12}{'seconds':>12}{'queries/s':>16}")
        for row in rows:
            print(f"{row['method']:<26}{row['queries']:>12,}{row['seconds']:>12.4f}"
                  f"{row['queries_per_s']:>16,.0f}")
        print()
        print(f"ratio vectorized / pure-Python: {ratio:,.1f}x")
        pct = est.fetch_time_s
        print(f"mean fetch time: vectorized {memsim.format_time(vec_mean)}, pure-Python "
              f"{memsim.format_time(py_mean)} (difference {100 * diff / py_mean:.2f}%, allowed "
              f"{100 * allowed / py_mean:.2f}%): {'agree' if agree else 'MISMATCH'}; "
              f"p50 {memsim.format_time(pct['p50'])}, p99 {memsim.format_time(pct['p99'])}")
        verdict = "PASS" if target_met else "FAIL"
        print(f"{verdict}: vectorized {rows[0]['queries_per_s'] / 1e6:.2f}M queries/s vs target "
              f"{TARGET_QPS / 1e6:.0f}M queries/s on one core")
        print(f"note: wall-clock timings on a possibly shared machine ({os.cpu_count()} CPUs); "
              f"load average (1, 5, 15 min) before {format_load(load_before)}, after "
              f"{format_load(load)}")
    if not agree:
        print("error: the vectorized model and the pure-Python loop disagree on the mean "
              "fetch time", file=sys.stderr)
        return 1
    if args.strict and not target_met:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
