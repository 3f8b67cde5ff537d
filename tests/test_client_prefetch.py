"""Client prefetch: the policies against hand-computed expectations, the budget never
exceeded, prefetched blocks found by later demand fetches exactly as a brute-force replay of
the policy over an LRU cache says, demand reads taking a channel before queued prefetches,
blocked blocks never prefetched, and close() leaving no prefetch threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realio_helpers import fresh_memory  # noqa: F401 (an autouse fixture)
from tiny_bank import BANK

import memsim
from memsim.blockmap import Subtree
from memsim.client import bank as client_bank
from memsim.client.bank import ServedBank, _PriorityChannel, open_bank
from memsim.client.prefetch import (
    ChildrenPrefetch,
    PrefetchConfig,
    TracePrefetch,
    make_policy,
    select,
)
from memsim.errors import InputError
from memsim.layout import CacheConfig
from memsim.materialize import materialize
from memsim.workload import ZipfRouting

SIZES = {1: 12288, 2: 6144, 3: 3072}
LAYOUT = memsim.layout_from_dict({"name": "l", "placement": {1: "flash", 2: "flash",
                                                             3: "disk"},
                                  "chunking": {3: 16}})


@pytest.fixture(scope="module")
def prof(tmp_path_factory):
    root = tmp_path_factory.mktemp("bank")
    profile = memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
         "concurrency": 2, "store": f"file://{root}/flash"},
        {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms",
         "concurrency": 2, "store": f"file://{root}/disk"},
    ]})
    materialize(profile, BANK, LAYOUT)
    return profile


def leaf_path(leaf: int) -> list[int]:
    return [leaf // 16, leaf // 4, leaf]


def keys_of(leaf: int) -> list[tuple[int, int]]:
    return list(zip((1, 2, 3), leaf_path(leaf), strict=True))


# ---------------------------------------------------------------------- the policies
def test_children_learned_counts_by_hand() -> None:
    policy = ChildrenPrefetch([1, 2, 3], 4)
    assert policy.step([keys_of(5)]) == [(2, 1), (3, 5)]  # only what was seen, score 1
    # counts: (1,0)=2, (2,1)=1, (2,2)=1, (3,5)=1, (3,8)=1: (3,8) 1/1 beats (2,1), (2,2) 1/2
    assert policy.step([keys_of(8)]) == [(3, 8), (2, 1), (2, 2)]


def test_children_by_given_popularity_by_hand() -> None:
    pop = {1: np.array([0.5, 0.5, 0.0, 0.0]),
           2: np.array([0.1, 0.3, 0.05, 0.05] + [0.0] * 12),
           3: np.zeros(64)}
    pop[3][4:8] = [0.0, 0.2, 0.05, 0.05]
    policy = ChildrenPrefetch([1, 2, 3], 4, pop)
    # P(child | (1,0)): .2 .6 .1 .1; P(child | (2,1)): 0 .667 .167 .167
    assert policy.step([keys_of(5)]) == [(3, 5), (2, 1), (2, 0), (3, 6), (3, 7), (2, 2),
                                         (2, 3)]


def test_children_from_a_zipf_workload() -> None:
    """With a workload the scores are P(child | parent) of its routing: s=1, b=4 gives
    rank probabilities 12/25 * (1, 1/2, 1/3, 1/4), the rank-1 child placed by rank_offset."""
    routing = ZipfRouting(s=1.0, seed=3)
    workload = memsim.workload_from_dict({"arrivals": {"kind": "poisson", "rate": 1.0},
                                          "routing": {"kind": "zipf", "s": 1.0, "seed": 3}})
    policy = make_policy(PrefetchConfig("children", workload=workload), BANK)
    got = policy.step([[(1, 2), (2, 9), (3, 37)]])
    top2 = int(routing.rank_offset(np.array([2]), 2, 4)[0])
    top3 = int(routing.rank_offset(np.array([9]), 3, 4)[0])
    assert got[:2] == sorted([(2, 8 + top2), (3, 36 + top3)])  # both 0.48: ties by key
    assert len(got) == 8
    assert policy._score(1, 2, 2, 8 + top2) == pytest.approx(0.48)


def test_trace_successor() -> None:
    trace = [keys_of(0), keys_of(17), keys_of(40), keys_of(63)]
    policy = TracePrefetch(trace)
    assert policy.step([keys_of(0)]) == keys_of(17)
    assert policy.step([keys_of(17), keys_of(40)]) == keys_of(63)  # a batch of two
    assert policy.step([keys_of(63)]) == []
    ahead = TracePrefetch(trace, lookahead=2)
    assert ahead.step([keys_of(0)]) == keys_of(17) + keys_of(40)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 63)), max_size=20),
       st.integers(0, 5), st.integers(0, 40000), st.sets(st.integers(0, 63), max_size=8))
def test_select_keeps_the_budget(cands, slots, free, skipped) -> None:
    chosen = select(cands, slots, free, SIZES, lambda k: k[1] in skipped)
    assert len(chosen) <= slots and len(set(chosen)) == len(chosen)
    assert sum(SIZES[d] for d, _ in chosen) <= free
    assert not any(b in skipped for _, b in chosen)
    it = iter(cands)
    assert all(any(c == k for c in it) for k in chosen)  # in the candidates' order


# ---------------------------------------------------------------------- in the client
def test_prefetch_needs_a_cache(prof) -> None:
    with pytest.raises(InputError, match="needs a RAM cache"):
        open_bank(LAYOUT, profile=prof, bank=BANK, cache=None,
                  prefetch=PrefetchConfig("children"))
    with pytest.raises(InputError, match="prefetch policy must be"):
        PrefetchConfig("sideways")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="needs trace="):
        PrefetchConfig("trace")
    for trace, message in [(np.zeros((2, 2), dtype=int), "3 ids per path"),
                           (np.array([[0, 0, 0], [0, 5, 20]]), "query 1: block 5 at depth 2"),
                           (np.array([[0, 0, 64]]), "block 64 at depth 3")]:
        with pytest.raises(InputError, match=message) as err:
            open_bank(LAYOUT, profile=prof, bank=BANK, cache=CacheConfig(budget=10**6),
                      prefetch=PrefetchConfig("trace", trace=trace))
        assert "\n" not in str(err.value)


def test_trace_policy_reads_a_trace_file(tmp_path) -> None:
    from memsim.trace import write_trace

    paths = np.array([leaf_path(x) for x in (3, 9, 60)])
    file = write_trace(tmp_path / "t.parquet", np.arange(3, dtype=float), paths)
    policy = make_policy(PrefetchConfig("trace", trace=file, lookahead=2), BANK)
    assert policy.step([keys_of(3)]) == keys_of(9) + keys_of(60)


def replay(leaves: list[int], budget: int, max_bytes: int, slots: int, next_keys
           ) -> tuple[int, int]:
    """Brute force: an LRU of `budget` bytes; per query its blocks looked up (a prefetched,
    unused block found is a prefetch hit), then of `next_keys(i, leaf)` (the policy's
    candidates, by its definition) those not held are chosen in order, at most `slots`, within
    `max_bytes` of unused prefetched blocks, and then admitted. Returns (issued, hits)."""
    lru: list[tuple[int, int]] = []
    unused: set[tuple[int, int]] = set()
    issued = hits = 0

    def admit(key: tuple[int, int]) -> None:
        while sum(SIZES[d] for d, _ in lru) + SIZES[key[0]] > budget:
            unused.discard(lru.pop(0))
        lru.append(key)

    for i, leaf in enumerate(leaves):
        for key in keys_of(leaf):
            if key in lru:
                lru.remove(key)
                lru.append(key)
                if key in unused:
                    unused.discard(key)
                    hits += 1
            else:
                admit(key)
        chosen: list[tuple[int, int]] = []  # decided on the cache as the query left it
        room = max_bytes - sum(SIZES[d] for d, _ in unused)
        for key in next_keys(i, leaf):
            if len(chosen) == slots:
                break
            if key in lru or key in chosen or SIZES[key[0]] > room:
                continue
            chosen.append(key)
            room -= SIZES[key[0]]
        for key in chosen:  # then admitted in order (one may evict another: wasted)
            admit(key)
            unused.add(key)
            issued += 1
    return issued, hits


def run_served(prof, leaves: list[int], budget: int, config: PrefetchConfig) -> tuple[int, int]:
    """The client on the same queries, each fetch's prefetches finished before the next."""
    with open_bank(LAYOUT, profile=prof, bank=BANK, cache=CacheConfig(budget=budget),
                   prefetch=config) as served:
        pf = served.prefetcher
        assert pf is not None
        for leaf in leaves:
            got = served.fetch(leaf_path(leaf))
            assert sorted(got) == [1, 2, 3]
            assert pf.unused_bytes <= config.max_bytes and pf.inflight <= config.max_inflight
            served.wait_prefetches()
        stats = served.stats
        assert stats.cache_bytes <= budget
        assert stats.prefetch_hits + stats.prefetch_wasted <= stats.prefetch_issued
        return stats.prefetch_issued, stats.prefetch_hits


