"""Benchmark issue 12's must-hold on the shipped data: the load-aware level optimizer on every
shipped profile and workload at 0.5x, 1x and 2x the workload's rate (default bank
paper-storage-example), every case simulated.

Per case it prints the rate, the idle-optimal layout and the load-aware one (or "infeasible:
<message>"), the idle layout's analytic utilisation (simulate.tier_load, no cache hits), the
simulated offered utilisation's maximum over tiers, the simulated mean and p99 with their 95%
batch-means intervals for both layouts, and PASS/FAIL for each clause:
- "ok<1": the load-aware run has every tier's offered utilisation below 1 (or the result is
  infeasible and its message names a tier and the rate);
- "beats": where the idle layout saturates a tier (analytic utilisation >= 1, or its run
  offered >= 1), the load-aware run's mean and p99 intervals lie wholly below the idle run's
  (below the idle point value when that run has no steady state, hence no interval; its
  fetch times grow with the run's length, so the point value understates them); "n/a" where
  the idle layout does not saturate; "infeasible" where no load-aware layout exists, with the
  least busiest-tier load any placement that fits reaches (brute force).
Then a table of the load-aware layout's model mean and p99 (the level model's figures) against
the simulated ones (error %), the "delay approximation error" at the layout level, and a
summary. The rate of a case is what the load model plans for (`level.planning_load`): an
open loop's mean, or its bursts' own rate when a burst holds many queries; a closed loop's
clients over think plus idle fetch time, at most what the least-loaded layout carries within
the ceiling. 0.5x and 2x scale an open loop's arrivals and a closed loop's clients (4, 16).
A closed loop's offered utilisation cannot pass 1 (clients wait), so it saturates at 1.00.

Nothing here asserts on time; exit status 1 if a clause fails anywhere.

    python benchmarks/bench_load_aware.py [--queries N] [--quick] [--json]
"""

from __future__ import annotations

# First: _common sets one-thread numeric pools before numpy is imported.
from _common import format_load, load_average

# isort: split

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

import memsim  # noqa: E402
from memsim.errors import InfeasibleError, OverloadWarning  # noqa: E402
from memsim.optimize.goal import Goal  # noqa: E402
from memsim.optimize.level import OptimizeResult, PlanningLoad, planning_load  # noqa: E402
from memsim.resources import shipped_names  # noqa: E402
from memsim.simulate import SimulationResult, tier_load  # noqa: E402

BANK = "paper-storage-example"
FACTORS = (0.5, 1.0, 2.0)
SCENARIOS = 16
SAMPLES = 200
DEFAULT_QUERIES = 20_000
QUICK_QUERIES = 5_000
SEED = 0
STATS = ("mean", "p99")
NAMES_TIER_AND_RATE = re.compile(r"tier '([^']+)'")


def scaled(profile: memsim.Profile, bank: memsim.Bank, wl: memsim.Workload, factor: float
           ) -> tuple[memsim.Workload, PlanningLoad]:
    """The workload at `factor` times its rate, and the load the model plans for."""
    if wl.open_loop:
        copy = wl.at_rate(factor * float(wl.arrivals.mean_rate()))
    else:
        clients = round(wl.arrivals.clients * factor)  # type: ignore[union-attr]
        copy = wl.model_copy(update={"arrivals": wl.arrivals.model_copy(
            update={"clients": clients}), "name": f"{wl.name}x{clients}"})
    return copy, planning_load(profile, bank, copy)


def least_load(profile: memsim.Profile, bank: memsim.Bank, rate: float) -> float:
    """Brute force: the least busiest-tier utilisation over the placements that fit."""
    depths = [lv.depth for lv in bank.active_levels]
    best = math.inf
    for combo in itertools.product(profile.tier_names, repeat=len(depths)):
        placement = dict(zip(depths, combo, strict=True))
        used = {t: 0.0 for t in profile.tier_names}
        for lv in bank.active_levels:
            used[placement[lv.depth]] += lv.bytes
        used[profile.ram.name] += bank.anchor_bytes
        if any(used[t.name] > t.capacity_bytes for t in profile.tiers):
            continue
        layout = memsim.Layout(name="brute", bank=bank.name, profile=profile.name,
                               placement=placement)
        best = min(best, max(tier_load(profile, bank, layout, rate).values(), default=0.0))
    return best


def run(profile: memsim.Profile, bank: memsim.Bank, layout: memsim.Layout,
        wl: memsim.Workload, queries: int) -> SimulationResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverloadWarning)  # saturated idle runs warn
        return memsim.simulate(profile, bank, layout, wl, queries=queries, seed=SEED)


def figures(sim: SimulationResult) -> dict[str, Any]:
    return {"offered_max": max(sim.offered_load.values(), default=0.0),
            "offered_load": sim.offered_load, "unstable": sim.unstable,
            **{f"{s}_s": sim.fetch_time_s[s] for s in STATS},
            **{f"{s}_ci_s": sim.fetch_time_ci_s[s] for s in STATS}}


