"""The simulator against the estimator, the paper's 47 ms case, closed-loop theory (MVA),
caching, stability warnings, traces and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

import memsim
from memsim.simulate import simulate
from memsim.simulate.cache import BlockCache
from memsim.simulate.stats import BatchedSeries, Series
from memsim.trace import read_trace
from memsim.workload import workload_from_dict

SLOW = {"arrivals": {"kind": "poisson", "rate": "0.01/s"}}  # vanishing load: no queueing


@pytest.mark.parametrize("fetch", ["parallel", "sequential"])
@pytest.mark.parametrize("name", ["paper-hierarchical", "paper-flat", "paper-flat-resident-upper"])
def test_vanishing_load_equals_the_estimator(paper_profile, paper_bank, name, fetch):
    layout = memsim.load_layout(name).model_copy(update={"fetch": fetch})
    # Resident levels assume consecutive queries share them: a session that never ends.
    workload = workload_from_dict({**SLOW, "locality": {"p": 1.0, "depth": 2}})
    result = simulate(paper_profile, paper_bank, layout, workload, queries=300, seed=3)
    expected = memsim.estimate(paper_profile, paper_bank, layout)
    for key in ("mean", "p50", "p99"):
        assert result.fetch_time_s[key] == pytest.approx(expected.fetch_time_s[key], rel=1e-6)
    for level in expected.per_level:
        assert result.per_level[level.depth]["time_s"] == pytest.approx(level.time_s, rel=1e-6)


def test_vanishing_load_with_latency_distributions(paper_bank):
    profile = memsim.load_profile("laptop")
    layout = memsim.optimize(profile, paper_bank, scenarios=8).layout
    result = simulate(profile, paper_bank, layout, workload_from_dict(SLOW), queries=20_000,
                      seed=4)
    expected = memsim.estimate(profile, paper_bank, layout, samples=200_000)
    low, high = result.fetch_stats.interval("mean", level=0.99)
    assert low <= expected.mean_s <= high
    assert result.fetch_time_s["p99"] == pytest.approx(expected.fetch_time_s["p99"], rel=0.05)


@pytest.mark.parametrize(("p", "tolerance"), [(0.9, 0.35), (0.99, 0.04), (0.999, 0.01)])
def test_topic_locality_and_a_cache_converge_to_the_papers_47ms(paper_profile, paper_bank, p,
                                                                  tolerance):
    """paper-flat with a RAM cache for level 2: as sessions lengthen, only levels 3 and 4 are
    fetched from the disk, (37.7 + 9.4) MB at 1 GB/s = 47.2 ms, the paper's third number."""
    layout = memsim.layout_from_dict({**memsim.load_layout("paper-flat").model_dump(), "cache": {
        "budget": paper_bank.level(2).block_bytes, "policy": "pinned", "levels": [2]}})
    workload = workload_from_dict({**SLOW, "locality": {"p": p}})
    result = simulate(paper_profile, paper_bank, layout, workload, queries=20_000, seed=5)
    assert result.fetch_time_s["mean"] == pytest.approx(47.2e-3, rel=tolerance)
    assert result.fetch_time_s["mean"] > 47.18e-3  # never below: L3 and L4 always come from disk
    # only level 2 can hit; a new topic (probability 1 - p) misses it
    assert result.cache_hit_ratio == pytest.approx(p, abs=0.01)
    assert result.per_level[2]["cache_hit_ratio"] == result.cache_hit_ratio


def test_overload_is_reported_and_the_run_ends(paper_profile, paper_bank):
    workload = workload_from_dict({"arrivals": {"kind": "poisson", "rate": "30/s"}})
    with pytest.warns(memsim.errors.OverloadWarning) as warned:
        result = simulate(paper_profile, paper_bank, memsim.load_layout("paper-hierarchical"),
                          workload, queries=3000, seed=6)
    assert result.unstable and "'flash'" in result.unstable[0]
    assert [str(w.message) for w in warned] == result.unstable
    # measured over the arrivals of this run: Poisson noise of 3000 arrivals is about 2%
    assert result.offered_load["flash"] == pytest.approx(30 * 0.151e9 / 4e9, rel=0.06)
    assert result.queries + result.warmup == 3000


def _mva(clients: int, think: float, service: float) -> float:
    """Exact mean response time of a closed network: one FCFS exponential station + think."""
    queue = 0.0
    response = service
    for n in range(1, clients + 1):
        response = service * (1 + queue)
        throughput = n / (think + response)
        queue = throughput * response
    return response


@pytest.mark.parametrize("clients", [1, 4])
def test_closed_loop_matches_mean_value_analysis(clients):
    bank = memsim.bank_from_dict({"name": "b", "levels": [1], "branching": 2, "dtype": "int8",
                                  "anchor": {"layers": 1, "d_model": 1, "d_ff": 1, "heads": 1,
                                             "head_dim": 1, "params": 1}})
    profile = memsim.profile_from_dict({"name": "c", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "1 GB/s", "capacity": "1 GB"},
        {"name": "dev", "kind": "other", "bandwidth": 1e18,
         "latency": {"distribution": "exponential", "mean": "10 ms"}}]})
    layout = memsim.layout_from_dict({"placement": {1: "dev"}})
    workload = workload_from_dict({"arrivals": {"kind": "closed", "clients": clients,
                                                "think_time": {"distribution": "exponential",
                                                               "mean": "20 ms"}}})
    result = simulate(profile, bank, layout, workload, queries=150_000, seed=7)
    expected = _mva(clients, 0.020, 0.010)
    assert result.fetch_time_s["mean"] == pytest.approx(expected, rel=0.02)


