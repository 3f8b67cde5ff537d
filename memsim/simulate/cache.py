"""The RAM cache of blocks: a byte budget with LRU, LFU or pinned-level eviction.

Blocks are keyed by (depth, block id). Resident levels of a layout hold their current block
outside the budget: one slot per level, replaced when a query routes elsewhere.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterable

Key = tuple[int, int]


class BlockCache:
    """Which blocks are in RAM. `lookup` counts a hit or miss; `insert` admits after a miss."""

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
        self._lru: OrderedDict[Key, int] = OrderedDict()  # key -> bytes
        self._freq: dict[Key, int] = {}
        self._heap: list[tuple[int, int, Key]] = []  # (frequency, tick, key), lazily updated
        self._tick = itertools.count()

    def lookup(self, depth: int, block: int) -> bool:
        """True if the block is in RAM (a hit); counts the outcome."""
        if depth in self.resident:
            hit = self.resident[depth] == block
        else:
            key = (depth, block)
            hit = key in self._lru
            if hit:
                if self.policy == "lfu":
                    self._freq[key] += 1
                    heapq.heappush(self._heap, (self._freq[key], next(self._tick), key))
                    if len(self._heap) > 4 * len(self._freq) + 64:  # drop stale entries
                        self._heap = [(f, next(self._tick), k) for k, f in self._freq.items()]
                        heapq.heapify(self._heap)
                else:
                    self._lru.move_to_end(key)
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        return hit

    def insert(self, depth: int, block: int, nbytes: int) -> None:
        """Admit a block just fetched, evicting as the policy says; too-big blocks pass by."""
        if depth in self.resident:
            self.resident[depth] = block
            return
        if self.levels is not None and depth not in self.levels:
            return
        if nbytes > self.budget:
            return
        key = (depth, block)
        if key in self._lru:
            return
        while self.used + nbytes > self.budget:
            self._evict()
        self._lru[key] = nbytes
        self.used += nbytes
        if self.policy == "lfu":
            self._freq[key] = 1
            heapq.heappush(self._heap, (1, next(self._tick), key))

    def _evict(self) -> None:
        if self.policy == "lfu":
            while True:
                freq, _, key = heapq.heappop(self._heap)
                if key in self._lru and self._freq.get(key) == freq:
                    break
            del self._freq[key]
        else:
            key = next(iter(self._lru))
        self.used -= self._lru.pop(key)

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
