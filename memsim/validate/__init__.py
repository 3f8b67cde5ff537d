"""Validate: does the simulator predict what real reads do? Replay, simulate, compare.

`validate(profile, bank, layout, workload)` replays the workload through the client
(`replay` drives `memsim.open_bank`'s `ServedBank`: real reads, with the layout's cache,
resident levels and prefetch) against the materialized bank, then simulates exactly the
queries replay issued (the arrival times and paths of its Parquet trace: for closed loops
these are replay's own issue times) with the same cache and prefetch, and compares the two
response-time distributions per tier, per level and for the whole fetch: median and
99th-percentile errors and DiskSim's CDF demerit (`memsim.validate.metrics`), and the whole
run's mean fetch time and hit ratios (cache, prefetch), all held to the targets.

Samples are the traces' per-level times (for parallel fetch, from query start until that
level's block is in RAM), after the warm-up queries. A (query, level) pair that cost nothing
in either run (a resident level's current block, a blocked subtree) is left out of both. A
tier's samples are the level times of the blocks the client served from it (replay's trace
records each block's tier: the level's, the block map's, or RAM for a cache hit); resident
levels give none.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memsim.bank import Bank
from memsim.blockmap import in_any
from memsim.errors import DataError, InputError
from memsim.layout import Layout
from memsim.profile import Profile
from memsim.replay import ReplayResult, replay
from memsim.simulate import SimulationResult, simulate
from memsim.simulate.cache import BlockCache
from memsim.trace import read_columns, read_trace
from memsim.validate.metrics import Comparison, compare, demerit, quantile_error
from memsim.validate.metrics import percent as _pct
from memsim.workload import Workload

__all__ = ["ABSOLUTE_TOLERANCE_S", "DEMERIT_TARGET", "MEDIAN_TARGET", "Comparison",
           "RatioComparison", "ValidationResult",
           "check_plot_path", "compare", "compare_replay", "demerit", "quantile_error",
           "tier_sources", "validate"]

MEDIAN_TARGET = 0.10  # |median error| the model should stay within
DEMERIT_TARGET = 0.10  # CDF demerit the model should stay within
# A difference this small is not a miss, whatever it is relatively: the client's own CPU time
# per fetch (its path check, cache lookup and event loop, tens of microseconds in Python),
# which the model leaves out, is all a cache hit or a resident-level fetch costs.
ABSOLUTE_TOLERANCE_S = 100e-6
MAX_LISTED = 5
SPEED_RATIO = 1.25  # a tier this much slower or faster than modelled (or than itself) is named
MIN_STEADY = 40  # requests of a tier before its steadiness is judged

Samples = tuple[np.ndarray, np.ndarray]  # (real, simulated), paired row by row


def _finite(data: Any) -> Any:
    """JSON has no NaN or infinity: such values become null."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


@dataclass(frozen=True)
class RatioComparison:
    """One figure of the whole run, real against simulated: the mean fetch time, the RAM
    cache's hit ratio, the prefetch hit ratio."""

    real: float
    sim: float

    @property
    def error(self) -> float:
        """(simulated - real) / real; 0 when both are 0."""
        if self.real == 0:
            return 0.0 if self.sim == 0 else math.inf
        return (self.sim - self.real) / self.real

    def to_json(self) -> dict[str, float]:
        return {"real": self.real, "sim": self.sim, "error": self.error}


def _ratios(real: ReplayResult, sim: SimulationResult) -> dict[str, RatioComparison]:
    """The run's mean fetch time, and the hit ratios where there is a cache or prefetch."""
    out = {"mean fetch time": RatioComparison(real.mean_s, sim.mean_s)}
    if real.cache_hit_ratio is not None and sim.cache_hit_ratio is not None:
        out["cache hit ratio"] = RatioComparison(real.cache_hit_ratio, sim.cache_hit_ratio)
    if real.served.prefetching and sim.served.prefetching:
        def ratio(c: Any) -> float:
            return c.prefetch_hits / c.prefetch_issued if c.prefetch_issued else 0.0

        out["prefetch hit ratio"] = RatioComparison(ratio(real.served), ratio(sim.served))
    return out


