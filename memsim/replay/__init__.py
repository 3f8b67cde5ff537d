"""Replay: run a workload against the materialized bank with real reads, timing everything.

Queries arrive as the workload says (open loop: at their arrival times; closed loop: clients
that think, query and wait), exactly as `simulate` would draw them for the same seed, so the
two can be compared query by query. Each query reads one block per level through the
`BankReader`, in parallel or in sequence as the layout says, at most `concurrency` requests
at once per tier (a request waits for a channel, as in the simulator's FCFS channels: a local
store's threads, or a slot here for other stores). Local
tiers read cold by default. Resident levels cost nothing; a RAM-cache hit costs a real copy
of the block in RAM. Statistics and JSON keys are those of `simulate`, plus `replay`.

Times are taken as the model takes them: a level's time ends when its bytes are in memory,
stamped by the thread that read them (`TimedRead.done`), not when the event loop next looks;
a query's time starts when it really started, which the trace records as its arrival. The
harness keeps its own costs off the clock: buffers are paged in beforehand, the heap that
existed before the run is frozen (a full garbage collection would stall every reading thread)
and a query's path is drawn before it arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memsim.aio import frozen_heap, run_sync
from memsim.bank import Bank
from memsim.blockmap import Subtree
from memsim.errors import DataError
from memsim.layout import Layout
from memsim.materialize import load_content, materialize_plan
from memsim.materialize.manifest import placement_plan
from memsim.profile import Profile
from memsim.replay.reader import BadBlock, BankReader, Location
from memsim.simulate import SimulationResult, _Paths, plan_queries
from memsim.simulate.cache import BlockCache
from memsim.simulate.stats import PERCENTILES, BatchedSeries, Series
from memsim.stores import ByteStore, tier_stores
from memsim.trace import write_trace
from memsim.workload import Workload

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


@dataclass
class _TierStats:
    requests: int = 0
    bytes: int = 0
    service: float = 0.0
    wait: float = 0.0
    services: list[float] = field(default_factory=list)


class _Run:
    """One replay: the reader, per-tier request slots, the cache and the statistics."""

    def __init__(self, profile: Profile, bank: Bank, layout: Layout, reader: BankReader,
                 queries: int, warmup: int, keep: bool,
                 progress: Callable[[int], None] | None) -> None:
        self.profile, self.bank, self.layout, self.reader = profile, bank, layout, reader
        self.queries, self.warmup = queries, warmup
        self.levels = [(lv.depth, lv.depth - 1, lv.block_bytes) for lv in bank.active_levels]
        self.slots = {t.name: asyncio.Semaphore(t.concurrency) for t in profile.tiers}
        self.tier_stats = {t.name: _TierStats() for t in profile.tiers}
        measured = max(queries - warmup, 1)
        self.fetch = BatchedSeries(batch_size=max(1, -(-measured // BATCHES)))
        self.per_level = {d: Series() for d, *_ in self.levels}
        self.hits: dict[int, int] = {}
        self.lookups: dict[int, int] = {}
        self.routed: dict[tuple[int, str], int] = {}
        self.blocked: dict[int, int] = {}
        self.completed = 0
        self.progress = progress
        cache = layout.cache
        self.cache: BlockCache | None = None
        if cache is not None or layout.resident:
            self.cache = BlockCache(budget=cache.budget if cache else 0,
                                    policy=cache.policy if cache else "lru",
                                    levels=(cache.levels if cache else []),
                                    resident=layout.resident)
        biggest = max((b for *_, b in self.levels), default=1)
        self._ram_src = bytearray(biggest) if self.cache is not None else bytearray()
        self.fetch_times = np.full(queries, np.nan) if keep else None
        self.level_times = np.full((queries, len(self.levels)), np.nan) if keep else None
        self.paths_out = np.zeros((queries, len(bank.levels)), dtype=np.int64) if keep else None
        self.issued_at = np.full(queries, np.nan) if keep else None
        self.started = 0.0
        self.lag: list[float] = []  # open loop: how late each query was issued (s)

    async def _request(self, loc: Location, start: int, length: int) -> tuple[Any, float]:
        """One byte range: (data, when its last byte was in memory)."""
        stats = self.tier_stats[loc.tier]
        store = self.reader.stores[loc.tier]
        asked = time.perf_counter()
        if store.channels is not None:  # the store queues requests for its own channels
            data, service, done = await store.read_range_timed(loc.key, start, length)
        else:
            async with self.slots[loc.tier]:
                data, service, done = await store.read_range_timed(loc.key, start, length)
        stats.wait += done - asked - service
        stats.service += service
        stats.services.append(service)
        stats.requests += 1
        stats.bytes += length
        return data, done

    async def _level(self, depth: int, block: int, nbytes: int, measured: bool
                     ) -> float | None:
        """Fetch one block: when it was in memory, or None if it cost nothing."""
        reader = self.reader
        if reader.blocked and reader.is_blocked(depth, block):
            # never looked up, admitted nor requested, as in the simulator
            reader.blocked_reads[depth] = reader.blocked_reads.get(depth, 0) + 1
            if measured:
                self.blocked[depth] = self.blocked.get(depth, 0) + 1
            return None
        cache = self.cache
        if cache is not None:
            hit = cache.lookup(depth, block)
            if measured and cache.covers(depth):
                self.lookups[depth] = self.lookups.get(depth, 0) + 1
                self.hits[depth] = self.hits.get(depth, 0) + hit
            if hit:
                if depth in cache.resident:
                    return None
                bytes(memoryview(self._ram_src)[:nbytes])  # the copy out of the RAM cache
                return time.perf_counter()
            # admitted at lookup, as the simulator does: a query that arrives while the
            # block is being read finds it (and waits for nothing, as in the model)
            cache.insert(depth, block, nbytes)
        try:
            loc = await self.reader.locate(depth, block)
        except DataError as exc:
            self.reader.report_missing(depth, block, exc)
            return time.perf_counter()
        if loc is None:
            if measured:
                self.blocked[depth] = self.blocked.get(depth, 0) + 1
            return None
        if measured:
            key = (depth, loc.tier)
            self.routed[key] = self.routed.get(key, 0) + 1
        try:
            if len(loc.ranges) == 1:
                got = [await self._request(loc, *loc.ranges[0])]
            else:
                got = list(await asyncio.gather(*(self._request(loc, s, n)
                                                  for s, n in loc.ranges)))
        except DataError as exc:
            self.reader.report_missing(depth, block, exc)
            return time.perf_counter()
        parts = [data for data, _done in got]
        if self.reader.should_check():
            self.reader.check(loc, parts)
        self.reader.release(loc, parts)
        return max(done for _data, done in got)

    async def query(self, index: int, path: np.ndarray, arrived: float) -> None:
        measured = index >= self.warmup
        if self.paths_out is not None:
            self.paths_out[index] = path
        times = [0.0] * len(self.levels)
        last = arrived
        if self.layout.fetch == "sequential":
            for j, (depth, col, nbytes) in enumerate(self.levels):
                t0 = time.perf_counter()
                done = await self._level(depth, int(path[col]), nbytes, measured)
                if done is not None:
                    times[j] = done - t0
                    last = done
        else:
            async def timed(j: int, depth: int, block: int, nbytes: int) -> float:
                done = await self._level(depth, block, nbytes, measured)
                if done is None:
                    return arrived
                times[j] = done - arrived
                return done

            steps = [timed(j, d, int(path[c]), b) for j, (d, c, b) in enumerate(self.levels)]
            if steps:
                # the others as tasks, the first inline: a task starts only on the event
                # loop's next round, a delay that is the harness's, not the tier's
                others = [asyncio.ensure_future(step) for step in steps[1:]]
                first = await steps[0]
                last = max([first, *(await asyncio.gather(*others))])
        total = last - arrived
        self.completed += 1
        if self.fetch_times is not None:
            self.fetch_times[index] = total
            self.level_times[index] = times
        if measured:
            self.fetch.add(total)
            for (depth, *_), t in zip(self.levels, times, strict=True):
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


def _prewarm(profile: Profile, bank: Bank, layout: Layout, stores: dict[str, ByteStore]
             ) -> None:
    """Let each store ready its read buffers before the clock starts: for every level, the
    block size, as many as can be in flight (its channels, twice over: a block being read
    while the one before is still being checked)."""
    sizes = [lv.block_bytes for lv in bank.active_levels if lv.depth not in layout.resident]
    for tier in profile.tiers:
        store = stores.get(tier.name)
        if store is not None:
            store.prewarm(sizes, 2 * tier.concurrency + 2)


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
) -> ReplayResult:
    """Replay `queries` queries of `workload` (or `trace`) with real reads from the stores.

    The same seed draws the same arrivals and paths as `simulate`. `check_rate` is the
    fraction of blocks checked against the manifest; `blocked` adds subtrees (a policy) to the
    layout's. Missing or corrupt blocks are collected in `bad_blocks`, not raised.
    """
    layout.check(bank, profile)
    queries_plan = plan_queries(bank, workload, trace, queries, seed, warmup)
    queries, closed = queries_plan.queries, queries_plan.closed
    arrivals, paths = queries_plan.arrivals, queries_plan.paths
    plan = placement_plan(profile, bank, layout)
    opened = tier_stores(profile, plan, stores, cold=cold, seed=seed)
    try:
        fill_memory_tiers(profile, bank, layout, opened, weights)
        reader = BankReader(profile, bank, layout, opened, blocked=blocked,
                            check_rate=check_rate, seed=seed).open(plan)
        warm = int(queries * warmup)
        run = _Run(profile, bank, layout, reader, queries, warm, trace_out is not None,
                   progress)

        async def main() -> tuple[int, float]:
            preloaded = await reader.preload_indexes() if preload_index else 0
            _prewarm(profile, bank, layout, opened)
            t0 = time.perf_counter()
            if closed:
                await run.closed_loop(queries_plan.clients, queries_plan.think, paths)
            else:
                await run.open_loop(arrivals, paths)
            return preloaded, time.perf_counter() - t0

        with frozen_heap():
            preloaded, wall = run_sync(main())
        return _result(run, reader, opened, profile, bank, layout, seed, warm, wall, preloaded,
                       closed, arrivals, trace_out)
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


def _result(run: _Run, reader: BankReader, stores: dict[str, ByteStore], profile: Profile,
            bank: Bank, layout: Layout, seed: int, warm: int, wall: float, preloaded: int,
            closed: bool, arrivals: np.ndarray | None, trace_out: str | Path | None
            ) -> ReplayResult:
    span = wall if closed or arrivals is None or len(arrivals) < 2 else float(
        arrivals[-1] - arrivals[0])
    per_level: dict[int, dict[str, Any]] = {}
    block_level = layout.block_map(profile) is not None or bool(reader.blocked)
    measured = max(run.fetch.count, 1)
    for depth, series in run.per_level.items():
        per_level[depth] = {"tier": layout.placement[depth],
                            "bytes": bank.level(depth).block_bytes,
                            "resident": depth in layout.resident,
                            "time_s": series.mean, "p99_s": series.quantile(0.99)}
        if block_level:
            per_level[depth]["blocked_fraction"] = run.blocked.get(depth, 0) / measured
            per_level[depth]["tiers"] = {name: run.routed[(depth, name)] / measured
                                         for name in profile.tier_names
                                         if (depth, name) in run.routed}
        if depth in run.lookups:
            per_level[depth]["cache_hit_ratio"] = run.hits[depth] / run.lookups[depth]
    per_tier: dict[str, dict[str, float]] = {}
    utilization: dict[str, float] = {}
    offered: dict[str, float] = {}
    for name, s in run.tier_stats.items():
        if not s.requests:
            continue
        tier = profile.tier(name)
        channel = s.service / (tier.concurrency * wall) if wall > 0 else 0.0
        bandwidth = s.bytes / (tier.total_bandwidth * wall) if wall > 0 else 0.0
        utilization[name] = max(channel, bandwidth)
        if span > 0:
            offered[name] = max(s.service / (tier.concurrency * span),
                                s.bytes / (tier.total_bandwidth * span))
        per_tier[name] = {"requests": s.requests, "bytes": s.bytes,
                          # as the simulator's: from asking the tier to the last byte
                          "time_s": (s.service + s.wait) / s.requests,
                          "wait_s": s.wait / s.requests,
                          "channel_utilization": channel, "bandwidth_utilization": bandwidth}
    unstable = [] if closed else [
        f"tier '{name}' is overloaded: measured utilisation {rho:.2f} >= 1; its queue grew "
        "during the run, so the fetch times describe this run's length, not a steady state"
        for name, rho in offered.items() if rho >= 1.0]
    hit_ratio = None
    if run.cache is not None:
        lookups = sum(run.lookups.values())
        hit_ratio = sum(run.hits.values()) / lookups if lookups else 0.0
    ci = {k: (list(v) if (v := run.fetch.interval(k)) else None)
          for k in ("mean", *PERCENTILES)}
    out_path = None
    if trace_out is not None:
        columns = {"fetch_time_s": run.fetch_times}
        for j, (depth, *_r) in enumerate(run.levels):
            columns[f"time_L{depth}_s"] = run.level_times[:, j]
        arrival_col = run.issued_at  # as issued (late timers and all), so a simulation of
        # the trace sees the arrivals the reads saw
        out_path = str(write_trace(trace_out, np.asarray(arrival_col, dtype=float),
                                   run.paths_out, columns=columns))
    return ReplayResult(
        queries=run.fetch.count, warmup=warm, seed=seed, fetch=layout.fetch, simulated_s=wall,
        fetch_time_s=run.fetch.summary(), fetch_time_ci_s=ci, per_level=per_level,
        per_tier=per_tier, utilization=utilization, offered_load=offered,
        cache_hit_ratio=hit_ratio, unstable=unstable, trace_out=out_path,
        fetch_stats=run.fetch, wall_s=wall,
        read_mode={name: getattr(s, "mode", s.kind) for name, s in stores.items()},
        retries={name: s.counters.retries for name, s in stores.items()
                 if s.counters.retries},
        request_errors={name: dict(s.counters.errors) for name, s in stores.items()
                        if s.counters.errors},
        checked_blocks=reader.checked, blocked_reads=dict(reader.blocked_reads),
        bad_blocks=list(reader.bad), indexes_preloaded=preloaded,
        service_times={name: np.asarray(s.services) for name, s in run.tier_stats.items()
                       if s.services},
        arrival_lag_s=_lag(run.lag),
    )