budgets = st.sampled_from([30000, 60000, 200000])
prefetch_bytes = st.sampled_from([6144, 20000, 100000])


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.integers(0, 7), st.integers(0, 63)), min_size=2, max_size=12),
       budgets, prefetch_bytes)
def test_trace_prefetch_matches_a_brute_force_replay(prof, leaves, budget, max_bytes) -> None:
    config = PrefetchConfig("trace", max_inflight=3, max_bytes=max_bytes,
                            trace=np.array([leaf_path(x) for x in leaves]))

    def following(i: int, _leaf: int) -> list[tuple[int, int]]:
        return keys_of(leaves[i + 1]) if i + 1 < len(leaves) else []

    assert run_served(prof, leaves, budget, config) == replay(leaves, budget, max_bytes, 3,
                                                              following)


WORKLOAD = memsim.workload_from_dict({"arrivals": {"kind": "poisson", "rate": 1.0},
                                      "routing": {"kind": "zipf", "s": 1.2, "seed": 7},
                                      "locality": {"p": 0.8, "depth": 2}})


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.integers(0, 2**16), budgets, prefetch_bytes, st.integers(1, 4))
def test_children_prefetch_on_a_locality_workload(prof, seed, budget, max_bytes,
                                                   slots) -> None:
    """Zipf routing with topic sessions: the hottest children by the workload's popularity
    are prefetched, later queries find them, exactly as the brute-force replay counts."""
    from memsim.popularity import block_popularity

    leaves = [int(x) for x in
              WORKLOAD.sampler(BANK, np.random.default_rng(seed)).sample(30)[:, 2]]
    pop = {d: block_popularity(BANK, WORKLOAD.routing, d) for d in (1, 2, 3)}

    def hottest_children(_i: int, leaf: int) -> list[tuple[int, int]]:
        score: dict[tuple[int, int], float] = {}
        for (d, x), (e, _) in zip(keys_of(leaf), keys_of(leaf)[1:], strict=False):
            for c in range(4 * x, 4 * x + 4):
                score[(e, c)] = round(pop[e][c] / pop[d][x], 12)
        return sorted(score, key=lambda k: (-score[k], k))

    config = PrefetchConfig("children", max_inflight=slots, max_bytes=max_bytes,
                            workload=WORKLOAD)
    got = run_served(prof, leaves, budget, config)
    assert got == replay(leaves, budget, max_bytes, slots, hottest_children)
    if budget >= 60000 and max_bytes >= 20000:
        assert got[1] > 0  # locality: later queries do hit prefetched blocks