def below(better: dict[str, Any], worse: dict[str, Any], stat: str) -> bool:
    """`better`'s interval on `stat` wholly below `worse`'s interval (or its point value when
    `worse` has no steady state, so no interval)."""
    ci = better[f"{stat}_ci_s"]
    if ci is None or better["unstable"]:
        return False
    bound = (worse[f"{stat}_s"] if worse["unstable"] or worse[f"{stat}_ci_s"] is None
             else worse[f"{stat}_ci_s"][0])
    return ci[1] < bound


def case(profile: memsim.Profile, bank: memsim.Bank, idle: OptimizeResult, workload: str,
         factor: float, queries: int) -> dict[str, Any]:
    """Optimize, simulate and judge one case."""
    wl, plan = scaled(profile, bank, memsim.load_workload(workload), factor)
    rate = plan.rate
    row: dict[str, Any] = {"profile": profile.name, "workload": workload, "factor": factor,
                           "rate_per_s": rate, "idle_placement": idle.layout.placement}
    idle_load = tier_load(profile, bank, idle.layout, rate)
    row["idle_analytic_max"] = max(idle_load.values(), default=0.0)
    started = time.perf_counter()
    try:
        result: OptimizeResult | None = memsim.optimize(
            profile, bank, workload=wl, scenarios=SCENARIOS, samples=SAMPLES,
            goal=Goal(rate=rate, arrival_scv=plan.arrival_scv, rate_note=plan.note))
        row["infeasible"] = None
    except InfeasibleError as exc:
        result = None
        row["infeasible"] = str(exc)
    row["optimize_s"] = time.perf_counter() - started
    idle_sim = figures(run(profile, bank, idle.layout, wl, queries))
    row["idle_sim"] = idle_sim
    saturates = row["idle_analytic_max"] >= 1.0 or idle_sim["offered_max"] >= 1.0
    row["idle_saturates"] = saturates
    if result is None:
        named = NAMES_TIER_AND_RATE.search(row["infeasible"])
        row["ok_below_1"] = bool(named and named.group(1) in profile.tier_names
                                 and f"{rate:g} queries/s" in row["infeasible"])
        row["load_aware_placement"] = None
        row["load_aware_sim"] = None
        row["least_load"] = least_load(profile, bank, rate)
        row["beats"] = "infeasible" if saturates else "n/a"
        row["model"] = None
        return row
    row["load_aware_placement"] = result.layout.placement
    same = (result.layout.placement == idle.layout.placement
            and result.layout.resident == idle.layout.resident)
    la_sim = idle_sim if same else figures(run(profile, bank, result.layout, wl, queries))
    row["same_as_idle"] = same
    row["load_aware_sim"] = la_sim
    row["ok_below_1"] = la_sim["offered_max"] < 1.0
    if saturates:
        row["beats"] = "PASS" if all(below(la_sim, idle_sim, s) for s in STATS) else "FAIL"
    else:
        row["beats"] = "n/a"
    model = result.figures
    assert model is not None
    row["model"] = {"mean_s": model.mean_s, "p99_s": model.quantile_s["p99"],
                    "utilization": model.utilization}
    row["model_error"] = {s: (row["model"][f"{s}_s"] - la_sim[f"{s}_s"]) / la_sim[f"{s}_s"]
                          for s in STATS}
    return row


def _ms(x: float | None) -> str:
    return f"{x * 1e3:.4g}" if x is not None else "-"


def _ci(sim: dict[str, Any], stat: str) -> str:
    ci = sim[f"{stat}_ci_s"]
    body = f"[{_ms(ci[0])},{_ms(ci[1])}]" if ci else "(no CI)"
    return f"{_ms(sim[f'{stat}_s'])} {body}"


def _place(placement: dict[int, str] | None) -> str:
    return "/".join(placement[d] for d in sorted(placement)) if placement else "-"


def print_row(row: dict[str, Any]) -> None:
    name = f"{row['profile']} {row['workload']} {row['factor']:g}x"
    idle = row["idle_sim"]
    print(f"{name}: rate {row['rate_per_s']:.4g}/s; idle {_place(row['idle_placement'])} "
          f"(analytic max rho {row['idle_analytic_max']:.2f}, simulated offered max "
          f"{idle['offered_max']:.2f}{', unstable' if idle['unstable'] else ''})")
    print(f"    idle       mean ms {_ci(idle, 'mean')}  p99 ms {_ci(idle, 'p99')}")
    if row["infeasible"]:
        print(f"    load-aware infeasible: {row['infeasible']}")
        print(f"    brute force: least busiest-tier load of any fitting layout "
              f"{row['least_load']:.3f}")
    else:
        la = row["load_aware_sim"]
        same = " (same as idle)" if row["same_as_idle"] else ""
        print(f"    load-aware {_place(row['load_aware_placement'])}{same}: simulated offered "
              f"max {la['offered_max']:.3f}{', unstable' if la['unstable'] else ''}")
        print(f"    load-aware mean ms {_ci(la, 'mean')}  p99 ms {_ci(la, 'p99')}")
    print(f"    ok<1 {'PASS' if row['ok_below_1'] else 'FAIL'}   beats {row['beats']}",
          flush=True)


