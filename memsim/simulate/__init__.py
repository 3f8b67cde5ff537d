"""Discrete-event simulator: the fetch-time distribution under load (SimPy).

`simulate(profile, bank, layout, workload)` runs queries through FCFS tier channels with
processor-shared bandwidth, a RAM cache and resident levels, and streams statistics with
batch-means confidence intervals. Block-level layouts (a block map, blocked subtrees) read
each block from its own tier and never fetch a blocked one; per level, `blocked_fraction`
and `tiers` (fraction of measured queries whose block lives on each tier) say where queries
went.

A result that describes no steady state (a tier asked for more than it can serve, or fetch
times that grow through the run) lists why in `unstable`, has no confidence intervals (null:
an interval around a number that depends on the run's length means nothing), and is announced
with an `OverloadWarning`, as is a layout that overfills a tier (`capacity_warnings`).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memsim import limits
from memsim.bank import Bank
from memsim.energy import EnergyFigures, has_energy, idle_power_w, measured_energy_j
from memsim.errors import InputError, OverloadWarning
from memsim.layout import Layout
from memsim.profile import Profile
from memsim.simulate.batch import ServedCounters
from memsim.simulate.engine import Engine, saturation_rate, tier_load
from memsim.simulate.stats import PERCENTILES, BatchedSeries
from memsim.trace import write_trace
from memsim.workload import PathSampler, Workload

if TYPE_CHECKING:
    from memsim.client.prefetch import PrefetchConfig

__all__ = ["QueryPlan", "ServedCounters", "SimulationResult", "check_prefetch",
           "layout_prefetch", "plan_queries", "prefetch_parameters", "run_prefetch",
           "saturation_rate", "simulate", "tier_load"]

CHUNK = 1 << 16


@dataclass
class SimulationResult:
    """Fetch-time statistics of a run, per query, level and tier."""

    queries: int  # measured (after warm-up)
    warmup: int
    seed: int
    fetch: str
    simulated_s: float
    fetch_time_s: dict[str, float]
    fetch_time_ci_s: dict[str, list[float] | None]  # None: too few batches, or `unstable`
    per_level: dict[int, dict[str, Any]]
    per_tier: dict[str, dict[str, float]]
    utilization: dict[str, float]
    offered_load: dict[str, float]  # measured: what the run asked of each tier, after hits
    cache_hit_ratio: float | None  # over the levels the cache (or residency) can hold
    unstable: list[str] = field(default_factory=list)
    trace_out: str | None = None
    capacity_warnings: list[str] = field(default_factory=list)
    fetch_stats: BatchedSeries | None = field(default=None, repr=False)
    # Measured energy (memsim.energy), None when no tier has energy figures: the dynamic
    # joules per measured query from each tier's bytes, requests and busy channel time, the
    # profile's idle power, and the rate of the whole run (queries over simulated time), so
    # that `average_power_w` is the run's average power.
    energy: EnergyFigures | None = None
    # Queries per batch (memsim.simulate.batch), and what the client's ClientStats would count
    # for the measured batches: requests per tier, reads, and what deduplication saved.
    batch: int = 1
    served: ServedCounters = field(default_factory=ServedCounters)
    # The prefetch policy's parameters (policy, max_inflight, max_bytes, lookahead) when one
    # ran; None (and no "prefetch" key in to_json) without.
    prefetch: dict[str, Any] | None = None

    @property
    def mean_s(self) -> float:
        return self.fetch_time_s["mean"]

    @property
    def dedup_blocks_saved(self) -> int:
        """Block reads the batches saved by reading each shared block once."""
        return self.served.dedup_blocks_saved

    @property
    def dedup_requests_saved(self) -> int:
        """The requests those reads would have been."""
        return self.served.dedup_requests_saved

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries, "warmup": self.warmup, "seed": self.seed,
            "fetch": self.fetch, "simulated_s": self.simulated_s,
            "fetch_time_s": self.fetch_time_s, "fetch_time_ci_s": self.fetch_time_ci_s,
            "per_level": {str(d): v for d, v in self.per_level.items()},
            "per_tier": self.per_tier, "utilization": self.utilization,
            "offered_load": self.offered_load, "cache_hit_ratio": self.cache_hit_ratio,
            "unstable": self.unstable, "capacity_warnings": self.capacity_warnings,
            "trace_out": self.trace_out,
            "energy": self.energy.to_json() if self.energy is not None else None,
            "batch": self.batch, "dedup_blocks_saved": self.dedup_blocks_saved,
            "dedup_requests_saved": self.dedup_requests_saved,
            "served": self.served.to_json(),
            **({"prefetch": dict(self.prefetch)} if self.prefetch is not None else {}),
        }


class _Paths:
    """Paths handed out in query order, generated a chunk at a time (bounded memory)."""

    def __init__(self, sampler: PathSampler | None, fixed: np.ndarray | None) -> None:
        self.sampler, self.fixed = sampler, fixed
        self.start, self.block = 0, np.empty((0, 0), dtype=np.int64)

    def __call__(self, i: int) -> np.ndarray:
        if self.fixed is not None:
            return self.fixed[i]
        while i >= self.start + len(self.block):
            self.start += len(self.block)
            self.block = self.sampler.sample(CHUNK)
        return self.block[i - self.start]


@dataclass
class QueryPlan:
    """The queries of a run: arrivals (open loop) or clients with think times (closed), and
    paths. Simulate and replay draw them alike, so the same seed gives the same queries."""

    queries: int
    closed: bool
    arrivals: np.ndarray | None
    paths: _Paths
    engine_rng: np.random.Generator
    clients: int = 0
    think: Callable[[], float] | None = None


def plan_queries(bank: Bank, workload: Workload | None,
                 trace: tuple[np.ndarray, np.ndarray] | None, queries: int, seed: int,
                 warmup: float, paths: np.ndarray | None = None) -> QueryPlan:
    """Check the run's arguments and draw its queries from `seed`.

    Refuses (InputError naming the argument) a query count outside 1..limits.MAX_QUERIES, a
    warm-up outside [0, 1), and a trace that is not sorted finite non-negative arrival times
    with one path of the bank's blocks per arrival. `paths` (with a workload) are the
    queries' paths in order instead of the workload's draws; its arrivals still apply.
    """
    if (workload is None) == (trace is None):
        raise InputError("give a workload or a trace (not both)", field="workload")
    if paths is not None and trace is not None:
        raise InputError("give paths or a trace, not both (a trace has its paths)",
                         field="paths")
    if isinstance(queries, bool) or not isinstance(queries, int | np.integer):
        raise InputError(f"queries must be a whole number, got {queries!r}", field="queries")
    queries = int(queries)
    if queries < 1:
        raise InputError(f"queries must be at least 1, got {queries:,}", field="queries")
    limits.check_at_most(queries, limits.MAX_QUERIES, "the number of queries", field="queries")
    if not (isinstance(warmup, int | float) and 0.0 <= warmup < 1.0):
        raise InputError(f"warmup must be a fraction in [0, 1), got {warmup!r}",
                         field="warmup")
    if trace is not None:
        trace = _check_trace(bank, trace)
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise InputError(f"seed must be a non-negative whole number, got {seed!r} ({exc})",
                         field="seed") from None
    arrival_rng, path_rng, engine_rng, think_rng = rng.spawn(4)
    closed = workload is not None and workload.arrivals.kind == "closed"
    arrivals: np.ndarray | None = None
    fixed_paths: np.ndarray | None = None
    if paths is not None:
        fixed_paths = _check_paths(bank, paths, "paths")
        queries = min(queries, len(fixed_paths))
        fixed_paths = fixed_paths[:queries]
    if trace is not None:
        arrivals, fixed_paths = trace
        queries = min(queries, len(arrivals))
        arrivals, fixed_paths = arrivals[:queries], fixed_paths[:queries]
    elif not closed:
        arrivals = workload.arrivals.arrival_times(queries, arrival_rng)
    if arrivals is not None and arrivals.size and not arrivals[-1] <= limits.MAX_SIM_SECONDS:
        raise InputError(
            f"the arrivals of {queries:,} queries span {float(arrivals[-1]):.3g} s but memsim's "
            f"limit is {limits.MAX_SIM_SECONDS:.3g} s (beyond it a float clock cannot tell "
            "microseconds apart); raise the arrival rate or simulate fewer queries",
            field="trace" if trace is not None else "arrivals")
    paths = _Paths(PathSampler(workload, bank, path_rng) if fixed_paths is None else None,
                   fixed_paths)
    plan = QueryPlan(queries, closed, arrivals, paths, engine_rng)
    if closed:
        spec = workload.arrivals
        limits.check_at_most(spec.clients, limits.MAX_CLIENTS, "the number of closed-loop clients",
                             field="arrivals.clients")
        buffer: list[float] = []

        def think() -> float:
            if not buffer:
                buffer.extend(spec.think(think_rng, 4096).tolist())
            return buffer.pop()

        plan.clients, plan.think = spec.clients, think
    return plan


def _check_trace(bank: Bank, trace: tuple[np.ndarray, np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A trace given to the API: (arrival times, paths) as `read_trace` returns them."""
    try:
        arrivals, paths = trace
        arrivals = np.asarray(arrivals, dtype=float)
        paths = np.asarray(paths)
    except (TypeError, ValueError) as exc:
        raise InputError(f"a trace is (arrival times, paths), got {type(trace).__name__}: "
                         f"{exc}", field="trace") from None
    depths = len(bank.levels)
    if arrivals.ndim != 1 or arrivals.size == 0:
        raise InputError(f"arrival times must be a non-empty 1-D array, got shape "
                         f"{arrivals.shape}", field="trace")
    if paths.shape != (arrivals.size, depths):
        raise InputError(f"paths must have one row per arrival and one column per level of "
                         f"bank '{bank.name}', shape ({arrivals.size}, {depths}); got "
                         f"{paths.shape}", field="trace")
    paths = _check_paths(bank, paths, "trace")
    if not np.isfinite(arrivals).all() or (arrivals < 0).any():
        raise InputError("arrival times must be finite and non-negative", field="trace")
    if (np.diff(arrivals) < 0).any():
        row = int(np.flatnonzero(np.diff(arrivals) < 0)[0]) + 1
        raise InputError(f"arrival times must be sorted: row {row} (0-based) is earlier than "
                         "the one before", field="trace")
    return arrivals, paths