def test_async_and_batches_prefetch(prof) -> None:
    import asyncio

    trace = np.array([leaf_path(x) for x in (0, 1, 2, 40, 41)])

    async def run() -> tuple[int, int]:
        async with open_bank(LAYOUT, profile=prof, bank=BANK, cache=CacheConfig(budget=10**6),
                             prefetch=PrefetchConfig("trace", trace=trace)) as served:
            await served.afetch(trace[0])
            assert served.prefetcher.tasks  # type: ignore[union-attr]  (tasks on this loop)
            with pytest.raises(InputError, match="await_prefetches"):
                served.wait_prefetches()  # would block the loop its tasks need
            await served.await_prefetches()
            await served.afetch_many(trace[1:3])
            await served.await_prefetches()
            await served.afetch(trace[3])
            await served.await_prefetches()
            return served.stats.prefetch_issued, served.stats.prefetch_hits

    # issued: after query 0, query 1's new block (3,1); after the batch (queries 1, 2),
    # query 3's three blocks; after query 3, query 4's new block (3,41), never used.
    # hits: (3,1) in the batch, then query 3's three
    assert asyncio.run(run()) == (5, 4)


def test_blocked_blocks_are_never_prefetched(prof, monkeypatch) -> None:
    trace = np.array([leaf_path(x) for x in (0, 20, 21)])
    reads: list[str] = []
    original = client_bank._pread_into
    monkeypatch.setattr(client_bank, "_pread_into",
                        lambda store, key, *a: (reads.append(key), original(store, key, *a))[1])
    with open_bank(LAYOUT, profile=prof, bank=BANK, cache=CacheConfig(budget=10**6),
                   blocked=[Subtree(2, 5)],
                   prefetch=PrefetchConfig("trace", trace=trace, lookahead=2)) as served:
        served.fetch(trace[0])
        served.wait_prefetches()
        assert served.stats.prefetch_issued == 1  # (1,1); (2,5), (3,20), (3,21) are blocked
        assert not served.cache.holds(2, 5) and not served.cache.holds(3, 20)  # type: ignore
        assert served.cache.holds(1, 1)  # type: ignore[union-attr]


