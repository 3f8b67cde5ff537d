"""Benchmark the sweep runner: points per second against a plain loop over the public API.

Two sets of points on the shipped phone profile, bank C2 and workload zipf-topic, with a
fixed layout (levels 1-3 on ram, flash, ssd-ext; no optimize stage):

* estimator points: a grid of flash bandwidth (with the aggregate bandwidth) x rate, the
  estimate stage only with 2,000 samples (about a millisecond each);
* simulate points: a smaller grid, estimate plus simulate with 2,500 queries (100 ms+ each).

Each set runs

* as a plain Python loop over the public API (profile_from_dict, bank_from_dict,
  layout_from_dict, workload_from_dict(...).at_rate, estimate, simulate), no sweep code;
* through `run_sweep` into a results dataset with InlineExecutor, ProcessExecutor(1),
  ProcessExecutor(2) and a two-worker Dask LocalCluster, running the stages
  (`memsim.sweep.stages.run_batch`); with `--run api` the runner calls this script's own
  loop body instead, which isolates the runner's overhead from the stages'.

Executors are started and warmed up (workers forked, modules imported) before the clock
starts; their start-up time is printed beside. Targets (1 worker against the plain loop):
simulate points within 10% (overhead), estimator points at least half its throughput
(batching). Nothing asserts on time; `--strict` exits 2 when a target is missed.

    python benchmarks/bench_sweep.py [--quick] [--run stages|api] [--json] [--strict]
"""

from __future__ import annotations

# First: _common sets one-thread numeric pools before numpy is imported.
from _common import format_load, load_average

# isort: split

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402

import memsim  # noqa: E402
from memsim.resources import resolve  # noqa: E402
from memsim.sweep.columns import empty_row  # noqa: E402
from memsim.sweep.executors import (  # noqa: E402
    DaskExecutor,
    Executor,
    InlineExecutor,
    ProcessExecutor,
)
from memsim.sweep.point import OptimizeOptions, Point, Stages  # noqa: E402
from memsim.sweep.runner import run_sweep  # noqa: E402

LAYOUT = {"name": "bench-sweep", "fetch": "parallel",
          "placement": {1: "ram", 2: "flash", 3: "ssd-ext"}, "resident": []}
EST_SAMPLES = 2_000
SIM_QUERIES = 2_500
FULL = {"est": (25, 40), "sim": (10, 10)}  # grid sides: bandwidths x rates
QUICK = {"est": (10, 20), "sim": (4, 5)}
OVERHEAD_TARGET = 0.10  # simulate points: 1 worker at most 10% slower than the loop
THROUGHPUT_TARGET = 0.5  # estimator points: 1 worker at least half the loop's points/s
AXES = ["profile.tiers.flash.bandwidth", "workload.rate"]


def _doc(ref: str, kind: str) -> dict[str, Any]:
    return yaml.safe_load(resolve(ref, kind).read_text())


def logspace(lo: float, hi: float, n: int) -> list[float]:
    return [lo * (hi / lo) ** (i / max(n - 1, 1)) for i in range(n)]


def make_points(sides: tuple[int, int], *, simulate: bool) -> list[Point]:
    """A grid of flash bandwidth x rate points, as a spec's expansion gives them."""
    profile = _doc("phone", "device_profiles")
    bank = _doc("C2", "banks")
    workload = _doc("zipf-topic", "workloads")
    stages = Stages(optimize=False, estimate={"samples": EST_SAMPLES, "seed": 0},
                    simulate={"queries": SIM_QUERIES, "seed": 0} if simulate else None)
    points = []
    for bw in logspace(1.0, 8.0, sides[0]):
        for rate in logspace(1.0, 50.0 if not simulate else 20.0, sides[1]):
            prof = copy.deepcopy(profile)
            flash = next(t for t in prof["tiers"] if t["name"] == "flash")
            flash["bandwidth"] = flash["aggregate_bandwidth"] = f"{bw:.4g} GB/s"
            axes = {AXES[0]: f"{bw:.4g} GB/s", AXES[1]: round(rate, 4)}
            inputs = {"profile": prof, "bank": bank, "workload": workload, "layout": LAYOUT,
                      "rate": round(rate, 4), "optimize": OptimizeOptions().model_dump(),
                      "stages": stages.model_dump()}
            points.append(Point(len(points), axes, inputs, source="bench_sweep"))
    return points


