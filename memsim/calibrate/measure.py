"""Timed reads from a real store, the way replay reads: the raw material of a calibration.

A test object of random bytes is written to the store (a file in a local directory, an object
under an S3 prefix, or an entry of a memory store), then read at random 4 KiB-aligned offsets
for every (request size, concurrency) point of a `Plan`. Each read is timed around
`await store.read_range(...)` from asyncio, exactly as replay does, so the times include the
same software path (thread pool, event loop, HTTP client) that replay pays, up to the moment
the last byte is in memory (stamped where it arrives, as replay stamps it). Local stores are
opened cold (O_DIRECT, or page-cache drops where O_DIRECT is refused), as replay opens them.

Single reads (concurrency 1) are measured from idle, as at moderate load: after each read the
stream pauses for a random time (exponential, `gap_ratio` times that read's time), so that
about half of the reads find the store, its thread and the CPU asleep. On a virtual machine
waking them costs a measurable share of a small read, which back-to-back reads never pay.
Reads of the `latency_sizes` get `latency_samples` reads at concurrency 1: the latency
distribution is fitted from them.

Whatever happens (a store error, Ctrl-C), the test object and any directories created for it
are removed before the error propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memsim.aio import frozen_heap, run_sync
from memsim.errors import DataError, InputError, MemsimError, StoreError
from memsim.stores import MAX_THREADS, ByteStore, open_store, parse_store_url
from memsim.stores.local import os_error
from memsim.units import format_size

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
ALIGN = 4 * KiB
DEFAULT_SIZES = (4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB, 64 * MiB)
DEFAULT_CONCURRENCY = (1, 2, 4, 8, 16, 32)
DEFAULT_SAMPLES = 20
QUICK_SIZES = (4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB)
QUICK_CONCURRENCY = (1, 4)
QUICK_SAMPLES = 6
LATENCY_SAMPLES = 200  # single reads behind the latency distribution (quick: QUICK_LATENCY)
QUICK_LATENCY = 60
GAP_RATIO = 1.0  # idle time after a single read, relative to that read (1: ~50% busy)
LOAD = 0.45  # utilisation of the open-loop run behind the latency distribution
POINT_BYTES = GiB  # a point reads at most this much (but at least 2 reads per stream)
MIN_THREADS = 32
SPACE_MARGIN = 64 * MiB  # left free on a local filesystem besides the test file
LOCAL_OBJECT = 256 * MiB  # a local test file at least this big, space allowing: reads then
# land on many places of the device and of memory (whose speeds differ by 20% and more on a
# virtual machine), as a bank's reads do
WRITE_CHUNK = 4 * MiB
WARMUP_ROUNDS = 3
PREFIX = ".memsim-calibrate-"


@dataclass(frozen=True)
class Plan:
    """What to measure: request sizes, concurrencies, reads per point and the test object."""

    sizes: tuple[int, ...]
    concurrencies: tuple[int, ...]
    samples: int
    object_size: int
    seed: int = 0
    object_size_given: bool = False  # else local test files grow to LOCAL_OBJECT
    point_bytes: int = POINT_BYTES
    latency_sizes: tuple[int, ...] = ()  # () = the latency-bound sizes, chosen by the fit
    latency_samples: int = LATENCY_SAMPLES
    gap_ratio: float = GAP_RATIO
    cold: bool = True  # False: local files are read through the page cache (warm)
    load: float = LOAD  # 0: the latency comes from the single reads from idle instead

    def reads(self, size: int, concurrency: int) -> int:
        """Reads at one point: `samples`, fewer for big requests, never under 2 per stream;
        `latency_samples` for single reads of a latency size."""
        budget = max(1, self.point_bytes // size)
        n = max(2 * concurrency, min(self.samples, budget))
        if concurrency == 1 and size in self.latency_reads_at:
            n = max(n, min(self.latency_samples, max(budget, self.samples)))
        return n

    @property
    def latency_reads_at(self) -> tuple[int, ...]:
        """Sizes read `latency_samples` times at concurrency 1: the chosen latency sizes, or
        the smallest two (where reads are latency-bound, if anywhere)."""
        return self.latency_sizes or self.sizes[:2]

    @property
    def total_reads(self) -> int:
        loaded = len(self.latency_reads_at) * self.latency_samples if self.load > 0 else 0
        return loaded + sum(self.reads(s, c) for s in self.sizes for c in self.concurrencies)

    def to_json(self) -> dict[str, Any]:
        return {"sizes_bytes": list(self.sizes), "concurrencies": list(self.concurrencies),
                "samples": self.samples, "object_size_bytes": self.object_size,
                "seed": self.seed, "latency_sizes_bytes": list(self.latency_reads_at),
                "latency_samples": self.latency_samples, "gap_ratio": self.gap_ratio,
                "cold": self.cold, "load": self.load}


def make_plan(*, quick: bool = False, sizes: list[int] | tuple[int, ...] | None = None,
              concurrencies: list[int] | tuple[int, ...] | None = None,
              samples: int | None = None, max_size: int | None = None,
              object_size: int | None = None, seed: int = 0,
              latency_sizes: list[int] | tuple[int, ...] | None = None,
              latency_samples: int | None = None, gap_ratio: float = GAP_RATIO,
              cold: bool = True, load: float = LOAD) -> Plan:
    """A checked plan: the default (or `quick`) preset, narrowed by the given options.

    `latency_sizes` (added to the sizes) are the request sizes the latency distribution is
    fitted from: give a bank's block size to model its reads' spread, not only their median.
    """
    chosen = list(sizes) if sizes else list(QUICK_SIZES if quick else DEFAULT_SIZES)
    conc = list(concurrencies) if concurrencies else list(
        QUICK_CONCURRENCY if quick else DEFAULT_CONCURRENCY)
    if samples is None:
        samples = QUICK_SAMPLES if quick else DEFAULT_SAMPLES
    if max_size is not None:
        if max_size < 1:
            raise InputError("--max-size must be positive", field="max-size")
        chosen = [s for s in chosen if s <= max_size]
        if not chosen:
            raise InputError(f"no request size is at most {format_size(max_size, binary=True)}",
                             field="max-size")
    if any(s < 1 for s in chosen):
        raise InputError("request sizes must be positive", field="sizes")
    if any(c < 1 for c in conc):
        raise InputError("concurrencies must be positive", field="concurrency")
    if max(conc) > MAX_THREADS:
        raise InputError(f"at most {MAX_THREADS} requests at once (one reading thread each)",
                         field="concurrency")
    if 1 not in conc:
        raise InputError("the concurrencies must include 1: the per-stream bandwidth and the "
                         "latency are fitted from single reads", field="concurrency")
    if samples < 2:
        raise InputError("--samples must be at least 2", field="samples")
    lat_sizes = sorted(set(latency_sizes or ()))
    if any(s < 1 for s in lat_sizes):
        raise InputError("latency sizes must be positive", field="latency-size")
    if latency_samples is None:
        latency_samples = QUICK_LATENCY if quick else LATENCY_SAMPLES
    if latency_samples < 2:
        raise InputError("--latency-samples must be at least 2", field="latency-samples")
    if not (gap_ratio >= 0 and gap_ratio <= 100):
        raise InputError("the idle gap ratio must be between 0 and 100", field="gap-ratio")
    if not (load >= 0 and load < 1):
        raise InputError("the load must be at least 0 and below 1 (a utilisation)",
                         field="load")
    chosen = [*chosen, *lat_sizes]
    chosen, conc = sorted(set(chosen)), sorted(set(conc))
    if len(chosen) < 2:
        raise InputError("give at least two request sizes (bandwidth is a slope)", field="sizes")
    need = -(-max(chosen) // ALIGN) * ALIGN
    given = object_size is not None
    if object_size is None:
        object_size = 2 * need
    if object_size < need:
        raise InputError(f"the test object ({format_size(object_size, binary=True)}) must hold "
                         f"the largest request ({format_size(max(chosen), binary=True)})",
                         field="object-size")
    object_size = -(-object_size // ALIGN) * ALIGN
    return Plan(sizes=tuple(chosen), concurrencies=tuple(conc), samples=samples,
                object_size=object_size, seed=seed, object_size_given=given,
                latency_sizes=tuple(lat_sizes),
                latency_samples=latency_samples, gap_ratio=float(gap_ratio), cold=cold,
                load=float(load))


@dataclass
class Measurements:
    """Every timed read of one tier: request size, concurrency, seconds, when it began (from
    its point's start) and which stream issued it; plus each point's wall time."""

    url: str
    mode: str  # o_direct, fadvise, warm, s3 or memory
    sizes: np.ndarray
    concurrency: np.ndarray
    seconds: np.ndarray
    started: np.ndarray
    stream: np.ndarray
    wall: dict[tuple[int, int], float] = field(default_factory=dict)
    wall_s: float = 0.0  # the whole measurement
    object_size: int = 0  # of the test object read
    # request size -> service times (s) of reads arriving at random under load (`under_load`)
    loaded: dict[int, np.ndarray] = field(default_factory=dict)
    loaded_overhead: dict[int, np.ndarray] = field(default_factory=dict)  # s, per read
    loaded_rate: dict[int, float] = field(default_factory=dict)  # reads/s offered
    loaded_utilization: dict[int, float] = field(default_factory=dict)  # measured

    @property
    def reads(self) -> int:
        """Every timed read: the points' and those under load."""
        return int(self.seconds.size) + sum(int(v.size) for v in self.loaded.values())

    def at(self, size: int, concurrency: int) -> np.ndarray:
        """The times of one point."""
        mask = (self.sizes == size) & (self.concurrency == concurrency)
        return self.seconds[mask]

    def in_flight(self, size: int, concurrency: int) -> float:
        """Mean number of reads in flight at one point while every stream was busy.

        Over the window from the start until the first stream ran out of reads, the summed
        read time divided by the window's length. It is the concurrency when the streams'
        reads overlap (threads, connections), and 1 when a store serves them one after another
        (a memory store copies inside the event loop); Little's law then gives throughput.
        """
        mask = (self.sizes == size) & (self.concurrency == concurrency)
        begin, secs, stream = self.started[mask], self.seconds[mask], self.stream[mask]
        end = begin + secs
        if concurrency == 1 or secs.size == 0:
            return 1.0
        last = min(end[stream == s].max() for s in np.unique(stream))
        if last <= 0:
            return float(concurrency)
        busy = np.clip(np.minimum(end, last) - np.maximum(begin, 0.0), 0.0, None).sum()
        return float(min(concurrency, max(busy / last, 1.0)))


# ---------------------------------------------------------------------------- the test object
@dataclass
class ScratchObject:
    """The object written for the calibration, and how to remove it."""

    store: ByteStore
    key: str
    size: int
    path: Path | None = None  # local file, for fio
    created_dirs: list[Path] = field(default_factory=list)
    written: bool = False
    fresh_memory: bool = False


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _random_chunks(total: int, seed: int) -> Iterator[bytes]:
    rng = np.random.default_rng(seed)
    left = total
    while left > 0:
        n = min(WRITE_CHUNK, left)
        yield rng.bytes(n)
        left -= n


def _prepare_local(obj: ScratchObject, root: Path, seed: int, cold: bool) -> None:
    url = obj.store.url
    if root.exists() and not root.is_dir():
        raise StoreError(f"cannot use {url}: it is not a directory")
    parent = _existing_parent(root)
    try:
        free = shutil.disk_usage(parent).free
    except OSError as exc:
        raise os_error(exc, "inspect", url) from None
    if free < obj.size + SPACE_MARGIN:
        raise StoreError(
            f"not enough free space for the {format_size(obj.size, binary=True)} test file in "
            f"{url}: {format_size(free, binary=True)} free, "
            f"{format_size(obj.size + SPACE_MARGIN, binary=True)} needed "
            "(smaller requests need a smaller file: --max-size or --quick)")
    missing = []
    path = root
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    target = root / obj.key
    try:
        for d in reversed(missing):
            d.mkdir()
            obj.created_dirs.append(d)
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise os_error(exc, "write to", url) from None
    obj.path, obj.written = target, True
    try:
        for chunk in _random_chunks(obj.size, seed):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
        if cold:  # start cold even where O_DIRECT is refused and reads drop pages one by one
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        else:  # warm: every page in the page cache before the first timed read
            for offset in range(0, obj.size, WRITE_CHUNK):
                os.pread(fd, WRITE_CHUNK, offset)
    except OSError as exc:
        raise os_error(exc, "write to", url) from None
    finally:
        os.close(fd)


async def _prepare_remote(obj: ScratchObject, seed: int) -> None:
    from zarr.core.buffer import default_buffer_prototype

    store = obj.store
    # a cheap request first: an unreachable endpoint, a missing bucket or bad credentials
    # fail here at once (reads are not retried for those), before a large upload
    await store.read(f"{PREFIX}probe")
    data = b"".join(_random_chunks(obj.size, seed))
    if store.kind == "memory":
        obj.fresh_memory = not store.data  # type: ignore[attr-defined]
    obj.written = True  # an upload cut short by Ctrl-C may still land: remove it then too
    try:
        await store.zarr_store().set(obj.key, default_buffer_prototype().buffer.from_bytes(data))
    except MemsimError:
        obj.written = False
        raise
    except Exception as exc:  # noqa: BLE001 - obstore raises many kinds; classified here
        obj.written = False
        error = getattr(store, "error", None)
        if error is not None:
            raise error(exc, obj.key) from None
        raise StoreError(f"cannot write to {store.url}: {exc}") from None


def _remove(obj: ScratchObject) -> str | None:
    """Remove the test object (and directories made for it); a message if that failed."""
    problem = None
    if obj.written:
        try:
            if obj.path is not None:
                obj.path.unlink(missing_ok=True)
            elif obj.store.kind == "memory":
                obj.store.data.pop(obj.key, None)  # type: ignore[attr-defined]
                if obj.fresh_memory:
                    from memsim.stores import forget

                    forget(obj.store.name)  # type: ignore[attr-defined]
            else:
                run_sync(obj.store.zarr_store().delete(obj.key))
        except Exception as exc:  # noqa: BLE001 - reported, never masking the first error
            problem = f"could not remove the test object '{obj.key}' from {obj.store.url}: {exc}"
    for d in reversed(obj.created_dirs):
        with contextlib.suppress(OSError):
            d.rmdir()
    return problem


@contextlib.contextmanager
def scratch_object(store: ByteStore, size: int, seed: int, cold: bool = True
                   ) -> Iterator[ScratchObject]:
    """Write a random test object to `store`; it is removed on leaving, even on Ctrl-C."""
    key = f"{PREFIX}{uuid.uuid4().hex[:12]}.bin"
    obj = ScratchObject(store=store, key=key, size=size)
    failed = False
    try:
        if store.kind == "file":
            _prepare_local(obj, Path(store.root), seed, cold)  # type: ignore[attr-defined]
        else:
            run_sync(_prepare_remote(obj, seed))
        yield obj
    except BaseException:
        failed = True
        raise
    finally:
        problem = _remove(obj)
        if problem is not None and not failed:
            raise StoreError(problem)


# ---------------------------------------------------------------------------- timing
async def timed_read(store: ByteStore, key: str, start: int, length: int) -> float:
    """Seconds of one read, as replay times it: from the request until its last byte was in
    memory (stamped where the bytes arrive); buffer released."""
    begun = time.perf_counter()
    data, _service, done = await store.read_range_timed(key, start, length)
    elapsed = done - begun
    got = len(memoryview(data))
    release = getattr(store, "release", None)
    if release is not None and isinstance(data, memoryview):
        release(data)
    if got != length:
        raise DataError(f"the test object in {store.url} returned {got} bytes, not {length}")
    return elapsed


def _offsets(rng: np.random.Generator, n: int, size: int, object_size: int) -> np.ndarray:
    slots = (object_size - size) // ALIGN + 1
    return rng.integers(0, slots, size=n) * ALIGN


async def _measure(store: ByteStore, key: str, object_size: int, plan: Plan,
                   progress: Callable[[int], None] | None) -> Measurements:
    rng = np.random.default_rng(plan.seed)
    gaps = np.random.default_rng([plan.seed, 1])
    # untimed warm-up: open the file (or as many connections as the most parallel point
    # uses), start the reading threads, and settle the first read's one-off costs
    small = min(plan.sizes)
    for width in (max(plan.concurrencies), 1):
        for _ in range(WARMUP_ROUNDS):
            await asyncio.gather(*(timed_read(store, key, int(o), small)
                                   for o in _offsets(rng, width, small, object_size)))
    sizes: list[np.ndarray] = []
    conc: list[np.ndarray] = []
    secs: list[np.ndarray] = []
    began: list[np.ndarray] = []
    streams: list[np.ndarray] = []
    wall: dict[tuple[int, int], float] = {}
    started = time.perf_counter()
    for c in plan.concurrencies:
        for size in plan.sizes:
            n = plan.reads(size, c)
            offsets = _offsets(rng, n, size, object_size)
            times, starts = np.empty(n), np.empty(n)
            owner = np.empty(n, dtype=np.int64)
            issued = iter(range(n))
            idle = c == 1 and plan.gap_ratio > 0
            begun = time.perf_counter()

            async def stream(j: int, size: int = size, offsets: np.ndarray = offsets,
                             times: np.ndarray = times, starts: np.ndarray = starts,
                             owner: np.ndarray = owner, issued: Iterator[int] = issued,
                             begun: float = begun, idle: bool = idle) -> None:
                for i in issued:
                    starts[i], owner[i] = time.perf_counter() - begun, j
                    times[i] = await timed_read(store, key, int(offsets[i]), size)
                    if progress is not None:
                        progress(1)
                    if idle:  # from idle, as at moderate load (see the module's docstring)
                        await asyncio.sleep(gaps.exponential(plan.gap_ratio * times[i]))

            await asyncio.gather(*(stream(j) for j in range(c)))
            wall[(size, c)] = time.perf_counter() - begun
            sizes.append(np.full(n, size, dtype=np.int64))
            conc.append(np.full(n, c, dtype=np.int64))
            secs.append(times)
            began.append(starts)
            streams.append(owner)
    return Measurements(url=store.url, mode=getattr(store, "mode", store.kind),
                        sizes=np.concatenate(sizes), concurrency=np.concatenate(conc),
                        seconds=np.concatenate(secs), started=np.concatenate(began),
                        stream=np.concatenate(streams), wall=wall,
                        wall_s=time.perf_counter() - started, object_size=object_size)


async def reads_under_load(store: ByteStore, requests: list[tuple[str, int, int]],
                           rate: float, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The (key, start, length) `requests`, arriving at random (Poisson, `rate`/s) at one
    channel: their service times, their overheads and the channel's measured utilisation.

    A request's overhead is the time the channel was held but not reading: from the moment it
    could start (its arrival, or the end of the read before it) to the store starting it. A
    store that queues for its own channels (`channels == 1`: a local directory's one reading
    thread, as replay uses it) is given the requests directly, so that the hand-over from one
    read to the next is the one replay sees; otherwise a request waits for a slot here.
    """
    n = len(requests)
    gaps = np.random.default_rng([seed, n, 2]).exponential(1.0 / rate, n)
    own_queue = store.channels == 1
    slot = asyncio.Semaphore(1)
    service, asked_at, done_at = np.empty(n), np.empty(n), np.empty(n)
    release = getattr(store, "release", None)

    async def one(i: int) -> None:
        key, start, length = requests[i]
        if own_queue:
            asked_at[i] = time.perf_counter()
            got, service[i], done_at[i] = await store.read_range_timed(key, start, length)
        else:
            async with slot:
                asked_at[i] = time.perf_counter()
                got, service[i], done_at[i] = await store.read_range_timed(key, start, length)
        if release is not None and isinstance(got, memoryview):
            release(got)

    tasks = []
    begun = due = time.perf_counter()
    for i in range(n):
        due += float(gaps[i])
        pause = due - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - begun
    order = np.argsort(done_at - service)  # by when each read started: the channel's order
    started = (done_at - service)[order]
    free = np.maximum(asked_at[order], np.r_[-np.inf, done_at[order][:-1]])
    overhead = np.empty(n)
    overhead[order] = np.maximum(started - free, 0.0)
    busy_total = float((service + overhead).sum())
    return service, overhead, busy_total / wall if wall > 0 else 0.0


def under_load(store: ByteStore, obj: ScratchObject, m: Measurements, plan: Plan,
               service_s: dict[int, float], progress: Callable[[int], None] | None = None
               ) -> None:
    """Read each latency size at random arrivals, one channel busy `plan.load` of the time
    (by `service_s`, its estimated service time): the latency distribution and the request
    overhead are fitted from these reads, made the way a workload at moderate load meets the
    store (a device faster in short bursts than sustained, a CPU neither asleep nor busy)."""
    reader = one_channel(store)
    try:
        reader.prewarm(list(service_s), 4)
        for size, est in service_s.items():
            rate = plan.load / max(est, 1e-6)
            rng = np.random.default_rng([plan.seed, size, 2])
            requests = [(obj.key, int(o), size)
                        for o in _offsets(rng, plan.latency_samples, size, obj.size)]
            with frozen_heap():
                times, overhead, util = run_sync(reads_under_load(reader, requests, rate,
                                                                  plan.seed))
            m.loaded[size], m.loaded_overhead[size] = times, overhead
            m.loaded_rate[size], m.loaded_utilization[size] = rate, util
            if progress is not None:
                progress(plan.latency_samples)
    finally:
        if reader is not store:
            reader.close()


def one_channel(store: ByteStore) -> ByteStore:
    """The same local directory with one reading thread (the channel queues its requests, as
    replay's do); other stores as they are."""
    if store.kind != "file":
        return store
    from memsim.stores.local import LocalByteStore

    local: LocalByteStore = store  # type: ignore[assignment]
    return LocalByteStore(local.root, cold=local.cold, threads=1)


def _object_size(store: ByteStore, plan: Plan) -> int:
    """The plan's test object, grown to LOCAL_OBJECT for a local directory with room."""
    if plan.object_size_given or store.kind != "file" or plan.object_size >= LOCAL_OBJECT:
        return plan.object_size
    path = _existing_parent(Path(store.root))  # type: ignore[attr-defined]
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return plan.object_size
    room = (free - 4 * SPACE_MARGIN) // ALIGN * ALIGN
    return max(plan.object_size, min(LOCAL_OBJECT, room))


def measure(url: str, plan: Plan, *, progress: Callable[[int], None] | None = None,
            while_present: Callable[[ByteStore, ScratchObject, Measurements], Any] | None
            = None,
            field_name: str = "store") -> tuple[Measurements, Any]:
    """Measure one store (`file:///dir`, `s3://bucket/prefix`, `memory://name`).

    `while_present(store, test_object, measurements)` runs after the timed reads, while the
    test object still exists (the run under load, fio). Returns (measurements, its result).
    """
    parsed = parse_store_url(url, field_name=field_name)
    threads = max(MIN_THREADS, max(plan.concurrencies))
    store = open_store(url, cold=plan.cold, threads=threads, seed=plan.seed,
                       field_name=field_name)
    try:
        with scratch_object(store, _object_size(store, plan), plan.seed, plan.cold) as obj:
            with frozen_heap():
                result = run_sync(_measure(store, obj.key, obj.size, plan, progress))
            result.url = parsed.display
            extra = (while_present(store, obj, result) if while_present is not None
                     else None)
        return result, extra
    finally:
        store.close()