def test_close_leaves_no_prefetch_threads(prof) -> None:
    trace = np.array([leaf_path(x) for x in range(0, 64, 3)])
    served = open_bank(LAYOUT, profile=prof, bank=BANK, cache=CacheConfig(budget=10**6),
                       prefetch=PrefetchConfig("trace", trace=trace, lookahead=8))
    served.fetch(trace[0])  # prefetches still in flight at close
    served.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("memsim-prefetch")]
    s = served.stats
    assert s.prefetch_issued == 4  # max_inflight's default
    # every prefetch read finished or failed: nobody can be left waiting on one
    pending = served.cache._values.values()  # type: ignore[union-attr]
    assert not [v for v in pending if isinstance(v, Future) and not v.done()]
    served.prefetcher.trigger([keys_of(0)])  # type: ignore[union-attr]  (a no-op once closed)
    served.close()


def test_async_close_cancels_prefetch_tasks(prof) -> None:
    """Leaving `async with` with prefetch tasks in flight: cancelled or finished, none left
    pending, nobody left waiting on one, no prefetch thread left."""
    import asyncio

    trace = np.array([leaf_path(x) for x in range(0, 64, 3)])

    async def run() -> ServedBank:
        async with open_bank(LAYOUT, profile=prof, bank=BANK, cache=CacheConfig(budget=10**6),
                             prefetch=PrefetchConfig("trace", trace=trace, lookahead=8,
                                                     max_inflight=6)) as served:
            await served.afetch(trace[0])
            assert len(served.prefetcher.tasks) == 6  # type: ignore[union-attr]
        assert not served.prefetcher.tasks  # type: ignore[union-attr]
        return served

    served = asyncio.run(run())
    pending = served.cache._values.values()  # type: ignore[union-attr]
    assert not [v for v in pending if isinstance(v, Future) and not v.done()]
    assert served.stats.prefetch_issued == 6
    assert not [t for t in threading.enumerate() if t.name.startswith("memsim-prefetch")]


