"""The client's bank: open a materialized bank and fetch the blocks of queries' paths as arrays.

`open_bank(layout, ...)` opens every tier's store once (metadata, manifests, every shard index)
and returns a `ServedBank`. `fetch(path)` returns `{level: array}` for one query, and
`fetch_many(paths)` does a batch, reading each distinct (level, block) once and handing the
same array to every query that needs it. The async twins (`afetch`, `afetch_many`) run on the
caller's event loop.

The read path is lean. A local block is read with `os.preadv` straight into a pooled
buffer (page-aligned, on transparent huge pages, O_DIRECT when cold; reused once no array
handed out views it: `_BufferPool`); a block of a memory store or S3 is viewed with
`np.frombuffer` over the bytes the store returned (one copy only when a block is split into
several requests). CRC32C is checked on that buffer. A sync fetch whose blocks are all on
local or memory stores uses no event loop: the first read runs in the caller's thread, the
others on the tier's reading threads (`_Readers`), all within the tier's channels (its
concurrency); other stores go through the bank's one event loop thread, shared by every sync
caller so that their requests overlap (inside a running loop such as Jupyter's too). An
async fetch never reads on the event loop: its O_DIRECT ranges start with Linux native AIO
(`_Aio`: io_submit from the loop, completions on an eventfd the loop watches, no thread
hop), the others (no channel free, no AIO here, not O_DIRECT) go to the reading threads
(the one idle most recently first: it wakes fastest), and the fetch is woken once all its
blocks are in (`_LocalReads`). Access control is the reader's: a blocked block is never
located nor requested, and is absent from the result.

`layout.fetch == "sequential"` reads the levels one after another, in level order (a
batch: each level's distinct blocks at once, then the next level), as the simulator does;
`FetchTimings.started` says when each level began. `log_requests()` turns on a per-request
log of each tier's waits and service times (`RequestLog`).

Every block read goes through `ServedBank._read_distinct` (or its sync twin). With a RAM
cache or resident levels (the layout's `cache:` and `resident:`, or open_bank's overrides), a
query's (or a batch's) distinct blocks are looked up first in `memsim.client.cache` (the
simulator's own policy object, driven in the simulator's order: level by level, and in a
batch each level's distinct blocks in increasing id), and only the misses are read; a hit
hands out the very array the cache holds.

With `prefetch=` (`memsim.client.prefetch`), each fetch ends by asking the policy for likely
next blocks; those that fit the budget (`max_inflight` reads, `max_bytes` of prefetched blocks
not yet used) are admitted to the cache at once as pending reads, in the simulator's order,
and read on the bank's prefetch threads (after an async fetch, as tasks on its loop). A
demand lookup that finds one is a cache hit (it
waits for the read if still in flight) and a prefetch hit; one evicted unused is wasted.
Every tier's channels then serve demand first: local tiers use `_PriorityChannel`s (a
prefetch read takes a free channel only while no demand read waits for one), tiers read on
event loops (S3) a `_LoopChannel` shared by all loops (a freed channel goes to the first
queued demand request, else to the first queued prefetch; the tier's concurrency then bounds
demand and prefetch together, across loops). So a demand request never queues behind a
prefetch; one already reading keeps its channel until done.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import errno
import itertools
import mmap
import operator
import os
import platform
import queue
import random
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import crc32c
import numpy as np

from memsim.aio import run_sync
from memsim.bank import Bank
from memsim.blockmap import Subtree, in_any
from memsim.errors import DataError, InputError, OverloadWarning
from memsim.layout import CacheConfig, Layout
from memsim.profile import Profile
from memsim.replay import fill_memory_tiers
from memsim.replay.reader import BadBlock, BankReader, Location
from memsim.stores import LocalByteStore, MemoryByteStore, tier_stores
from memsim.stores.local import ALIGN, os_error

if TYPE_CHECKING:
    from memsim.client.cache import Claim, ClientCache
    from memsim.client.prefetch import PrefetchConfig, PrefetchPolicy
    from memsim.workload import Workload

__all__ = ["BlockArrays", "ClientStats", "FetchTimings", "RequestLog", "ServedBank",
           "TimedFetch", "open_bank"]

BlockArrays = dict[int, Any]  # level -> np.ndarray (or torch.Tensor with as_="torch")
_FORMATS = ("numpy", "torch")
LOCATIONS = 1 << 16  # block locations remembered (for the sync path's lookups)


@dataclass
class ClientStats:
    """What a ServedBank did since it was opened (or since `reset()`)."""

    fetches: int = 0  # queries served
    blocks: int = 0  # blocks handed to queries (one per non-empty, non-blocked level)
    reads: int = 0  # distinct blocks read from stores
    requests: dict[str, int] = field(default_factory=dict)  # tier -> byte-range requests
    bytes: dict[str, int] = field(default_factory=dict)  # tier -> bytes read
    dedup_blocks_saved: int = 0  # block reads a batch saved by reading shared blocks once
    dedup_requests_saved: int = 0  # ... and the requests those reads would have been
    blocked: dict[int, int] = field(default_factory=dict)  # level -> blocks refused
    checked: int = 0  # blocks whose CRC32C was checked
    # the RAM cache, over the levels its budget can hold (as simulate's cache_hit_ratio)
    cache_hits: int = 0
    cache_misses: int = 0
    cache_evictions: int = 0
    cache_bytes: int = 0  # bytes of the budget held now (a level, not a counter: reset keeps it)
    resident_hits: int = 0  # a resident level's current block was the one asked for
    resident_misses: int = 0
    cache_lookups: dict[int, int] = field(default_factory=dict)  # level -> lookups (cache or
    cache_level_hits: dict[int, int] = field(default_factory=dict)  # residency) -> hits
    # prefetch (memsim.client.prefetch): blocks read ahead into the RAM cache; their reads
    # count in requests and bytes, not in reads
    prefetch_issued: int = 0  # prefetch reads started
    prefetch_hits: int = 0  # prefetched blocks a later demand lookup found (first use)
    prefetch_wasted: int = 0  # prefetched blocks evicted (or re-read on demand) unused
    prefetch_failed: int = 0  # prefetch reads that failed or were cancelled by close()

    def reset(self) -> None:
        """Zero every counter."""
        for name, value in vars(ClientStats()).items():
            if name != "cache_bytes":
                setattr(self, name, value)

    @property
    def cache_hit_ratio(self) -> float | None:
        """Hits over lookups of the levels the cache's budget holds (resident levels apart);
        None before any such lookup, or with no cache, as the simulator reports it."""
        lookups = self.cache_hits + self.cache_misses
        return self.cache_hits / lookups if lookups else None

    @property
    def prefetch_hit_ratio(self) -> float | None:
        """Prefetched blocks used over prefetched blocks issued (None before any)."""
        return self.prefetch_hits / self.prefetch_issued if self.prefetch_issued else None

    def to_json(self) -> dict[str, Any]:
        out = dict(vars(self))
        for name in ("blocked", "cache_lookups", "cache_level_hits"):
            out[name] = {str(d): n for d, n in getattr(self, name).items()}
        out["cache_hit_ratio"] = self.cache_hit_ratio
        out["prefetch_hit_ratio"] = self.prefetch_hit_ratio
        return out


@dataclass(frozen=True)
class FetchTimings:
    """One query's timing: `levels[d]` is the seconds from `start` (time.perf_counter())
    until level d's bytes were in memory, stamped where they arrived (a local store's reading
    thread), as replay's TimedRead does. A block shared in a batch carries its one read's
    stamp for every query that needs it. `started[d]` is the seconds from `start` until level
    d's read began: 0.0 for every level of a parallel fetch; in a sequential one (the
    layout's `fetch: sequential`) 0.0 for the first level read, and for each later level the
    moment its turn came, just after the previous level's reads completed (so level d took
    `levels[d] - started[d]`)."""

    start: float
    levels: dict[int, float]
    tiers: dict[int, str]  # level -> the tier it was read from (RAM's for a cached block)
    cached: tuple[int, ...] = ()  # levels served by the RAM cache or residency
    started: dict[int, float] = field(default_factory=dict)

    @property
    def fetch_time_s(self) -> float:
        """Until all of the query's blocks were in memory (0 when none was read)."""
        return max(self.levels.values(), default=0.0)


@dataclass
class RequestLog:
    """One tier's byte-range requests (`ServedBank.log_requests()`), one entry per request,
    demand and prefetch, in the order they finished: `wait` the seconds from asking for one
    of the tier's channels (a local reading slot, an S3 request slot) until getting it (0 on
    memory stores, which have none), `service` from then until the bytes were in memory,
    `nbytes` the range's length, `prefetch` whether a prefetch read made it."""

    wait: list[float] = field(default_factory=list)
    service: list[float] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    prefetch: list[bool] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, wait: float, service: float, nbytes: int, prefetch: bool) -> None:
        """Append one request (thread-safe: the four lists stay aligned)."""
        with self._lock:
            self.wait.append(wait)
            self.service.append(service)
            self.nbytes.append(nbytes)
            self.prefetch.append(prefetch)

    def __len__(self) -> int:
        return len(self.nbytes)


class TimedFetch(NamedTuple):
    """What `fetch(..., timed=True)` returns: the blocks and their timings (for `fetch_many`,
    a list of each)."""

    blocks: Any  # BlockArrays, or list[BlockArrays]
    timings: Any  # FetchTimings, or list[FetchTimings]


class _Read(NamedTuple):
    """One distinct block, read: its array, when it was in memory, and where from."""

    array: np.ndarray
    done: float
    tier: str
    cached: bool = False  # found in the RAM cache (or a resident level's current block)


def _resolve(layout: Layout | str | Path, profile: Profile | str | Path | None,
             bank: Bank | str | Path | None) -> tuple[Profile, Bank, Layout]:
    """Objects from objects or refs; profile and bank default to the ones the layout names
    (a path in a layout file is relative to the layout's folder)."""
    from memsim.bank import load_bank
    from memsim.layout import load_layout
    from memsim.profile import load_profile

    lay = layout if isinstance(layout, Layout) else load_layout(layout)

    def near(ref: str) -> str:
        if lay.file and ("/" in ref or ref.endswith((".yaml", ".yml"))) \
                and not Path(ref).is_absolute():
            candidate = Path(lay.file).parent / ref
            if candidate.exists():
                return str(candidate)
        return ref

    if profile is None:
        if not lay.profile:
            raise InputError("no profile given: pass profile=, or set 'profile' in the layout",
                             file=lay.file, field="profile")
        profile = near(lay.profile)
    if bank is None:
        if not lay.bank:
            raise InputError("no bank given: pass bank=, or set 'bank' in the layout",
                             file=lay.file, field="bank")
        bank = near(lay.bank)
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    bk = bank if isinstance(bank, Bank) else load_bank(bank)
    return prof, bk, lay


