"""The discrete-event simulation of queries fetching their blocks under load (SimPy).

Queries arrive (open loop) or are issued by clients (closed loop); each fetches one block per
non-empty level of its path. A block found in the RAM cache costs a RAM request; a resident
level's current block costs nothing; anything else is requested from the block's tier.
Levels are fetched all at once (parallel) or one after another (sequential).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from memsim.bank import Bank
from memsim.cost_model import request_parts
from memsim.layout import Layout
from memsim.profile import Profile
from memsim.simulate.cache import BlockCache
from memsim.simulate.stats import BatchedSeries, Series
from memsim.simulate.tiers import TierServer

BATCHES = 32


def tier_load(profile: Profile, bank: Bank, layout: Layout, rate: float) -> dict[str, float]:
    """Utilisation each tier would see at `rate` queries/s with no cache hits (analytic).

    A tier is overloaded if its channels are busy more than all the time (latency plus
    transfer at the stream rate per request) or its bytes exceed its aggregate bandwidth.
    """
    resident = set(layout.resident)
    out: dict[str, float] = {}
    for tier in profile.tiers:
        channel_time = 0.0
        nbytes = 0.0
        for lv in bank.active_levels:
            if lv.depth in resident or layout.placement[lv.depth] != tier.name:
                continue
            for part in request_parts(tier, lv.block_bytes):
                channel_time += tier.latency.mean() + tier.request_overhead + (
                    part / tier.stream_bandwidth)
                nbytes += part
        if nbytes:
            out[tier.name] = rate * max(channel_time / tier.concurrency,
                                        nbytes / tier.total_bandwidth)
    return out


def saturation_rate(profile: Profile, bank: Bank, layout: Layout) -> tuple[float, str]:
    """The arrival rate (queries/s) at which the busiest tier reaches utilisation 1, and that
    tier: beyond it queues grow without bound (no cache hits assumed)."""
    load = tier_load(profile, bank, layout, 1.0)
    busiest = max(load, key=lambda name: load[name])
    return 1.0 / load[busiest], busiest


@dataclass
class RunStats:
    """Streaming results of one run."""

    fetch: BatchedSeries
    per_level: dict[int, Series]
    measured_from: int  # queries with a smaller index are warm-up

    completed: int = 0
    hits: dict[int, int] = field(default_factory=dict)  # per level, measured queries only
    lookups: dict[int, int] = field(default_factory=dict)  # levels the cache can hold


class Engine:
    """One simulation run: the environment, the tiers, the cache and the statistics."""

    def __init__(
        self,
        profile: Profile,
        bank: Bank,
        layout: Layout,
        *,
        queries: int,
        warmup: int,
        rng: np.random.Generator,
        keep_trace: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.env = simpy.Environment()
        self.profile, self.bank, self.layout = profile, bank, layout
        self.queries = queries
        self.rng = rng
        tier_rngs = rng.spawn(len(profile.tiers))
        self.tiers = {t.name: TierServer(self.env, t, r)
                      for t, r in zip(profile.tiers, tier_rngs, strict=True)}
        ram = profile.ram
        self.ram = self.tiers[ram.name] if ram is not None else None
        self.levels = [(lv.depth, lv.depth - 1, lv.block_bytes, layout.placement[lv.depth])
                       for lv in bank.active_levels]
        self.parts = {(d, t): request_parts(self.tiers[t].tier, b) for d, _, b, t in self.levels}
        if self.ram is not None:
            for d, _, b, _t in self.levels:
                self.parts[(d, ram.name)] = request_parts(ram, b)
        cache = layout.cache
        self.cache: BlockCache | None = None
        if cache is not None or layout.resident:
            self.cache = BlockCache(
                budget=cache.budget if cache else 0,
                policy=cache.policy if cache else "lru",
                levels=(cache.levels if cache else []),
                resident=layout.resident,
            )
        measured = max(queries - warmup, 1)
        self.stats = RunStats(
            fetch=BatchedSeries(batch_size=max(1, -(-measured // BATCHES))),
            per_level={d: Series() for d, *_ in self.levels},
            measured_from=warmup,
        )
        self.fetch_times = np.full(queries, np.nan) if keep_trace else None
        self.level_times = (np.full((queries, len(self.levels)), np.nan) if keep_trace
                            else None)
        self.paths_out = (np.zeros((queries, len(bank.levels)), dtype=np.int64) if keep_trace
                          else None)
        self.on_progress = on_progress
        self.sequential = layout.fetch == "sequential"

    # ------------------------------------------------------------------ one query
    def _plan(self, path: Sequence[int], measured: bool
              ) -> list[tuple[int, str | None, list[float]]]:
        """Per level: (depth, tier to read or None if resident and present, request parts)."""
        plan = []
        cache = self.cache
        for depth, col, nbytes, tier in self.levels:
            block = int(path[col])
            hit = cache is not None and cache.lookup(depth, block)
            if measured and cache is not None and cache.covers(depth):
                self.stats.lookups[depth] = self.stats.lookups.get(depth, 0) + 1
                self.stats.hits[depth] = self.stats.hits.get(depth, 0) + hit
            if hit:
                if depth in cache.resident or self.ram is None:
                    plan.append((depth, None, []))
                else:
                    ram = self.ram.tier.name
                    plan.append((depth, ram, self.parts[(depth, ram)]))
                continue
            if cache is not None:
                cache.insert(depth, block, nbytes)
            plan.append((depth, tier, self.parts[(depth, tier)]))
        return plan

    def start_query(self, index: int, path: Sequence[int],
                    on_done: Callable[[], None] | None = None) -> None:
        """Issue every block request of one query now; record its times when all are in."""
        env = self.env
        start = env.now
        if self.paths_out is not None:
            self.paths_out[index] = path
        plan = self._plan(path, index >= self.stats.measured_from)
        times = [0.0] * len(plan)

        def finished() -> None:
            self._record(index, env.now - start, times)
            if on_done is not None:
                on_done()

        if self.sequential:
            steps = [(i, tier, parts) for i, (_d, tier, parts) in enumerate(plan) if tier]

            def run(k: int) -> None:
                if k == len(steps):
                    finished()
                    return
                i, tier, parts = steps[k]
                level_start = env.now
                left = [len(parts)]

                def part_done() -> None:
                    left[0] -= 1
                    if left[0] == 0:
                        times[i] = env.now - level_start
                        run(k + 1)

                server = self.tiers[tier]
                for part in parts:
                    server.fetch(part, part_done)

            run(0)
            return

        outstanding = [sum(len(parts) for _d, tier, parts in plan if tier)]
        if outstanding[0] == 0:
            finished()
            return
        for i, (_depth, tier, parts) in enumerate(plan):
            if not tier:
                continue
            left = [len(parts)]

            def part_done(i: int = i, left: list[int] = left) -> None:
                left[0] -= 1
                if left[0] == 0:
                    times[i] = env.now - start
                outstanding[0] -= 1
                if outstanding[0] == 0:
                    finished()

            server = self.tiers[tier]
            for part in parts:
                server.fetch(part, part_done)

    def _record(self, index: int, total: float, times: list[float]) -> None:
        stats = self.stats
        stats.completed += 1
        if self.fetch_times is not None:
            self.fetch_times[index] = total
            self.level_times[index] = times
        if index >= stats.measured_from:
            stats.fetch.add(total)
            for (depth, *_), t in zip(self.levels, times, strict=True):
                stats.per_level[depth].add(t)
        if self.on_progress is not None:
            self.on_progress(1)

    # ------------------------------------------------------------------ drivers
    def open_loop(self, arrivals: np.ndarray, paths: Callable[[int], np.ndarray]
                  ) -> Generator[Any, Any, None]:
        """Process: start query i at arrivals[i]; `paths(i)` gives its path."""
        env = self.env
        for i, t in enumerate(arrivals.tolist()):
            if t > env.now:
                yield env.timeout(t - env.now)
            self.start_query(i, paths(i))

    def closed_loop(self, clients: int, think: Callable[[], float],
                    paths: Callable[[int], np.ndarray], arrivals_out: np.ndarray | None
                    ) -> list[simpy.Process]:
        """Start `clients` processes that think, query, and repeat until the budget is spent."""
        env = self.env
        issued = [0]

        def client() -> Generator[Any, Any, None]:
            while True:
                yield env.timeout(think())
                if issued[0] >= self.queries:
                    return
                i = issued[0]
                issued[0] += 1
                if arrivals_out is not None:
                    arrivals_out[i] = env.now
                answered = env.event()
                self.start_query(i, paths(i), answered.succeed)
                yield answered

        return [env.process(client()) for _ in range(clients)]

    def run(self) -> float:
        """Run until every query has completed; returns the simulated time."""
        self.env.run()
        if self.stats.completed != self.queries:  # pragma: no cover - a bug, not user input
            raise RuntimeError(f"only {self.stats.completed} of {self.queries} queries ended")
        return self.env.now