def _check_paths(bank: Bank, paths: Any, name: str) -> np.ndarray:
    """Paths given to the API: a non-empty (n, depths) array of whole block numbers, each in
    its level's range; as int64."""
    try:
        paths = np.asarray(paths)
    except (TypeError, ValueError) as exc:
        raise InputError(f"paths must be an (n, depths) array, got {type(paths).__name__}: "
                         f"{exc}", field=name) from None
    depths = len(bank.levels)
    if paths.ndim != 2 or paths.shape[0] == 0 or paths.shape[1] != depths:
        raise InputError(f"paths must be a non-empty array with one column per level of bank "
                         f"'{bank.name}' ({depths}); got shape {paths.shape}", field=name)
    if not (np.issubdtype(paths.dtype, np.integer)
            or (np.issubdtype(paths.dtype, np.floating) and np.isfinite(paths).all()
                and (paths == np.floor(paths)).all())):
        raise InputError(f"paths must hold whole block numbers, got {paths.dtype}",
                         field=name)
    paths = paths.astype(np.int64)
    for depth in range(1, depths + 1):
        column = paths[:, depth - 1]
        if (column < 0).any() or (column >= min(bank.branching ** depth, 2**63 - 1)).any():
            raise InputError(f"level {depth}: a block number is outside 0.."
                             f"{bank.branching ** depth - 1:,}", field=name)
    return paths


