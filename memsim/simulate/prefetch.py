"""The client's prefetch in the simulator: the same policy objects, driven as
`memsim.client.bank._Prefetcher` drives them, in simulated time.

After each query (batch: after its last query) has all its blocks, `policy.step(paths)` is
called with that fetch's paths (blocked blocks left out) and `select` picks from its candidates
against the cache state the demand left: slots are `max_inflight` minus the prefetch reads in
flight now, bytes `max_bytes` minus the prefetched blocks not used yet. Each chosen block is
admitted with `BlockCache.insert` (pending until its read ends) and read from its tier as a
prefetch: a freed channel goes to queued demand first (`memsim.simulate.tiers.Channels`). A
demand lookup that finds a pending prefetch is a hit that waits for that read; the first use
of a prefetched block is a prefetch hit; one evicted (or looked up as a miss) unused is
wasted. Prefetch requests and bytes count in the tier's `served.requests`/`bytes`, not in
`served.reads`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from memsim.client.prefetch import PrefetchConfig, PrefetchPolicy, select

if TYPE_CHECKING:
    from memsim.simulate.engine import Engine

__all__ = ["PENDING", "PendingRead", "SimPrefetcher"]

Key = tuple[int, int]
PENDING = "\x00prefetch"  # a plan's source for a block whose prefetch read is in flight


class PendingRead:
    """One prefetch read in flight: who waits for it (demand lookups that hit it)."""

    __slots__ = ("done", "waiters")

    def __init__(self) -> None:
        self.done = False
        self.waiters: list[Callable[[], None]] = []

    def finish(self) -> None:
        self.done = True
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter()


class WaitServer:
    """Stands in for a tier in a plan: `fetch(read, done)` runs `done` when `read` ends."""

    def fetch(self, read: PendingRead, done: Callable[[], None]) -> None:
        if read.done:
            done()
        else:
            read.waiters.append(done)


class SimPrefetcher:
    """The prefetch state of one run: the policy, reads in flight, unused prefetched blocks."""

    def __init__(self, engine: Engine, policy: PrefetchPolicy, config: PrefetchConfig
                 ) -> None:
        assert engine.cache is not None
        self.engine, self.policy, self.config = engine, policy, config
        self.cache = engine.cache
        self.sizes = {d: b for d, _c, b, _t in engine.levels}
        self.inflight = 0
        self.unused: dict[Key, int] = {}  # prefetched, not used yet -> bytes
        self.unused_bytes = 0
        self.pending: dict[Key, PendingRead] = {}  # the cache's pending prefetch reads

    def _drop(self, key: Key) -> None:
        self.unused_bytes -= self.unused.pop(key)

    def evicted(self, keys: Sequence[Key], counted: bool) -> None:
        """Blocks the cache just evicted: unused prefetched ones are wasted."""
        for key in keys:
            self.pending.pop(key, None)
            if key in self.unused:
                self._drop(key)
                if counted:
                    self.engine.stats.served.prefetch_wasted += 1

    def looked_up(self, key: Key, hit: bool, counted: bool) -> PendingRead | None:
        """A demand lookup's outcome: a prefetch hit on first use, wasted if it must be read
        again; returns the prefetch read a hit must wait for (None: in RAM already)."""
        if key in self.unused:
            self._drop(key)
            if counted:
                served = self.engine.stats.served
                if hit:
                    served.prefetch_hits += 1
                else:
                    served.prefetch_wasted += 1
        if not hit:
            self.pending.pop(key, None)  # no longer the cache's read of that block
            return None
        return self.pending.get(key)

    def _skip(self, key: Key) -> bool:
        depth, block = key
        cache = self.cache
        if depth in cache.resident or not cache.covers(depth) \
                or self.sizes[depth] > cache.budget:
            return True
        if self.engine.where(depth, block) is None:  # blocked
            return True
        return cache.holds(depth, block)

    def trigger(self, paths: Sequence[Sequence[Key]], counted: bool) -> None:
        """A fetch (or batch) has all its blocks: ask the policy, admit, start the reads."""
        candidates = self.policy.step(paths)
        if not candidates:
            return
        config, cache, sizes, engine = self.config, self.cache, self.sizes, self.engine
        chosen = select(candidates, config.max_inflight - self.inflight,
                        config.max_bytes - self.unused_bytes, sizes, self._skip)
        served = engine.stats.served
        for key in chosen:
            depth, block = key
            if cache.holds(depth, block):
                continue
            self.evicted(cache.insert(depth, block, sizes[depth]), counted)
            if not cache.holds(depth, block):
                continue
            tier = engine.where(depth, block)
            assert tier is not None
            parts = engine.parts[(depth, tier)]
            self.unused[key] = sizes[depth]
            self.unused_bytes += sizes[depth]
            self.inflight += 1
            read = PendingRead()
            self.pending[key] = read
            if counted:
                served.prefetch_issued += 1
                served.requests[tier] = served.requests.get(tier, 0) + len(parts)
                served.bytes[tier] = served.bytes.get(tier, 0) + sizes[depth]
            left = [len(parts)]

            def part_done(key: Key = key, read: PendingRead = read,
                          left: list[int] = left) -> None:
                left[0] -= 1
                if left[0]:
                    return
                self.inflight -= 1
                if self.pending.get(key) is read:
                    del self.pending[key]
                read.finish()

            server = engine.tiers[tier]
            for part in parts:
                server.fetch(part, part_done, prefetch=True)