def _until(condition, what: str) -> None:
    """Wait for a state another thread reaches (a bound, not a timing assertion)."""
    end = time.monotonic() + 30
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"never reached: {what}")
        time.sleep(0.001)


def test_demand_takes_a_channel_before_a_queued_prefetch() -> None:
    channel = _PriorityChannel(1)
    channel.log = []
    channel.get()  # a demand read holds the only channel

    def prefetch() -> None:
        channel.get_prefetch()
        channel.put()

    def demand() -> None:
        channel.get()
        channel.put()

    p = threading.Thread(target=prefetch)
    p.start()
    _until(lambda: channel.waiting_prefetch == 1, "prefetch queued")
    d = threading.Thread(target=demand)
    d.start()
    _until(lambda: channel.queued == 1, "demand queued")
    channel.put()  # the demand queued after the prefetch still goes first
    d.join()
    p.join()
    assert channel.log == ["demand", "demand", "prefetch"]
    channel.get_prefetch()  # with no demand queued, a prefetch takes a free channel at once
    channel.put()


def test_loop_channel_serves_demand_first_across_loops() -> None:
    """The channels of a tier read on event loops (S3): a prefetch queued on another thread's
    loop gets a freed channel only after the demand requests queued on this loop; a waiter
    cancelled leaves the queue."""
    import asyncio

    channel = client_bank._LoopChannel(1)
    channel.log = []

    def prefetch_thread() -> None:
        async def go() -> None:
            async with channel.prefetch():
                pass
        asyncio.run(go())

    async def main() -> None:
        await channel._acquire("demand")  # held
        p = threading.Thread(target=prefetch_thread)
        p.start()
        while not channel.prefetching:
            await asyncio.sleep(0.001)
        gone = asyncio.ensure_future(channel._acquire("demand"))
        await asyncio.sleep(0)
        gone.cancel()  # a demand request given up before its turn
        with pytest.raises(asyncio.CancelledError):
            await gone

        async def demand() -> None:
            async with channel:
                pass
        d = asyncio.ensure_future(demand())
        while not channel.demand:
            await asyncio.sleep(0)
        channel.release()
        await d
        await asyncio.get_running_loop().run_in_executor(None, p.join)

    asyncio.run(main())
    assert channel.log == ["demand", "demand", "prefetch"]
    assert channel.free == 1 and not channel.demand and not channel.prefetching