def check_prefetch(prefetch: Any, layout: Layout, bank: Bank, profile: Profile) -> None:
    """Check a run's `prefetch` argument ("layout", a PrefetchConfig or None) and the layout:
    an explicit prefetch (or None) replaces the layout's section, which is then not checked."""
    from_layout = isinstance(prefetch, str)
    if from_layout and prefetch != "layout":
        raise InputError(f"prefetch must be 'layout', a PrefetchConfig or None, got "
                         f"{prefetch!r}", field="prefetch")
    if not from_layout and prefetch is not None:
        from memsim.client.prefetch import PrefetchConfig

        if not isinstance(prefetch, PrefetchConfig):
            raise InputError(f"prefetch must be 'layout', a PrefetchConfig or None, got "
                             f"{prefetch!r}", field="prefetch")
    (layout if from_layout or layout.prefetch is None else
     layout.model_copy(update={"prefetch": None})).check(bank, profile)


def run_prefetch(prefetch: Any, layout: Layout, bank: Bank, workload: Workload | None,
                 plan: QueryPlan) -> PrefetchConfig | None:
    """The PrefetchConfig a run uses (checked by `check_prefetch`): the one given, or for
    "layout" the layout's section built for this run (`layout_prefetch`). Replay and
    simulate both call it, so a layout's section means the same prefetch in both."""
    if isinstance(prefetch, str):
        return layout_prefetch(layout, bank, workload, plan)
    return prefetch


