"""Replay: run a workload through the client (`memsim.open_bank`'s `ServedBank`) with real
reads, timing everything.

Queries arrive as the workload says (open loop: at their arrival times; closed loop: clients
that think, query and wait), exactly as `simulate` would draw them for the same seed, so the
two can be compared query by query. Each query is one `ServedBank.afetch(path, timed=True)`:
the client an inference server uses does every read, with its RAM cache, resident levels,
prefetch, checks, access control and tier channels (at most `concurrency` requests at once per
tier, demand before prefetch). There is no second read path to keep in step with the client:
what `validate` compares with the simulator is what a server sees. Statistics and JSON keys
are those of `simulate`, plus `replay`.

Times are the client's own: a level's time ends when its bytes are in memory, stamped by the
thread that read them (`FetchTimings`), and per-tier service and wait times come from its
request log. A query's time starts when it really started, which the trace records as its
arrival. The harness keeps its own costs off the clock: the heap that existed before the run
is frozen (a full garbage collection would stall every reading thread) and a query's path is
drawn before it arrives.
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memsim.aio import frozen_heap, run_sync
from memsim.bank import Bank
from memsim.blockmap import Subtree
from memsim.errors import DataError
from memsim.layout import Layout
from memsim.materialize import load_content, materialize_plan
from memsim.materialize.manifest import placement_plan
from memsim.profile import Profile
from memsim.replay.reader import BadBlock, BankReader
from memsim.simulate import (
    SimulationResult,
    _Paths,
    check_prefetch,
    plan_queries,
    prefetch_parameters,
    run_prefetch,
)
from memsim.simulate.batch import ServedCounters
from memsim.simulate.stats import PERCENTILES, BatchedSeries, Series
from memsim.stores import ByteStore, tier_stores
from memsim.trace import write_trace
from memsim.workload import Workload

if TYPE_CHECKING:
    from memsim.client.bank import ServedBank

__all__ = ["BadBlock", "BankReader", "ReplayResult", "replay"]

BATCHES = 20


@dataclass
class ReplayResult(SimulationResult):
    """`SimulationResult` measured on real stores, plus what only real reads have."""

    wall_s: float = 0.0
    read_mode: dict[str, str] = field(default_factory=dict)  # tier -> o_direct/fadvise/warm/...
    retries: dict[str, int] = field(default_factory=dict)
    request_errors: dict[str, dict[str, int]] = field(default_factory=dict)
    checked_blocks: int = 0
    blocked_reads: dict[int, int] = field(default_factory=dict)
    bad_blocks: list[BadBlock] = field(default_factory=list)
    indexes_preloaded: int = 0
    arrival_lag_s: dict[str, float] = field(default_factory=dict)  # open loop: p50/p99/max
    # tier -> each request's service time (s), in the order they finished: is the tier steady?
    service_times: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # the client's prefetch (a memsim.client.prefetch.PrefetchConfig, or None), for simulating
    # the same run
    prefetch_config: Any = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["replay"] = {
            "wall_s": self.wall_s, "read_mode": self.read_mode, "retries": self.retries,
            "request_errors": self.request_errors, "checked_blocks": self.checked_blocks,
            "blocked_reads": {str(d): n for d, n in self.blocked_reads.items()},
            "bad_blocks": [vars(b) for b in self.bad_blocks],
            "indexes_preloaded": self.indexes_preloaded,
            "arrival_lag_s": self.arrival_lag_s,
        }
        return out


class _Run:
    """One replay: the client serving each query, the clock, and what is measured.

    Every read is the client's (`ServedBank.afetch`): its RAM cache and resident levels,
    prefetch, tier channels and checks. This harness only issues the queries on time and
    records the client's own per-level stamps (`FetchTimings`) and request log."""

    def __init__(self, served: ServedBank, queries: int, warmup: int, keep: bool,
                 progress: Callable[[int], None] | None) -> None:
        self.served = served
        self.profile, self.bank, self.layout = served.profile, served.bank, served.layout
        self.queries, self.warmup = queries, warmup
        self.levels = [(lv.depth, lv.depth - 1, lv.block_bytes)
                       for lv in self.bank.active_levels]
        self.resident = set(self.layout.resident)
        self.sequential = self.layout.fetch == "sequential"
        measured = max(queries - warmup, 1)
        self.fetch = BatchedSeries(batch_size=max(1, -(-measured // BATCHES)))
        self.per_level = {d: Series() for d, *_ in self.levels}
        self.routed: dict[tuple[int, str], int] = {}
        self.completed = 0
        self.progress = progress
        names = self.profile.tier_names
        self.tier_index = {name: i for i, name in enumerate(names)}
        self.fetch_times = np.full(queries, np.nan) if keep else None
        self.level_times = np.full((queries, len(self.levels)), np.nan) if keep else None
        # per query and level, the tier the client served the block from (-1: nothing read)
        self.sources = np.full((queries, len(self.levels)), -1, dtype=np.int64) \
            if keep else None
        self.paths_out = np.zeros((queries, len(self.bank.levels)), dtype=np.int64) \
            if keep else None
        self.issued_at = np.full(queries, np.nan) if keep else None
        self.started = 0.0
        self.lag: list[float] = []  # open loop: how late each query was issued (s)

    def mark_measured(self) -> None:
        """The first measured query starts: the client's counters count from here, as the
        simulator's do (warm-up reads still in flight are counted with them)."""
        self.served.stats.reset()

    async def query(self, index: int, path: np.ndarray, arrived: float) -> None:
        measured = index >= self.warmup
        if index == self.warmup:
            self.mark_measured()
        if self.paths_out is not None:
            self.paths_out[index] = path
        times = [0.0] * len(self.levels)
        last = arrived
        try:
            got = await self.served.afetch(path, timed=True)
        except DataError:  # a missing or corrupt block: in reader.bad, the query ends here
            last = time.perf_counter()
            times = [math.nan] * len(self.levels)
        else:
            timing = got.timings
            start, levels, tiers = timing.start, timing.levels, timing.tiers
            started = timing.started
            cached = set(timing.cached)
            for j, (depth, *_r) in enumerate(self.levels):
                at = levels.get(depth)
                if at is None or (depth in cached and depth in self.resident):
                    continue  # blocked, or a resident level's block: it cost nothing
                done = start + at
                last = max(last, done)
                times[j] = (at - started.get(depth, 0.0)) if self.sequential \
                    else done - arrived
                if self.sources is not None:
                    self.sources[index, j] = self.tier_index.get(tiers[depth], -1)
                if measured and depth not in cached:
                    key = (depth, tiers[depth])
                    self.routed[key] = self.routed.get(key, 0) + 1
        total = last - arrived
        self.completed += 1
        if self.fetch_times is not None:
            self.fetch_times[index] = total
            self.level_times[index] = times
        if measured:
            self.fetch.add(total)
            for (depth, *_), t in zip(self.levels, times, strict=True):
                if not math.isnan(t):
                    self.per_level[depth].add(t)
        if self.progress is not None:
            self.progress(1)

    async def open_loop(self, arrivals: np.ndarray, paths: _Paths) -> None:
        self.started = start = time.perf_counter() + 0.005
        tasks: set[asyncio.Task[None]] = set()
        first = float(arrivals[0]) if len(arrivals) else 0.0

        async def arrive(i: int, path: np.ndarray, due: float) -> None:
            # timed from when the query starts: a timer fires up to ~1 ms late (epoll's
            # resolution) and a task starts after the callbacks ahead of it, which shifts the
            # arrival (recorded as such, for the simulation of the trace), not the fetch
            now = time.perf_counter()
            self.lag.append(now - due)
            if self.issued_at is not None:
                self.issued_at[i] = first + (now - start)
            await self.query(i, path, now)

        for i, t in enumerate(arrivals.tolist()):
            path = paths(i)  # drawn before the clock: the query's path is known on arrival
            due = start + (t - first)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(arrive(i, path, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))

    async def closed_loop(self, clients: int, think: Callable[[], float], paths: _Paths
                          ) -> None:
        self.started = time.perf_counter()
        issued = [0]

        async def client() -> None:
            while True:
                pause = think()
                if pause > 0:
                    await asyncio.sleep(pause)
                if issued[0] >= self.queries:
                    return
                i = issued[0]
                issued[0] += 1
                now = time.perf_counter()
                if self.issued_at is not None:
                    self.issued_at[i] = now - self.started
                await self.query(i, paths(i), now)

        await asyncio.gather(*(client() for _ in range(clients)))


def fill_memory_tiers(profile: Profile, bank: Bank, layout: Layout,
                      stores: dict[str, ByteStore], weights: str | Path | None, *,
                      invent: bool = True) -> None:
    """Load RAM (memory://) tiers that this process has not filled yet, from the content
    source the persistent stores record; with none recorded, synthetic content (`invent`,
    what a timing run needs) or a DataError (the client, which must serve the real bank)."""
    empty = [name for name, s in stores.items()
             if not s.persistent and "zarr.json" not in getattr(s, "data", {})]
    if not empty:
        return
    from memsim.materialize.content import SyntheticContent

    content = load_content(stores, bank, weights)
    if content is None:
        if not invent:
            name = empty[0]
            raise DataError(f"tier '{name}' ({stores[name].url}) is empty and no other store "
                            "records the bank's content: run `memsim.materialize` in this "
                            "process first")
        content = SyntheticContent(bank)
    plan = placement_plan(profile, bank, layout)
    materialize_plan(profile, bank, layout, {t: plan[t] for t in empty if t in plan},
                     {t: stores[t] for t in empty}, content)


def replay(
    profile: Profile,
    bank: Bank,
    layout: Layout,
    workload: Workload | None = None,
    *,
    trace: tuple[np.ndarray, np.ndarray] | None = None,
    queries: int = 1000,
    seed: int = 0,
    warmup: float = 0.1,
    stores: Mapping[str, str] | None = None,
    cold: bool = True,
    check_rate: float = 0.1,
    preload_index: bool = True,
    blocked: list[Subtree] | None = None,
    weights: str | Path | None = None,
    trace_out: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    prefetch: Any = "layout",
) -> ReplayResult:
    """Replay `queries` queries of `workload` (or `trace`) through the client, with real
    reads from the stores.

    The same seed draws the same arrivals and paths as `simulate`. The client is opened on
    the layout (its cache, resident levels and, by default, its `prefetch:` section; or a
    `PrefetchConfig`, or None). `check_rate` is the fraction of blocks checked against the
    manifest; `blocked` adds subtrees (a policy) to the layout's. Missing or corrupt blocks
    are collected in `bad_blocks`, not raised.
    """
    from memsim.client.bank import ServedBank

    check_prefetch(prefetch, layout, bank, profile)
    queries_plan = plan_queries(bank, workload, trace, queries, seed, warmup)
    queries, closed = queries_plan.queries, queries_plan.closed
    # the layout's section as simulate builds it (the trace policy follows these very paths)
    config = run_prefetch(prefetch, layout, bank, workload, queries_plan)
    arrivals, paths = queries_plan.arrivals, queries_plan.paths
    plan = placement_plan(profile, bank, layout)
    opened = tier_stores(profile, plan, stores, cold=cold, seed=seed)
    try:
        fill_memory_tiers(profile, bank, layout, opened, weights)
        reader = BankReader(profile, bank, layout, opened, blocked=blocked,
                            check_rate=check_rate, seed=seed).open(plan)
        served = ServedBank(reader, check_rate=check_rate, seed=seed, cache=layout.cache,
                            resident=layout.resident, prefetch=config)
        log = served.log_requests()
        warm = int(queries * warmup)
        run = _Run(served, queries, warm, trace_out is not None, progress)

        async def main() -> tuple[int, float]:
            preloaded = await reader.preload_indexes() if preload_index else 0
            t0 = time.perf_counter()
            if closed:
                await run.closed_loop(queries_plan.clients, queries_plan.think, paths)
            else:
                await run.open_loop(arrivals, paths)
            wall = time.perf_counter() - t0
            if served.prefetcher is not None:  # reads ahead that no query will use
                await served.prefetcher.cancel_tasks()
            return preloaded, wall

        with frozen_heap():
            preloaded, wall = run_sync(main())
        try:
            return _result(run, reader, opened, log, profile, bank, layout, seed, warm, wall,
                           preloaded, closed, arrivals, trace_out, config)
        finally:
            served.close()
    finally:
        for store in opened.values():
            store.close()


def _lag(lag: list[float]) -> dict[str, float]:
    """How late the open loop issued its queries: p50, p99 and the worst, in seconds."""
    if not lag:
        return {}
    x = np.maximum(np.asarray(lag), 0.0)
    return {"p50": float(np.quantile(x, 0.5)), "p99": float(np.quantile(x, 0.99)),
            "max": float(x.max())}


def _result(run: _Run, reader: BankReader, stores: dict[str, ByteStore], log: dict[str, Any],
            profile: Profile, bank: Bank, layout: Layout, seed: int, warm: int, wall: float,
            preloaded: int, closed: bool, arrivals: np.ndarray | None,
            trace_out: str | Path | None, prefetch: Any) -> ReplayResult:
    span = wall if closed or arrivals is None or len(arrivals) < 2 else float(
        arrivals[-1] - arrivals[0])
    stats = run.served.stats  # the client's counters, since the first measured query
    per_level: dict[int, dict[str, Any]] = {}
    block_level = layout.block_map(profile) is not None or bool(reader.blocked)
    measured = max(run.fetch.count, 1)
    resident = set(layout.resident)
    for depth, series in run.per_level.items():
        per_level[depth] = {"tier": layout.placement[depth],
                            "bytes": bank.level(depth).block_bytes,
                            "resident": depth in resident,
                            "time_s": series.mean, "p99_s": series.quantile(0.99)}
        if block_level:
            per_level[depth]["blocked_fraction"] = stats.blocked.get(depth, 0) / measured
            per_level[depth]["tiers"] = {name: run.routed[(depth, name)] / measured
                                         for name in profile.tier_names
                                         if (depth, name) in run.routed}
        lookups = stats.cache_lookups.get(depth, 0)
        if lookups:
            key = "resident_hit_ratio" if depth in resident else "cache_hit_ratio"
            per_level[depth][key] = stats.cache_level_hits.get(depth, 0) / lookups
    per_tier: dict[str, dict[str, float]] = {}
    utilization: dict[str, float] = {}
    offered: dict[str, float] = {}
    for name, entries in log.items():
        requests = len(entries.service)
        if not requests:
            continue
        service, waited, nbytes = sum(entries.service), sum(entries.wait), sum(entries.nbytes)
        tier = profile.tier(name)
        channel = service / (tier.concurrency * wall) if wall > 0 else 0.0
        bandwidth = nbytes / (tier.total_bandwidth * wall) if wall > 0 else 0.0
        utilization[name] = max(channel, bandwidth)
        if span > 0:
            offered[name] = max(service / (tier.concurrency * span),
                                nbytes / (tier.total_bandwidth * span))
        per_tier[name] = {"requests": requests, "bytes": nbytes,
                          # as the simulator's: from asking the tier to the last byte
                          "time_s": (service + waited) / requests,
                          "wait_s": waited / requests,
                          "channel_utilization": channel, "bandwidth_utilization": bandwidth}
    unstable = [] if closed else [
        f"tier '{name}' is overloaded: measured utilisation {rho:.2f} >= 1; its queue grew "
        "during the run, so the fetch times describe this run's length, not a steady state"
        for name, rho in offered.items() if rho >= 1.0]
    hit_ratio = stats.cache_hit_ratio if layout.cache is not None else None
    if layout.cache is not None and hit_ratio is None:
        hit_ratio = 0.0
    # the client's counters under the simulator's names (ServedCounters mirrors ClientStats)
    served = ServedCounters(prefetching=run.served.prefetcher is not None, **{
        f.name: copy.copy(getattr(stats, f.name)) for f in fields(ServedCounters)
        if f.name != "prefetching"})
    ci = {k: (list(v) if (v := run.fetch.interval(k)) else None)
          for k in ("mean", *PERCENTILES)}
    out_path = None
    if trace_out is not None:
        columns = {"fetch_time_s": run.fetch_times}
        for j, (depth, *_r) in enumerate(run.levels):
            columns[f"time_L{depth}_s"] = run.level_times[:, j]
        for j, (depth, *_r) in enumerate(run.levels):
            columns[f"source_L{depth}"] = run.sources[:, j]
        arrival_col = run.issued_at  # as issued (late timers and all), so a simulation of
        # the trace sees the arrivals the reads saw
        out_path = str(write_trace(trace_out, np.asarray(arrival_col, dtype=float),
                                   run.paths_out, columns=columns))
    return ReplayResult(
        queries=run.fetch.count, warmup=warm, seed=seed, fetch=layout.fetch, simulated_s=wall,
        fetch_time_s=run.fetch.summary(), fetch_time_ci_s=ci, per_level=per_level,
        per_tier=per_tier, utilization=utilization, offered_load=offered,
        cache_hit_ratio=hit_ratio, unstable=unstable, trace_out=out_path,
        fetch_stats=run.fetch, served=served, wall_s=wall,
        read_mode={name: getattr(s, "mode", s.kind) for name, s in stores.items()},
        retries={name: s.counters.retries for name, s in stores.items()
                 if s.counters.retries},
        request_errors={name: dict(s.counters.errors) for name, s in stores.items()
                        if s.counters.errors},
        checked_blocks=reader.checked, blocked_reads=dict(reader.blocked_reads),
        bad_blocks=list(reader.bad), indexes_preloaded=preloaded,
        service_times={name: np.asarray(entries.service) for name, entries in log.items()
                       if entries.service},
        arrival_lag_s=_lag(run.lag), prefetch_config=prefetch,
        prefetch=prefetch_parameters(prefetch) if prefetch is not None else None,
    )


# `memsim.replay(...)` calls replay(); the module stays a module (`memsim.replay.<name>`)
from memsim import make_callable  # noqa: E402

make_callable(__name__, "replay")
