"""The client's read path: sequential layouts read level after level (checked against the
reads' own begin and end stamps), parallel ones overlap levels, FetchTimings.started, and
the per-request log (one entry per request counted in stats.requests)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

import numpy as np
import pytest
from realio_helpers import fresh_memory  # noqa: F401 (an autouse fixture)
from test_client import (
    LAYOUT,
    S3_LAYOUT,
    assert_exact,
    leaf_path,
    local_profile,
    s3_profile,
    want,
)
from tiny_bank import BANK

from memsim.client import bank as client_bank
from memsim.client.bank import FetchTimings, RequestLog, TimedFetch, open_bank
from memsim.client.prefetch import PrefetchConfig
from memsim.layout import CacheConfig
from memsim.materialize import materialize

SEQUENTIAL = LAYOUT.model_copy(update={"fetch": "sequential"})
CALLS = ("fetch", "fetch_many", "afetch", "afetch_many")


@pytest.fixture
def local_bank(tmp_path):
    """RAM (memory), flash (4 KiB requests: a level-2 block is two) and disk."""
    prof = local_profile(tmp_path, max_request_size="4 KiB")
    materialize(prof, BANK, LAYOUT)
    return prof


AIO_HERE = client_bank._aio_syscalls() is not None  # Linux on x86-64 or arm64


class Recorder:
    """Every byte-range read's level, begin and end (perf_counter), local and memory: local
    reads seen through `_pread_into` (which makes async fetches read on threads), or with
    `aio`, through native AIO's submissions and completions (`served` set once open)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, aio: bool = False) -> None:
        self.reads: list[tuple[int, float, float]] = []
        self.lock = threading.Lock()
        self.served: Any = None
        self.aio = 0  # reads seen through native AIO
        if aio:
            self._watch_aio(monkeypatch)
            return
        original = client_bank._pread_into

        def pread(store: Any, key: str, *args: Any) -> float:
            began = time.perf_counter()
            done = original(store, key, *args)
            self.add(key, began)
            return done

        monkeypatch.setattr(client_bank, "_pread_into", pread)

    def _watch_aio(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = client_bank._Aio.submit

        def submit(aio: Any, fd: int, address: int, nbytes: int, offset: int,
                   done: Any) -> bool:
            key = next(k for store in self.served.stores.values()
                       for k, (f, _d) in getattr(store, "_fds", {}).items() if f == fd)
            began = time.perf_counter()

            def recorded(result: int, when: float) -> None:
                self.add(key, began)
                self.aio += 1
                done(result, when)

            return original(aio, fd, address, nbytes, offset, recorded)

        monkeypatch.setattr(client_bank._Aio, "submit", submit)

    def add(self, key: str, began: float) -> None:
        with self.lock:
            self.reads.append((int(key.split("/")[0][1:]), began, time.perf_counter()))

    def watch_memory(self, store: Any) -> None:
        original = store.read_range

        async def read_range(key: str, start: int, length: int) -> bytes:
            began = time.perf_counter()
            data = await original(key, start, length)
            self.add(key, began)
            return data

        store.read_range = read_range

    def take(self) -> list[tuple[int, float, float]]:
        with self.lock:
            out, self.reads = self.reads, []
        return out


def call(served: Any, how: str, paths: list[list[int]]) -> list[TimedFetch]:
    """Fetch `paths` one way, timed: a TimedFetch per query."""
    if how == "fetch":
        return [served.fetch(paths[0], timed=True)]
    if how == "afetch":
        return [asyncio.run(served.afetch(paths[0], timed=True))]
    got = served.fetch_many(paths, timed=True) if how == "fetch_many" else \
        asyncio.run(served.afetch_many(paths, timed=True))
    return [TimedFetch(b, t) for b, t in zip(got.blocks, got.timings, strict=True)]


def assert_level_after_level(reads: list[tuple[int, float, float]],
                             timings: FetchTimings) -> None:
    """No read of a level began before every read of the level before it had ended, and
    `started` says when each level's turn came."""
    levels = sorted(timings.levels)
    assert timings.started[levels[0]] == 0.0
    for a, b in itertools.pairwise(levels):
        assert timings.levels[a] <= timings.started[b] <= timings.levels[b]
        ended = max(end for d, _b, end in reads if d == a)
        began = min(begin for d, begin, _e in reads if d == b)
        assert ended <= began
        assert timings.start + timings.started[b] <= began


@pytest.mark.parametrize("how,aio", [(how, False) for how in CALLS]
                         + [("afetch", True), ("afetch_many", True)])
def test_a_sequential_layout_reads_level_after_level(local_bank, monkeypatch, how, aio):
    recorder = Recorder(monkeypatch, aio)
    with open_bank(SEQUENTIAL, profile=local_bank, bank=BANK) as served:
        assert served.sequential
        recorder.served = served
        recorder.watch_memory(served.stores["ram"])
        batches = ([7], [5, 6, 40, 41, 63]) if how.endswith("_many") else ([7], [40], [63])
        for leaves in batches:
            paths = [leaf_path(x) for x in leaves]
            got = call(served, how, paths)
            reads = recorder.take()
            assert {d for d, _b, _e in reads} == {1, 2, 3}
            for path, one in zip(paths, got, strict=True):
                assert_exact(one.blocks, path)
                assert sorted(one.timings.started) == [1, 2, 3]
                assert_level_after_level(reads, one.timings)
    assert (recorder.aio > 0) == (aio and AIO_HERE)


@pytest.mark.parametrize("how", ["fetch", "afetch"])
def test_a_sequential_layout_with_a_cache_keeps_level_order(local_bank, monkeypatch, how):
    recorder = Recorder(monkeypatch)
    with open_bank(SEQUENTIAL, profile=local_bank, bank=BANK,
                   cache=CacheConfig(budget="1 MB")) as served:
        recorder.watch_memory(served.stores["ram"])
        call(served, how, [leaf_path(8)])
        recorder.take()
        (again,) = call(served, how, [leaf_path(9)])  # levels 1 and 2 are cache hits
        reads = recorder.take()
        assert [d for d, _b, _e in reads] == [3]
        assert again.timings.cached == (1, 2)
        t = again.timings
        assert t.started[1] == 0.0 <= t.levels[1] <= t.started[2] <= t.levels[2] \
            <= t.started[3] <= t.levels[3]
        assert t.start + t.started[3] <= reads[0][1]


@pytest.mark.parametrize("how", ["fetch", "afetch"])
def test_a_parallel_layout_reads_levels_at_once(local_bank, monkeypatch, how):
    """A level-2 read that waits for a level-3 read to begin finishes only if both are in
    flight together (a sequential read would never start level 3: the wait would time out)."""
    level3_began = threading.Event()
    original = client_bank._pread_into

    def pread(store: Any, key: str, *args: Any) -> float:
        if key.startswith("L3/"):
            level3_began.set()
        elif key.startswith("L2/"):
            assert level3_began.wait(timeout=30), "level 3 never began while level 2 read"
        return original(store, key, *args)

    monkeypatch.setattr(client_bank, "_pread_into", pread)
    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        assert not served.sequential
        (got,) = call(served, how, [leaf_path(11)])
    assert_exact(got.blocks, leaf_path(11))
    assert got.timings.started == {1: 0.0, 2: 0.0, 3: 0.0}


@pytest.mark.parametrize("how", ["afetch", "afetch_many"])
def test_async_local_reads_use_native_aio_and_levels_overlap(local_bank, monkeypatch, how):
    """Where the kernel has native AIO, every local range of an async fetch is submitted
    before any completes (the levels overlap), and the blocks are exact."""
    recorder = Recorder(monkeypatch, aio=True)
    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        recorder.served = served
        for leaves in ([13], [20, 57]):  # within the tiers' channels (flash 4, disk 2)
            paths = [leaf_path(x) for x in leaves]
            got = call(served, how, paths[:1] if how == "afetch" else paths)
            for path, one in zip(paths, got, strict=False):
                assert_exact(one.blocks, path)
            reads = recorder.take()
            if AIO_HERE:  # level 2 on flash (two 4 KiB requests a block), 3 on disk
                blocks = len(got)
                assert sorted(d for d, _b, _e in reads) == [2] * 2 * blocks + [3] * blocks
                assert max(b for _d, b, _e in reads) < min(e for _d, _b, e in reads)
            else:
                assert reads == []


def test_aio_channels_are_given_back_once_even_when_cancelled(local_bank):
    """A fetch cancelled with AIO reads in flight gives its channels back at once, and
    their later completions do not give them back again."""
    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        disk, flash = served._channels["disk"], served._channels["flash"]

        async def run() -> None:
            task = asyncio.ensure_future(served.afetch(leaf_path(6)))
            await asyncio.sleep(0)  # it submits its reads and waits
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            if AIO_HERE:  # (reads on threads give them back as each finishes)
                assert disk.qsize() == 2 and flash.qsize() == 4  # given back on cancel
            aio = client_bank._loop_aio(asyncio.get_running_loop())
            deadline = time.monotonic() + 20  # a guard, not a timing assertion
            while aio is not None and aio.pending and time.monotonic() < deadline:
                await asyncio.sleep(0.001)  # the completions arrive and are reaped
            assert aio is None or not aio.pending
            assert_exact(await served.afetch(leaf_path(7)), leaf_path(7))

        asyncio.run(run())
        served.close()  # its reading threads are done
        assert disk.qsize() == 2 and flash.qsize() == 4  # not given back twice


def assert_log_matches(logs: dict[str, RequestLog], stats: Any) -> None:
    assert set(logs) == {"ram", "flash", "disk"} or "cloud" in logs
    for tier, log in logs.items():
        n = stats.requests.get(tier, 0)
        assert len(log) == len(log.wait) == len(log.service) == len(log.prefetch) == n
        assert sum(log.nbytes) == stats.bytes.get(tier, 0)
        assert all(w >= 0 for w in log.wait) and all(s > 0 for s in log.service)


def test_the_request_log_has_one_entry_per_request(local_bank):
    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        assert served.request_log is None
        served.fetch(leaf_path(0))  # not logged
        served.stats.reset()
        logs = served.log_requests()
        assert served.log_requests() is logs and served.request_log is logs
        for leaf in (1, 2, 30):
            served.fetch(leaf_path(leaf))
        served.fetch_many([leaf_path(x) for x in (3, 3, 17, 63)])
        asyncio.run(served.afetch(leaf_path(44)))
        asyncio.run(served.afetch_many([leaf_path(x) for x in (45, 46, 46)]))
        stats = served.stats
        assert stats.requests == {"ram": 8, "flash": 2 * 8, "disk": 9}
        assert_log_matches(logs, stats)
        assert logs["ram"].wait == [0.0] * 8
        assert not any(p for log in logs.values() for p in log.prefetch)
        assert sorted(set(logs["flash"].nbytes)) == [2048, 4096]  # a 6 KiB block: 4 + 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_request_log_counts_prefetch_reads(local_bank, mode):
    trace = np.array([leaf_path(x) for x in (0, 21, 42, 63)])
    with open_bank(LAYOUT, profile=local_bank, bank=BANK, cache=CacheConfig(budget="1 MB"),
                   prefetch=PrefetchConfig("trace", trace=trace, lookahead=2)) as served:
        logs = served.log_requests()

        async def run() -> None:
            for path in trace:
                await served.afetch(path)
            await served.await_prefetches()

        if mode == "sync":
            for path in trace:
                served.fetch(path)
            served.wait_prefetches()
        else:
            asyncio.run(run())
        stats = served.stats
        assert stats.prefetch_issued == 9 and stats.prefetch_hits == 9  # 3 queries x 3
        assert_log_matches(logs, stats)
        # prefetched: 3 blocks on each tier (ram 1 request, flash 2, disk 1 each)
        assert [sum(logs[t].prefetch) for t in ("ram", "flash", "disk")] == [3, 6, 3]


def test_the_request_log_from_s3(s3, clean_s3, tmp_path):
    prof = s3_profile(tmp_path, "readpath")
    materialize(prof, BANK, S3_LAYOUT)
    with open_bank(S3_LAYOUT, profile=prof, bank=BANK) as served:
        logs = served.log_requests()
        served.fetch(leaf_path(3))
        served.fetch_many([leaf_path(x) for x in (4, 5, 5)])
        asyncio.run(served.afetch(leaf_path(50)))
        assert served.stats.requests["cloud"] == 4
        assert_log_matches(logs, served.stats)


def span(array: np.ndarray) -> tuple[int, int]:
    start = array.__array_interface__["data"][0]
    return start, start + array.nbytes


def test_the_buffer_pool_reuses_a_slot_only_once_no_array_views_it():
    pool = client_bank._BufferPool()
    size = 1 << 20
    first = pool.get(size)
    where = span(first)[0]
    assert where % 4096 == 0
    kept = first[100:].view(np.uint16)[3:]  # a view of a view: numpy points it at `first`
    del first
    second = pool.get(size)
    assert span(second)[0] != where  # `kept` still views the first slot
    del kept
    assert span(pool.get(size))[0] == where  # now free again
    assert pool.arenas == 1  # two 1 MiB slots per 2 MiB arena
    small = client_bank._BufferPool(keep=2 * size)
    got = [small.get(size) for _ in range(5)]
    del got
    assert small.idle == 2 * size  # the rest dropped


@pytest.mark.parametrize("how", CALLS)
def test_a_held_array_is_never_read_into_again(local_bank, how):
    """Fetch a path and keep its arrays, then fetch other blocks many times, dropping them:
    the kept arrays still hold their blocks' bytes, no array fetched meanwhile overlaps
    them, and the others' buffers are reused (a few addresses, not one per fetch)."""
    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        (held,) = call(served, how, [leaf_path(37)])
        kept = held.blocks[3], held.blocks[2]
        del held
        seen: set[int] = set()
        for k in range(120):
            leaves = [(7 * k + j) % 64 for j in range(3 if how.endswith("_many") else 1)]
            for leaf, got in zip(leaves, call(served, how, [leaf_path(x) for x in leaves]),
                                 strict=True):
                assert_exact(got.blocks, leaf_path(leaf))
                for depth in (2, 3):
                    lo, hi = span(got.blocks[depth])
                    seen.add(lo // 4096)  # the buffer's first page
                    for mine in kept:
                        a, b = span(mine)
                        assert hi <= a or b <= lo, "a held buffer was handed out again"
            del got
        assert kept[0].tobytes() == want(3, 37).tobytes()
        assert kept[1].tobytes() == want(2, 9).tobytes()
        assert len(seen) <= 32  # without reuse: a new buffer per block fetched (240 or more)


def test_sync_s3_fetches_on_several_threads_overlap_on_the_banks_loop(s3, clean_s3, tmp_path):
    """Two threads fetch S3 blocks at once: each request waits until the other is in flight
    too (they would wait forever, up to the guard, if sync callers took turns); close() stops
    the bank's loop thread."""
    prof = s3_profile(tmp_path, "overlap")
    materialize(prof, BANK, S3_LAYOUT)
    with open_bank(S3_LAYOUT, profile=prof, bank=BANK) as served:
        store = served.stores["cloud"]
        original = store.read_range
        lock = threading.Lock()
        state = {"inflight": 0, "peak": 0}

        async def read_range(key: str, start: int, length: int) -> Any:
            with lock:
                state["inflight"] += 1
                state["peak"] = max(state["peak"], state["inflight"])
            try:
                deadline = time.monotonic() + 20  # a guard, not a timing assertion
                while state["peak"] < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)
                return await original(key, start, length)
            finally:
                with lock:
                    state["inflight"] -= 1

        store.read_range = read_range
        got: dict[int, Any] = {}
        threads = [threading.Thread(target=lambda x=x: got.update({x: served.fetch(
            leaf_path(x))})) for x in (12, 50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert state["peak"] == 2
        for leaf in (12, 50):
            assert_exact(got[leaf], leaf_path(leaf))
        loop_thread = served._loop_thread
        assert loop_thread is not None and loop_thread.is_alive()

        async def inside_a_running_loop() -> Any:  # as in Jupyter: the sync call still works
            return served.fetch(leaf_path(33))

        assert_exact(asyncio.run(inside_a_running_loop()), leaf_path(33))
    assert not loop_thread.is_alive() and served._loop is None


def test_as_torch_is_zero_copy_through_dlpack(local_bank, monkeypatch):
    """`as_="torch"` with a stand-in torch whose from_dlpack is numpy's: the result views
    the very memory of the block fetched (local stores), as bf16, with the block's values;
    a memory store's immutable bytes are the one case copied."""
    import sys
    import types

    import ml_dtypes

    fake = types.ModuleType("torch")
    fake.from_dlpack = np.from_dlpack  # type: ignore[attr-defined]
    fake.bfloat16 = ml_dtypes.bfloat16  # type: ignore[attr-defined]
    fake.float8_e4m3fn = ml_dtypes.float8_e4m3fn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", fake)
    with open_bank(LAYOUT, profile=local_bank, bank=BANK,
                   cache=CacheConfig(budget="1 MB")) as served:
        path = leaf_path(42)
        arrays = served.fetch(path)  # read, and kept by the cache
        for tensors in (served.fetch(path, as_="torch"),
                        served.fetch_many([path], as_="torch")[0],
                        asyncio.run(served.afetch(path, as_="torch"))):
            assert sorted(tensors) == [1, 2, 3]
            for depth in (1, 2, 3):
                t = tensors[depth]
                assert t.dtype == ml_dtypes.bfloat16 and t.shape == arrays[depth].shape
                assert t.tobytes() == arrays[depth].tobytes() == want(depth, path[depth - 1]
                                                                      ).tobytes()
                assert np.shares_memory(t, arrays[depth]) == (depth != 1)  # ram: a copy