def api_point(point: Point, simulate: bool) -> dict[str, Any]:
    """One point through the public API only: what a user's own loop would do."""
    inp = point.inputs
    start = time.perf_counter()
    profile = memsim.profile_from_dict(inp["profile"], file="<profile>")
    bank = memsim.bank_from_dict(inp["bank"], file="<bank>")
    layout = memsim.layout_from_dict(inp["layout"], file="<layout>")
    workload = memsim.workload_from_dict(inp["workload"], file="<workload>").at_rate(inp["rate"])
    est_stage = inp["stages"]["estimate"]
    est = memsim.estimate(profile, bank, layout, samples=est_stage["samples"],
                          seed=est_stage["seed"], workload=workload)
    row = empty_row()
    row.update(point=point.key, index=point.index, sample=point.sample, status="ok",
               rate=inp["rate"], est_mean_s=est.fetch_time_s["mean"],
               est_p99_s=est.fetch_time_s["p99"])
    sim_stage = inp["stages"]["simulate"]
    if simulate and sim_stage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sim = memsim.simulate(profile, bank, layout, workload,
                                  queries=sim_stage["queries"], seed=sim_stage["seed"])
        row.update(sim_queries=sim_stage["queries"], sim_mean_s=sim.fetch_time_s["mean"])
    row["wall_s"] = time.perf_counter() - start
    return row


def api_run(points: list[Point], *, simulate: bool = True) -> list[dict[str, Any]]:
    """The plain loop's body as a run function for run_sweep (`--run api`)."""
    return [api_point(p, simulate) for p in points]


def plain_loop(points: Sequence[Point]) -> float:
    start = time.perf_counter()
    for p in points:
        api_point(p, True)
    return time.perf_counter() - start


def executors(names: Sequence[str]) -> list[tuple[str, Callable[[], Executor]]]:
    table: dict[str, Callable[[], Executor]] = {
        "inline": InlineExecutor,
        "process x1": lambda: ProcessExecutor(1),
        "process x2": lambda: ProcessExecutor(2),
        "dask local x2": lambda: DaskExecutor(None, 2),
    }
    return [(n, table[n]) for n in names]