def print_model_table(rows: list[dict[str, Any]]) -> None:
    print("\nModel against simulation, load-aware layout (error = (model - sim) / sim):")
    print(f"{'case':<40}{'rho max':>8}{'sim mean':>10}{'model':>10}{'err %':>8}"
          f"{'sim p99':>10}{'model':>10}{'err %':>8}")
    for row in rows:
        if row["model"] is None:
            continue
        sim, model, err = row["load_aware_sim"], row["model"], row["model_error"]
        name = f"{row['profile']} {row['workload']} {row['factor']:g}x"
        print(f"{name:<40}{sim['offered_max']:8.2f}{_ms(sim['mean_s']):>10}"
              f"{_ms(model['mean_s']):>10}{100 * err['mean']:8.1f}{_ms(sim['p99_s']):>10}"
              f"{_ms(model['p99_s']):>10}{100 * err['p99']:8.1f}")


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [r for r in rows if r["model"] is not None]
    by_workload: dict[str, dict[str, float]] = {}
    for r in errors:
        entry = by_workload.setdefault(r["workload"], {"worst_mean": 0.0, "worst_p99": 0.0})
        entry["worst_mean"] = max(entry["worst_mean"], abs(r["model_error"]["mean"]))
        entry["worst_p99"] = max(entry["worst_p99"], abs(r["model_error"]["p99"]))
    return {
        "cases": len(rows),
        "feasible": sum(r["infeasible"] is None for r in rows),
        "infeasible": sum(r["infeasible"] is not None for r in rows),
        "load_aware_differs_from_idle": sum(not r.get("same_as_idle", True) for r in rows),
        "idle_saturates": sum(r["idle_saturates"] for r in rows),
        "ok_below_1_fail": [f"{r['profile']} {r['workload']} {r['factor']:g}x" for r in rows
                            if not r["ok_below_1"]],
        "beats": {k: sum(r["beats"] == k for r in rows)
                  for k in ("PASS", "FAIL", "infeasible", "n/a")},
        "saturating_with_a_non_saturating_layout": [
            f"{r['profile']} {r['workload']} {r['factor']:g}x" for r in rows
            if r["beats"] == "infeasible" and r["least_load"] < 1.0],
        "worst_model_error_by_workload": by_workload,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=None,
                        help=f"queries per simulation (default {DEFAULT_QUERIES:,}; "
                             f"{QUICK_QUERIES:,} with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer queries per simulation")
    parser.add_argument("--json", action="store_true", help="print JSON (base units)")
    args = parser.parse_args(argv)
    queries = args.queries or (QUICK_QUERIES if args.quick else DEFAULT_QUERIES)
    load_before = load_average()
    started = time.perf_counter()
    bank = memsim.load_bank(BANK)
    rows = []
    for name in shipped_names("device_profiles"):
        profile = memsim.load_profile(name)
        idle = memsim.optimize(profile, bank, scenarios=SCENARIOS, samples=SAMPLES)
        for workload in shipped_names("workloads"):
            for factor in FACTORS:
                row = case(profile, bank, idle, workload, factor, queries)
                rows.append(row)
                if not args.json:
                    print_row(row)
    result = summary(rows)
    elapsed = time.perf_counter() - started
    ok = not result["ok_below_1_fail"] and result["beats"]["FAIL"] == 0
    if args.json:
        json.dump({"bank": BANK, "queries": queries, "seed": SEED, "cases": rows,
                   "summary": result, "wall_s": elapsed, "load_average_before": load_before,
                   "load_average_after": load_average()}, sys.stdout, indent=1,
                  default=lambda x: None if isinstance(x, float) and not math.isfinite(x)
                  else str(x))
        print()
    else:
        print_model_table(rows)
        print(f"\n{result['cases']} cases: {result['feasible']} feasible, "
              f"{result['infeasible']} infeasible; the load-aware layout differs from the "
              f"idle one in {result['load_aware_differs_from_idle']}")
        print(f"ok<1: {'PASS' if not result['ok_below_1_fail'] else 'FAIL'}"
              + (f" (fails: {', '.join(result['ok_below_1_fail'])})"
                 if result["ok_below_1_fail"] else ""))
        print(f"idle layout saturates in {result['idle_saturates']} cases; beats: "
              + ", ".join(f"{k} {v}" for k, v in result["beats"].items()))
        if result["saturating_with_a_non_saturating_layout"]:
            print("  infeasible at the ceiling yet some fitting layout stays below 1: "
                  + ", ".join(result["saturating_with_a_non_saturating_layout"]))
        for wl, e in sorted(result["worst_model_error_by_workload"].items()):
            print(f"  model error, worst over feasible cases, {wl}: mean "
                  f"{100 * e['worst_mean']:.1f}%, p99 {100 * e['worst_p99']:.1f}%")
        print(f"{queries:,} queries per simulation, {elapsed:.0f} s; load average before "
              f"{format_load(load_before)}, after {format_load(load_average())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