def test_bank_prefetch_waits_for_queued_demand(prof, monkeypatch) -> None:
    """On the bank: a prefetch queued on a busy tier reads after a demand queued later."""
    gate = threading.Event()
    original = client_bank._pread_into

    def blocking(store, key, buf, base, start, length):
        if "disk" in store.url and not gate.is_set() \
                and not threading.current_thread().name.startswith("memsim-prefetch"):
            gate.wait()
        return original(store, key, buf, base, start, length)

    with open_bank(LAYOUT, profile=prof, bank=BANK, cache=CacheConfig(budget=10**6),
                   prefetch=PrefetchConfig("trace", trace=np.array([leaf_path(0)]))) as served:
        served.fetch(leaf_path(42))  # (1,2), (2,10) cached
        served.fetch(leaf_path(52))  # (1,3), (2,13) cached
        served.wait_prefetches()
        disk = served._channels["disk"]
        assert disk.free == 2
        disk.log = []
        monkeypatch.setattr(client_bank, "_pread_into", blocking)
        holders = [threading.Thread(target=served.fetch, args=(leaf_path(x),))
                   for x in (40, 41)]  # each misses one disk block only
        for t in holders:
            t.start()
        _until(lambda: disk.free == 0, "both disk channels held")
        pf = served.prefetcher
        assert pf is not None
        pf.policy = TracePrefetch([[], [(3, 63)]])
        pf.trigger([[]])
        _until(lambda: disk.waiting_prefetch == 1, "prefetch queued")
        late = threading.Thread(target=served.fetch, args=(leaf_path(54),))
        late.start()
        _until(lambda: disk.queued == 1, "demand queued")
        gate.set()
        for t in [*holders, late]:
            t.join()
        served.wait_prefetches()
        assert disk.log == ["demand", "demand", "demand", "prefetch"]
        assert served.cache.holds(3, 63)  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_prefetch_from_s3_is_exact_and_never_requests_blocked_blocks(s3, clean_s3, tmp_path,
                                                                     mode):
    """S3 (the emulator), from a prefetch thread's own loop (sync) or as tasks on the
    caller's (async): prefetched blocks are the bytes materialized, and a blocked one never
    reaches the store (proxy log)."""
    import asyncio

    from memsim.materialize import SyntheticContent

    prof = memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "concurrency": 4,
         "store": f"file://{tmp_path}/flash"},
        {"name": "cloud", "kind": "cloud", "bandwidth": "100 MB/s", "latency": "20 ms",
         "concurrency": 8, "store": "s3://memsim/prefetch?timeout=10s"},
    ]})
    layout = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "flash",
                                                                 3: "cloud"},
                                      "chunking": {3: 16}})
    materialize(prof, BANK, layout)
    trace = np.array([leaf_path(x) for x in (16, 17, 20, 33)])
    with open_bank(layout, profile=prof, bank=BANK, blocked=[Subtree(2, 5)],
                   cache=CacheConfig(budget=10**6),
                   prefetch=PrefetchConfig("trace", trace=trace, lookahead=3)) as served:
        s3.proxy.clear_log()
        if mode == "async":
            async def go() -> dict:
                await served.afetch(trace[0])
                await served.await_prefetches()
                return await served.afetch(trace[1])

            got = asyncio.run(go())
        else:
            served.fetch(trace[0])
            served.wait_prefetches()
        # (3,17); for leaf 20 (2,5), (3,20) are blocked; (1,2), (2,8), (3,33)
        assert served.stats.prefetch_issued == 4
        assert len(s3.proxy.requests) == 1 + 2  # leaf 16's block, then (3,17) and (3,33)
        assert served.stats.requests["cloud"] == 3
        if mode == "sync":
            got = served.fetch(trace[1])
        assert served.stats.requests["cloud"] == 3  # a prefetch hit: no request
        assert served.stats.prefetch_hits == 1
    for depth, block in zip((1, 2, 3), trace[1].tolist(), strict=True):
        want = SyntheticContent(BANK).blocks(depth, np.array([block]))[0]
        assert got[depth].tobytes() == want.tobytes()


def test_open_bank_takes_the_layouts_prefetch_section(tmp_path):
    """open_bank's default is the layout's prefetch: section, built as simulate builds it;
    None turns it off, and cache=None leaves nothing to prefetch into."""
    from memsim.client.bank import open_bank
    from memsim.materialize import materialize

    bank = BANK
    prof = memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
         "concurrency": 2, "store": f"file://{tmp_path}/flash"}]})
    lay = memsim.layout_from_dict({"name": "l", "placement": {1: "flash", 2: "flash",
                                                              3: "flash"},
                                   "cache": {"budget": "100 kB"},
                                   "prefetch": {"policy": "children", "max_inflight": 3}})
    materialize(prof, bank, lay)
    wl = memsim.workload_from_dict({"name": "w", "arrivals": {"kind": "poisson",
                                                              "rate": "10/s"},
                                    "routing": {"kind": "zipf", "s": 1.0}})
    with open_bank(lay, profile=prof, bank=bank, workload=wl) as served:
        assert served.prefetcher is not None
        assert served.prefetcher.config.max_inflight == 3
        assert served.prefetcher.config.workload is wl
        served.fetch([0, 0, 0])
        served.wait_prefetches()
        assert served.stats.prefetch_issued > 0
    with open_bank(lay, profile=prof, bank=bank, prefetch=None) as served:
        assert served.prefetcher is None
    with open_bank(lay, profile=prof, bank=bank, cache=None) as served:
        assert served.prefetcher is None and served.cache is None
