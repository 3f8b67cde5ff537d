"""The client's RAM cache: the arrays of blocks a ServedBank read, bounded by bytes.

The policy's decisions (LRU, LFU, pinned; resident levels) are the simulator's own
`memsim.simulate.cache.BlockCache`, driven with the same calls in the same order as the
simulator drives it (each block looked up, and on a miss admitted at once, before the next
block's lookup), so for the same sequence of block requests the client hits, misses and
evicts exactly as `simulate` predicts. This module keeps what the policy object does not:
the read-only array of every block the policy holds (handed out as is on a hit, no copy),
and a resident level's current block.

A block admitted on a miss is pending until its read finishes: a lookup that hits it then
(another thread or task) waits for that one read instead of reading it again, as the
simulator has a query find a block being read. A read that fails is forgotten (neither
cached nor counted as an eviction), and whoever waited on it reads the block itself.

Counters go into the bank's `ClientStats` under the bank's lock: `cache_hits` and
`cache_misses` over the levels the budget can hold (resident levels apart, in
`resident_hits` and `resident_misses`), as the simulator's `cache_hit_ratio` counts them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from memsim.simulate.cache import BlockCache, Key, count_lookup

if TYPE_CHECKING:
    from memsim.client.bank import ClientStats
    from memsim.layout import CacheConfig

__all__ = ["ClientCache", "Claim"]


class Claim:
    """What one lookup of a batch's distinct blocks found: `ready` (key -> the cached value),
    `waits` (key -> the Future of a read another caller has in flight), `misses` (keys this
    caller must read, then `fill` or `fail` the claim), in the order looked up, and `owned`
    (the misses the cache admitted -> the Future their waiters wait on)."""

    __slots__ = ("misses", "owned", "ready", "waits")

    def __init__(self) -> None:
        self.ready: dict[Key, Any] = {}
        self.waits: dict[Key, Future[Any]] = {}
        self.misses: list[Key] = []
        self.owned: dict[Key, Future[Any]] = {}


class ClientCache:
    """Cached block values by (level, block), with the simulator's policy deciding.

    `config` is the layout's `cache:` section (None: no budget, only residency);
    `resident` the resident levels; `block_bytes` each level's block size in bytes (what
    the simulator charges the budget). Values are opaque here (the client's reads)."""

    def __init__(self, config: CacheConfig | None, resident: Iterable[int],
                 block_bytes: Mapping[int, int], stats: ClientStats,
                 lock: threading.Lock | None = None) -> None:
        # exactly the simulator's construction (memsim.simulate.engine.Engine)
        self.config = config
        self.policy = BlockCache(budget=config.budget if config else 0,
                                 policy=config.policy if config else "lru",
                                 levels=(config.levels if config else []),
                                 resident=resident)
        self.block_bytes = dict(block_bytes)
        self.stats = stats
        self.lock = lock if lock is not None else threading.Lock()
        self._values: dict[Key, Any] = {}  # key -> value, or the Future of its read
        self._resident: dict[int, tuple[int, Any]] = {}  # level -> (block, value or Future)

    @property
    def budget(self) -> int:
        return self.policy.budget

    @property
    def used(self) -> int:
        """Bytes of the budget held (pending reads included), never above the budget."""
        return self.policy.used

    def holds(self, depth: int, block: int) -> bool:
        """Whether the block is in the cache (or is a resident level's current block)."""
        with self.lock:
            return self.policy.holds(depth, block)

    def claim(self, keys: Iterable[Key]) -> Claim:
        """Look up each distinct key in order, as the simulator does: a hit is counted and
        handed out (or waited for, if its read is in flight); a miss is counted and admitted
        at once (evicting as the policy says) as a read this caller owns."""
        out = Claim()
        policy, stats, values, resident = self.policy, self.stats, self._values, \
            self._resident
        with self.lock:
            for key in keys:
                depth, block = key
                hit = policy.lookup(depth, block)
                is_resident = depth in policy.resident
                if policy.covers(depth):
                    stats.cache_lookups[depth] = stats.cache_lookups.get(depth, 0) + 1
                    stats.cache_level_hits[depth] = stats.cache_level_hits.get(depth, 0) + hit
                    count_lookup(stats, hit, is_resident)
                if hit:
                    value = resident[depth][1] if is_resident else values[key]
                    if isinstance(value, Future):
                        out.waits[key] = value
                    else:
                        out.ready[key] = value
                    continue
                out.misses.append(key)
                evicted = policy.insert(depth, block, self.block_bytes[depth])
                for gone in evicted:
                    del values[gone]
                stats.cache_evictions += len(evicted)
                if is_resident:
                    fut: Future[Any] = Future()
                    resident[depth] = (block, fut)
                    out.owned[key] = fut
                elif policy.holds(depth, block):
                    fut = Future()
                    values[key] = fut
                    out.owned[key] = fut
            stats.cache_bytes = policy.used
        return out

    def admit(self, keys: Iterable[Key]) -> Claim:
        """Admit each key in order as a read the caller owns, without counting a lookup (a
        prefetch: the policy's `insert`, evicting as it says); a key the policy does not keep
        (too big, a level it does not admit) or already holds is left out of the claim."""
        out = Claim()
        policy, values, sizes = self.policy, self._values, self.block_bytes
        with self.lock:
            for key in keys:
                depth, block = key
                if depth in policy.resident or policy.holds(depth, block):
                    continue
                evicted = policy.insert(depth, block, sizes[depth])
                for gone in evicted:
                    del values[gone]
                self.stats.cache_evictions += len(evicted)
                if not policy.holds(depth, block):
                    continue
                fut: Future[Any] = Future()
                values[key] = fut
                out.owned[key] = fut
                out.misses.append(key)
            self.stats.cache_bytes = policy.used
        return out

    def fill(self, claim: Claim, values: Mapping[Key, Any]) -> None:
        """The owner's reads of `claim.misses` finished: each value whose key is still
        admitted is cached, and every waiter gets it (evicted meanwhile or not); a key with
        no value (never read: blocked) is forgotten, its waiters told to read it."""
        done: list[tuple[Future[Any], Any]] = []
        failed: list[Future[Any]] = []
        with self.lock:
            for key, fut in claim.owned.items():
                value = values.get(key)
                if value is None:
                    self._forget(key, fut)
                    failed.append(fut)
                    continue
                depth, block = key
                if depth in self.policy.resident:
                    if self._resident.get(depth) == (block, fut):
                        self._resident[depth] = (block, value)
                elif self._values.get(key) is fut:
                    self._values[key] = value
                done.append((fut, value))
            self.stats.cache_bytes = self.policy.used
        for fut, value in done:
            fut.set_result(value)
        for fut in failed:
            fut.set_exception(LookupError("the block was not read"))

    def fail(self, claim: Claim, exc: BaseException) -> None:
        """The owner's reads failed: forget its keys still pending (no eviction counted),
        and tell whoever waits on them (they read the blocks themselves)."""
        with self.lock:
            for key, fut in claim.owned.items():
                self._forget(key, fut)
            self.stats.cache_bytes = self.policy.used
        error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
        for fut in claim.owned.values():
            if not fut.done():
                fut.set_exception(error)

    def _forget(self, key: Key, fut: Future[Any]) -> None:
        """Drop a key whose read `fut` failed, if it is still that read's (lock held)."""
        depth, block = key
        if depth in self.policy.resident:
            if self._resident.get(depth) == (block, fut):
                self.policy.discard(depth, block)
                del self._resident[depth]
        elif self._values.get(key) is fut:
            self.policy.discard(depth, block)
            del self._values[key]
