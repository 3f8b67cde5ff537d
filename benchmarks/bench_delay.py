"""Benchmark the queueing-delay approximation (memsim/queueing.py) against the simulator.

Grid: every tier of every shipped device profile (ram, flash, disk/ssd, cloud kinds), block
sizes taken from the levels of the preset banks (memsim/presets/banks/), and offered
utilisations 0.1..0.9 (the tier's bottleneck: max of channel and link utilisation), Poisson
arrivals. Each point is a one-level bank (one preset level's multiplier, anchor and dtype)
with its level on the tier; the two-level points put two levels of a preset bank on the same
tier, fetched in parallel (a batch of two requests per query). For each point it prints the
simulated mean fetch time with its 95% batch-means interval, the model's mean (the idle
estimate plus `queueing.query_wait` at the offered utilisations) and the error in percent,
then the worst |error| at utilisation <= 0.8 per tier kind and shape (one block, blocks at
once), and per tier kind, PASS/FAIL against 10%.

Nothing here asserts on time; exit status 1 if a tier kind fails.

    python benchmarks/bench_delay.py [--queries N] [--quick] [--json]
"""

from __future__ import annotations

# First: _common sets one-thread numeric pools before numpy is imported.
from _common import format_load, load_average

# isort: split

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import memsim  # noqa: E402
from memsim import queueing  # noqa: E402
from memsim.errors import OverloadWarning  # noqa: E402
from memsim.workload import workload_from_dict  # noqa: E402

PROFILES = ["laptop", "paper-hypothetical", "phone", "workstation"]
PRESET_BANKS = ["A2", "B2", "C2", "paper-storage-example"]
RHOS = [round(0.1 * k, 1) for k in range(1, 10)]
QUICK_RHOS = [0.2, 0.5, 0.8]
DEFAULT_QUERIES = 20_000
QUICK_QUERIES = 10_000
SEED = 20261201
ESTIMATE_SAMPLES = 200_000
TOLERANCE = 0.10
JUDGED_RHO = 0.8  # the error target holds at utilisation <= this


@dataclass(frozen=True)
class Case:
    """One bank shape: the preset it comes from and the multipliers of its levels."""

    preset: str
    multipliers: tuple[int, ...]
    anchor: Any
    dtype: str
    memory_type: str
    branching: int

    def bank(self) -> memsim.Bank:
        return memsim.bank_from_dict({
            "name": f"{self.preset}-{'-'.join(map(str, self.multipliers))}",
            "branching": self.branching, "levels": list(self.multipliers),
            "memory_type": self.memory_type, "anchor": self.anchor, "dtype": self.dtype})