def layout_prefetch(layout: Layout, bank: Bank, workload: Workload | None, plan: QueryPlan
                    ) -> PrefetchConfig | None:
    """The layout's `prefetch:` section as this run's PrefetchConfig: children with the
    workload's routing; trace following the run's own paths (drawn here, then handed out from
    the same array, so the run and the policy see the same sequence)."""
    section = layout.prefetch
    if section is None:
        return None
    trace = None
    if section.policy == "trace":
        fixed = plan.paths.fixed
        if fixed is None:
            limits.check_at_most(plan.queries * len(bank.levels), limits.MAX_TRACE_CELLS,
                                 f"the paths of {plan.queries:,} queries the trace prefetch "
                                 "policy follows (cells)", field="queries")
            fixed = np.stack([plan.paths(i) for i in range(plan.queries)])
            plan.paths = _Paths(None, fixed)
        trace = fixed[:plan.queries]
    return layout.prefetch_config(workload=workload, trace=trace)


def _caller_level() -> int:
    """The `stacklevel` of the first frame outside memsim: a warning names the user's line."""
    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(
            package + "/"):
        frame, level = frame.f_back, level + 1
    return level


def simulate(
    profile: Profile,
    bank: Bank,
    layout: Layout,
    workload: Workload | None = None,
    *,
    trace: tuple[np.ndarray, np.ndarray] | None = None,
    queries: int = 100_000,
    seed: int = 0,
    warmup: float = 0.1,
    trace_out: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 1,
    prefetch: PrefetchConfig | None | str = "layout",
    paths: np.ndarray | None = None,
) -> SimulationResult:
    """Simulate `queries` queries of `workload` (or replay `trace`: arrival times and paths).

    The first `warmup` fraction of queries warms the queues and the cache and is left out of
    the statistics. The same seed gives the same result. The work is bounded before it starts
    (limits.MAX_QUERIES, MAX_SIM_REQUESTS, MAX_TRACE_CELLS); a result that describes no
    steady state or an overfilled tier comes with an `OverloadWarning` per problem.

    `batch` groups consecutive queries into batches that fetch each distinct block once, as
    the client's `fetch_many` (memsim.simulate.batch): open loop, a batch is released when
    its last query has arrived; closed loop, each client takes the next `batch` queries of
    the sequence, issues them together and waits for all of them before it thinks again (as
    serve-bench's callers do). `served` counts what the client's stats would; with batch=1
    the run is the unbatched one.

    `prefetch` models the client's `open_bank(prefetch=...)` with the same parameters
    (memsim.simulate.prefetch); it needs the layout's cache with a budget. "layout" (the
    default): the layout's `prefetch:` section, built with this run's workload (children) or
    this run's own paths (trace: the trace's, or those drawn from the workload), as `replay`
    builds it; a `PrefetchConfig` or None overrides it. None, policy "none" or no section:
    no prefetch, exactly the run without it.

    `paths` (an (n, depths) array, with a workload) are the queries' paths in this order
    instead of the workload's draws, its arrivals still applying (at most n queries): e.g.
    a closed loop over the very paths serve-bench served.
    """
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise InputError(f"batch must be a whole number of queries, at least 1, got "
                         f"{batch!r}", field="batch")
    batch = int(batch)
    check_prefetch(prefetch, layout, bank, profile)
    plan = plan_queries(bank, workload, trace, queries, seed, warmup, paths)
    prefetch = run_prefetch(prefetch, layout, bank, workload, plan)
    queries, closed, arrivals, paths = plan.queries, plan.closed, plan.arrivals, plan.paths
    warm = int(queries * warmup)
    keep = trace_out is not None
    engine = Engine(profile, bank, layout, queries=queries, warmup=warm, rng=plan.engine_rng,
                    on_progress=progress)
    engine.batch = batch
    assert not isinstance(prefetch, str)
    if prefetch is not None and prefetch.policy != "none":
        from memsim.client.prefetch import make_policy
        from memsim.simulate.prefetch import SimPrefetcher

        if engine.cache is None or engine.cache.budget <= 0:
            raise InputError("prefetch needs a RAM cache to prefetch into: give the layout a "
                             "cache: section with a budget", field="prefetch")
        engine.prefetcher = SimPrefetcher(engine, make_policy(prefetch, bank), prefetch)
        engine.stats.served.prefetching = True
    # Bound the run before it starts: every query may read every level (a miss), each level
    # as its requests on the slowest placement of it.
    per_query = sum(max(len(parts) for (d, _t), parts in engine.parts.items() if d == depth)
                    for depth, *_ in engine.levels)
    if engine.prefetcher is not None:  # each fetch may start up to max_inflight block reads
        per_query += engine.prefetcher.config.max_inflight * max(
            len(parts) for parts in engine.parts.values())
    limits.check_at_most(queries * per_query, limits.MAX_SIM_REQUESTS,
                         f"the block requests of {queries:,} queries ({per_query:,} per query)",
                         field="queries")
    if keep:
        limits.check_at_most(queries * (2 * len(engine.levels) + len(bank.levels) + 2),
                             limits.MAX_TRACE_CELLS,
                             f"the trace of {queries:,} queries (cells)", field="queries")
        engine.keep_trace()
    issued_at = np.full(queries, np.nan) if (keep and closed) else None
    if closed:
        engine.closed_loop(plan.clients, plan.think, paths, issued_at)
    else:
        engine.env.process(engine.open_loop(arrivals, paths))
    end = engine.run()
    if not end <= limits.MAX_SIM_SECONDS:  # a closed loop's think times: known only now
        raise InputError(f"the run lasted {end:.3g} s of simulated time but memsim's limit is "
                         f"{limits.MAX_SIM_SECONDS:.3g} s (beyond it a float clock cannot tell "
                         "microseconds apart); shorten the think time or simulate fewer "
                         "queries", field="arrivals")

    # Offered load from what the run asked of each tier (after cache hits), over the span in
    # which queries arrived: at 1 or more the tier cannot keep up and its queue only grows.
    if closed:
        span = end
    else:
        span = float(arrivals[-1] - arrivals[0]) if queries > 1 else 0.0
    offered = {}
    for name, server in engine.tiers.items():
        if server.requests and span > 0:
            tier = server.tier
            offered[name] = max(server.demand / (tier.concurrency * span),
                                server.bytes_asked / (tier.total_bandwidth * span))
    unstable = [] if closed else [
        f"tier '{name}' is overloaded: offered utilisation {rho:.2f} >= 1; its queue grows "
        "without bound, so the fetch times describe this run's length, not a steady state"
        for name, rho in offered.items() if rho >= 1.0]

    stats = engine.stats
    summary = stats.fetch.summary()
    growth = stats.fetch.trend()
    if growth is not None and not unstable:
        unstable.append(
            f"fetch times grow through the run (the last batches' mean is {growth:.3g}x the "
            "first's): no steady state was reached, so they describe this run's length")
    # Around a number that depends on the run's length, an interval means nothing: null.
    ci = {k: (None if unstable else list(v) if (v := stats.fetch.interval(k)) else None)
          for k in ("mean", *PERCENTILES)}
    per_level = {}
    for depth, series in stats.per_level.items():
        per_level[depth] = {"tier": layout.placement[depth],
                            "bytes": bank.level(depth).block_bytes,
                            "resident": depth in layout.resident,
                            "time_s": series.mean, "p99_s": series.quantile(0.99)}
        if engine.block_level:  # fractions of the measured queries
            measured = max(stats.fetch.count, 1)
            per_level[depth]["blocked_fraction"] = stats.blocked.get(depth, 0) / measured
            per_level[depth]["tiers"] = {
                name: stats.routed[(depth, name)] / measured for name in profile.tier_names
                if (depth, name) in stats.routed}
    per_tier: dict[str, dict[str, float]] = {}
    utilization: dict[str, float] = {}
    for name, server in engine.tiers.items():
        if not server.requests:
            continue
        tier = server.tier
        channel = server.busy_time / (tier.concurrency * end) if end > 0 else 0.0
        bandwidth = server.bytes / (tier.total_bandwidth * end) if end > 0 else 0.0
        utilization[name] = max(channel, bandwidth)
        per_tier[name] = {"requests": server.requests, "bytes": server.bytes,
                          "time_s": server.service_time / server.requests,
                          "wait_s": server.wait_time / server.requests,
                          "channel_utilization": channel, "bandwidth_utilization": bandwidth}
    # The cache's hit ratio covers the levels its budget holds, and exists only with a cache;
    # a resident level's own (its block still in RAM) is reported per level.
    resident = set(layout.resident)
    cached = [d for d in stats.lookups if d not in resident]
    lookups = sum(stats.lookups[d] for d in cached)
    hit_ratio = (sum(stats.hits[d] for d in cached) / lookups
                 if layout.cache is not None and lookups else None)
    for depth, count in stats.lookups.items():
        key = "resident_hit_ratio" if depth in resident else "cache_hit_ratio"
        per_level[depth][key] = stats.hits[depth] / count
    capacity = layout.overfilled(bank, profile)
    for problem in (*unstable, *capacity):
        warnings.warn(problem, OverloadWarning, stacklevel=_caller_level())
    out_path = None
    if keep:
        arrival_col = arrivals if not closed else issued_at
        all_paths = engine.paths_out
        columns = {"fetch_time_s": engine.fetch_times}
        for j, (depth, *_rest) in enumerate(engine.levels):
            columns[f"time_L{depth}_s"] = engine.level_times[:, j]
        out_path = str(write_trace(trace_out, np.asarray(arrival_col, dtype=float), all_paths,
                                   columns=columns))
    energy = None
    if has_energy(profile):
        spent = sum(measured_energy_j(engine.tiers[name].tier, nbytes, requests, busy)
                    for name, (nbytes, requests, busy) in engine.measured_counters().items())
        energy = EnergyFigures(dynamic_j_per_query=spent / max(stats.fetch.count, 1),
                               idle_power_w=idle_power_w(profile),
                               rate=queries / end if end > 0 else None)
    return SimulationResult(
        queries=stats.fetch.count, warmup=warm, seed=seed, fetch=layout.fetch,
        simulated_s=end, fetch_time_s=summary, fetch_time_ci_s=ci, per_level=per_level,
        per_tier=per_tier, utilization=utilization, offered_load=offered,
        cache_hit_ratio=hit_ratio, unstable=unstable, trace_out=out_path,
        fetch_stats=stats.fetch, capacity_warnings=capacity, energy=energy, batch=batch,
        served=stats.served, prefetch=prefetch_parameters(engine.prefetcher.config)
        if engine.prefetcher is not None else None,
    )


