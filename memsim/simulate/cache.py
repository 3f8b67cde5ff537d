"""The RAM cache of blocks: a byte budget with LRU, LFU or pinned-level eviction.

`BlockCache` makes the policy's decisions only (which keys are in RAM); the simulator and
replay drive it, and so does the client's cache (`memsim.client.cache`), which keeps the
arrays of the keys it holds: one implementation of the policy, so the simulator's hits,
misses and evictions are the client's for the same requests.

Blocks are keyed by (depth, block id). Resident levels of a layout hold their current block
outside the budget: one slot per level, replaced when a query routes elsewhere. LFU uses
dynamic aging (LFU-DA): a block's priority is its hit count plus the priority of the last
block evicted, so blocks that were popular long ago cannot squat in the cache forever.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

Key = tuple[int, int]


class BlockCache:
    """Which blocks are in RAM. `lookup` says hit or miss; `insert` admits after a miss."""

    def __init__(self, budget: int, policy: str = "lru", levels: Iterable[int] | None = None,
                 resident: Iterable[int] = ()) -> None:
        if policy not in ("lru", "lfu", "pinned"):
            raise ValueError(f"unknown cache policy {policy!r}")
        self.budget = budget
        self.policy = policy
        self.levels = set(levels) if levels is not None else None  # None: every level
        self.resident: dict[int, int | None] = {d: None for d in resident}
        self.used = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._lru: OrderedDict[Key, int] = OrderedDict()  # key -> bytes
        self._count: dict[Key, int] = {}  # LFU: hits since admission
        self._priority: dict[Key, float] = {}  # LFU-DA: count + age at the last touch
        self._heap: list[tuple[float, int, Key]] = []  # lazily updated
        self._age = 0.0
        self._tick = itertools.count()

    def covers(self, depth: int) -> bool:
        """Whether a block of this level can ever be found here."""
        if depth in self.resident:
            return True
        return self.budget > 0 and (self.levels is None or depth in self.levels)

    def lookup(self, depth: int, block: int) -> bool:
        """True if the block is in RAM (a hit); counts the outcome."""
        if depth in self.resident:
            hit = self.resident[depth] == block
        else:
            key = (depth, block)
            hit = key in self._lru
            if hit:
                if self.policy == "lfu":
                    self._touch(key, self._count[key] + 1)
                else:
                    self._lru.move_to_end(key)
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        return hit

    def _touch(self, key: Key, count: int) -> None:
        self._count[key] = count
        priority = count + self._age
        self._priority[key] = priority
        heapq.heappush(self._heap, (priority, next(self._tick), key))
        if len(self._heap) > 4 * len(self._priority) + 64:  # drop stale heap entries
            self._heap = [(p, next(self._tick), k) for k, p in self._priority.items()]
            heapq.heapify(self._heap)

    def holds(self, depth: int, block: int) -> bool:
        """Whether the block is in RAM now (counts nothing, changes nothing)."""
        if depth in self.resident:
            return self.resident[depth] == block
        return (depth, block) in self._lru

    def insert(self, depth: int, block: int, nbytes: int) -> list[Key]:
        """Admit a block just fetched, evicting as the policy says; too-big blocks pass by.
        Returns the keys evicted to make room (a resident level's replaced block is not an
        eviction: it is outside the budget)."""
        if depth in self.resident:
            self.resident[depth] = block
            return []
        if self.levels is not None and depth not in self.levels:
            return []
        if nbytes > self.budget:
            return []
        key = (depth, block)
        if key in self._lru:
            return []
        evicted = []
        while self.used + nbytes > self.budget:
            evicted.append(self._evict())
        self._lru[key] = nbytes
        self.used += nbytes
        if self.policy == "lfu":
            self._touch(key, 1)
        return evicted

    def discard(self, depth: int, block: int) -> None:
        """Forget a block without counting an eviction (the client's read of it failed)."""
        if depth in self.resident:
            if self.resident[depth] == block:
                self.resident[depth] = None
            return
        key = (depth, block)
        if key in self._lru:
            self.used -= self._lru.pop(key)
            self._priority.pop(key, None)
            self._count.pop(key, None)

    def _evict(self) -> Key:
        if self.policy == "lfu":
            while True:
                priority, _, key = heapq.heappop(self._heap)
                if self._priority.get(key) == priority:
                    break
            self._age = priority
            del self._priority[key], self._count[key]
        else:
            key = next(iter(self._lru))
        self.used -= self._lru.pop(key)
        self.evictions += 1
        return key

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def count_lookup(counters: Any, hit: bool, resident: bool) -> None:
    """Tally one lookup of a level the cache covers, as the client (`ClientStats`) and the
    simulator (`ServedCounters`) both count it: resident or cache, hit or miss."""
    if resident:
        if hit:
            counters.resident_hits += 1
        else:
            counters.resident_misses += 1
    elif hit:
        counters.cache_hits += 1
    else:
        counters.cache_misses += 1

