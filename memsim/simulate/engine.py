"""The discrete-event simulation of queries fetching their blocks under load (SimPy).

Queries arrive (open loop) or are issued by clients (closed loop); each fetches one block per
non-empty level of its path. A block found in the RAM cache costs a RAM request; a resident
level's current block costs nothing; anything else is requested from the block's tier (its
level's tier, or the block map's). A block in a blocked subtree is never requested, cached
nor served: the query gets nothing for that level. Levels are fetched all at once (parallel)
or one after another (sequential). With batches (`Engine.batch` > 1, memsim.simulate.batch),
consecutive queries are released together (open loop: when the batch's last query has
arrived; closed loop: a client takes the next `batch` queries and issues them at once) and
each distinct block of a batch is looked up and requested once. With a prefetcher
(`Engine.prefetcher`, memsim.simulate.prefetch), each fetch or batch ends by reading the
policy's blocks ahead into the cache, behind demand on each tier.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from memsim.bank import Bank
from memsim.blockmap import BlockMap, in_any
from memsim.cost_model import request_parts
from memsim.errors import InputError
from memsim.layout import Layout
from memsim.limits import MAX_STALLED_QUERIES
from memsim.profile import Profile
from memsim.simulate.batch import ServedCounters
from memsim.simulate.cache import BlockCache, count_lookup
from memsim.simulate.prefetch import PENDING, PendingRead, SimPrefetcher, WaitServer
from memsim.simulate.stats import BatchedSeries, Series
from memsim.simulate.tiers import TierServer

if TYPE_CHECKING:
    import simpy

BATCHES = 32
MAX_DICT_OVERRIDES = 2_000_000  # block-map overrides looked up through dicts; beyond, bisect


def tier_load(profile: Profile, bank: Bank, layout: Layout, rate: float) -> dict[str, float]:
    """Utilisation each tier would see at `rate` queries/s with no cache hits (analytic).

    A tier is overloaded if its channels are busy more than all the time (latency plus
    transfer at the stream rate per request) or its bytes exceed its aggregate bandwidth.
    With a block map or blocked subtrees, a level's demand on a tier is weighted by the
    fraction of the level's blocks read from there (exact for uniform routing).
    """
    resident = set(layout.resident)
    block_map = layout.block_map(profile)
    shares = (read_shares(profile, bank, layout, block_map)
              if block_map is not None or layout.blocked else None)
    out: dict[str, float] = {}
    for t, tier in enumerate(profile.tiers):
        channel_time = 0.0
        nbytes = 0.0
        for lv in bank.active_levels:
            if lv.depth in resident:
                continue
            if shares is not None:
                share = float(shares[lv.depth][t])
                if not share:
                    continue
            elif layout.placement[lv.depth] != tier.name:
                continue
            else:
                share = 1.0
            for part in request_parts(tier, lv.block_bytes):
                channel_time += share * (tier.latency.mean() + tier.request_overhead + (
                    part / tier.stream_bandwidth))
                nbytes += share * part
        if nbytes:
            out[tier.name] = rate * max(channel_time / tier.concurrency,
                                        nbytes / tier.total_bandwidth)
    return out


def read_shares(profile: Profile, bank: Bank, layout: Layout, block_map: BlockMap | None
                ) -> dict[int, np.ndarray]:
    """Per level, the fraction of its blocks read from each tier (indexed like the profile's
    tiers); blocks in blocked subtrees are read from none. Under uniform routing these are the
    probabilities that a query reads the level from each tier."""
    names = profile.tier_names
    b = bank.branching
    trees = set(layout.subtrees)
    # Drop subtrees inside another, so that blocked blocks are counted once.
    roots = [t for t in trees if not any(
        u.depth < t.depth and t.block // b ** (t.depth - u.depth) == u.block for u in trees)]
    out = {}
    for lv in bank.active_levels:
        reads = np.zeros(len(names))
        blocked = sum(b ** (lv.depth - t.depth) for t in roots if t.depth <= lv.depth)
        ids = block_map.ids.get(lv.depth) if block_map is not None else None
        moved = 0
        if ids is not None and ids.size:
            keep = ~in_any(roots, lv.depth, ids, b)
            moved = int(keep.sum())
            reads += np.bincount(block_map.tier_index[lv.depth][keep], minlength=len(names))
        reads[names.index(layout.placement[lv.depth])] += lv.blocks - blocked - moved
        out[lv.depth] = reads / lv.blocks
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
    blocked: dict[int, int] = field(default_factory=dict)  # per level: routed into a blocked
    routed: dict[tuple[int, str], int] = field(default_factory=dict)  # subtree; (level, tier)
    # -> measured queries whose block lives there (block-level layouts only)
    served: ServedCounters = field(default_factory=ServedCounters)  # the client's counters


class _SortedOverrides:
    """Block-map overrides of one level, found by binary search (for very large maps)."""

    def __init__(self, ids: np.ndarray, tiers: list[str]) -> None:
        self.ids, self.tiers = ids, tiers

    def get(self, block: int, default: str) -> str:
        pos = int(self.ids.searchsorted(block))
        if pos < self.ids.size and self.ids[pos] == block:
            return self.tiers[pos]
        return default


def _overrides(block_map: BlockMap, depth: int, names: list[str], small: bool
               ) -> dict[int, str] | _SortedOverrides | None:
    """A `.get(block, default) -> tier name` lookup of one level's overrides."""
    ids = block_map.ids.get(depth)
    if ids is None or ids.size == 0:
        return None
    tiers = [names[t] for t in block_map.tier_index[depth].tolist()]
    if small:
        return dict(zip(ids.tolist(), tiers, strict=True))
    return _SortedOverrides(ids, tiers)


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
        import simpy  # here, not at the top: only a run needs SimPy, not every start-up

        self.env = simpy.Environment()
        self.profile, self.bank, self.layout = profile, bank, layout
        self.queries = queries
        self.rng = rng
        tier_rngs = rng.spawn(len(profile.tiers))
        self.tiers = {t.name: TierServer(self.env, t, r)
                      for t, r in zip(profile.tiers, tier_rngs, strict=True)}
        self.servers: dict[str, Any] = {**self.tiers, PENDING: WaitServer()}
        self.prefetcher: SimPrefetcher | None = None  # memsim.simulate.prefetch
        # demand reads in flight, by (level, block): a cache hit on one waits for it, as the
        # client's does (its claim waits for the read another query started)
        self.reading: dict[tuple[int, int], PendingRead] = {}
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
        self.counters_at_measured: dict[str, tuple[float, int, float]] = {}
        self.fetch_times: np.ndarray | None = None
        self.level_times: np.ndarray | None = None
        self.paths_out: np.ndarray | None = None
        if keep_trace:
            self.keep_trace()
        self.on_progress = on_progress
        self.batch = 1  # queries per batch (memsim.simulate.batch); 1: each query alone
        self._pending: list[tuple[int, Sequence[int], float, Callable[[], None] | None]] = []
        self.sequential = layout.fetch == "sequential"
        block_map = layout.block_map(profile)
        self.block_level = block_map is not None or bool(layout.blocked)
        if self.block_level:
            self._setup_blocks(block_map)
            self._plan = self._plan_blocks

    def where(self, depth: int, block: int) -> str | None:
        """The tier a block is read from (None: in a blocked subtree)."""
        if not self.block_level:
            return self.layout.placement[depth]
        for d, _col, _nbytes, tier, lookup, guards in self.block_levels:
            if d == depth:
                if guards and any(block // div in roots for div, roots in guards):
                    return None
                return lookup.get(block, tier) if lookup is not None else tier
        raise KeyError(depth)

    def path_keys(self, path: Sequence[int]) -> list[tuple[int, int]]:
        """A path's (level, block)s as the client hands them to its prefetch policy: one per
        non-empty level, blocked ones left out."""
        keys = []
        for depth, col, *_ in self.levels:
            block = int(path[col])
            if not self.block_level or self.where(depth, block) is not None:
                keys.append((depth, block))
        return keys

    def mark_measured(self) -> None:
        """Note each tier's counters as the first measured query starts: what the measured
        queries cost is what the counters gain from here (warm-up requests still in flight
        are counted with them, a handful in a run of thousands)."""
        self.counters_at_measured = {name: (server.bytes, server.requests, server.busy_time)
                                     for name, server in self.tiers.items()}

    def measured_counters(self) -> dict[str, tuple[float, int, float]]:
        """Per tier, the (bytes, requests, busy channel-seconds) served since the first
        measured query started (all of the run's if it never did)."""
        out = {}
        for name, server in self.tiers.items():
            b0, r0, t0 = self.counters_at_measured.get(name, (0.0, 0, 0.0))
            out[name] = (server.bytes - b0, server.requests - r0, server.busy_time - t0)
        return out

    def keep_trace(self) -> None:
        """Record every query's fetch time, level times and path (for a trace file)."""
        queries = self.queries
        self.fetch_times = np.full(queries, np.nan)
        self.level_times = np.full((queries, len(self.levels)), np.nan)
        self.paths_out = np.zeros((queries, len(self.bank.levels)), dtype=np.int64)

    def _setup_blocks(self, block_map: BlockMap | None) -> None:
        """Per level: the override lookup, the blocked-subtree guards, every tier's parts."""
        names = self.profile.tier_names
        small = block_map is None or sum(
            ids.size for ids in block_map.ids.values()) <= MAX_DICT_OVERRIDES
        branching = self.bank.branching
        self.block_levels = []
        for depth, col, nbytes, tier in self.levels:
            lookup = _overrides(block_map, depth, names, small) if block_map else None
            if lookup is not None:
                used = {names[t] for t in np.unique(block_map.tier_index[depth]).tolist()}
                for name in used:
                    self.parts[(depth, name)] = request_parts(self.tiers[name].tier, nbytes)
            # A block lies in subtree (d, b) when its ancestor at depth d, block //
            # branching ** (depth - d), is b: one set of roots per subtree depth.
            roots: dict[int, set[int]] = {}
            for tree in self.layout.subtrees:
                if tree.depth <= depth:
                    roots.setdefault(branching ** (depth - tree.depth), set()).add(tree.block)
            self.block_levels.append((depth, col, nbytes, tier, lookup, tuple(roots.items())))

    # ------------------------------------------------------------------ one query
    def _plan(self, path: Sequence[int], measured: bool
              ) -> list[tuple[int, str | None, list[float]]]:
        """Per level: (depth, tier to read or None if resident and present, request parts)."""
        plan = []
        for depth, col, nbytes, tier in self.levels:
            block = int(path[col])
            plan.append(self._source(depth, block, nbytes, tier, measured))
        if measured:
            served = self.stats.served
            served.fetches += 1
            served.blocks += len(plan)
        return plan

    def _source(self, depth: int, block: int, nbytes: int, tier: str, measured: bool
                ) -> tuple[int, str | None, list[float]]:
        """Where one block comes from: RAM on a cache hit (nothing for a resident level's
        current block), else its tier, admitting it to the cache. A measured lookup and read
        are counted, also as the client counts them (`stats.served`)."""
        cache = self.cache
        if cache is None:
            parts = self.parts[(depth, tier)]
            if measured:
                self.stats.served.read(tier, len(parts), nbytes)
            return depth, tier, parts
        hit = cache.lookup(depth, block)
        prefetcher = self.prefetcher
        waiting = prefetcher.looked_up((depth, block), hit, measured) \
            if prefetcher is not None else None
        if measured and cache.covers(depth):
            stats = self.stats
            stats.lookups[depth] = stats.lookups.get(depth, 0) + 1
            stats.hits[depth] = stats.hits.get(depth, 0) + hit
            count_lookup(stats.served, hit, depth in cache.resident)
        if hit:
            if waiting is not None:  # a prefetch read in flight: wait for it
                return depth, PENDING, [waiting]  # type: ignore[list-item]
            reading = self.reading.get((depth, block))
            if reading is not None:  # another query's read of it in flight: wait for it
                return depth, PENDING, [reading]  # type: ignore[list-item]
            if depth in cache.resident or self.ram is None:
                return depth, None, []
            ram = self.ram.tier.name
            return depth, ram, self.parts[(depth, ram)]
        evicted = cache.insert(depth, block, nbytes)
        if prefetcher is not None and evicted:
            prefetcher.evicted(evicted, measured)
        parts = self.parts[(depth, tier)]
        if measured:
            self.stats.served.read(tier, len(parts), nbytes)
        read = PendingRead()
        self.reading[(depth, block)] = read
        source = _DemandRead(self, (depth, block), read, self.tiers[tier], len(parts))
        return depth, source, parts  # type: ignore[return-value]

    def _server(self, source: Any) -> Any:
        """The server of a plan's source: a tier or PENDING by name, or a `_DemandRead`."""
        return self.servers[source] if isinstance(source, str) else source

    def _plan_blocks(self, path: Sequence[int], measured: bool
                     ) -> list[tuple[int, str | None, list[float]]]:
        """`_plan` for block-level layouts: each block's own tier; blocked blocks skipped."""
        plan = []
        stats = self.stats
        for depth, col, nbytes, tier, lookup, guards in self.block_levels:
            block = int(path[col])
            if guards and any(block // div in roots for div, roots in guards):
                if measured:
                    stats.blocked[depth] = stats.blocked.get(depth, 0) + 1
                    stats.served.blocked[depth] = stats.served.blocked.get(depth, 0) + 1
                plan.append((depth, None, []))  # never looked up, admitted nor requested
                continue
            if lookup is not None:
                tier = lookup.get(block, tier)
            if measured:
                key = (depth, tier)
                stats.routed[key] = stats.routed.get(key, 0) + 1
                stats.served.blocks += 1
            plan.append(self._source(depth, block, nbytes, tier, measured))
        if measured:
            stats.served.fetches += 1
        return plan

    def start_query(self, index: int, path: Sequence[int],
                    on_done: Callable[[], None] | None = None) -> None:
        """Issue every block request of one query now; record its times when all are in."""
        env = self.env
        start = env.now
        if self.paths_out is not None:
            self.paths_out[index] = path
        if index == self.stats.measured_from:
            self.mark_measured()
        plan = self._plan(path, index >= self.stats.measured_from)
        times = [0.0] * len(plan)

        def finished() -> None:
            self._record(index, env.now - start, times)
            if self.prefetcher is not None:
                self.prefetcher.trigger([self.path_keys(path)],
                                        index >= self.stats.measured_from)
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

                server = self._server(tier)
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

            server = self._server(tier)
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

    # ------------------------------------------------------------------ batches
    def submit(self, index: int, path: Sequence[int],
               on_done: Callable[[], None] | None = None) -> None:
        """Query `index` has arrived: start it (batch 1), or add it to the filling batch and
        release that batch when it is full or this is the run's last query."""
        if self.batch == 1:
            self.start_query(index, path, on_done)
            return
        pending = self._pending
        pending.append((index, path, self.env.now, on_done))
        if len(pending) >= self.batch or index == self.queries - 1:
            self._pending = []
            self.start_batch(pending)

    def _requests_of(self, depth: int, source: str | None, parts: list[float]) -> int:
        """Requests one read of a block takes where the client would say it came from (a
        hit: RAM, resident or not), as ClientStats.dedup_requests_saved counts them."""
        if source is not None and source != PENDING:
            return len(parts)
        if self.ram is None:
            return 1
        return len(self.parts[(depth, self.ram.tier.name)])

    def start_batch(self, pending: list[tuple[int, Sequence[int], float,
                                              Callable[[], None] | None]]) -> None:
        """Release a batch of consecutive queries (index, path, arrival, on_done) now: each
        distinct (level, block) looked up once, level by level and in increasing id within a
        level (the client's order), its misses requested from their tiers; each query's
        times run from its own arrival (sequential: a level's from that level's start)."""
        env = self.env
        now = env.now
        stats = self.stats
        served = stats.served
        measured_from = stats.measured_from
        first, last = pending[0][0], pending[-1][0]
        if first <= measured_from <= last:
            self.mark_measured()
        counted = last >= measured_from  # the batch's counters: if any query is measured
        if self.paths_out is not None:
            for index, path, _arrived, _done in pending:
                self.paths_out[index] = path
        n = len(pending)
        sequential = self.sequential
        times = [[0.0 if sequential else now - arrived] * len(self.levels)
                 for _i, _p, arrived, _d in pending]
        levels = self.block_levels if self.block_level else [
            (*lv, None, ()) for lv in self.levels]
        steps: list[tuple[int, list[tuple[str, list[float], list[int]]]]] = []
        remaining = [0] * n
        for i, (depth, col, nbytes, tier, lookup, guards) in enumerate(levels):
            users: dict[int, list[int]] = {}
            for q, (index, path, _arrived, _done) in enumerate(pending):
                block = int(path[col])
                if guards and any(block // div in roots for div, roots in guards):
                    if index >= measured_from:
                        stats.blocked[depth] = stats.blocked.get(depth, 0) + 1
                    if counted:
                        served.blocked[depth] = served.blocked.get(depth, 0) + 1
                    continue  # never looked up, admitted nor requested
                users.setdefault(block, []).append(q)
            entries = []
            for block in sorted(users):
                queries = users[block]
                where = lookup.get(block, tier) if lookup is not None else tier
                if self.block_level:
                    key = (depth, where)
                    for q in queries:
                        if pending[q][0] >= measured_from:
                            stats.routed[key] = stats.routed.get(key, 0) + 1
                _depth, source, parts = self._source(depth, block, nbytes, where, counted)
                if counted:
                    served.blocks += len(queries)
                    if len(queries) > 1:
                        served.dedup_blocks_saved += len(queries) - 1
                        served.dedup_requests_saved += (len(queries) - 1) * self._requests_of(
                            depth, source, parts)
                if source:
                    entries.append((source, parts, queries))
                    for q in queries:
                        remaining[q] += 1
            if entries:
                steps.append((i, entries))
        if counted:
            served.fetches += n

        unfinished = [n]

        def finish(q: int) -> None:
            index, _path, arrived, on_done = pending[q]
            self._record(index, env.now - arrived, times[q])
            unfinished[0] -= 1
            if unfinished[0] == 0 and self.prefetcher is not None:  # the batch is done
                self.prefetcher.trigger([self.path_keys(p) for _i, p, _a, _d in pending],
                                        counted)
            if on_done is not None:
                on_done()

        for q in range(n):
            if remaining[q] == 0:
                finish(q)

        def arrived_block(i: int, queries: list[int], since: float | None) -> None:
            for q in queries:
                times[q][i] = env.now - (pending[q][2] if since is None else since)
                remaining[q] -= 1
                if remaining[q] == 0:
                    finish(q)

        if sequential:
            def run(k: int) -> None:
                if k == len(steps):
                    return
                i, entries = steps[k]
                level_start = env.now
                level_left = [sum(len(parts) for _s, parts, _q in entries)]
                for source, parts, queries in entries:
                    left = [len(parts)]

                    def part_done(queries: list[int] = queries, left: list[int] = left
                                  ) -> None:
                        left[0] -= 1
                        if left[0] == 0:
                            arrived_block(i, queries, level_start)
                        level_left[0] -= 1
                        if level_left[0] == 0:
                            run(k + 1)

                    server = self._server(source)
                    for part in parts:
                        server.fetch(part, part_done)

            run(0)
            return

        for i, entries in steps:
            for source, parts, queries in entries:
                left = [len(parts)]

                def part_done(i: int = i, queries: list[int] = queries,
                              left: list[int] = left) -> None:
                    left[0] -= 1
                    if left[0] == 0:
                        arrived_block(i, queries, None)

                server = self._server(source)
                for part in parts:
                    server.fetch(part, part_done)

    # ------------------------------------------------------------------ drivers
    def open_loop(self, arrivals: np.ndarray, paths: Callable[[int], np.ndarray]
                  ) -> Generator[Any, Any, None]:
        """Process: start query i at arrivals[i]; `paths(i)` gives its path."""
        env = self.env
        chunk = 1 << 16  # arrivals as Python floats a chunk at a time: bounded memory
        for offset in range(0, len(arrivals), chunk):
            for i, t in enumerate(arrivals[offset:offset + chunk].tolist(), start=offset):
                if t > env.now:
                    yield env.timeout(t - env.now)
                self.submit(i, paths(i))

    def closed_loop(self, clients: int, think: Callable[[], float],
                    paths: Callable[[int], np.ndarray], arrivals_out: np.ndarray | None
                    ) -> list[simpy.Process]:
        """Start `clients` processes that think, query, and repeat until the budget is spent.

        With batches (`batch` > 1) a client takes the next `batch` queries of the sequence
        (one counter shared by all clients, as serve-bench's callers share theirs), issues
        them as one batch (`start_batch`), waits until all are answered, thinks, repeats; the
        last batch may be short, and no batch spans the end of the warm-up (serve-bench runs
        the warm-up's batches first, then the measured ones).

        A loop whose clock stops (zero think time and queries that take no time, e.g. every
        level resident or blocked) would issue its queries at one instant: past
        limits.MAX_STALLED_QUERIES of them it is refused rather than spun through.
        """
        env = self.env
        issued = [0]
        stalled = [0, -1.0]  # queries issued at the instant stalled[1]
        warm = self.stats.measured_from

        def client() -> Generator[Any, Any, None]:
            while True:
                yield env.timeout(think())
                i = issued[0]
                if i >= self.queries:
                    return
                end = min(i + self.batch, self.queries)
                if i < warm < end:
                    end = warm
                if env.now == stalled[1]:
                    stalled[0] += end - i
                    if stalled[0] > MAX_STALLED_QUERIES:
                        raise InputError(
                            f"the closed loop makes no progress in simulated time: "
                            f"{stalled[0]:,} queries issued at {env.now:g} s (memsim's limit "
                            f"is {MAX_STALLED_QUERIES:,}); its think time and fetches take no "
                            "time (every level resident or blocked?): give the workload a "
                            "think time above 0", field="arrivals.think_time")
                else:
                    stalled[0], stalled[1] = end - i, env.now
                issued[0] = end
                if arrivals_out is not None:
                    arrivals_out[i:end] = env.now
                answered = env.event()
                if self.batch == 1:
                    self.submit(i, paths(i), answered.succeed)
                else:
                    left = [end - i]

                    def one_answered(left: list[int] = left, answered: Any = answered
                                     ) -> None:
                        left[0] -= 1
                        if left[0] == 0:
                            answered.succeed()

                    now = env.now
                    self.start_batch([(k, paths(k), now, one_answered)
                                      for k in range(i, end)])
                yield answered

        return [env.process(client()) for _ in range(clients)]

    def run(self) -> float:
        """Run until every query has completed; returns the simulated time."""
        try:
            self.env.run()
        except InputError as exc:  # SimPy re-raises a copy: the original names the field
            if isinstance(exc.__cause__, InputError):
                raise exc.__cause__ from None
            raise
        if self.stats.completed != self.queries:  # pragma: no cover - a bug, not user input
            raise RuntimeError(f"only {self.stats.completed} of {self.queries} queries ended")
        return self.env.now


class _DemandRead:
    """A plan's source for a cache miss: the block's tier, which also finishes the block's
    `PendingRead` (for the queries that hit it meanwhile) when its last part is in."""

    __slots__ = ("engine", "key", "read", "server", "left")

    def __init__(self, engine: Engine, key: tuple[int, int], read: PendingRead, server: Any,
                 parts: int) -> None:
        self.engine, self.key, self.read, self.server, self.left = \
            engine, key, read, server, parts

    def fetch(self, part: float, done: Callable[[], None]) -> None:
        def part_done() -> None:
            self.left -= 1
            if self.left == 0:
                reading = self.engine.reading
                if reading.get(self.key) is self.read:
                    del reading[self.key]
                self.read.finish()
            done()

        self.server.fetch(part, part_done)
