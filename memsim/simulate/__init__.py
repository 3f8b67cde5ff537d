"""Discrete-event simulator: the fetch-time distribution under load (SimPy).

`simulate(profile, bank, layout, workload)` runs queries through FCFS tier channels with
processor-shared bandwidth, a RAM cache and resident levels, and streams statistics with
batch-means confidence intervals. Block-level layouts (a block map, blocked subtrees) read
each block from its own tier and never fetch a blocked one; per level, `blocked_fraction`
and `tiers` (fraction of measured queries whose block lives on each tier) say where queries
went.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memsim.bank import Bank
from memsim.errors import InputError
from memsim.layout import Layout
from memsim.profile import Profile
from memsim.simulate.engine import Engine, saturation_rate, tier_load
from memsim.simulate.stats import PERCENTILES, BatchedSeries
from memsim.trace import write_trace
from memsim.workload import PathSampler, Workload

__all__ = ["QueryPlan", "SimulationResult", "plan_queries", "simulate", "saturation_rate",
           "tier_load"]

CHUNK = 1 << 16
MAX_QUERIES = 100_000_000


@dataclass
class SimulationResult:
    """Fetch-time statistics of a run, per query, level and tier."""

    queries: int  # measured (after warm-up)
    warmup: int
    seed: int
    fetch: str
    simulated_s: float
    fetch_time_s: dict[str, float]
    fetch_time_ci_s: dict[str, list[float] | None]
    per_level: dict[int, dict[str, Any]]
    per_tier: dict[str, dict[str, float]]
    utilization: dict[str, float]
    offered_load: dict[str, float]  # measured: what the run asked of each tier, after hits
    cache_hit_ratio: float | None  # over the levels the cache (or residency) can hold
    unstable: list[str] = field(default_factory=list)
    trace_out: str | None = None
    fetch_stats: BatchedSeries | None = field(default=None, repr=False)

    @property
    def mean_s(self) -> float:
        return self.fetch_time_s["mean"]

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries, "warmup": self.warmup, "seed": self.seed,
            "fetch": self.fetch, "simulated_s": self.simulated_s,
            "fetch_time_s": self.fetch_time_s, "fetch_time_ci_s": self.fetch_time_ci_s,
            "per_level": {str(d): v for d, v in self.per_level.items()},
            "per_tier": self.per_tier, "utilization": self.utilization,
            "offered_load": self.offered_load, "cache_hit_ratio": self.cache_hit_ratio,
            "unstable": self.unstable, "trace_out": self.trace_out,
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
                 warmup: float) -> QueryPlan:
    """Check the run's arguments and draw its queries from `seed`."""
    if (workload is None) == (trace is None):
        raise InputError("give a workload or a trace (not both)", field="workload")
    if not 1 <= queries <= MAX_QUERIES:
        raise InputError(f"queries must be between 1 and {MAX_QUERIES:,}, got {queries:,}",
                         field="queries")
    if not 0.0 <= warmup < 1.0:
        raise InputError(f"warmup must be a fraction in [0, 1), got {warmup}", field="warmup")
    rng = np.random.default_rng(seed)
    arrival_rng, path_rng, engine_rng, think_rng = rng.spawn(4)
    closed = workload is not None and workload.arrivals.kind == "closed"
    arrivals: np.ndarray | None = None
    fixed_paths: np.ndarray | None = None
    if trace is not None:
        arrivals, fixed_paths = trace
        queries = min(queries, len(arrivals))
        arrivals, fixed_paths = arrivals[:queries], fixed_paths[:queries]
    elif not closed:
        arrivals = workload.arrivals.arrival_times(queries, arrival_rng)
    paths = _Paths(PathSampler(workload, bank, path_rng) if fixed_paths is None else None,
                   fixed_paths)
    plan = QueryPlan(queries, closed, arrivals, paths, engine_rng)
    if closed:
        spec = workload.arrivals
        buffer: list[float] = []

        def think() -> float:
            if not buffer:
                buffer.extend(spec.think(think_rng, 4096).tolist())
            return buffer.pop()

        plan.clients, plan.think = spec.clients, think
    return plan


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
) -> SimulationResult:
    """Simulate `queries` queries of `workload` (or replay `trace`: arrival times and paths).

    The first `warmup` fraction of queries warms the queues and the cache and is left out of
    the statistics. The same seed gives the same result.
    """
    layout.check(bank, profile)
    plan = plan_queries(bank, workload, trace, queries, seed, warmup)
    queries, closed, arrivals, paths = plan.queries, plan.closed, plan.arrivals, plan.paths
    warm = int(queries * warmup)
    keep = trace_out is not None
    engine = Engine(profile, bank, layout, queries=queries, warmup=warm, rng=plan.engine_rng,
                    keep_trace=keep, on_progress=progress)
    issued_at = np.full(queries, np.nan) if (keep and closed) else None
    if closed:
        engine.closed_loop(plan.clients, plan.think, paths, issued_at)
    else:
        engine.env.process(engine.open_loop(arrivals, paths))
    end = engine.run()

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
    ci = {k: (list(v) if (v := stats.fetch.interval(k)) else None)
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
    hit_ratio = None
    if engine.cache is not None:
        lookups = sum(stats.lookups.values())
        hit_ratio = sum(stats.hits.values()) / lookups if lookups else 0.0
        for depth, count in stats.lookups.items():
            per_level[depth]["cache_hit_ratio"] = stats.hits[depth] / count
    out_path = None
    if keep:
        arrival_col = arrivals if not closed else issued_at
        all_paths = engine.paths_out
        columns = {"fetch_time_s": engine.fetch_times}
        for j, (depth, *_rest) in enumerate(engine.levels):
            columns[f"time_L{depth}_s"] = engine.level_times[:, j]
        out_path = str(write_trace(trace_out, np.asarray(arrival_col, dtype=float), all_paths,
                                   columns=columns))
    return SimulationResult(
        queries=stats.fetch.count, warmup=warm, seed=seed, fetch=layout.fetch,
        simulated_s=end, fetch_time_s=summary, fetch_time_ci_s=ci, per_level=per_level,
        per_tier=per_tier, utilization=utilization, offered_load=offered,
        cache_hit_ratio=hit_ratio, unstable=unstable, trace_out=out_path,
        fetch_stats=stats.fetch,
    )


def progress_bar(total: int) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    """A tqdm bar on stderr when it is a terminal; (update, close)."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="q", unit_scale=True, file=sys.stderr, mininterval=0.5)
    pending = [0]

    def update(n: int) -> None:
        pending[0] += n
        if pending[0] >= 1000:
            bar.update(pending[0])
            pending[0] = 0

    def close() -> None:
        bar.update(pending[0])
        bar.close()

    return update, close


# `memsim.simulate(...)` calls simulate(); the module stays a module (`memsim.simulate.<name>`)
from memsim import make_callable  # noqa: E402

make_callable(__name__, "simulate")