@dataclass
class ValidationResult:
    """Real vs simulated response times of one workload on one layout."""

    profile: str
    bank: str
    layout: str
    workload: str
    per_tier: dict[str, Comparison]
    per_level: dict[int, Comparison]
    fetch: Comparison | None
    level_tiers: dict[int, str]  # the level's tier(s): "disk", "flash+disk" with a block map
    real: ReplayResult
    simulated: SimulationResult
    median_target: float = MEDIAN_TARGET
    demerit_target: float = DEMERIT_TARGET
    tier_samples: dict[str, Samples] = field(default_factory=dict, repr=False)
    level_samples: dict[int, Samples] = field(default_factory=dict, repr=False)
    fetch_samples: Samples | None = field(default=None, repr=False)
    diagnostics: list[str] = field(default_factory=list)  # why the model and reads may differ
    recalibrated: dict[str, Any] = field(default_factory=dict)  # tier -> BankCalibration
    # the mean fetch time and the hit ratios (cache, prefetch), held to the median target
    ratios: dict[str, RatioComparison] = field(default_factory=dict)

    def misses(self) -> list[str]:
        """What misses the targets (per tier, the fetch time, the mean and the hit ratios),
        one phrase each."""
        out = []
        checked = [(f"tier {name}", c) for name, c in self.per_tier.items()]
        if self.fetch is not None:
            checked.append(("fetch time", self.fetch))
        close = ABSOLUTE_TOLERANCE_S
        for what, c in checked:
            if not (abs(c.p50_error) <= self.median_target
                    or abs(c.sim_p50_s - c.real_p50_s) <= close):
                out.append(f"{what}: median error {_pct(c.p50_error)} "
                           f"(target {self.median_target:.0%})")
            if not (c.demerit <= self.demerit_target or c.demerit * c.real_mean_s <= close):
                out.append(f"{what}: demerit {_pct(c.demerit, sign=False)} "
                           f"(target {self.demerit_target:.0%})")
        for what, r in self.ratios.items():
            near = what.startswith("mean") and abs(r.sim - r.real) <= close
            if not (abs(r.error) <= self.median_target or near):
                out.append(f"{what}: error {_pct(r.error)} (target {self.median_target:.0%})")
        return out

    @property
    def meets_targets(self) -> bool:
        """Every tier, the fetch time and the whole-run figures within the targets (or
        within ABSOLUTE_TOLERANCE_S of the real times)."""
        return bool(self.per_tier or self.fetch) and not self.misses()

    def to_json(self) -> dict[str, Any]:
        """Plain data in base units; non-finite numbers become null."""
        per_tier = {}
        for name, c in self.per_tier.items():
            per_tier[name] = {**c.to_json(),
                              "real_utilization": self.real.utilization.get(name),
                              "sim_utilization": self.simulated.utilization.get(name)}
        per_level = {str(d): {**c.to_json(), "tier": self.level_tiers.get(d)}
                     for d, c in self.per_level.items()}
        real = self.real.to_json()
        sim = self.simulated.to_json()
        for run in (real, sim):
            run.pop("trace_out", None)  # temporary files, gone
        return _finite({
            "profile": self.profile, "bank": self.bank, "layout": self.layout,
            "workload": self.workload, "queries": self.real.queries,
            "warmup": self.real.warmup, "seed": self.real.seed,
            "per_tier": per_tier, "per_level": per_level,
            "fetch": self.fetch.to_json() if self.fetch else None,
            "ratios": {k.replace(" ", "_"): r.to_json() for k, r in self.ratios.items()},
            "targets": {"median_error": self.median_target, "demerit": self.demerit_target,
                        "absolute_s": ABSOLUTE_TOLERANCE_S},
            "meets_targets": self.meets_targets, "misses": self.misses(),
            "diagnostics": list(self.diagnostics),
            "recalibrated": {k: v.to_json() for k, v in self.recalibrated.items()},
            "utilization": {"real": self.real.utilization,
                            "simulated": self.simulated.utilization},
            "offered_load": {"real": self.real.offered_load,
                             "simulated": self.simulated.offered_load},
            "real": real, "simulated": sim,
        })

    def text(self) -> str:
        """The tables the CLI prints: per tier, per level, the fetch time, the verdict."""
        from memsim.texttable import table
        from memsim.units import format_time

        def row(label: list[str], c: Comparison) -> list[str]:
            return [*label, f"{c.samples:,}", format_time(c.real_p50_s),
                    format_time(c.sim_p50_s), _pct(c.p50_error), format_time(c.real_p99_s),
                    format_time(c.sim_p99_s), _pct(c.p99_error), _pct(c.demerit, sign=False)]

        head = ["samples", "real p50", "sim p50", "p50 err", "real p99", "sim p99", "p99 err",
                "demerit"]
        lines = [f"validation of layout {self.layout} on {self.profile}, bank {self.bank}, "
                 f"workload {self.workload}: {self.real.queries:,} queries after "
                 f"{self.real.warmup:,} warm-up, real reads vs simulation"]
        lines += [cal.text() for cal in self.recalibrated.values()]
        lines.append("")
        rows = []
        for name, c in self.per_tier.items():
            util = [_util(self.real.utilization.get(name)),
                    _util(self.simulated.utilization.get(name))]
            rows.append(row([name], c) + util)
        if self.fetch is not None:
            rows.append(row(["fetch"], self.fetch) + ["", ""])
        headers = ["tier", *head, "util real", "util sim"]
        lines.append(table(headers, _right(headers, rows)))
        lines.append("")
        headers = ["level", "tier", *head]
        lines.append(table(headers, _right(headers, [row([str(d), self.level_tiers.get(d, "")],
                                                         c) for d, c in self.per_level.items()])))
        lines.append("")
        if self.ratios:
            headers = ["whole run", "real", "sim", "error"]
            rows = [[what, *(format_time(v) if what.startswith("mean") else f"{v:.3f}"
                             for v in (r.real, r.sim)), _pct(r.error)]
                    for what, r in self.ratios.items()]
            lines.append(table(headers, _right(headers, rows)))
            lines.append("")
        target = (f"median error <= {self.median_target:.0%}, demerit <= "
                  f"{self.demerit_target:.0%}, or within "
                  f"{ABSOLUTE_TOLERANCE_S * 1e6:.0f} us")
        lines.extend(f"note: {d}" for d in self.diagnostics)
        if self.diagnostics:
            lines.append("")
        misses = self.misses()
        if not self.per_tier and self.fetch is None:
            lines.append("verdict: nothing to compare (every level was resident or blocked)")
        elif not misses:
            lines.append(f"verdict: meets the targets ({target}) on every tier and the fetch "
                         "time")
        else:
            lines.append(f"verdict: misses the targets ({target}):")
            lines.extend(f"  {m}" for m in misses)
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Overlay the real and simulated CDFs, one panel per tier and one for the fetch time,
        each titled with its errors; written as a PNG (atomically)."""
        from memsim.validate.plot import plot_cdfs

        return plot_cdfs(self, path)


def _right(headers: list[str], rows: list[list[str]]) -> list[list[str]]:
    """Right-align signed percentages (the table left-aligns what does not look numeric)."""
    out = [list(r) for r in rows]
    for col, header in enumerate(headers):
        cells = [r[col] for r in out]
        if any(c.endswith("%") for c in cells):
            width = max(len(header), *(len(c) for c in cells))
            for r in out:
                r[col] = r[col].rjust(width)
    return out


def _util(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def check_plot_path(path: str | Path) -> None:
    """Fail before a long run if the plot cannot be written where asked."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a directory, expected a PNG file name", file=path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"no such directory: {parent}", file=path)
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write in {parent}: permission denied", file=path)