def prefetch_parameters(config: PrefetchConfig) -> dict[str, Any]:
    """A prefetch configuration's parameters as plain data (its inputs, workload and trace,
    left out): what a simulated and a measured run report, to be compared."""
    return {"policy": config.policy, "max_inflight": int(config.max_inflight),
            "max_bytes": int(config.max_bytes), "lookahead": int(config.lookahead)}


PROGRESS_INTERVAL = 0.2  # seconds of wall time between redraws of the progress bar


class _Throttled:
    """Counts completed queries and hands them to `bar.update` at most every `interval`
    seconds of `clock` (and at close), so a bar moves during a slow replay yet costs a
    clock read per query on a fast simulation."""

    def __init__(self, bar: Any, clock: Callable[[], float] = time.monotonic,
                 interval: float = PROGRESS_INTERVAL) -> None:
        self.bar, self.clock, self.interval = bar, clock, interval
        self.pending = 0
        self.last = clock()

    def update(self, n: int) -> None:
        self.pending += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.bar.update(self.pending)
            self.pending, self.last = 0, now

    def close(self) -> None:
        if self.pending:
            self.bar.update(self.pending)
            self.pending = 0
        self.bar.close()


def progress_bar(total: int, *, file: Any = None, clock: Callable[[], float] = time.monotonic
                 ) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    """A tqdm bar of whole queries on `file` (stderr) when it is a terminal; (update, close).

    Redrawn every PROGRESS_INTERVAL seconds of `clock`, whatever the rate of queries.
    """
    file = sys.stderr if file is None else file
    if not file.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="q", unit_scale=False, file=file, mininterval=0, miniters=1,
               dynamic_ncols=True)
    throttled = _Throttled(bar, clock)
    return throttled.update, throttled.close


# `memsim.simulate(...)` calls simulate(); the module stays a module (`memsim.simulate.<name>`)
from memsim import make_callable  # noqa: E402

make_callable(__name__, "simulate")