def _check_rate(check: bool | float) -> float:
    rate = 1.0 if check is True else 0.0 if check is False else float(check)
    if not 0.0 <= rate <= 1.0:
        raise InputError(f"check must be True, False or a rate in [0, 1], got {check!r}",
                         field="check")
    return rate


def open_bank(layout: Layout | str | Path, *, profile: Profile | str | Path | None = None,
              bank: Bank | str | Path | None = None, stores: Mapping[str, str] | None = None,
              check: bool | float = True, blocked: list[Subtree] | None = None,
              cold: bool = True, weights: str | Path | None = None, seed: int = 0,
              cache: CacheConfig | None | str = "layout",
              resident: Sequence[int] | str = "layout",
              prefetch: PrefetchConfig | None | str = "layout",
              workload: Workload | str | Path | None = None,
              trace: Any = None) -> ServedBank:
    """Open the bank `layout` places, for fetching; use it as a (sync or async) context
    manager, or call `close()`.

    `profile` and `bank` (objects, files or shipped names) default to the layout's.
    `stores` overrides tier stores (TIER -> URL, as `--store`); the others come from the
    profile's `store:` URLs (RAM: `memory://<profile>-<tier>`). `check` checks every block's
    CRC32C against the manifest (True), none (False), or a seeded fraction of them; a
    mismatch is a DataError. `blocked` adds access-control subtrees to the layout's.
    Local tiers read cold (O_DIRECT) unless `cold=False`. An empty memory tier is filled from
    the content the other stores record (`weights`: the file the bank was written from).

    `cache` is the RAM cache of fetched blocks: the layout's `cache:` section ("layout"), a
    `CacheConfig`, or None (none); `resident` the levels whose current block stays in RAM
    (the layout's, or a list). Both behave as the simulator models them (`memsim.client.cache`);
    a cache that overfills the RAM tier is an `OverloadWarning`, as `simulate` gives.

    `prefetch` reads likely next blocks into that cache after each fetch: "layout" (the
    default) the layout's `prefetch:` section if it has one, built as `simulate` builds it
    (the children policy scores by `workload`'s routing, a workload object, file or shipped
    name, else by counts learned online; the trace policy follows `trace`, paths or a trace
    file); a `memsim.client.prefetch.PrefetchConfig`; or None, no prefetch. It needs a cache
    with a budget. After a sync fetch prefetch reads run
    on background threads, after an async one as tasks on its loop (`max_inflight` at most);
    on every tier a queued demand request takes a freed channel before any prefetch.
    `wait_prefetches()` (or `await await_prefetches()`) waits for them; close() cancels those
    not started and waits for those reading.
    """
    prof, bk, lay = _resolve(layout, profile, bank)
    config, levels = _cache_choice(lay, cache, resident)
    if isinstance(prefetch, str):
        if prefetch != "layout":
            raise InputError(f"prefetch must be 'layout', a PrefetchConfig or None, got "
                             f"{prefetch!r}", field="prefetch")
        if isinstance(workload, str | Path):
            from memsim.workload import load_workload

            workload = load_workload(workload)
        prefetch = lay.prefetch_config(workload=workload, trace=trace) \
            if config is not None and config.budget > 0 else None
    if prefetch is not None:
        from memsim.client.prefetch import PrefetchConfig

        if not isinstance(prefetch, PrefetchConfig):
            raise InputError(f"prefetch must be 'layout', a PrefetchConfig or None, got "
                             f"{prefetch!r}", field="prefetch")
        if prefetch.policy == "none":
            prefetch = None
        elif config is None or config.budget <= 0:
            raise InputError("prefetch needs a RAM cache to prefetch into: give the layout a "
                             "cache: section or pass cache=CacheConfig(...)", field="prefetch")
    # the layout as opened: its cache and residency, or the overrides; its prefetch section
    # is checked only when it is the one used
    effective = lay if config is lay.cache and levels == list(lay.resident) else \
        lay.model_copy(update={"cache": config, "resident": levels, "prefetch": None})
    effective.check(bk, prof)
    for problem in effective.overfilled(bk, prof):
        warnings.warn(problem, OverloadWarning, stacklevel=2)
    rate = _check_rate(check)
    from memsim.materialize.manifest import placement_plan

    plan = placement_plan(prof, bk, lay)
    opened = tier_stores(prof, plan, stores, cold=cold, seed=seed)
    try:
        fill_memory_tiers(prof, bk, lay, opened, weights, invent=False)
        reader = BankReader(prof, bk, lay, opened, blocked=blocked, check_rate=rate, seed=seed)
        reader.open(plan)
        run_sync(reader.preload_indexes())
    except BaseException:
        for store in opened.values():
            store.close()
        raise
    try:
        return ServedBank(reader, check_rate=rate, seed=seed, cache=config, resident=levels,
                          prefetch=prefetch)
    except BaseException:
        reader.close()
        raise


def _cache_choice(layout: Layout, cache: Any, resident: Any) -> tuple[CacheConfig | None,
                                                                       list[int]]:
    """open_bank's cache and resident arguments, resolved against the layout."""
    if isinstance(cache, str):
        if cache != "layout":
            raise InputError(f"cache must be 'layout', a CacheConfig or None, got {cache!r}",
                             field="cache")
        cache = layout.cache
    elif cache is not None and not isinstance(cache, CacheConfig):
        raise InputError(f"cache must be 'layout', a CacheConfig or None, got {cache!r}",
                         field="cache")
    if isinstance(resident, str):
        if resident != "layout":
            raise InputError(f"resident must be 'layout' or a list of levels, got "
                             f"{resident!r}", field="resident")
        return cache, list(layout.resident)
    try:
        levels = [operator.index(d) for d in resident]
    except TypeError:
        raise InputError(f"resident must be 'layout' or a list of levels, got {resident!r}",
                         field="resident") from None
    return cache, levels