def cases(quick: bool) -> list[Case]:
    """One-level cases for the smallest, a middle and the largest preset block size, and one
    two-level case (two preset levels on one tier)."""
    singles: dict[int, Case] = {}
    pair = None
    for name in PRESET_BANKS:
        bank = memsim.load_bank(name)
        raw = bank.model_dump()
        anchor = raw["anchor"]
        common = dict(anchor=anchor, dtype=bank.dtype, memory_type=bank.memory_type,
                      branching=bank.branching)
        levels = bank.active_levels
        for lv in levels:
            singles.setdefault(lv.block_bytes, Case(name, (lv.multiplier,), **common))
        if pair is None and len(levels) >= 2:
            pair = Case(name, (levels[-2].multiplier, levels[-1].multiplier), **common)
    sizes = sorted(singles)
    chosen = [sizes[0], sizes[len(sizes) // 2], sizes[-1]]
    if quick:
        chosen = [sizes[0], sizes[-1]]
    out = [singles[s] for s in chosen]
    if pair is not None:
        out.append(pair)
    return out


def point(profile: memsim.Profile, tier: memsim.Tier, case: Case, rho: float, queries: int,
          idle_cache: dict[tuple[str, str, tuple[int, ...]], float]) -> dict[str, Any]:
    """Simulate one point and evaluate the model there."""
    bank = case.bank()
    depths = [lv.depth for lv in bank.active_levels]
    layout = memsim.layout_from_dict({"placement": {d: tier.name for d in depths}})
    demands = [(1.0, queueing.block_demand(tier, lv.block_bytes)) for lv in bank.active_levels]
    per_query = queueing.tier_load(tier, demands, 1.0)
    rate = rho / max(per_query)
    rho_c, rho_l = queueing.tier_load(tier, demands, rate)
    key = (profile.name, tier.name, case.multipliers)
    if key not in idle_cache:
        idle_cache[key] = memsim.estimate(profile, bank, layout, samples=ESTIMATE_SAMPLES,
                                          seed=SEED).mean_s
    idle = idle_cache[key]
    wait = queueing.query_wait(tier, rho_c, rho_l, demands, 1.0)
    workload = workload_from_dict({"arrivals": {"kind": "poisson", "rate": rate}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverloadWarning)
        result = memsim.simulate(profile, bank, layout, workload, queries=queries, seed=SEED)
    sim = result.mean_s
    ci = result.fetch_time_ci_s.get("mean")
    model = idle + wait
    return {
        "profile": profile.name, "tier": tier.name, "kind": tier.kind,
        "bank": bank.name, "block_bytes": [lv.block_bytes for lv in bank.active_levels],
        "rho": rho, "rho_channel": rho_c, "rho_link": rho_l, "rate_per_s": rate,
        "idle_s": idle, "sim_mean_s": sim, "sim_ci_s": ci, "model_mean_s": model,
        "error": (model - sim) / sim, "unstable": bool(result.unstable),
    }


def shape(row: dict[str, Any]) -> str:
    """One block per query, or a batch of several fetched at once."""
    return "one block" if len(row["block_bytes"]) == 1 else "blocks at once"


def worst(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], str]
          ) -> dict[str, dict[str, Any]]:
    """Per group: the worst |error| at rho <= JUDGED_RHO, where, and PASS against 10%."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["rho"] > JUDGED_RHO + 1e-9:
            continue
        entry = out.setdefault(key(row), {"worst_abs_error": 0.0, "at": None})
        if abs(row["error"]) >= entry["worst_abs_error"]:
            entry["worst_abs_error"] = abs(row["error"])
            entry["at"] = {k: row[k] for k in ("profile", "tier", "block_bytes", "rho")}
    for entry in out.values():
        entry["pass"] = entry["worst_abs_error"] <= TOLERANCE
    return out


def _ms(x: float) -> str:
    return f"{x * 1e3:10.3f}"


def _size(nbytes: list[int]) -> str:
    return "+".join(f"{b / 1e6:.1f}" for b in nbytes) + " MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=None,
                        help=f"queries per simulated point (default {DEFAULT_QUERIES:,}; "
                             f"{QUICK_QUERIES:,} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"utilisations {QUICK_RHOS}, two block sizes and the pair")
    parser.add_argument("--json", action="store_true", help="print JSON (base units)")
    args = parser.parse_args(argv)
    queries = args.queries or (QUICK_QUERIES if args.quick else DEFAULT_QUERIES)
    rhos = QUICK_RHOS if args.quick else RHOS
    load_before = load_average()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    idle: dict[tuple[str, str, tuple[int, ...]], float] = {}
    grid = cases(args.quick)
    if not args.json:
        print(f"{'profile':<19}{'tier':<8}{'kind':<6}{'blocks':>16}{'rho':>5}"
              f"{'sim ms':>11}{'  95% CI ms':>23}{'model ms':>11}{'err %':>8}")
    for name in PROFILES:
        profile = memsim.load_profile(name)
        for tier in profile.tiers:
            for case in grid:
                for rho in rhos:
                    row = point(profile, tier, case, rho, queries, idle)
                    rows.append(row)
                    if not args.json:
                        ci = row["sim_ci_s"]
                        ci_text = (f"[{_ms(ci[0])},{_ms(ci[1])}]" if ci else
                                   f"{'(none)':>23}")
                        flag = " unstable" if row["unstable"] else ""
                        print(f"{name:<19}{tier.name:<8}{tier.kind:<6}"
                              f"{_size(row['block_bytes']):>16}{rho:5.1f}{_ms(row['sim_mean_s'])}"
                              f" {ci_text}{_ms(row['model_mean_s'])}"
                              f"{100 * row['error']:8.1f}{flag}", flush=True)
    kinds = worst(rows, lambda row: row["kind"])
    shapes = worst(rows, lambda row: f"{row['kind']}, {shape(row)}")
    elapsed = time.perf_counter() - started
    ok = all(entry["pass"] for entry in kinds.values())
    if args.json:
        json.dump({"queries": queries, "seed": SEED, "tolerance": TOLERANCE,
                   "judged_max_rho": JUDGED_RHO, "points": rows, "kinds": kinds,
                   "kinds_by_shape": shapes,
                   "wall_s": elapsed, "load_average_before": load_before,
                   "load_average_after": load_average()},
                  sys.stdout, indent=1, default=lambda x: None if (
                      isinstance(x, float) and not math.isfinite(x)) else str(x))
        print()
    else:
        print()
        for kind, entry in sorted(shapes.items()):
            at = entry["at"] or {}
            print(f"  {kind:<26} worst |error| at rho <= {JUDGED_RHO}: "
                  f"{100 * entry['worst_abs_error']:5.1f}% ({at.get('profile')} {at.get('tier')} "
                  f"rho {at.get('rho')})")
        for kind, entry in sorted(kinds.items()):
            at = entry["at"] or {}
            where = (f" ({at['profile']} {at['tier']} {_size(at['block_bytes'])} "
                     f"rho {at['rho']:.1f})") if at else ""
            print(f"{kind:<6} worst |error| at rho <= {JUDGED_RHO}: "
                  f"{100 * entry['worst_abs_error']:5.1f}%{where}  "
                  f"{'PASS' if entry['pass'] else 'FAIL'} (target {100 * TOLERANCE:.0f}%)")
        print(f"{len(rows)} points, {queries:,} queries each, {elapsed:.0f} s; load average "
              f"before {format_load(load_before)}, after {format_load(load_average())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
