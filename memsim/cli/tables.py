"""Human-readable tables for the CLI (JSON output is built by each result's `to_json`)."""

from __future__ import annotations

import math

from memsim.bank import Bank
from memsim.energy import EnergyFigures
from memsim.estimate import Estimate
from memsim.latency import ConstantLatency, EmpiricalLatency, ExponentialLatency, LognormalLatency
from memsim.profile import Profile, Tier
from memsim.simulate import SimulationResult
from memsim.texttable import table
from memsim.units import format_energy, format_power, format_rate, format_size, format_time


def describe_latency(tier: Tier) -> str:
    lat = tier.latency
    if isinstance(lat, ConstantLatency):
        return format_time(lat.value)
    if isinstance(lat, LognormalLatency):
        return f"lognormal p50 {format_time(lat.p50)}, p99 {format_time(lat.p99)}"
    if isinstance(lat, EmpiricalLatency):
        p50, p99 = format_time(lat.quantile(0.5)), format_time(lat.quantile(0.99))
        return f"empirical p50 {p50}, p99 {p99}"
    if isinstance(lat, ExponentialLatency):
        return f"exponential mean {format_time(lat.mean())}"
    return str(lat)


def profile_text(profile: Profile) -> str:
    rows = []
    for t in profile.tiers:
        cost = ""
        if t.cost is not None:
            cost = (f"${t.cost.storage_usd_per_gb_month:g}/GB-mo, "
                    f"${t.cost.usd_per_1000_requests:g}/1k req")
        rows.append([t.name, t.kind, format_size(t.capacity_bytes), describe_latency(t),
                     format_rate(t.bandwidth), format_rate(t.total_bandwidth), t.concurrency,
                     format_time(t.request_overhead), cost or "-"])
    head = f"profile {profile.name}" + (f": {profile.description}" if profile.description else "")
    body = table(["tier", "kind", "capacity", "latency", "stream bw", "aggregate bw",
                  "concurrency", "overhead", "cost"], rows)
    return f"{head}\n{body}"


def _count(n: int) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.4g}{suffix}"
    return str(n)


def bank_text(bank: Bank) -> str:
    rows = []
    for lv in bank.all_levels:
        if lv.empty:
            rows.append([lv.depth, f"{lv.blocks:,}", 0, "-", "-", "-", "(empty)"])
            continue
        rows.append([lv.depth, f"{lv.blocks:,}", lv.multiplier, _count(lv.block_params),
                     format_size(lv.block_bytes), _count(lv.params), format_size(lv.bytes)])
    head = (f"bank {bank.name}: {bank.memory_type} memories, branching {bank.branching}, "
            f"{bank.dtype}, anchor {bank.anchor.name} ({_count(bank.anchor_params)} params, "
            f"{format_size(bank.anchor_bytes)})")
    body = table(["level", "blocks", "multiplier", "block params", "block size",
                  "level params", "level size"], rows)
    foot = (f"fetched per query: {_count(bank.fetched_params)} params "
            f"({bank.fetched_params:,}), {format_size(bank.fetched_bytes)}\n"
            f"bank: {_count(bank.bank_params)} params ({bank.bank_params:,}), "
            f"{format_size(bank.bank_bytes)}")
    return f"{head}\n{body}\n{foot}"


def _tier_mix(fractions: dict[str, float], default: str) -> str:
    """'disk 97.6%, flash 2.4%': where a level's blocks are read from, default tier first."""
    order = sorted(fractions, key=lambda name: (name != default, -fractions[name]))
    return ", ".join(f"{name} {100 * fractions[name]:.3g}%" for name in order) or "-"


def estimate_text(est: Estimate, title: str = "") -> str:
    block_level = any(lv.tiers is not None for lv in est.per_level)
    if block_level:  # tiers per level are a mix
        rows = [[lv.depth, _tier_mix(lv.tiers or {}, lv.tier)
                 + (" (resident)" if lv.resident else ""), format_size(lv.block_bytes),
                 f"{100 * (lv.blocked_fraction or 0.0):.3g}%", format_time(lv.time_s)]
                for lv in est.per_level]
        levels = table(["level", "tiers (share of queries)", "block", "blocked", "time"], rows)
        tiers = table(["tier", "levels", "queries", "bytes/query", "time"],
                      [[t.tier, ",".join(map(str, t.levels)),
                        f"{100 * (t.query_fraction or 0.0):.3g}%", format_size(t.bytes),
                        format_time(t.time_s)] for t in est.per_tier])
    else:
        rows = [[lv.depth, lv.tier + (" (resident)" if lv.resident else ""),
                 format_size(lv.block_bytes), format_time(lv.time_s)] for lv in est.per_level]
        levels = table(["level", "tier", "block", "time"], rows)
        tiers = table(["tier", "levels", "bytes", "time"],
                      [[t.tier, ",".join(map(str, t.levels)), format_size(t.bytes),
                        format_time(t.time_s)] for t in est.per_tier])
    f = est.fetch_time_s
    summary = (f"fetch time ({est.fetch}): mean {format_time(f['mean'])}, p50 "
               f"{format_time(f['p50'])}, p95 {format_time(f['p95'])}, p99 {format_time(f['p99'])}")
    if est.workload is not None and block_level:
        summary += f"  [{est.samples:,} queries routed by {est.workload}, seed {est.seed}]"
    elif est.samples > 1:
        summary += f"  [{est.samples:,} sampled queries, seed {est.seed}]"
    parts = [title] if title else []
    parts += [levels, "", tiers, "", summary]
    parts += _resident_lines(est)
    if est.energy is not None:
        parts.append(energy_line(est.energy))
    return "\n".join(parts)