def _pread_into(store: LocalByteStore, key: str, buf: np.ndarray, base: int, start: int,
                length: int) -> float:
    """Read `length` bytes at `start` of `key` into `buf` (whose byte 0 is file offset `base`)
    with os.preadv, widened to 4 KiB pages for O_DIRECT; runs on the store's reading thread.
    Returns when the bytes were in memory."""
    fd, direct, kept = store._fd(key)
    try:
        lo = start - start % ALIGN if direct else start
        hi = min(-(-(start + length) // ALIGN) * ALIGN, base + buf.size) if direct \
            else start + length
        view = memoryview(buf)[lo - base:hi - base]
        got, want = 0, hi - lo
        try:
            while got < want:
                n = os.preadv(fd, [view[got:]], lo + got)
                if n == 0:
                    break
                got += n
        except OSError as exc:
            from memsim.stores.local import os_error

            raise os_error(exc, "read", f"{store.url}/{key}") from None
        finally:
            view.release()
        done = time.perf_counter()
        if store.mode == "fadvise":
            os.posix_fadvise(fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
        if lo + got < start + length:
            raise DataError(f"object '{key}' in {store.url} is shorter than its index says "
                            f"({lo + got} bytes, need {start + length})")
        return done
    finally:
        if not kept:
            os.close(fd)


_PREAD_INTO = _pread_into  # the module's own (see ServedBank._aio)
POOL_BYTES = 256 << 20  # idle read buffers a bank keeps for reuse, at most
HUGE_PAGE = 2 << 20  # a transparent huge page (x86-64, arm64 with 4 KiB pages)


class _BufferPool:
    """A bank's buffers for local reads, reused: page-aligned (O_DIRECT needs it), their
    pages mapped once (a fresh buffer's first touch costs a fault and zeroing per page, as
    much CPU as the read itself for big blocks), and cut from arenas of whole transparent
    huge pages (one O_DIRECT read into physically contiguous memory is much cheaper for the
    kernel and a virtual disk than into scattered 4 KiB pages: 1.5x the throughput of 1 MiB
    reads on a 2-core VM).

    `get` hands out a new uint8 array over a free slot of the size's arenas; every array a
    fetch returns is a view of it (numpy points views at that array, and the array at the
    arena). When the last of them is gone a finalizer puts the slot back on its size's free
    list: a buffer any array still views is never read into again. At most `keep` bytes of
    slots wait idle (others are dropped; an arena is unmapped when none of its slots is in
    use or kept); buffers in use are the callers' and unbounded."""

    def __init__(self, keep: int = POOL_BYTES) -> None:
        self.keep = keep
        self.idle = 0  # bytes of the slots on the free lists
        self.free: dict[int, list[tuple[mmap.mmap, int]]] = {}  # size -> (arena, offset)
        self.lock = threading.RLock()  # a finalizer may run while this thread holds it
        self.taken: dict[int, tuple[weakref.ref[np.ndarray], int, mmap.mmap, int]] = {}
        self.arenas = 0  # arenas ever mapped (for tests and diagnostics)

    def get(self, size: int) -> np.ndarray:
        """A page-aligned uint8 array of `size` bytes (a multiple of ALIGN)."""
        with self.lock:
            free = self.free.get(size)
            if not free:
                free = self.free[size] = self._arena(size)
                self.idle += size * len(free)
                self.arenas += 1
            arena, offset = free.pop()
            self.idle -= size
        # its base is a memoryview, not an array: numpy stops there, so every view of it
        # (every array handed out) holds `owner` itself, and the slot stays taken
        owner = np.frombuffer(arena, dtype=np.uint8, count=size, offset=offset)
        ref = weakref.ref(owner, self._gone)
        self.taken[id(ref)] = (ref, size, arena, offset)
        return owner

    def _gone(self, ref: weakref.ref[np.ndarray]) -> None:
        """The last array over a slot is gone (a weakref callback: cheaper than finalize;
        the weakref lives in `taken` until then)."""
        slot = self.taken.pop(id(ref), None)
        if slot is not None:
            self._put(*slot[1:])

    @staticmethod
    def _arena(size: int) -> list[tuple[mmap.mmap, int]]:
        """A new arena's slots of `size` bytes: whole huge pages (at least two slots when a
        slot is under one), starting on a huge-page boundary, touched now."""
        per = max(1, -(-HUGE_PAGE // size)) if size < HUGE_PAGE else 1
        length = -(-(size * per) // HUGE_PAGE) * HUGE_PAGE
        per = length // size
        mapped = mmap.mmap(-1, length + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            mapped.madvise(mmap.MADV_HUGEPAGE)
        whole = np.frombuffer(mapped, dtype=np.uint8)
        pad = -whole.ctypes.data % HUGE_PAGE  # only [pad, pad + length) is ever touched
        whole[pad:pad + length:ALIGN] = 0
        del whole
        return [(mapped, pad + k * size) for k in reversed(range(per))]

    def _put(self, size: int, arena: mmap.mmap, offset: int) -> None:
        """The last array over a slot is gone: keep it for the next read (within `keep`)."""
        with self.lock:
            if self.idle + size <= self.keep:
                self.free.setdefault(size, []).append((arena, offset))
                self.idle += size


class ServedBank:
    """A materialized bank opened for fetching (see `open_bank`).

    `stats` counts what it did (`ClientStats`). `fetch(path, timed=True)` also returns the
    query's `FetchTimings`; with the default, fetch returns only the dict of arrays. Arrays
    are read-only, of the bank's dtype (bf16 and fp8 through ml_dtypes), one row of the
    level's materialized array each: shape (block_params,), to be reshaped by the caller
    (a view, free). Arrays of blocks shared in a batch are the same object, and so are those
    of a block the RAM cache (`cache`, a `memsim.client.cache.ClientCache`, or None) holds.
    """

    def __init__(self, reader: BankReader, *, check_rate: float = 1.0, seed: int = 0,
                 cache: CacheConfig | None = None, resident: Sequence[int] = (),
                 prefetch: PrefetchConfig | None = None) -> None:
        from memsim.materialize.content import DTYPES

        self.reader = reader
        self.profile, self.bank, self.layout = reader.profile, reader.bank, reader.layout
        self.stores = reader.stores
        self.dtype = np.dtype(DTYPES[self.bank.dtype][0])
        self.stats = ClientStats()
        self.check_rate = check_rate
        # levels one after another (the layout's fetch: sequential), as the simulator reads them
        self.sequential = self.layout.fetch == "sequential"
        # per-request timings, tier -> RequestLog, once log_requests() turns them on
        self.request_log: dict[str, RequestLog] | None = None
        self._rng = random.Random(seed)
        self._depths = len(self.bank.levels)
        self._active = [lv.depth for lv in self.bank.active_levels]
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                               dict[str, asyncio.Semaphore]] = \
            weakref.WeakKeyDictionary()
        # the bank's event loop thread, for sync fetches of blocks on stores read on loops
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_channels: dict[str, _LoopChannel] = {} if prefetch is None else {
            name: _LoopChannel(self.profile.tier(name).concurrency) for name in self.stores
            if not isinstance(self.stores[name], LocalByteStore | MemoryByteStore)}
        self._loop_lock = threading.Lock()
        self._lock = threading.Lock()  # counters: exact with callers on several threads
        # local tiers: one slot per reading thread, shared by the sync path's inline reads
        # (with prefetch, channels that serve queued demand reads before prefetch reads)
        make = _channel if prefetch is None else _PriorityChannel
        self._channels: dict[str, Any] = {name: make(store.channels or 1)
                                          for name, store in self.stores.items()
                                          if isinstance(store, LocalByteStore)}
        self._readers = {name: _Readers(name, self.stores[name].channels or 1)  # type: ignore
                         for name in self._channels}

        self._pool = _BufferPool()
        self.closed = False
        # where blocks on local and memory stores are (fixed once the indexes are read)
        self._locations: dict[tuple[int, int], Location] = {}
        self.cache: ClientCache | None = None
        if cache is not None or resident:
            from memsim.client.cache import ClientCache

            ram = self.profile.ram
            self._ram_name = ram.name if ram is not None else "ram"
            self.cache = ClientCache(cache, resident,
                                     {lv.depth: lv.block_bytes for lv in self.bank.active_levels},
                                     self.stats, self._lock)
        self.prefetcher: _Prefetcher | None = None
        if prefetch is not None:
            assert self.cache is not None
            from memsim.client.prefetch import make_policy

            self.prefetcher = _Prefetcher(self, make_policy(prefetch, self.bank), prefetch)

    # ------------------------------------------------------------------ life cycle
    def close(self) -> None:
        """Stop prefetching, the reading threads and the bank's event loop thread, and close
        every store (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.prefetcher is not None:
            self.prefetcher.close()
        for readers in self._readers.values():
            readers.close()
        self._stop_loop()
        self.reader.close()

    def log_requests(self) -> dict[str, RequestLog]:
        """Turn on the per-request log (off by default) and return it: tier -> `RequestLog`,
        one entry per byte-range request from now on (demand and prefetch)."""
        if self.request_log is None:
            self.request_log = {name: RequestLog() for name in self.stores}
        return self.request_log

    def _log(self, tier: str) -> RequestLog | None:
        """The tier's request log, or None while the log is off."""
        logs = self.request_log
        return None if logs is None else logs.get(tier)

    def wait_prefetches(self) -> None:
        """Block until no prefetch read is in flight (at once without prefetch); inside an
        event loop that runs prefetch tasks, use `await await_prefetches()`."""
        if self.prefetcher is not None:
            self.prefetcher.wait()

    async def await_prefetches(self) -> None:
        """`wait_prefetches` on the running event loop."""
        if self.prefetcher is not None:
            await self.prefetcher.await_idle()

    def __enter__(self) -> ServedBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ServedBank:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.prefetcher is not None:
            await self.prefetcher.cancel_tasks()
        self.close()

    def __repr__(self) -> str:
        return (f"ServedBank(bank={self.bank.name!r}, layout={self.layout.name!r}, "
                f"tiers={sorted(self.stores)})")

    def _run(self, coro: Any) -> Any:
        """Run a coroutine for a sync call (or a prefetch thread) on the bank's event loop
        thread, started on first use: sync callers on several threads overlap there, their
        requests bounded by each tier's concurrency. Works inside a running loop (Jupyter)
        too: this thread waits, as a sync call does."""
        loop = self._loop
        if loop is None:
            with self._loop_lock:
                if self._loop is None:
                    if self.closed:
                        coro.close()
                        raise InputError("this bank is closed", field="bank")
                    loop = asyncio.new_event_loop()
                    thread = threading.Thread(target=loop.run_forever, daemon=True,
                                              name="memsim-loop")
                    thread.start()
                    self._loop, self._loop_thread = loop, thread
                loop = self._loop
        if threading.current_thread() is self._loop_thread:
            coro.close()
            raise RuntimeError("a sync fetch cannot wait on the bank's own loop thread")
        job = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return job.result()
        except BaseException:
            job.cancel()  # interrupted (or failed): nothing left running for this call
            raise

    def _stop_loop(self) -> None:
        """Cancel what still runs on the bank's loop, stop its thread and close it."""
        with self._loop_lock:
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
        if loop is None or thread is None:
            return

        async def drain() -> None:
            mine = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not mine]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    # ------------------------------------------------------------------ paths
    def _matrix(self, paths: Any) -> np.ndarray:
        """Paths as an (n, depths) int64 matrix, checked (one-line InputErrors)."""
        try:
            m = np.asarray(paths)
        except (ValueError, TypeError):
            raise InputError("paths must be sequences of cluster ids of equal length",
                             field="path") from None
        if m.ndim != 2:
            raise InputError(f"a batch of paths must be 2-D (queries x levels), got shape "
                             f"{m.shape}", field="path")
        if m.size and m.dtype.kind not in "iu":
            raise InputError(f"a path holds whole cluster ids, got dtype {m.dtype}",
                             field="path")
        m = m.astype(np.int64, copy=False)
        n, width = m.shape
        if width == len(self._active) and width != self._depths:
            full = np.zeros((n, self._depths), dtype=np.int64)
            full[:, [d - 1 for d in self._active]] = m
            cols = self._active
            m = full
        elif width == self._depths:
            cols = list(range(1, self._depths + 1))
        else:
            raise InputError(
                f"a path of bank '{self.bank.name}' has {self._depths} ids (one per depth) or "
                f"{len(self._active)} (one per non-empty level), got {width}", field="path")
        b = self.bank.branching
        prev: int | None = None
        for d in cols:
            ids = m[:, d - 1]
            bad = (ids < 0) | (ids >= b ** d)
            if bad.any():
                q = int(np.flatnonzero(bad)[0])
                raise InputError(f"path {q}: block {int(ids[q])} is outside 0..{b ** d - 1}, "
                                 f"the clusters at depth {d} of bank '{self.bank.name}'",
                                 field="path")
            if prev is not None:
                bad = ids // b ** (d - prev) != m[:, prev - 1]
                if bad.any():
                    q = int(np.flatnonzero(bad)[0])
                    raise InputError(
                        f"path {q}: block {int(ids[q])} at depth {d} is not under block "
                        f"{int(m[q, prev - 1])} at depth {prev} (branching {b})", field="path")
            prev = d
        return m

    # ------------------------------------------------------------------ fetching
    def fetch(self, path: Sequence[int] | np.ndarray, *, timed: bool = False,
              as_: str = "numpy") -> BlockArrays | TimedFetch:
        """The blocks of one query's path (one id per depth, or per non-empty level, as a
        trace row has them): {level: array}, blocked levels absent."""
        start = time.perf_counter()
        keys = self._one_keys(path, as_)
        out = self._one_result(keys, *self._levels_sync(keys, start), start, timed, as_)
        if self.prefetcher is not None:
            self.prefetcher.trigger([keys])
        return out

    def fetch_many(self, paths: Sequence[Sequence[int]] | np.ndarray, *, timed: bool = False,
                   as_: str = "numpy") -> list[BlockArrays] | TimedFetch:
        """A batch: each distinct (level, block) read once and shared by the queries needing
        it (`stats.dedup_*` count what that saved).

        Blocks on local stores are read without an event loop: the first in this thread, the
        others by the tiers' reading threads; any other store goes through the event loop."""
        batch = self._begin(paths, timed, as_)
        out = self._finish(batch, *self._levels_sync(batch.wanted, batch.start))
        if self.prefetcher is not None:
            self.prefetcher.trigger(_batch_paths(batch))
        return out

    async def afetch(self, path: Sequence[int] | np.ndarray, *, timed: bool = False,
                     as_: str = "numpy") -> BlockArrays | TimedFetch:
        """`fetch` on the running event loop."""
        start = time.perf_counter()
        keys = self._one_keys(path, as_)
        if self.cache is None and not self.sequential:  # the lean path: nothing in between
            out = self._one_result(keys, await self._read_distinct(keys), {}, start, timed,
                                   as_)
        else:
            out = self._one_result(keys, *await self._levels(keys, start), start, timed, as_)
        if self.prefetcher is not None:
            self.prefetcher.trigger([keys], asyncio.get_running_loop())
        return out

    def _one_keys(self, path: Any, as_: str) -> list[tuple[int, int]]:
        """One path's (level, block) to read, checked in plain Python (a batch of one in
        numpy costs more than the read of a small block); blocked ones counted, left out."""
        if self.closed:
            raise InputError("this bank is closed", field="bank")
        if as_ not in _FORMATS:
            raise InputError(f"as_ must be one of {', '.join(_FORMATS)}, got {as_!r}",
                             field="as_")
        if isinstance(path, np.ndarray):
            if path.ndim != 1:
                raise InputError(f"a path is one sequence of cluster ids, got shape "
                                 f"{path.shape}", field="path")
            if path.dtype.kind not in "iu":
                raise InputError(f"a path holds whole cluster ids, got dtype {path.dtype}",
                                 field="path")
            ids = path.tolist()
        else:
            try:
                ids = [operator.index(x) for x in path]
            except TypeError:
                if any(isinstance(x, Sequence | np.ndarray) for x in path):
                    raise InputError("a path is one sequence of cluster ids, not a batch "
                                     "(use fetch_many)", field="path") from None
                raise InputError(f"a path holds whole cluster ids, got {list(path)!r}",
                                 field="path") from None
        if len(ids) == self._depths:
            depths = range(1, self._depths + 1)
        elif len(ids) == len(self._active):
            depths = self._active  # type: ignore[assignment]
        else:
            raise InputError(
                f"a path of bank '{self.bank.name}' has {self._depths} ids (one per depth) or "
                f"{len(self._active)} (one per non-empty level), got {len(ids)}", field="path")
        b, name = self.bank.branching, self.bank.name
        prev: tuple[int, int] | None = None
        for d, x in zip(depths, ids, strict=True):
            if not 0 <= x < b ** d:
                raise InputError(f"path: block {x} is outside 0..{b ** d - 1}, the clusters "
                                 f"at depth {d} of bank '{name}'", field="path")
            if prev is not None and x // b ** (d - prev[0]) != prev[1]:
                raise InputError(f"path: block {x} at depth {d} is not under block {prev[1]} "
                                 f"at depth {prev[0]} (branching {b})", field="path")
            prev = (d, x)
        at = dict(zip(depths, ids, strict=True))
        keys = [(d, at[d]) for d in self._active]
        reader = self.reader
        if reader.blocked:
            refused = [(d, x) for d, x in keys if reader.is_blocked(d, x)]
            with self._lock:
                for d, _x in refused:
                    self.stats.blocked[d] = self.stats.blocked.get(d, 0) + 1
                    reader.blocked_reads[d] = reader.blocked_reads.get(d, 0) + 1
            if refused:
                keys = [k for k in keys if k not in refused]
        return keys

    def _one_result(self, keys: list[tuple[int, int]], reads: dict[tuple[int, int], _Read],
                    began: dict[int, float], start: float, timed: bool, as_: str
                    ) -> BlockArrays | TimedFetch:
        convert = _torch_converter() if as_ == "torch" else None
        out: BlockArrays = {}
        for key in keys:
            array = reads[key].array
            out[key[0]] = convert(array) if convert is not None else array
        with self._lock:
            self.stats.fetches += 1
            self.stats.blocks += len(keys)
        if not timed:
            return out
        return TimedFetch(out, FetchTimings(
            start, {d: reads[(d, x)].done - start for d, x in keys},
            {d: reads[(d, x)].tier for d, x in keys},
            tuple(d for d, x in keys if reads[(d, x)].cached),
            {d: began[d] - start if began else 0.0 for d, _x in keys}))

    async def afetch_many(self, paths: Sequence[Sequence[int]] | np.ndarray, *,
                          timed: bool = False, as_: str = "numpy"
                          ) -> list[BlockArrays] | TimedFetch:
        """`fetch_many` on the running event loop."""
        batch = self._begin(paths, timed, as_)
        out = self._finish(batch, *await self._levels(batch.wanted, batch.start))
        if self.prefetcher is not None:
            self.prefetcher.trigger(_batch_paths(batch), asyncio.get_running_loop())
        return out

    def _begin(self, paths: Any, timed: bool, as_: str) -> _Batch:
        """Check the paths, and find each level's distinct blocks and the blocked ones
        (counted here, never located or requested)."""
        if self.closed:
            raise InputError("this bank is closed", field="bank")
        if as_ not in _FORMATS:
            raise InputError(f"as_ must be one of {', '.join(_FORMATS)}, got {as_!r}",
                             field="as_")
        convert = _torch_converter() if as_ == "torch" else None
        start = time.perf_counter()
        if len(paths) == 0:
            return _Batch(start, 0, [], [], convert, timed)
        m = self._matrix(paths)
        reader, stats, b = self.reader, self.stats, self.bank.branching
        wanted: list[tuple[int, int]] = []
        plan: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        for d in self._active:
            column = m[:, d - 1]
            if column.size == 1:
                uniq, inverse = column, np.zeros(1, dtype=np.intp)
            else:
                uniq, inverse = np.unique(column, return_inverse=True)
            refused = in_any(reader.blocked, d, uniq, b) if reader.blocked else \
                np.zeros(uniq.size, dtype=bool)
            if refused.any():
                count = int(refused[inverse].sum())
                with self._lock:
                    stats.blocked[d] = stats.blocked.get(d, 0) + count
                    reader.blocked_reads[d] = reader.blocked_reads.get(d, 0) + count
            wanted += [(d, int(x)) for x in uniq[~refused].tolist()]
            plan.append((d, uniq, inverse, refused))
        return _Batch(start, m.shape[0], plan, wanted, convert, timed)

    def _finish(self, batch: _Batch, reads: dict[tuple[int, int], _Read],
                began: dict[int, float]) -> list[BlockArrays] | TimedFetch:
        """Hand each query its levels' arrays (shared between queries), and count."""
        n, start, timed, convert, stats = batch.n, batch.start, batch.timed, batch.convert, \
            self.stats
        per_query: list[BlockArrays] = [{} for _ in range(n)]
        stamps: list[dict[int, float]] = [{} for _ in range(n)] if timed else []
        tiers: list[dict[int, str]] = [{} for _ in range(n)] if timed else []
        cached: list[list[int]] = [[] for _ in range(n)] if timed else []
        for d, uniq, inverse, refused in batch.plan:
            arrays = [None if r else reads[(d, int(x))] for x, r in
                      zip(uniq.tolist(), refused.tolist(), strict=True)]
            handed = [None if got is None else
                      (convert(got.array) if convert is not None else got.array)
                      for got in arrays]
            for q, k in enumerate(inverse.tolist()):
                got = arrays[k]
                if got is None:
                    continue
                per_query[q][d] = handed[k]
                if timed:
                    stamps[q][d] = got.done - start
                    tiers[q][d] = got.tier
                    if got.cached:
                        cached[q].append(d)
            delivered = int((~refused[inverse]).sum())
            saved = delivered - int((~refused).sum())
            requests_saved = 0
            if saved:
                for x, r, c in zip(uniq.tolist(), refused.tolist(),
                                   np.bincount(inverse, minlength=uniq.size).tolist(),
                                   strict=True):
                    if not r and c > 1:
                        requests_saved += (c - 1) * self._requests_of(
                            reads[(d, int(x))].tier, d)
            with self._lock:
                stats.blocks += delivered
                stats.dedup_blocks_saved += saved
                stats.dedup_requests_saved += requests_saved
        with self._lock:
            stats.fetches += n
        if not timed:
            return per_query
        return TimedFetch(per_query, [
            FetchTimings(start, s, t, tuple(c),
                         {d: began[d] - start if began else 0.0 for d in s})
            for s, t, c in zip(stamps, tiers, cached, strict=True)])

    def _requests_of(self, tier: str, depth: int) -> int:
        """Requests one read of a level-`depth` block on `tier` takes (max request size)."""
        size = self.bank.level(depth).block_bytes
        limit = self.profile.tier(tier).max_request_size
        return -(-size // int(limit)) if limit else 1

    # ------------------------------------------------------------------ level order
    def _levels_sync(self, keys: list[tuple[int, int]], start: float
                     ) -> tuple[dict[tuple[int, int], _Read], dict[int, float]]:
        """The distinct blocks `keys` (in level order): all at once (parallel), or level
        after level for a sequential layout, each level's blocks at once; and when each
        level's turn came (sequential only: the first at `start`)."""
        if not self.sequential:
            return self._get_sync(keys), {}
        got: dict[tuple[int, int], _Read] = {}
        began: dict[int, float] = {}
        for depth, group in itertools.groupby(keys, key=operator.itemgetter(0)):
            began[depth] = time.perf_counter() if began else start
            got.update(self._get_sync(list(group)))
        return got, began

    async def _levels(self, keys: list[tuple[int, int]], start: float
                      ) -> tuple[dict[tuple[int, int], _Read], dict[int, float]]:
        """`_levels_sync` on the running event loop."""
        if not self.sequential:
            return await self._get(keys), {}
        got: dict[tuple[int, int], _Read] = {}
        began: dict[int, float] = {}
        for depth, group in itertools.groupby(keys, key=operator.itemgetter(0)):
            began[depth] = time.perf_counter() if began else start
            got.update(await self._get(list(group)))
        return got, began

    # ------------------------------------------------------------------ the RAM cache
    def _get_sync(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], _Read]:
        """The distinct blocks `keys`: from the RAM cache, else read (sync, see fetch)."""
        cache = self.cache
        if cache is None or not keys:
            return self._read_sync(keys)
        at, claim, got = self._claim(cache, keys)
        if claim.misses:
            try:
                reads = self._read_sync(claim.misses)
            except BaseException as exc:
                cache.fail(claim, exc)
                raise
            cache.fill(claim, reads)
            got.update(reads)
        if claim.waits:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                inside_loop = False
            else:  # blocking here could block the very task reading the block
                inside_loop = True
            again = []
            for key, fut in claim.waits.items():
                try:
                    if inside_loop:
                        raise LookupError("not waited for inside a running event loop")
                    got[key] = self._waited(fut.result(), at)
                except Exception:
                    again.append(key)
            if again:  # the owner's read failed (or cannot be waited for): read them here
                got.update(self._read_sync(again))
        return got

    async def _get(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], _Read]:
        """`_get_sync` on the running event loop."""
        cache = self.cache
        if cache is None or not keys:
            return await self._read_distinct(keys)
        at, claim, got = self._claim(cache, keys)
        if claim.misses:
            try:
                reads = await self._read_distinct(claim.misses)
            except BaseException as exc:
                cache.fail(claim, exc)
                raise
            cache.fill(claim, reads)
            got.update(reads)
        again = []
        for key, fut in claim.waits.items():
            try:
                got[key] = self._waited(await asyncio.wrap_future(fut), at)
            except Exception:
                again.append(key)
        if again:
            got.update(await self._read_distinct(again))
        return got

    def _read_sync(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], _Read]:
        """Read `keys` without the event loop when their stores allow, else on it."""
        if not keys:
            return {}
        reads = self._read_distinct_sync(keys)
        if reads is None:
            reads = self._run(self._read_distinct(keys))
        return reads

    def _claim(self, cache: ClientCache, keys: list[tuple[int, int]]
               ) -> tuple[float, Claim, dict[tuple[int, int], _Read]]:
        """Look `keys` up (the lookup's time, the claim, and its hits as reads), telling the
        prefetcher what demand found: the part of a fetch its sync and async paths share."""
        at = time.perf_counter()
        claim = cache.claim(keys)
        if self.prefetcher is not None:
            self.prefetcher.demand(claim)
        return at, claim, self._hits(claim.ready, at)

    def _hits(self, ready: dict[tuple[int, int], _Read], at: float
              ) -> dict[tuple[int, int], _Read]:
        """Cache hits as reads: the same array, in memory at the lookup, from RAM."""
        ram = self._ram_name
        return {key: _Read(r.array, at, ram, True) for key, r in ready.items()}

    @staticmethod
    def _waited(read: _Read, at: float) -> _Read:
        """A hit on a block another caller was reading: in memory when that read was."""
        return _Read(read.array, max(read.done, at), read.tier, True)

    # ------------------------------------------------------------------ reading
    # Every demand block read goes through _read_distinct (or its sync twin), called by _get
    # (or _get_sync) with the RAM cache's misses; prefetch reads go through _Prefetcher._read.
    async def _read_distinct(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], _Read]:
        """Read each (level, block) of `keys` once, all in parallel, on the event loop:
        local blocks on their tiers' reading threads (`_LocalReads`: one wake-up of the loop
        when all are in), memory blocks at once, the others (S3) as the loop's requests."""
        if not keys:
            return {}
        locs: list[Location] = []
        known = self._locations
        for key in keys:
            loc = known.get(key)
            if loc is None:
                loc = await self.reader.locate(*key)
                if loc is None:
                    continue
                if isinstance(self.stores[loc.tier], LocalByteStore | MemoryByteStore):
                    if len(known) >= LOCATIONS:
                        known.clear()
                    known[key] = loc
            locs.append(loc)
        local = [loc for loc in locs if loc.tier in self._channels]
        others = [loc for loc in locs if loc.tier not in self._channels]
        waiting = _LocalReads(self, local) if local else None
        got: dict[tuple[int, int], _Read] = {}
        try:
            if others:
                jobs = [self._read_block(loc) for loc in others]
                # the first inline, the others as tasks (a task starts on the loop's next
                # round)
                tasks = [asyncio.ensure_future(job) for job in jobs[1:]]
                try:
                    reads = [await jobs[0], *(await asyncio.gather(*tasks))]
                except BaseException:
                    for task in tasks:
                        task.cancel()
                    raise
                got.update(((loc.depth, loc.block), r)
                           for loc, r in zip(others, reads, strict=True))
            if waiting is not None:
                got.update(((loc.depth, loc.block), r)
                           for loc, r in zip(local, await waiting.wait(), strict=True))
        except BaseException:
            if waiting is not None:
                waiting.cancel()  # its reads finish on their threads, unheard
            raise
        with self._lock:
            self.stats.reads += len(got)
        return got

    def _read_distinct_sync(self, keys: list[tuple[int, int]]
                            ) -> dict[tuple[int, int], _Read] | None:
        """`_read_distinct` without an event loop, when every block is on a local store (the
        first range read in this thread, the others by the tiers' threads); None when some
        block needs the loop (another kind of store)."""
        locs: list[Location] = []
        memory: list[Location] = []
        cache = self._locations
        for key in keys:
            loc = cache.get(key)
            if loc is None:
                if not isinstance(self.stores[self.reader.tier_of(*key)],
                                  LocalByteStore | MemoryByteStore):
                    return None
                loc = _drive(self.reader.locate(*key))
                if loc is _SUSPENDED:  # a shard index not read yet: the loop reads it
                    return None
                if len(cache) >= LOCATIONS:
                    cache.clear()
                cache[key] = loc
            (locs if loc.tier in self._channels else memory).append(loc)
        bufs = [self._buffer(loc) for loc in locs]
        futures: list[tuple[int, Future[float]]] = []
        inline: tuple[int, int, int] | None = None
        for i, loc in enumerate(locs):
            store = self.stores[loc.tier]
            buf, base = bufs[i]
            for s, n in loc.ranges:
                if inline is None and not memory:
                    inline = (i, s, n)
                    continue
                fut: Future[float] = Future()
                futures.append((i, fut))
                try:
                    self._readers[loc.tier].submit(
                        _settle_pread, fut, self._channels[loc.tier], store, loc.key,
                        [(buf, base)], s, n, self._log(loc.tier), time.perf_counter())
                except RuntimeError as exc:  # the bank is closed
                    fut.set_exception(exc)
        got_memory = [self._finish_block(loc, *self._memory_read(loc)) for loc in memory]
        done = [0.0] * len(locs)
        try:
            if inline is not None:
                i, s, n = inline
                loc = locs[i]
                done[i] = _channel_pread(self._channels[loc.tier], self.stores[loc.tier],
                                         loc.key, bufs[i][0], bufs[i][1], s, n,
                                         self._log(loc.tier))
        finally:
            for i, fut in futures:  # every read finished (or failed) before going on
                done[i] = max(done[i], fut.result())
        got = [self._finish_block(loc, buf, base, t)
               for loc, (buf, base), t in zip(locs, bufs, done, strict=True)]
        with self._lock:
            self.stats.reads += len(got) + len(got_memory)
        return {(loc.depth, loc.block): r for loc, r in zip([*locs, *memory],
                                                            [*got, *got_memory], strict=True)}

    def _memory_read(self, loc: Location, prefetch: bool = False
                     ) -> tuple[np.ndarray, int, float]:
        """A block of a memory store, read without an event loop (its reads never wait):
        (bytes, file offset of byte 0, when they were in memory)."""
        store = self.stores[loc.tier]
        log = self._log(loc.tier)
        if log is None:
            parts = [_drive(store.read_range(loc.key, s, n)) for s, n in loc.ranges]
        else:
            parts = []
            for s, n in loc.ranges:
                asked = time.perf_counter()
                parts.append(_drive(store.read_range(loc.key, s, n)))
                log.add(0.0, time.perf_counter() - asked, n, prefetch)
        done = time.perf_counter()
        if len(parts) == 1:
            return np.frombuffer(parts[0], dtype=np.uint8), loc.ranges[0][0], done
        return np.frombuffer(b"".join(parts), dtype=np.uint8), loc.ranges[0][0], done

    def _buffer(self, loc: Location) -> tuple[np.ndarray, int]:
        """A pooled buffer for a local block and the file offset of its byte 0 (its page's,
        for O_DIRECT): the whole pages the block spans."""
        first = loc.ranges[0][0]
        if self.stores[loc.tier].mode == "o_direct":  # type: ignore[attr-defined]
            base = first - first % ALIGN
            return self._pool.get(-(-(first + loc.nbytes) // ALIGN) * ALIGN - base), base
        return self._pool.get(-(-loc.nbytes // ALIGN) * ALIGN), first

    def _tier_slots(self, tier: str) -> Any:
        """At most the tier's concurrency requests in flight (per event loop), for stores
        that do not queue for their own channels. With prefetch, one `_LoopChannel` per tier
        shared by every loop (demand and prefetch requests alike, demand first)."""
        shared = self._loop_channels.get(tier)
        if shared is not None:
            return shared
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = {}
        sem = slots.get(tier)
        if sem is None:
            sem = slots[tier] = asyncio.Semaphore(self.profile.tier(tier).concurrency)
        return sem

    async def _read_block(self, loc: Location, prefetch: bool = False) -> _Read:
        """One block's bytes as an array of the bank's dtype, checked if due (`prefetch`: a
        prefetch read, taking the tier's channel after queued demand requests)."""
        store = self.stores[loc.tier]
        nbytes = loc.nbytes
        first = loc.ranges[0][0]
        if isinstance(store, MemoryByteStore):  # never waits: no slot, no loop round
            return self._finish_block(loc, *self._memory_read(loc, prefetch))
        slots = self._tier_slots(loc.tier)
        log = self._log(loc.tier)
        asked = time.perf_counter()
        async with (slots.prefetch() if prefetch else slots):
            got = time.perf_counter()
            if len(loc.ranges) == 1:
                data = await store.read_range(loc.key, first, nbytes)
                done = time.perf_counter()
                if log is not None:
                    log.add(got - asked, done - got, nbytes, prefetch)
                raw = np.frombuffer(data, dtype=np.uint8)
            else:
                async def part(s: int, n: int) -> Any:
                    data = await store.read_range(loc.key, s, n)
                    if log is not None:
                        log.add(got - asked, time.perf_counter() - got, n, prefetch)
                    return data

                parts = await asyncio.gather(*(part(s, n) for s, n in loc.ranges))
                done = time.perf_counter()
                raw = np.empty(nbytes, dtype=np.uint8)
                at = 0
                for part in parts:
                    view = np.frombuffer(part, dtype=np.uint8)
                    raw[at:at + view.size] = view
                    at += view.size
        return self._finish_block(loc, raw, first, done)

    def _finish_block(self, loc: Location, buf: np.ndarray, base: int, done: float) -> _Read:
        """Count a block read, check it if due, and view it as the bank's dtype."""
        first, nbytes = loc.ranges[0][0], loc.nbytes
        raw = buf[first - base:first - base + nbytes]
        stats = self.stats
        with self._lock:
            stats.requests[loc.tier] = stats.requests.get(loc.tier, 0) + len(loc.ranges)
            stats.bytes[loc.tier] = stats.bytes.get(loc.tier, 0) + nbytes
        if raw.size != nbytes:
            raise DataError(f"level {loc.depth} block {loc.block} on tier '{loc.tier}' "
                            f"({self.stores[loc.tier].url}): got {raw.size} bytes, not "
                            f"{nbytes}")
        if self.check_rate >= 1.0 or (self.check_rate > 0
                                      and self._rng.random() < self.check_rate):
            self._check(loc, raw)
        array = raw.view(self.dtype)
        array.flags.writeable = False
        return _Read(array, done, loc.tier)

    def _check(self, loc: Location, raw: np.ndarray) -> None:
        """CRC32C of the buffer itself against the manifest; a mismatch is a DataError."""
        with self._lock:
            self.stats.checked += 1
            self.reader.checked += 1
        level = self.reader.levels[(loc.tier, loc.depth)]
        if crc32c.crc32c(raw) != int(level.crc[loc.row]):
            bad = BadBlock(loc.depth, loc.block, loc.tier, level.store.url,
                           "checksum does not match the manifest")
            self.reader.bad.append(bad)
            raise DataError(str(bad))


class _Readers:
    """A local tier's reading threads, for reads not made inline (async fetches, and a sync
    batch's reads beyond the first): up to `threads` threads, started as needed, and the
    thread idle most recently takes the next job (a stack, not a queue). On a small VM a
    thread that just ran wakes several times faster than one idle for long, and the event
    loop it wakes in turn too: the hop to a reading thread and back is most of what an async
    fetch of one block costs beyond the read."""

    def __init__(self, name: str, threads: int) -> None:
        self.name, self.count = name, max(1, threads)
        self.lock = threading.Lock()
        self.idle: list[_Reader] = []  # the most recently idle last
        self.backlog: collections.deque[tuple[Any, tuple[Any, ...]]] = collections.deque()
        self.threads: list[threading.Thread] = []
        self.closed = False

    def submit(self, fn: Any, *args: Any) -> None:
        """Run fn(*args) on a reading thread (its errors are fn's to handle)."""
        with self.lock:
            if self.closed:
                raise RuntimeError("the bank is closed")
            if self.idle:
                reader = self.idle.pop()
                reader.job = (fn, args)
                reader.wake.release()
                return
            if len(self.threads) >= self.count:
                self.backlog.append((fn, args))
                return
            reader = _Reader()
            reader.job = (fn, args)
            thread = threading.Thread(target=self._work, args=(reader,), daemon=True,
                                      name=f"memsim-read-{self.name}-{len(self.threads)}")
            self.threads.append(thread)
        thread.start()

    def _work(self, reader: _Reader) -> None:
        while True:
            job, reader.job = reader.job, None
            if job is None:
                return
            fn, args = job
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001, S110 - jobs report their own errors; a
                pass  # thread that died would leave the jobs queued behind it unread
            del job, fn, args  # no buffer kept alive while idle
            with self.lock:
                if self.backlog:
                    reader.job = self.backlog.popleft()
                    continue
                if self.closed:
                    return
                self.idle.append(reader)
            reader.wake.acquire()

    def close(self) -> None:
        """Stop the threads once the jobs submitted before are done."""
        with self.lock:
            self.closed = True
            threads, self.threads = self.threads, []
            idle, self.idle = self.idle, []
        for reader in idle:
            reader.wake.release()  # its job is None: it returns
        for thread in threads:
            thread.join()


class _Reader:
    """One reading thread's job slot and its wake-up (a lock held while it has none)."""

    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: tuple[Any, tuple[Any, ...]] | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


# ---------------------------------------------------------------------- Linux native AIO
AIO = True  # async fetches read O_DIRECT ranges with native AIO where the kernel has it
# io_setup, io_destroy, io_getevents, io_submit
_AIO_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
_IOCB_CMD_PREAD = 0
_IOCB_FLAG_RESFD = 1  # signal the completion on the eventfd in aio_resfd


class _IOCB(ctypes.Structure):
    """struct iocb of linux/aio_abi.h (little-endian layout)."""

    _fields_ = [("aio_data", ctypes.c_uint64), ("aio_key", ctypes.c_uint32),
                ("aio_rw_flags", ctypes.c_int32), ("aio_lio_opcode", ctypes.c_uint16),
                ("aio_reqprio", ctypes.c_int16), ("aio_fildes", ctypes.c_uint32),
                ("aio_buf", ctypes.c_uint64), ("aio_nbytes", ctypes.c_uint64),
                ("aio_offset", ctypes.c_int64), ("aio_reserved2", ctypes.c_uint64),
                ("aio_flags", ctypes.c_uint32), ("aio_resfd", ctypes.c_uint32)]


class _IOEvent(ctypes.Structure):
    """struct io_event of linux/aio_abi.h."""

    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64),
                ("res", ctypes.c_int64), ("res2", ctypes.c_int64)]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_LIBC: Any = None


def _aio_syscalls() -> tuple[int, int, int, int] | None:
    """The AIO system call numbers of this machine, or None (another OS or architecture)."""
    global _LIBC
    numbers = _AIO_SYSCALLS.get(platform.machine())
    if numbers is None or not hasattr(os, "eventfd") or ctypes.sizeof(_IOCB) != 64 \
            or ctypes.sizeof(_IOEvent) != 32:
        return None
    if _LIBC is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        _LIBC = libc
    return numbers


class _Aio:
    """O_DIRECT reads submitted from one event loop's thread with Linux native AIO: a read
    starts with io_submit (which does not wait for the device) and its completion is signalled
    on an eventfd the loop watches. No reading thread, no lock, no interpreter-lock handoff:
    one wake-up of the loop per batch of completions, the only hop an async read must pay.

    One per event loop that reads (`_loop_aio`), shared by every bank; used only from that
    loop's thread. When the loop is gone its context goes back to a process-wide free list
    for the next loop (never destroyed: io_destroy waits for an RCU grace period, tens of
    milliseconds, and `asyncio.run` makes a loop per call). `DEPTH` reads in flight at
    most; more go to the reading threads."""

    DEPTH = 128

    def __init__(self) -> None:
        numbers = _aio_syscalls()
        if numbers is None:
            raise OSError(errno.ENOSYS, "no native AIO here")
        setup, destroy, getevents, submit = numbers
        context = ctypes.c_ulong(0)
        if _LIBC.syscall(ctypes.c_long(setup), ctypes.c_uint(self.DEPTH),
                         ctypes.byref(context)):
            raise OSError(ctypes.get_errno(), "io_setup failed")
        try:
            self.eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:
            _LIBC.syscall(ctypes.c_long(destroy), context)
            raise
        self.context = context
        self._getevents, self._submit = ctypes.c_long(getevents), ctypes.c_long(submit)
        self._zero, self._one, self._depth = ctypes.c_long(0), ctypes.c_long(1), \
            ctypes.c_long(self.DEPTH)
        self.lock = threading.Lock()  # _reap: the loop's thread, or at the next attach
        self.pending: dict[int, Callable[[int, float], None]] = {}
        self.keys = itertools.count(1)
        self.events = (_IOEvent * self.DEPTH)()
        self.iocb = _IOCB(aio_lio_opcode=_IOCB_CMD_PREAD, aio_flags=_IOCB_FLAG_RESFD,
                          aio_resfd=self.eventfd)
        self.iocbs = (ctypes.POINTER(_IOCB) * 1)(ctypes.pointer(self.iocb))
        self.timeout = ctypes.pointer(_Timespec(0, 0))  # io_getevents returns at once

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the eventfd on `loop` (first reaping what a previous loop left)."""
        self._reap()
        loop.add_reader(self.eventfd, self._reap)

    def submit(self, fd: int, address: int, nbytes: int, offset: int,
               done: Callable[[int, float], None]) -> bool:
        """Start reading `nbytes` at `offset` of `fd` into memory at `address` (which must
        stay valid until `done` is called: `done` should hold what owns it). `done(result,
        when)` is called on the loop with the bytes read (or -errno) and when they were in.
        False when the kernel refused it (the caller reads another way)."""
        if len(self.pending) >= self.DEPTH:
            return False
        key = next(self.keys)
        iocb = self.iocb
        iocb.aio_data, iocb.aio_fildes, iocb.aio_buf = key, fd, address
        iocb.aio_nbytes, iocb.aio_offset = nbytes, offset
        self.pending[key] = done
        if _LIBC.syscall(self._submit, self.context, self._one, self.iocbs) != 1:
            del self.pending[key]
            return False
        return True

    def _reap(self) -> None:
        """Hand every completed read to its callback."""
        with self.lock:
            try:
                os.eventfd_read(self.eventfd)
            except BlockingIOError:
                pass
            events, pending = self.events, self.pending
            finished: list[tuple[Callable[[int, float], None], int]] = []
            while True:
                n = _LIBC.syscall(self._getevents, self.context, self._zero, self._depth,
                                  events, self.timeout)
                if n <= 0:
                    break
                for k in range(n):
                    done = pending.pop(events[k].data, None)
                    if done is not None:
                        finished.append((done, events[k].res))
                if n < self.DEPTH:
                    break
        if finished:
            when = time.perf_counter()
            for done, result in finished:
                done(result, when)


_AIO_LOCK = threading.Lock()
_AIO_FREE: list[_Aio] = []
_AIO_OF: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Aio | bool] = \
    weakref.WeakKeyDictionary()


def _loop_aio(loop: asyncio.AbstractEventLoop) -> _Aio | None:
    """The running loop's native AIO (set up on first use), or None where there is none."""
    aio = _AIO_OF.get(loop)
    if aio is None:
        with _AIO_LOCK:
            aio = _AIO_FREE.pop() if _AIO_FREE else None
        try:
            if aio is None:
                aio = _Aio()
            aio.attach(loop)
        except (OSError, NotImplementedError, RuntimeError, AttributeError):
            if aio:
                _aio_detached(aio)
            aio = False
        else:
            weakref.finalize(loop, _aio_detached, aio)
        _AIO_OF[loop] = aio
    return aio or None


def _aio_detached(aio: _Aio) -> None:
    """Its loop is gone: back to the free list (what it left is reaped on next attach)."""
    with _AIO_LOCK:
        _AIO_FREE.append(aio)


def _aio_forget() -> None:
    """In a forked child: the parent's AIO contexts are not the child's (nor its lock's
    state)."""
    global _AIO_LOCK
    _AIO_LOCK = threading.Lock()
    _AIO_FREE.clear()
    _AIO_OF.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_aio_forget)


def _try_channel(channel: Any) -> bool:
    """Take one of a tier's channels for a demand read if one is free now."""
    if isinstance(channel, _PriorityChannel):
        return channel.try_get()
    try:
        channel.get_nowait()
    except queue.Empty:
        return False
    return True


class _LocalReads:
    """An async fetch's local blocks, read while the event loop runs on: every range starts
    at once, with native AIO when one of the tier's channels is free (taken without waiting;
    given back at completion), else on the tier's reading threads (which wait for one). The
    completion of a block's last range checks and counts it; that of the last block wakes the
    awaiting task once (from a reading thread through `call_soon_threadsafe`), with no
    executor future per range."""

    def __init__(self, bank: ServedBank, locs: list[Location]) -> None:
        self.bank, self.locs = bank, locs
        self.lock = threading.Lock()
        self.bufs = [bank._buffer(loc) for loc in locs]
        self.ranges_left = [len(loc.ranges) for loc in locs]
        self.done = [0.0] * len(locs)
        self.blocks_left = len(locs)
        self.reads: list[Any] = [None] * len(locs)
        self.tokens: list[list[Any]] = []  # the channels of AIO reads, until given back
        self.error: BaseException | None = None
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()
        self._start()

    async def wait(self) -> list[_Read]:
        """The reads, once all are in (the first error if one failed). They are handed over
        here, not as the future's result: the event loop keeps the handle that wakes this
        task, and with it that result, until the task yields again, usually inside the
        caller's next fetch, whose buffers could then not reuse this fetch's."""
        await self.future
        reads, self.reads = self.reads, []
        return reads

    def cancel(self) -> None:
        """Nobody waits any more: the reads finish unheard (their buffers stay referenced
        until then), and the channels of AIO reads in flight are given back now (their loop
        may close before it reaps them)."""
        self.future.cancel()
        for token in self.tokens:
            try:
                token.pop().put(None)
            except IndexError:
                pass

    def _start(self) -> None:
        bank = self.bank
        aio = _loop_aio(self.loop) if AIO and _pread_into is _PREAD_INTO else None
        for i, loc in enumerate(self.locs):
            readers = bank._readers[loc.tier]
            for s, n in loc.ranges:
                if aio is not None and self._submit(aio, i, s, n):
                    continue
                try:
                    readers.submit(self._read, i, s, n, time.perf_counter())
                except BaseException as exc:  # noqa: BLE001 - the bank is closed
                    self._range_done(i, None, exc)

    def _submit(self, aio: _Aio, i: int, start: int, length: int) -> bool:
        """One O_DIRECT range with native AIO, if one of the tier's channels is free now;
        False (a reading thread reads it, waiting for a channel) otherwise, or if the store
        does not read O_DIRECT, or the kernel refuses."""
        bank, loc = self.bank, self.locs[i]
        store = bank.stores[loc.tier]
        if store.mode != "o_direct":  # type: ignore[attr-defined]
            return False
        channel = bank._channels[loc.tier]
        if not _try_channel(channel):
            return False
        try:
            fd, direct, kept = store._fd(loc.key)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the reading thread reports it
            channel.put(None)
            return False
        if not (direct and kept):
            if not kept:
                os.close(fd)
            channel.put(None)
            return False
        buf, base = self.bufs[i]
        lo = start - start % ALIGN
        hi = min(-(-(start + length) // ALIGN) * ALIGN, base + buf.size)
        log = bank._log(loc.tier)
        asked = time.perf_counter()
        token = [channel]  # given back once: at completion, or when the fetch is cancelled
        self.tokens.append(token)

        def done(result: int, when: float, buf: np.ndarray = buf) -> None:  # holds buf
            try:
                token.pop().put(None)
            except IndexError:  # given back already (cancelled)
                pass
            if log is not None:
                log.add(0.0, when - asked, length, False)
            if result < 0:
                code = -result
                self._range_done(i, None, os_error(OSError(code, os.strerror(code)), "read",
                                                   f"{store.url}/{loc.key}"))
            elif lo + result < start + length:  # short: the thread path reads or reports it
                try:
                    bank._readers[loc.tier].submit(self._read, i, start, length)
                except BaseException as exc:  # noqa: BLE001 - the bank is closed
                    self._range_done(i, None, exc)
            else:
                self._range_done(i, when, None)

        if not aio.submit(fd, buf.ctypes.data + (lo - base), hi - lo, lo, done):
            self.tokens.pop()
            channel.put(None)
            return False
        return True

    def _read(self, i: int, start: int, length: int, asked: float) -> None:
        loc = self.locs[i]
        bank = self.bank
        buf, base = self.bufs[i]
        error: BaseException | None = None
        done: float | None = None
        try:
            done = _channel_pread(bank._channels[loc.tier], bank.stores[loc.tier], loc.key,
                                  buf, base, start, length, bank._log(loc.tier), asked)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            error = exc
        del buf  # not held while the loop wakes (see _range_done)
        self._range_done(i, done, error)

    def _range_done(self, i: int, done: float | None, error: BaseException | None) -> None:
        with self.lock:
            if error is not None and self.error is None:
                self.error = error
            if done is not None and done > self.done[i]:
                self.done[i] = done
            self.ranges_left[i] -= 1
            if self.ranges_left[i]:
                return
            failed = self.error is not None
        if not failed:
            try:
                self.reads[i] = self.bank._finish_block(self.locs[i], *self.bufs[i],
                                                        self.done[i])
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                with self.lock:
                    if self.error is None:
                        self.error = exc
        with self.lock:
            self.blocks_left -= 1
            if self.blocks_left:
                return
        # From here on only the reads (their arrays) reference the buffers, not this thread:
        # the caller's next fetch finds them free once it drops the arrays, and reads into
        # the same memory again (still in the host's caches: 15% faster at 16 MiB on a VM)
        # rather than into other buffers.
        self.bufs = []
        if asyncio._get_running_loop() is self.loop:  # an AIO completion, on the loop
            self._settle()
            return
        try:
            self.loop.call_soon_threadsafe(self._settle)
        except RuntimeError:  # the loop is closed: nobody waits
            pass

    def _settle(self) -> None:
        """On the loop: wake the awaiting task (with the first error if a read failed)."""
        if self.future.cancelled():
            self.reads = []
        elif self.error is not None:
            self.reads = []
            self.future.set_exception(self.error)
        else:
            self.future.set_result(None)


class _Batch(NamedTuple):
    """A batch between checking its paths and handing out its arrays."""

    start: float
    n: int
    plan: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]  # level, distinct, inverse,
    wanted: list[tuple[int, int]]  # (level, block) to read           blocked
    convert: Any
    timed: bool


_SUSPENDED: Any = object()


def _drive(coro: Any) -> Any:
    """Run a coroutine that never waits (a locate with every shard index cached) without an
    event loop; _SUSPENDED (and the coroutine closed) if it would wait."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    return _SUSPENDED


def _channel(slots: int) -> queue.SimpleQueue[None]:
    """A tier's channels as tokens in a queue (cheaper than a threading.Semaphore)."""
    tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
    for _ in range(slots):
        tokens.put(None)
    return tokens


def _channel_pread(channel: queue.SimpleQueue[None], store: LocalByteStore, key: str,
                   buf: np.ndarray, base: int, start: int, length: int,
                   log: RequestLog | None = None, asked: float | None = None) -> float:
    """`_pread_into` holding one of the tier's channels (its reading threads, or the caller's
    own thread for the first read of a sync fetch): at most `concurrency` reads at once.
    With a `log`, the request's wait (from `asked`, when it was handed to the reading
    threads, which queue it while all are busy; else from now) and its service are
    appended."""
    if log is None:
        channel.get()
        try:
            return _pread_into(store, key, buf, base, start, length)
        finally:
            channel.put(None)
    if asked is None:
        asked = time.perf_counter()
    channel.get()
    try:
        got = time.perf_counter()
        done = _pread_into(store, key, buf, base, start, length)
    finally:
        channel.put(None)
    log.add(got - asked, done - got, length, False)
    return done


def _settle_pread(fut: Future[float], channel: Any, store: LocalByteStore, key: str,
                  holder: list[tuple[np.ndarray, int]], start: int, length: int,
                  log: RequestLog | None, asked: float | None = None) -> None:
    """`_channel_pread` on a reading thread for a sync fetch waiting on `fut`; the buffer
    (in `holder`, emptied first) is no longer referenced here when the caller wakes."""
    buf, base = holder.pop()
    try:
        done = _channel_pread(channel, store, key, buf, base, start, length, log, asked)
    except BaseException as exc:  # noqa: BLE001 - raised in the waiting thread
        del buf
        fut.set_exception(exc)
    else:
        del buf
        fut.set_result(done)


def _torch_converter() -> Any:
    """numpy -> torch through DLPack (zero copy; bf16 via its 16-bit pattern), or a one-line
    InputError when torch is not installed."""
    try:
        import torch
    except ImportError:
        raise InputError("as_='torch' needs PyTorch: pip install torch", field="as_") from None
    special = {"bfloat16": torch.bfloat16,
               "float8_e4m3fn": getattr(torch, "float8_e4m3fn", None)}

    def convert(array: np.ndarray) -> Any:
        try:  # DLPack refuses read-only arrays: a writable view of the same memory
            source = array.view()
            source.flags.writeable = True
        except ValueError:  # the store's own immutable bytes: the one case that copies
            source = array.copy()
        target = special.get(source.dtype.name)
        if target is not None:
            bits = source.view(np.uint16 if source.dtype.itemsize == 2 else np.uint8)
            return torch.from_dlpack(bits).view(target)
        return torch.from_dlpack(source)

    return convert



# ---------------------------------------------------------------------- prefetch
def _batch_paths(batch: _Batch) -> list[list[tuple[int, int]]]:
    """Each query's (level, block) of a batch, blocked ones left out, in query order."""
    paths: list[list[tuple[int, int]]] = [[] for _ in range(batch.n)]
    for d, uniq, inverse, refused in batch.plan:
        ids, out = uniq.tolist(), refused.tolist()
        for q, k in enumerate(inverse.tolist()):
            if not out[k]:
                paths[q].append((d, int(ids[k])))
    return paths


class _PriorityChannel:
    """A local tier's channels when prefetch is on: `get`/`put` as `_channel`'s tokens for
    demand reads, and `get_prefetch`, which takes a free channel only while no demand read
    is waiting for one (a demand read never queues behind a prefetch; one already reading
    keeps its channel until done)."""

    def __init__(self, slots: int) -> None:
        self.free = slots
        self.queued = 0  # demand reads waiting for a channel
        self.waiting_prefetch = 0  # prefetch reads waiting (for tests and diagnostics)
        self.log: list[str] | None = None  # a list: each grant, "demand" or "prefetch"
        self.cond = threading.Condition(threading.Lock())

    def get(self) -> None:
        with self.cond:
            if self.free > 0:
                self.free -= 1
                if self.log is not None:
                    self.log.append("demand")
                return
            self.queued += 1
            while self.free == 0:
                self.cond.wait()
            self.free -= 1
            self.queued -= 1
            if self.log is not None:
                self.log.append("demand")
            if self.queued == 0 and self.free:
                self.cond.notify_all()  # prefetch may go now

    def try_get(self) -> bool:
        """`get` if a channel is free now, without waiting (False otherwise)."""
        with self.cond:
            if self.free <= 0:
                return False
            self.free -= 1
            if self.log is not None:
                self.log.append("demand")
            return True

    def get_prefetch(self) -> None:
        with self.cond:
            self.waiting_prefetch += 1
            while self.free == 0 or self.queued:
                self.cond.wait()
            self.waiting_prefetch -= 1
            self.free -= 1
            if self.log is not None:
                self.log.append("prefetch")

    def put(self, _token: None = None) -> None:
        with self.cond:
            self.free += 1
            self.cond.notify_all()


class _LoopChannel:
    """A tier's channels for stores read on event loops, when prefetch is on: shared by
    every loop and thread, a freed channel handed to the first queued demand request, else
    to the first queued prefetch (`async with channel` for demand, `channel.prefetch()`)."""

    def __init__(self, slots: int) -> None:
        self.free = slots
        self.lock = threading.Lock()
        self.demand: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.prefetching: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.log: list[str] | None = None  # a list: each grant, "demand" or "prefetch"

    async def _acquire(self, kind: str) -> None:
        loop = asyncio.get_running_loop()
        with self.lock:
            if self.free > 0 and not self.demand and (kind == "demand"
                                                      or not self.prefetching):
                self.free -= 1
                if self.log is not None:
                    self.log.append(kind)
                return
            fut: asyncio.Future[None] = loop.create_future()
            entry = (loop, fut)
            (self.demand if kind == "demand" else self.prefetching).append(entry)
        try:
            await fut
        except BaseException:
            with self.lock:
                queue_ = self.demand if kind == "demand" else self.prefetching
                if entry in queue_:  # not granted: just leave the queue
                    queue_.remove(entry)
                    raise
            if fut.done() and not fut.cancelled():  # granted, then cancelled: pass it on
                self.release()
            raise

    def release(self) -> None:
        """Free a channel: to the first queued demand request, else prefetch, else free."""
        with self.lock:
            for kind, queue_ in (("demand", self.demand), ("prefetch", self.prefetching)):
                if queue_:
                    loop, fut = queue_.pop(0)
                    if self.log is not None:
                        self.log.append(kind)
                    break
            else:
                self.free += 1
                return

        def grant() -> None:
            if fut.cancelled():
                self.release()
            else:
                fut.set_result(None)

        try:
            loop.call_soon_threadsafe(grant)
        except RuntimeError:  # that loop is closed: its waiter is gone
            self.release()

    async def __aenter__(self) -> None:
        await self._acquire("demand")

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def prefetch(self) -> _LoopPrefetch:
        return _LoopPrefetch(self)


class _LoopPrefetch:
    """`async with channel.prefetch()`: hold one of the tier's channels as a prefetch."""

    def __init__(self, channel: _LoopChannel) -> None:
        self.channel = channel

    async def __aenter__(self) -> None:
        await self.channel._acquire("prefetch")

    async def __aexit__(self, *exc: object) -> None:
        self.channel.release()


def _prefetch_pread(channel: _PriorityChannel, store: LocalByteStore, key: str,
                    buf: np.ndarray, base: int, start: int, length: int,
                    log: RequestLog | None = None) -> float:
    """`_pread_into` holding a channel taken as a prefetch (after every queued demand)."""
    asked = time.perf_counter()
    channel.get_prefetch()
    try:
        got = time.perf_counter()
        done = _pread_into(store, key, buf, base, start, length)
    finally:
        channel.put(None)
    if log is not None:
        log.add(got - asked, done - got, length, True)
    return done


class _Prefetcher:
    """A ServedBank's prefetch: asks the policy after each fetch, admits the blocks it picks
    into the RAM cache as pending reads (so a demand lookup finds and waits for them), reads
    them on its own threads, and counts issued, hit, wasted and failed prefetches.

    Budget: `max_inflight` prefetch reads at once, `max_bytes` of prefetched blocks not yet
    used by a demand lookup (in flight included). Never prefetched: blocked blocks, blocks the
    cache holds (or is reading), resident levels and levels the cache does not admit."""

    def __init__(self, bank: ServedBank, policy: PrefetchPolicy, config: PrefetchConfig
                 ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        assert bank.cache is not None
        self.bank, self.cache, self.policy, self.config = bank, bank.cache, policy, config
        self.lock = threading.Lock()
        self.inflight = 0
        self.unused: dict[tuple[int, int], int] = {}  # prefetched, not used yet -> bytes
        self.unused_bytes = 0
        self.idle = threading.Condition(self.lock)
        self.closed = False
        self.pool = ThreadPoolExecutor(max_workers=max(1, config.max_inflight),
                                       thread_name_prefix="memsim-prefetch")
        self.tasks: set[asyncio.Task[_Read]] = set()  # prefetches started by async fetches

    def _skip(self, key: tuple[int, int]) -> bool:
        depth, block = key
        policy = self.cache.policy
        if depth in policy.resident or not policy.covers(depth) \
                or self.cache.block_bytes[depth] > policy.budget:
            return True
        if self.bank.reader.blocked and self.bank.reader.is_blocked(depth, block):
            return True
        return policy.holds(depth, block)

    def _drop(self, key: tuple[int, int]) -> None:
        """Forget an unused prefetched block (lock held)."""
        self.unused_bytes -= self.unused.pop(key)

    def _sweep(self) -> int:
        """Drop unused prefetched blocks the cache evicted (locks held); how many."""
        holds = self.cache.policy.holds
        gone = [k for k in self.unused if not holds(*k)]
        for key in gone:
            self._drop(key)
        return len(gone)

    def demand(self, claim: Claim) -> None:
        """A demand lookup's outcome: prefetched blocks it found are hits; one it must read
        again was evicted unused."""
        with self.lock:
            if not self.unused:
                return
            hits = wasted = 0
            for key in (*claim.ready, *claim.waits):
                if key in self.unused:
                    self._drop(key)
                    hits += 1
            for key in claim.misses:
                if key in self.unused:
                    self._drop(key)
                    wasted += 1
            with self.cache.lock:
                wasted += self._sweep()
                self.bank.stats.prefetch_hits += hits
                self.bank.stats.prefetch_wasted += wasted

    def trigger(self, paths: list[list[tuple[int, int]]],
                loop: asyncio.AbstractEventLoop | None = None) -> None:
        """After a fetch: ask the policy, admit what fits the budget, start the reads (on the
        prefetch threads; after an async fetch, as tasks on its event loop `loop`)."""
        from memsim.client.cache import Claim
        from memsim.client.prefetch import select

        if self.closed:
            return
        cache, stats, sizes = self.cache, self.bank.stats, self.cache.block_bytes
        started: list[tuple[tuple[int, int], Claim]] = []
        with self.lock:
            candidates = self.policy.step(paths)
            if not candidates:
                return
            with cache.lock:
                stats.prefetch_wasted += self._sweep()
                chosen = select(candidates, self.config.max_inflight - self.inflight,
                                self.config.max_bytes - self.unused_bytes, sizes, self._skip)
            admitted = cache.admit(chosen)  # pending reads, as a demand miss's (no lookup)
            for key in admitted.misses:
                claim = Claim()  # one per read: each fills or fails on its own
                claim.misses.append(key)
                claim.owned[key] = admitted.owned[key]
                self.unused[key] = sizes[key[0]]
                self.unused_bytes += sizes[key[0]]
                self.inflight += 1
                started.append((key, claim))
            with cache.lock:
                stats.prefetch_issued += len(admitted.misses)
                stats.prefetch_wasted += self._sweep()  # this admission's own evictions
        for key, claim in started:
            if loop is not None:
                task = loop.create_task(self._aread(key))
                self.tasks.add(task)
                task.add_done_callback(lambda j, k=key, c=claim: self._done(j, k, c))
                continue
            try:
                job = self.pool.submit(self._read, key)
            except RuntimeError:  # closed meanwhile: never read
                job = Future()
                job.cancel()
                self._done(job, key, claim)
                continue
            job.add_done_callback(lambda j, k=key, c=claim: self._done(j, k, c))

    def _read(self, key: tuple[int, int]) -> _Read:
        """One prefetched block, read on a prefetch thread (local tiers through their
        channels as a prefetch; other stores through a private event loop)."""
        bank = self.bank
        loc = bank._locations.get(key)
        if loc is None:
            loc = _drive(bank.reader.locate(*key))
            if loc is _SUSPENDED:
                loc = bank._run(bank.reader.locate(*key))
            if loc is None:
                raise LookupError("the block is not placed")
        store = bank.stores[loc.tier]
        if isinstance(store, LocalByteStore) and loc.tier in bank._channels:
            buf, base = bank._buffer(loc)
            log = bank._log(loc.tier)
            done = max(_prefetch_pread(bank._channels[loc.tier], store, loc.key, buf, base,
                                       s, n, log) for s, n in loc.ranges)
            return bank._finish_block(loc, buf, base, done)
        if isinstance(store, MemoryByteStore):
            return bank._finish_block(loc, *bank._memory_read(loc, True))
        return bank._run(bank._read_block(loc, prefetch=True))

    async def _aread(self, key: tuple[int, int]) -> _Read:
        """`_read` as a task on the event loop of the async fetch that started it (local
        reads still on the prefetch threads, through the tier's channels as a prefetch)."""
        bank = self.bank
        loc = bank._locations.get(key) or await bank.reader.locate(*key)
        if loc is None:
            raise LookupError("the block is not placed")
        store = bank.stores[loc.tier]
        if isinstance(store, LocalByteStore) and loc.tier in bank._channels:
            buf, base = bank._buffer(loc)
            loop = asyncio.get_running_loop()
            log = bank._log(loc.tier)
            done = max(await asyncio.gather(*(
                loop.run_in_executor(self.pool, _prefetch_pread, bank._channels[loc.tier],
                                     store, loc.key, buf, base, s, n, log)
                for s, n in loc.ranges)))
            return bank._finish_block(loc, buf, base, done)
        if isinstance(store, MemoryByteStore):
            return bank._finish_block(loc, *bank._memory_read(loc, True))
        return await bank._read_block(loc, prefetch=True)

    async def await_idle(self) -> None:
        """Until no prefetch read is in flight, on the running loop (its tasks progress)."""
        while True:
            mine = [t for t in self.tasks if not t.done()]
            if mine:
                await asyncio.wait(mine)
                continue
            with self.lock:
                if not self.inflight:
                    return
            await asyncio.get_running_loop().run_in_executor(None, self.wait)

    async def cancel_tasks(self) -> None:
        """Cancel the prefetch tasks of this loop and wait until they are gone."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self.tasks if t.get_loop() is loop]
        for task in mine:
            task.cancel()
        if mine:
            await asyncio.wait(mine)

    def _done(self, job: Any, key: tuple[int, int], claim: Claim) -> None:
        """A prefetch read (thread or task) finished, failed or was cancelled: fill or fail
        its claim."""
        if isinstance(job, asyncio.Task):
            self.tasks.discard(job)
        error = None if job.cancelled() else job.exception()
        if job.cancelled() or error is not None:
            self.cache.fail(claim, error if error is not None else
                            RuntimeError("prefetch cancelled"))
        else:
            self.cache.fill(claim, {key: job.result()})
        with self.lock:
            if error is not None or job.cancelled():
                if key in self.unused:
                    self._drop(key)
                with self.cache.lock:
                    self.bank.stats.prefetch_failed += 1
            self.inflight -= 1
            self.idle.notify_all()

    def wait(self) -> None:
        """Until no prefetch read is in flight (not on a loop running prefetch tasks)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and any(t.get_loop() is running and not t.done()
                                       for t in list(self.tasks)):
            raise InputError("prefetch tasks run on this event loop: use "
                             "`await bank.await_prefetches()`", field="prefetch")
        with self.lock:
            while self.inflight:
                self.idle.wait()

    def close(self) -> None:
        """Cancel prefetches not started, wait for those reading, stop the threads; prefetch
        tasks are cancelled (`async with` / `__aexit__` also waits for them)."""
        self.closed = True
        for task in list(self.tasks):
            if not task.get_loop().is_closed():
                task.get_loop().call_soon_threadsafe(task.cancel)
        self.pool.shutdown(wait=True, cancel_futures=True)