def tier_sources(profile: Profile, bank: Bank, layout: Layout, paths: np.ndarray
                 ) -> np.ndarray:
    """Per query and active level, the index (in the profile) of the tier its block is read
    from, or -1 for resident levels: the level's tier, the block map's, or RAM for a cache hit
    (the cache replayed in query order, as the simulator does)."""
    names = profile.tier_names
    levels = bank.active_levels
    block_map = layout.block_map(profile)
    out = np.empty((paths.shape[0], len(levels)), dtype=np.int64)
    for j, lv in enumerate(levels):
        default = names.index(layout.placement[lv.depth])
        ids = paths[:, lv.depth - 1]
        out[:, j] = (block_map.lookup(lv.depth, ids, default) if block_map is not None
                     else default)
        if lv.depth in layout.resident:
            out[:, j] = -1
    cache = layout.cache
    if cache is None or cache.budget <= 0 or profile.ram is None:
        return out
    ram = names.index(profile.ram.name)
    blocks = BlockCache(budget=cache.budget, policy=cache.policy, levels=cache.levels)
    cached = [(j, lv.depth, lv.block_bytes) for j, lv in enumerate(levels)
              if lv.depth not in layout.resident and blocks.covers(lv.depth)]
    if not cached:
        return out
    blocked = {d: in_any(layout.subtrees, d, paths[:, d - 1], bank.branching)
               for _j, d, _b in cached}
    columns = {d: paths[:, d - 1].tolist() for _j, d, _b in cached}
    for i in range(paths.shape[0]):
        for j, depth, nbytes in cached:
            if blocked[depth][i]:
                continue  # never looked up nor admitted
            block = columns[depth][i]
            if blocks.lookup(depth, block):
                out[i, j] = ram
            else:
                blocks.insert(depth, block, nbytes)
    return out