def energy_line(energy: EnergyFigures, measured: bool = False) -> str:
    """'energy: 1.23 mJ per query, average power 0.45 W at 10 queries/s' (without a rate:
    the dynamic energy and the idle power)."""
    head = "energy (measured)" if measured else "energy"
    total, power = energy.j_per_query, energy.average_power_w
    if total is None or power is None or energy.rate is None:
        return (f"{head}: {format_energy(energy.dynamic_j_per_query)} per query, idle power "
                f"{format_power(energy.idle_power_w)} (a workload's rate gives the average "
                "power)")
    return (f"{head}: {format_energy(total)} per query, average power {format_power(power)} "
            f"at {energy.rate:.4g} queries/s")


def _resident_lines(est: Estimate) -> list[str]:
    """How resident levels were counted: assumed current, or mixed by their switch rate."""
    cur, sw = est.current_fetch_time_s, est.switch_fetch_time_s
    lines = []
    if est.switch_probability is not None:
        rates = ", ".join(f"level {d} {100 * s:.3g}%" for d, s in
                          sorted(est.switch_probability.items()))
        lines.append(f"resident levels switch block ({est.workload}): {rates}")
    if cur is not None and sw is not None:
        if est.switch_probability is None:
            lines.append(f"resident blocks assumed current; all switching: mean "
                         f"{format_time(sw['mean'])}, p99 {format_time(sw['p99'])} "
                         "(--workload mixes the two)")
        else:
            lines.append(f"all resident blocks current: mean {format_time(cur['mean'])}; all "
                         f"switching: mean {format_time(sw['mean'])}")
    return lines


def _time(seconds: float | None) -> str:
    """A time for a table: '-' when there is none (no measured query, a null in JSON)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return format_time(seconds)


def simulation_text(result: SimulationResult, title: str = "", clock: str = "simulated time"
                    ) -> str:
    block_level = any("blocked_fraction" in v for v in result.per_level.values())
    if block_level:
        levels = table(["level", "tiers (share of queries)", "block", "blocked", "mean time",
                        "p99"], [
            [d, _tier_mix(v["tiers"], v["tier"]) + (" (resident)" if v["resident"] else ""),
             format_size(v["bytes"]), f"{100 * v['blocked_fraction']:.3g}%",
             _time(v["time_s"]), _time(v["p99_s"])]
            for d, v in result.per_level.items()])
    else:
        levels = table(["level", "tier", "block", "mean time", "p99"], [
            [d, v["tier"] + (" (resident)" if v["resident"] else ""), format_size(v["bytes"]),
             _time(v["time_s"]), _time(v["p99_s"])]
            for d, v in result.per_level.items()])
    tiers = table(["tier", "requests", "mean time", "mean wait", "utilisation", "offered"], [
        [name, f"{int(v['requests']):,}", format_time(v["time_s"]), format_time(v["wait_s"]),
         f"{result.utilization[name]:.2f}", f"{result.offered_load.get(name, 0.0):.2f}"]
        for name, v in result.per_tier.items()])
    f, ci = result.fetch_time_s, result.fetch_time_ci_s

    def with_ci(key: str) -> str:
        interval = ci.get(key)
        text = _time(f[key])
        if result.unstable:  # no steady state: an interval would mean nothing
            text += " [unstable]"
        elif interval and all(math.isfinite(x) for x in interval):
            text += f" [{format_time(max(interval[0], 0.0))} .. {format_time(interval[1])}]"
        return text

    lines = [title] if title else []
    lines += [levels, "", tiers, ""]
    intervals = "no steady state" if result.unstable else "95% intervals"
    lines.append(f"fetch time ({result.fetch}, {result.queries:,} queries after "
                 f"{result.warmup:,} warm-up, {intervals}):")
    lines += [f"  {key:<4} {with_ci(key)}" for key in ("mean", "p50", "p95", "p99")]
    lines.append(f"  max  {_time(f['max'])}")
    if result.cache_hit_ratio is not None:
        lines.append(f"cache hit ratio: {result.cache_hit_ratio:.3f}")
    lines.append(f"{clock}: {format_time(result.simulated_s)}")
    if result.energy is not None:
        lines.append(energy_line(result.energy, measured=True))
    if result.trace_out:
        lines.append(f"trace written to {result.trace_out}")
    return "\n".join(lines)
