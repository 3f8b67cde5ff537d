"""The client's RAM cache: the same hits, misses and evictions as the simulator's policy (and
as a brute-force model of LRU, LFU-DA and pinned written here) for the same requests, the
budget never exceeded, a hit handing out the cached array without touching a store,
resident levels read once per switch, single reads for concurrent callers, and an
overfilling budget warned about as `simulate` does."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Iterable

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realio_helpers import fresh_memory  # noqa: F401 (an autouse fixture)
from tiny_bank import BANK

import memsim
from memsim.client import bank as client_bank
from memsim.client.bank import open_bank
from memsim.errors import DataError, OverloadWarning
from memsim.layout import CacheConfig
from memsim.materialize import SyntheticContent, materialize
from memsim.simulate.engine import Engine
from memsim.simulate.prefetch import PENDING

# blocks: level 1 12 KiB (4 of them), level 2 6 KiB (16), level 3 3 KiB (64), bf16
SIZES = {1: 12288, 2: 6144, 3: 3072}
# nothing placed on RAM: a block served from RAM is a cache (or residency) hit
LAYOUT = memsim.layout_from_dict({"name": "l", "placement": {1: "flash", 2: "flash",
                                                             3: "disk"},
                                  "chunking": {3: 16}})


def profile_at(root, ram: str = "1 GB") -> memsim.Profile:
    return memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": ram},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
         "concurrency": 4, "store": f"file://{root}/flash"},
        {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms",
         "concurrency": 2, "store": f"file://{root}/disk"},
    ]})


@pytest.fixture(scope="module")
def prof(tmp_path_factory):
    """The tiny bank materialized once for the file (local stores only)."""
    profile = profile_at(tmp_path_factory.mktemp("bank"))
    materialize(profile, BANK, LAYOUT)
    return profile


def leaf_path(leaf: int) -> list[int]:
    return [leaf // 16, leaf // 4, leaf]


def want(depth: int, block: int) -> bytes:
    return SyntheticContent(BANK).blocks(depth, np.array([block]))[0].view(
        ml_dtypes.bfloat16).tobytes()


def counting_reads(monkeypatch) -> list[tuple[str, int]]:
    """Every range the client reads from a local store: (key, offset)."""
    calls: list[tuple[str, int]] = []
    original = client_bank._pread_into

    def counting(store, key, buf, base, start, length):
        calls.append((key, start))
        return original(store, key, buf, base, start, length)

    monkeypatch.setattr(client_bank, "_pread_into", counting)
    return calls


class Reference:
    """A brute-force model of the policies, from their definitions: LRU evicts the least
    recently used block; LFU-DA the least priority (hits since admission + the priority of
    the last block evicted, set at each touch; ties: the least recently touched); pinned is
    LRU over its levels only. A resident level holds one block outside the budget. A block
    bigger than the budget, or of a level the cache does not admit, is never held."""

    def __init__(self, budget: int, policy: str, levels: Iterable[int] | None,
                 resident: Iterable[int]) -> None:
        self.budget, self.policy = budget, policy
        self.levels = None if levels is None else set(levels)
        self.resident = {d: None for d in resident}
        self.held: dict[tuple[int, int], dict] = {}  # key -> count, priority, touched
        self.clock = 0
        self.age = 0.0

    def request(self, key: tuple[int, int]) -> tuple[bool, list[tuple[int, int]]]:
        """One block asked for: (hit, keys evicted)."""
        self.clock += 1
        depth, block = key
        if depth in self.resident:
            hit = self.resident[depth] == block
            self.resident[depth] = block
            return hit, []
        if key in self.held:
            entry = self.held[key]
            entry["count"] += 1
            entry["priority"] = entry["count"] + self.age
            entry["touched"] = self.clock
            return True, []
        if (self.levels is not None and depth not in self.levels) or SIZES[depth] > self.budget:
            return False, []
        evicted = []
        while sum(SIZES[d] for d, _b in self.held) + SIZES[depth] > self.budget:
            if self.policy == "lfu":
                victim = min(self.held, key=lambda k: (self.held[k]["priority"],
                                                       self.held[k]["touched"]))
                self.age = self.held[victim]["priority"]
            else:
                victim = min(self.held, key=lambda k: self.held[k]["touched"])
            del self.held[victim]
            evicted.append(victim)
        self.held[key] = {"count": 1, "priority": 1 + self.age, "touched": self.clock}
        return False, evicted

    def covers(self, depth: int) -> bool:
        return depth in self.resident or (
            self.budget > 0 and (self.levels is None or depth in self.levels))


configs = st.one_of(
    st.builds(lambda b, p: CacheConfig(budget=b, policy=p),
              st.sampled_from([0, 3072, 9216, 15000, 24576, 40000]),
              st.sampled_from(["lru", "lfu"])),
    st.builds(lambda b, lv: CacheConfig(budget=b, policy="pinned", levels=lv),
              st.sampled_from([6144, 12288, 20000]),
              st.sampled_from([[2], [3], [2, 3], [1, 3]])),
    st.none())
# a workload with locality: leaves drawn from a few neighbourhoods
leaves = st.lists(st.one_of(st.integers(0, 7), st.integers(0, 63)), min_size=1, max_size=24)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configs, resident=st.sampled_from([[], [1], [2], [1, 3]]), seq=leaves)
def test_hits_misses_and_evictions_are_the_simulators(prof, config, resident, seq):
    if config is None and not resident:
        resident = [2]
    layout = LAYOUT.model_copy(update={"cache": config, "resident": resident})
    engine = Engine(prof, BANK, layout, queries=len(seq), warmup=0,
                    rng=np.random.default_rng(0))
    ref = Reference(config.budget if config else 0, config.policy if config else "lru",
                    (config.levels if config else []), resident)
    with open_bank(layout, profile=prof, bank=BANK) as served:
        cache = served.cache
        evictions = 0
        for leaf in seq:
            path = leaf_path(leaf)
            got = served.fetch(path, timed=True)
            # a hit: RAM, residency, or (the engine never runs here, so its reads stay in
            # flight) a wait for the read of the block already asked for
            sim_hits = {d for d, tier, _parts in engine._plan(path, True)
                        if tier is None or tier == "ram" or tier == PENDING}
            assert set(got.timings.cached) == sim_hits
            ref_evicted = []
            for d in (1, 2, 3):
                hit, gone = ref.request((d, path[d - 1]))
                assert hit == (d in sim_hits)
                ref_evicted += gone
            evictions += len(ref_evicted)
            assert served.stats.cache_evictions == engine.cache.evictions == evictions
            held = {k for k, v in cache._values.items()}
            assert held == set(ref.held)
            assert served.stats.cache_bytes == cache.used <= cache.budget
            assert sum(v.array.nbytes for v in cache._values.values()) <= cache.budget
            for d, arr in got.blocks.items():
                assert arr.tobytes() == want(d, path[d - 1])
        stats = served.stats
        # the hit ratio as simulate computes it from the engine's counts
        cached = [d for d in engine.stats.lookups if d not in resident]
        lookups = sum(engine.stats.lookups[d] for d in cached)
        sim_ratio = (sum(engine.stats.hits[d] for d in cached) / lookups
                     if config is not None and lookups else None)
        assert stats.cache_hit_ratio == sim_ratio
        assert stats.cache_lookups == engine.stats.lookups
        assert stats.cache_level_hits == engine.stats.hits
        assert stats.reads == 3 * len(seq) - stats.cache_hits - stats.resident_hits


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configs.filter(lambda c: c is not None),
       batches=st.lists(st.lists(st.integers(0, 63), min_size=1, max_size=6), min_size=1,
                        max_size=6))
def test_a_batch_is_deduplicated_then_looked_up_level_by_level(prof, config, batches):
    """A batch's distinct blocks are looked up once each, level by level, each level's in
    increasing id: the brute-force model fed that order predicts every hit."""
    ref = Reference(config.budget, config.policy, config.levels, [])
    with open_bank(LAYOUT, profile=prof, bank=BANK, cache=config) as served:
        for batch in batches:
            paths = [leaf_path(x) for x in batch]
            got = served.fetch_many(paths, timed=True)
            distinct = sorted({(d, p[d - 1]) for p in paths for d in (1, 2, 3)})
            hits = {key for key in distinct if ref.request(key)[0]}
            for path, timing, blocks in zip(paths, got.timings, got.blocks, strict=True):
                assert set(timing.cached) == {d for d in (1, 2, 3)
                                              if (d, path[d - 1]) in hits}
                for d, arr in blocks.items():
                    assert arr.tobytes() == want(d, path[d - 1])
            assert set(served.cache._values) == set(ref.held)
            assert served.stats.cache_bytes <= config.budget
        covered = sum(served.stats.cache_lookups.values())
        assert served.stats.cache_hits + served.stats.cache_misses == covered


def test_a_hit_is_the_cached_array_and_touches_no_store(prof, monkeypatch):
    calls = counting_reads(monkeypatch)
    with open_bank(LAYOUT, profile=prof, bank=BANK,
                   cache=CacheConfig(budget="1 MB", policy="lru")) as served:
        first = served.fetch(leaf_path(37))
        assert len(calls) == 3
        again = served.fetch(leaf_path(37))
        assert len(calls) == 3  # no store touched
        assert all(again[d] is first[d] for d in (1, 2, 3))
        assert not again[3].flags.writeable
        stats = served.stats
        assert (stats.cache_hits, stats.cache_misses, stats.reads) == (3, 3, 3)
        assert stats.cache_hit_ratio == 0.5
        assert stats.cache_bytes == sum(SIZES.values())
        # a batch: the shared level-1 block is one lookup, a hit
        got = served.fetch_many([leaf_path(36), leaf_path(37), leaf_path(38)])
        assert got[1][3] is first[3] and got[0][1] is first[1]
        assert stats.cache_lookups == {1: 3, 2: 3, 3: 5}  # leaves 36 and 38 missed
        assert len(calls) == 3 + 2
        stats.reset()
        assert stats.cache_hits == 0 and stats.cache_bytes == sum(SIZES.values()) + 2 * 3072
        assert stats.to_json()["cache_hit_ratio"] is None


def test_resident_levels_read_once_per_switch(prof, monkeypatch):
    calls = counting_reads(monkeypatch)
    with open_bank(LAYOUT, profile=prof, bank=BANK, cache=None, resident=[1, 2]) as served:
        assert served.cache is not None and served.cache.budget == 0

        def level_reads(depth: int) -> int:
            return sum(1 for key, _s in calls if key.startswith(f"L{depth}/"))

        kept = [served.fetch(leaf_path(x)) for x in (0, 1, 2, 3)]  # level 2 block 0 kept
        assert level_reads(1) == 1 and level_reads(2) == 1 and level_reads(3) == 4
        assert all(k[2] is kept[0][2] for k in kept)
        served.fetch(leaf_path(4))  # level 2 switches to block 1: one read
        assert level_reads(1) == 1 and level_reads(2) == 2
        served.fetch(leaf_path(0))  # and back: one slot, read again
        assert level_reads(2) == 3
        stats = served.stats
        # level 1: 3 + 1 + 1 hits, 1 miss; level 2: 3 hits, 3 misses
        assert stats.resident_hits == 5 + 3 and stats.resident_misses == 1 + 3
        assert stats.cache_lookups == {1: 6, 2: 6} and stats.cache_level_hits == {1: 5, 2: 3}
        assert stats.cache_hit_ratio is None  # no cache: as simulate reports it
    # the layout's own resident levels are the default
    resident_layout = LAYOUT.model_copy(update={"resident": [2]})
    with open_bank(resident_layout, profile=prof, bank=BANK) as served:
        served.fetch(leaf_path(8))
        served.fetch(leaf_path(9))
        assert served.stats.resident_hits == 1
    with open_bank(resident_layout, profile=prof, bank=BANK, resident=[]) as served:
        assert served.cache is None


def test_a_budget_beyond_ram_is_warned_as_simulate_warns(tmp_path):
    small = profile_at(tmp_path, ram="64 KiB")
    materialize(small, BANK, LAYOUT)
    layout = LAYOUT.model_copy(update={"cache": CacheConfig(budget="1 MB")})
    with pytest.warns(OverloadWarning) as client_warnings:
        open_bank(layout, profile=small, bank=BANK).close()
    with pytest.warns(OverloadWarning) as sim_warnings:
        paths = np.array([leaf_path(x) for x in range(20)])
        memsim.simulate(small, BANK, layout, trace=(np.arange(20) * 1e-3, paths), queries=20)
    ours = {str(w.message) for w in client_warnings}
    assert ours and ours <= {str(w.message) for w in sim_warnings}
    assert "tier 'ram'" in next(iter(ours))
    with warnings.catch_warnings():  # within RAM: no warning
        warnings.simplefilter("error", OverloadWarning)
        open_bank(LAYOUT, profile=small, bank=BANK, cache=CacheConfig(budget="8 KiB")).close()


def test_concurrent_callers_read_a_block_once(prof, monkeypatch):
    calls = counting_reads(monkeypatch)
    config = CacheConfig(budget="1 MB")

    async def many(served):
        return await asyncio.gather(*(served.afetch(leaf_path(21)) for _ in range(4)))

    with open_bank(LAYOUT, profile=prof, bank=BANK, cache=config) as served:
        got = asyncio.run(many(served))
        assert len(calls) == 3  # one task read, three waited for its reads
        assert all(g[d] is got[0][d] for g in got for d in (1, 2, 3))
        assert served.stats.cache_hits == 9 and served.stats.reads == 3
    rng = np.random.default_rng(1)
    work = [rng.integers(0, 64, 40).tolist() for _ in range(4)]
    with open_bank(LAYOUT, profile=prof, bank=BANK,
                   cache=CacheConfig(budget="40 KiB", policy="lfu")) as served:
        errors: list[BaseException] = []

        def run(leaves: list[int]) -> None:
            try:
                for leaf in leaves:
                    for d, arr in served.fetch(leaf_path(leaf)).items():
                        assert arr.tobytes() == want(d, leaf_path(leaf)[d - 1])
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(w,)) for w in work]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        stats = served.stats
        assert stats.cache_hits + stats.cache_misses == 3 * 160
        assert stats.reads == stats.cache_misses  # every hit was served without a read
        assert stats.cache_bytes == served.cache.used <= 40 * 1024


def test_a_failed_read_is_not_cached(prof, monkeypatch):
    original = client_bank._pread_into
    failing = [True]

    def flaky(store, key, buf, base, start, length):
        if failing[0] and key.startswith("L3/"):
            raise DataError("injected")
        return original(store, key, buf, base, start, length)

    monkeypatch.setattr(client_bank, "_pread_into", flaky)
    with open_bank(LAYOUT, profile=prof, bank=BANK, cache=CacheConfig(budget="1 MB")) as served:
        with pytest.raises(DataError, match="injected"):
            served.fetch(leaf_path(5))
        assert not served.cache.holds(3, 5) and not served.cache.holds(1, 0)
        assert served.stats.cache_evictions == 0 and served.stats.cache_bytes == 0
        failing[0] = False
        got = served.fetch(leaf_path(5))
        assert got[3].tobytes() == want(3, 5)
        assert served.cache.holds(3, 5)