def _level_tiers(profile: Profile, bank: Bank, layout: Layout, paths: np.ndarray
                 ) -> dict[int, str]:
    """Per active level, the tier(s) its queries' blocks live on, e.g. "disk" or
    "flash+disk" with a block map, and "(resident)" for resident levels."""
    names = profile.tier_names
    block_map = layout.block_map(profile)
    out = {}
    for lv in bank.active_levels:
        tier = layout.placement[lv.depth]
        if block_map is not None:
            used = np.unique(block_map.lookup(lv.depth, paths[:, lv.depth - 1],
                                              names.index(tier)))
            tier = "+".join(names[t] for t in used.tolist())
        out[lv.depth] = tier + (" (resident)" if lv.depth in layout.resident else "")
    return out


def _times(path: Path, bank: Bank) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(fetch times, level times with one column per active level, and the tier each block
    was served from when the trace records it: replay's `source_L<d>`) of a trace."""
    from memsim.trace import read_schema

    wanted: dict[str, Any] = {"fetch_time_s": "number"}
    wanted.update({f"time_L{lv.depth}_s": "number" for lv in bank.active_levels})
    sources = [f"source_L{lv.depth}" for lv in bank.active_levels]
    schema = read_schema(path, "trace")
    recorded = all(name in schema.names for name in sources)
    if recorded:
        wanted.update(dict.fromkeys(sources, "int"))
    cols = read_columns(path, wanted, what="trace", schema=schema)
    levels = np.column_stack([cols[f"time_L{lv.depth}_s"] for lv in bank.active_levels])
    served = np.column_stack([cols[name] for name in sources]) if recorded else None
    return cols["fetch_time_s"], levels, served


def _paired(real: np.ndarray, sim: np.ndarray, keep: np.ndarray) -> Samples:
    """The rows of `keep` where both runs have a positive finite time."""
    ok = keep & np.isfinite(real) & np.isfinite(sim) & (real > 0) & (sim > 0)
    return real[ok], sim[ok]


def validate(
    profile: Profile,
    bank: Bank,
    layout: Layout,
    workload: Workload | None = None,
    *,
    trace: tuple[np.ndarray, np.ndarray] | None = None,
    queries: int = 1000,
    seed: int = 0,
    stores: Mapping[str, str] | None = None,
    warmup: float = 0.1,
    cold: bool = True,
    check_rate: float = 0.0,
    recalibrate: bool | list[str] = False,
    recalibrate_samples: int = 200,
    progress: Callable[[int], None] | None = None,
    prefetch: Any = "layout",
) -> ValidationResult:
    """Replay `queries` queries of `workload` (or of `trace`: arrivals and paths, e.g. routed
    embeddings) with real reads, simulate the same queries, and compare the response times
    per tier, per level and for the whole fetch.

    `check_rate` (the fraction of blocks checked against the manifest) defaults to 0: a check
    costs CPU time inside the measured level time that the model does not have. A missing or
    corrupt block met during the replay is a DataError: its timings would mean nothing.
    `recalibrate` (True: every tier holding the bank in a local directory or S3; or a list
    of tiers) first refits those tiers' latency and request overhead from
    `recalibrate_samples` reads of the bank's own blocks each (`memsim.calibrate.onbank`); the
    comparison is then against that profile.

    The reads are the client's (`memsim.open_bank`'s `ServedBank`, driven by `replay`): its
    RAM cache, resident levels and `prefetch` (the layout's `prefetch:` section by default, a
    `PrefetchConfig`, or None), which the simulation then models with the same parameters.
    """
    layout.check(bank, profile)
    recalibrated: dict[str, Any] = {}
    if recalibrate:
        from memsim.calibrate.onbank import calibrate_on_bank

        profile, recalibrated = calibrate_on_bank(
            profile, bank, layout, None if recalibrate is True else list(recalibrate),
            stores=stores, cold=cold, samples=recalibrate_samples, seed=seed)
    with tempfile.TemporaryDirectory(prefix="memsim-validate-") as tmp:
        real_path = Path(tmp) / "real.parquet"
        real = replay(profile, bank, layout, workload, trace=trace, queries=queries, seed=seed,
                      warmup=warmup, stores=stores, cold=cold, check_rate=check_rate,
                      trace_out=real_path, progress=progress, prefetch=prefetch)
        if real.bad_blocks:
            listed = "; ".join(str(b) for b in real.bad_blocks[:MAX_LISTED])
            more = len(real.bad_blocks) - MAX_LISTED
            raise DataError(f"{len(real.bad_blocks)} bad block(s) met during the replay, so "
                            f"its timings cannot be trusted: {listed}"
                            + (f"; and {more} more" if more > 0 else ""))
        result = compare_replay(profile, bank, layout, real, real_path,
                                workload.name or "workload" if workload is not None
                                else "trace", seed=seed, warmup=warmup)
    result.recalibrated = recalibrated
    real.trace_out = None  # the file is gone with the temporary directory
    return result


def diagnose(real: ReplayResult, sim: SimulationResult) -> list[str]:
    """Why real and simulated times may differ, apart from the model's shape: a tier that
    served its requests much slower or faster than the profile says (calibrated at another
    time, or for other sizes), or that changed speed during the run (a device that is not
    steady: no fixed model can match it)."""
    from memsim.units import format_time

    out = []
    for name, times in real.service_times.items():
        r, s = real.per_tier.get(name), sim.per_tier.get(name)
        if r is None or s is None or not r["requests"] or not s["requests"]:
            continue
        real_s, sim_s = r["time_s"] - r["wait_s"], s["time_s"] - s["wait_s"]
        if real_s > 0 and sim_s > 0 and not 1 / SPEED_RATIO <= real_s / sim_s <= SPEED_RATIO:
            out.append(f"tier {name} served its requests in {format_time(real_s)} on average "
                       f"(queueing excluded), the profile in {format_time(sim_s)} "
                       f"({real_s / sim_s:.2f}x): the profile does not describe the device "
                       "as it is now (recalibrate it, for these request sizes)")
        if times.size >= MIN_STEADY:
            half = times.size // 2
            first, second = float(np.median(times[:half])), float(np.median(times[half:]))
            if first > 0 and second > 0 and not (
                    1 / SPEED_RATIO <= second / first <= SPEED_RATIO):
                out.append(f"tier {name} changed speed during the run: median service "
                           f"{format_time(first)} in the first half, {format_time(second)} "
                           "in the second; the device is not steady, and no fixed model "
                           "can match it")
    return out


def compare_replay(profile: Profile, bank: Bank, layout: Layout, real: ReplayResult,
                   real_trace: str | Path, workload_name: str, *, seed: int = 0,
                   warmup: float = 0.1) -> ValidationResult:
    """Simulate the queries of a replay's trace (`replay(..., trace_out=real_trace)`) and
    compare: the second half of `validate`, for a replay already run (e.g. to try several
    profiles on one measurement)."""
    with tempfile.TemporaryDirectory(prefix="memsim-validate-") as tmp:
        sim_path = Path(tmp) / "simulated.parquet"
        arrivals, paths = read_trace(real_trace, bank)
        sim = simulate(profile, bank, layout, trace=(arrivals, paths), queries=len(arrivals),
                       seed=seed, warmup=warmup, trace_out=sim_path,
                       prefetch=real.prefetch_config)
        real_fetch, real_levels, served_from = _times(Path(real_trace), bank)
        sim_fetch, sim_levels, _ = _times(sim_path, bank)
    sim.trace_out = None  # the file is gone with the temporary directory
    keep = np.arange(len(arrivals)) >= real.warmup
    # a tier's samples: the blocks the client served from it (a trace of another replay
    # without that record: the tiers the simulator's cache would have used)
    sources = served_from if served_from is not None else \
        tier_sources(profile, bank, layout, paths)
    names = profile.tier_names

    level_samples: dict[int, Samples] = {}
    per_tier_parts: dict[int, list[Samples]] = {}
    for j, lv in enumerate(bank.active_levels):
        r, s = real_levels[:, j], sim_levels[:, j]
        pair = _paired(r, s, keep)
        if pair[0].size:
            level_samples[lv.depth] = pair
        for t in np.unique(sources[:, j]).tolist():
            if t < 0:
                continue
            pair = _paired(r, s, keep & (sources[:, j] == t))
            if pair[0].size:
                per_tier_parts.setdefault(t, []).append(pair)
    tier_samples = {names[t]: (np.concatenate([p[0] for p in parts]),
                               np.concatenate([p[1] for p in parts]))
                    for t, parts in sorted(per_tier_parts.items())}
    fetch_pair = _paired(real_fetch, sim_fetch, keep)
    fetch_samples = fetch_pair if fetch_pair[0].size else None

    level_tiers = _level_tiers(profile, bank, layout, paths)
    return ValidationResult(
        diagnostics=diagnose(real, sim),
        profile=profile.name, bank=bank.name, layout=layout.name or "layout",
        workload=workload_name,
        per_tier={name: compare(*s) for name, s in tier_samples.items()},
        per_level={d: compare(*s) for d, s in level_samples.items()},
        fetch=compare(*fetch_samples) if fetch_samples is not None else None,
        level_tiers=level_tiers, real=real, simulated=sim,
        tier_samples=tier_samples, level_samples=level_samples, fetch_samples=fetch_samples,
        ratios=_ratios(real, sim),
    )


# `memsim.validate(...)` calls validate(); the module stays a module (`memsim.validate.<name>`)
from memsim import make_callable  # noqa: E402

make_callable(__name__, "validate")