def test_trace_round_trip_replays_identically(tmp_path, paper_profile, paper_bank):
    layout = memsim.load_layout("paper-hierarchical")
    workload = workload_from_dict({"arrivals": {"kind": "poisson", "rate": "15/s"},
                                   "routing": {"kind": "zipf", "s": 1.0}})
    out = tmp_path / "trace.parquet"
    first = simulate(paper_profile, paper_bank, layout, workload, queries=4000, seed=8,
                     trace_out=out)
    arrivals, paths = read_trace(out, paper_bank)
    again = simulate(paper_profile, paper_bank, layout, trace=(arrivals, paths), queries=4000,
                     seed=8)
    assert again.fetch_time_s == first.fetch_time_s
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    fetch = table.column("fetch_time_s").to_numpy()
    assert np.nanmean(fetch[first.warmup:]) == pytest.approx(first.fetch_time_s["mean"])


def test_same_seed_same_result(paper_profile, paper_bank):
    layout = memsim.load_layout("paper-flat")
    workload = workload_from_dict({"arrivals": {"kind": "onoff", "rate_on": "8/s",
                                                "rate_off": "1/s", "mean_on": "2 s",
                                                "mean_off": "2 s"}})
    runs = [simulate(paper_profile, paper_bank, layout, workload, queries=2000, seed=9)
            for _ in range(2)]
    assert runs[0].to_json() == runs[1].to_json()
    other = simulate(paper_profile, paper_bank, layout, workload, queries=2000, seed=10)
    assert other.fetch_time_s != runs[0].fetch_time_s


def _reference_lru(budget, accesses):
    cache, hits = [], 0
    for key, size in accesses:
        if any(k == key for k, _ in cache):
            hits += 1
            cache = [c for c in cache if c[0] != key] + [(key, size)]
            continue
        if size <= budget:
            while sum(s for _, s in cache) + size > budget:
                cache.pop(0)
            cache.append((key, size))
    return hits


def test_lru_matches_a_reference():
    rng = np.random.default_rng(0)
    accesses = [((int(d), int(rng.integers(0, 6))), [0, 5, 3, 2][d])
                for d in rng.integers(1, 4, 3000)]
    cache = BlockCache(budget=12, policy="lru")
    for (depth, block), size in accesses:
        if not cache.lookup(depth, block):
            cache.insert(depth, block, size)
    assert cache.hits == _reference_lru(12, accesses)
    assert cache.used <= 12


def _lfu_da_reference(budget: int, blocks: list[int]) -> int:
    """LFU with dynamic aging, written plainly: evict the least priority (count + age at the
    last touch), oldest first on ties; the evicted priority becomes the age."""
    entries: dict[int, list[float]] = {}  # block -> [priority, count, last touch]
    age, hits = 0.0, 0
    for t, block in enumerate(blocks):
        if block in entries:
            hits += 1
            entry = entries[block]
            entry[1] += 1
            entry[0], entry[2] = entry[1] + age, t
            continue
        if len(entries) >= budget:
            victim = min(entries, key=lambda b: (entries[b][0], entries[b][2]))
            age = entries.pop(victim)[0]
        entries[block] = [1 + age, 1, t]
    return hits


def test_lfu_keeps_the_popular_block_ages_out_old_ones_and_pinned_only_its_levels():
    lfu = BlockCache(budget=2, policy="lfu")
    for block in [1, 1, 1, 2, 3, 4, 1]:
        if not lfu.lookup(3, block):
            lfu.insert(3, block, 1)
    assert lfu.lookup(3, 1)  # survived the scan of 2, 3, 4
    rng = np.random.default_rng(3)
    blocks = [int(b) for b in rng.zipf(1.3, 4000) % 40]
    cache = BlockCache(budget=8, policy="lfu")
    for block in blocks:
        if not cache.lookup(1, block):
            cache.insert(1, block, 1)
    assert cache.hits == _lfu_da_reference(8, blocks)
    # a topic change: old favourites (7 hits each) must give way to the new working set
    aging = BlockCache(budget=4, policy="lfu")
    for block in [0, 1, 2, 3] * 7 + [10, 11, 12, 13] * 20:
        if not aging.lookup(1, block):
            aging.insert(1, block, 1)
    assert all(aging.lookup(1, b) for b in (10, 11, 12, 13))
    pinned = BlockCache(budget=10, policy="pinned", levels=[2])
    pinned.insert(3, 7, 1)
    pinned.insert(2, 7, 1)
    assert not pinned.lookup(3, 7) and pinned.lookup(2, 7)
    resident = BlockCache(budget=0, resident=[2])
    assert not resident.lookup(2, 5)
    resident.insert(2, 5, 10**9)
    assert resident.lookup(2, 5) and not resident.lookup(2, 6)


def test_streaming_percentiles_and_batch_intervals():
    rng = np.random.default_rng(1)
    values = rng.lognormal(-4, 1, 50_000)
    series = BatchedSeries(batch_size=50_000 // 32)
    for v in values:
        series.add(float(v))
    summary = series.summary()
    assert summary["mean"] == pytest.approx(values.mean(), rel=1e-12)
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert summary[key] == pytest.approx(np.percentile(values, q), rel=0.005)
    assert summary["max"] == values.max()
    low, high = series.interval("mean")
    assert low < values.mean() < high and len(series.batches) == 32
    constant = Series()
    for _ in range(10):
        constant.add(0.0377)
    assert constant.quantile(0.99) == 0.0377