def timed_sweep(points: list[Point], executor: Executor, run: Callable[..., Any] | None,
                out: str) -> tuple[float, int]:
    start = time.perf_counter()
    table = run_sweep(points, out, axes=AXES, executor=executor, run=run)
    elapsed = time.perf_counter() - start
    return elapsed, table.num_rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids (a smoke run)")
    parser.add_argument("--run", choices=("stages", "api"), default="stages",
                        help="what run_sweep runs at each point (default: the stages)")
    parser.add_argument("--executors", default="inline,process x1,process x2,dask local x2",
                        help="comma-separated subset of the executors to time")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs of each method, best kept (default 3; 1 with --quick)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 2 when a target is missed")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    sides = QUICK if args.quick else FULL
    run = api_run if args.run == "api" else None
    chosen = executors([n.strip() for n in args.executors.split(",") if n.strip()])
    load_before = load_average()
    sets = {"estimator": make_points(sides["est"], simulate=False),
            "simulate": make_points(sides["sim"], simulate=True)}
    api_run(sets["simulate"][:1] + sets["estimator"][:1])  # warm the imports (simpy, ...)

    times: dict[tuple[str, str], list[float]] = {}
    startup: dict[str, float] = {}

    def keep(set_name: str, method: str, seconds: float) -> None:
        times.setdefault((set_name, method), []).append(seconds)

    opened: list[tuple[str, Executor]] = []
    try:
        for label, make in chosen:  # all started (and warmed) before any clock runs
            start = time.perf_counter()
            ex = make()
            opened.append((label, ex))
            n = 2 * max(ex.workers, 1)
            warm = sets["estimator"][:n] + sets["simulate"][:n]
            run_sweep(warm, None, axes=AXES, executor=ex, run=run)  # fork, import, first calls
            startup[label] = time.perf_counter() - start
        with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
            for rep in range(args.repeats):  # interleaved, best kept: the machine is shared
                for name, pts in sets.items():
                    # the loop first on even repeats, last on odd ones (drifting load)
                    if rep % 2 == 0:
                        keep(name, "plain loop (public API)", plain_loop(pts))
                    for label, ex in opened if rep % 2 == 0 else opened[::-1]:
                        out = os.path.join(tmp, f"{rep}-{label.replace(' ', '-')}-{name}")
                        seconds, rows = timed_sweep(pts, ex, run, out)
                        if rows != len(pts):
                            print(f"error: {label} returned {rows} rows for {len(pts)} points",
                                  file=sys.stderr)
                            return 1
                        keep(name, f"run_sweep, {label}", seconds)
                    if rep % 2 == 1:
                        keep(name, "plain loop (public API)", plain_loop(pts))
    finally:
        for _, ex in opened:
            ex.close()
    loop_s = {name: min(times[name, "plain loop (public API)"]) for name in sets}
    order = ["plain loop (public API)"] + [f"run_sweep, {label}" for label, _ in chosen]
    results = [{"set": s, "method": m, "points": len(sets[s]), "seconds": min(times[s, m]),
                "median_s": statistics.median(times[s, m]),
                "startup_s": startup.get(m.removeprefix("run_sweep, "), 0.0)}
               for s in sets for m in order]
    for r in results:
        r["points_per_s"] = r["points"] / r["seconds"]
        r["vs_loop"] = loop_s[r["set"]] / r["seconds"]

    def ratio(set_name: str, method: str) -> float | None:
        for r in results:
            if r["set"] == set_name and r["method"] == method:
                return r["vs_loop"]
        return None

    one = "run_sweep, process x1"
    sim_ratio = ratio("simulate", one)
    est_ratio = ratio("estimator", one)
    sim_ok = sim_ratio is not None and 1 / sim_ratio - 1 <= OVERHEAD_TARGET
    est_ok = est_ratio is not None and est_ratio >= THROUGHPUT_TARGET
    load = load_average()
    report = {"results": results, "run": args.run, "quick": args.quick,
              "repeats": args.repeats,
              "simulate_overhead_1_worker": None if sim_ratio is None else 1 / sim_ratio - 1,
              "estimator_throughput_1_worker_vs_loop": est_ratio,
              "targets_met": {"simulate_overhead": sim_ok, "estimator_throughput": est_ok},
              "load_average_before": load_before, "load_average_after": load,
              "cpus": os.cpu_count(), "memsim": memsim.__version__}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"memsim {memsim.__version__} sweep benchmark: phone, bank C2, zipf-topic, fixed "
              f"layout; estimator points {EST_SAMPLES:,} samples, simulate points "
              f"{SIM_QUERIES:,} queries; run_sweep runs "
              f"{'the stages' if run is None else 'the plain loop body (--run api)'}; "
              f"best of {args.repeats}")
        print()
        print(f"{'set':<10}{'method':<34}{'points':>7}{'best s':>8}{'median s':>10}"
              f"{'points/s':>10}{'vs loop':>9}{'startup s':>11}")
        for r in results:
            print(f"{r['set']:<10}{r['method']:<34}{r['points']:>7,}{r['seconds']:>8.2f}"
                  f"{r['median_s']:>10.2f}{r['points_per_s']:>10.1f}{r['vs_loop']:>8.2f}x"
                  f"{r['startup_s']:>11.2f}")
        print("(points/s and vs loop from the best times; vs loop > 1 is faster than the loop)")
        print()
        if sim_ratio is not None:
            print(f"{'PASS' if sim_ok else 'FAIL'}: simulate points, 1 worker: overhead "
                  f"{100 * (1 / sim_ratio - 1):+.1f}% against the plain loop (target <= "
                  f"{100 * OVERHEAD_TARGET:.0f}%)")
        if est_ratio is not None:
            print(f"{'PASS' if est_ok else 'FAIL'}: estimator points, 1 worker: "
                  f"{est_ratio:.2f}x the plain loop's points/s (target >= "
                  f"{THROUGHPUT_TARGET:g}x)")
        print(f"note: wall-clock timings on a possibly shared machine ({os.cpu_count()} CPUs); "
              f"load average (1, 5, 15 min) before {format_load(load_before)}, after "
              f"{format_load(load)}")
    if args.strict and not (sim_ok and est_ok):
        return 2
    return 0 if all(math.isfinite(r["seconds"]) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
