"""Block-level layouts and blocked subtrees in the estimator and the simulator.

Checks against independent calculations: a block map that moves a whole level equals the
level layout; sequential means equal the exact expectation over the routing's block
probabilities; a blocked subtree is never fetched, cached nor served.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import memsim
from memsim.blockmap import BlockMap
from memsim.simulate import engine as engine_module
from memsim.simulate.engine import Engine, tier_load
from memsim.workload import PathSampler, ZipfRouting, workload_from_dict

UNIFORM = workload_from_dict({"name": "uniform", "arrivals": {"kind": "poisson",
                                                              "rate": "10/s"}})
SLOW = {"arrivals": {"kind": "poisson", "rate": "0.01/s"}}  # vanishing load: no queueing


def _layout(placement: dict[int, str], **extra: object) -> memsim.Layout:
    return memsim.layout_from_dict({"name": "t", "placement": placement, **extra})


def _map(profile: memsim.Profile, moves: dict[int, tuple[np.ndarray, str]]) -> BlockMap:
    out = BlockMap(tiers=profile.tier_names)
    for depth, (ids, tier) in moves.items():
        out.set_level(depth, ids, np.full(len(ids), profile.tier_names.index(tier)))
    return out


# ----------------------------------------------------------------------------- (a) equivalence

EXPONENTIAL = memsim.profile_from_dict({"name": "exp", "tiers": [
    {"name": "ram", "kind": "ram", "bandwidth": "40 GB/s", "latency": "100 ns"},
    {"name": "fast", "kind": "flash", "bandwidth": "4 GB/s", "concurrency": 4,
     "latency": {"distribution": "exponential", "mean": "200 us"}},
    {"name": "slow", "kind": "disk", "bandwidth": "1 GB/s", "concurrency": 2,
     "latency": {"distribution": "exponential", "mean": "5 ms"}, "request_overhead": "1 ms"},
    {"name": "cloud", "kind": "cloud", "bandwidth": "250 MB/s", "concurrency": 16,
     "latency": {"distribution": "exponential", "mean": "40 ms"}},
]})


@pytest.mark.parametrize("fetch", ["parallel", "sequential"])
@pytest.mark.parametrize(("profile_name", "default", "moved"), [
    ("paper-hypothetical", "disk", "flash"), ("exp", "slow", "fast")])
def test_whole_level_map_equals_the_level_layout_in_the_estimator(paper_bank, fetch,
                                                                  profile_name, default, moved):
    profile = EXPONENTIAL if profile_name == "exp" else memsim.load_profile(profile_name)
    base = {2: default, 3: default, 4: default}
    level = _layout({**base, 4: moved}, fetch=fetch)
    blocks = _layout(base, fetch=fetch).with_block_map(
        _map(profile, {4: (np.arange(16 ** 4), moved)}))
    want = memsim.estimate(profile, paper_bank, level, samples=20_000, seed=5)
    got = memsim.estimate(profile, paper_bank, blocks, samples=20_000, seed=5,
                          workload=memsim.load_workload("zipf-topic"))
    for key, value in want.fetch_time_s.items():
        assert got.fetch_time_s[key] == pytest.approx(value, rel=1e-9), key
    for w, g in zip(want.per_level, got.per_level, strict=True):
        assert g.time_s == pytest.approx(w.time_s, rel=1e-9)
        assert g.blocked_fraction == 0.0
    assert got.per_level[-1].tiers == {moved: 1.0}
    assert {t.tier: t.time_s for t in got.per_tier} == pytest.approx(
        {t.tier: t.time_s for t in want.per_tier}, rel=1e-9)
    assert {t.tier: t.bytes for t in got.per_tier} == pytest.approx(
        {t.tier: t.bytes for t in want.per_tier}, rel=1e-12)


def test_a_workload_leaves_level_layouts_on_the_exact_fast_path(paper_profile, paper_bank):
    layout = memsim.load_layout("paper-hierarchical")
    est = memsim.estimate(paper_profile, paper_bank, layout, workload=UNIFORM)
    assert est.mean_s == 0.037748736 and est.samples == 1 and est.workload is None
    assert "blocked_fraction" not in json.dumps(est.to_json())


@pytest.mark.parametrize("dict_lookup", [True, False])
@pytest.mark.parametrize("fetch", ["parallel", "sequential"])
def test_whole_level_map_equals_the_level_layout_in_the_simulator(
        monkeypatch, paper_profile, paper_bank, fetch, dict_lookup):
    if not dict_lookup:  # force the binary-search lookup of very large maps
        monkeypatch.setattr(engine_module, "MAX_DICT_OVERRIDES", 0)
    cache = {"budget": "400 MB", "policy": "lru"}
    base = {2: "disk", 3: "disk", 4: "disk"}
    level = _layout({**base, 3: "flash"}, fetch=fetch, cache=cache)
    blocks = _layout(base, fetch=fetch, cache=cache).with_block_map(
        _map(paper_profile, {3: (np.arange(16 ** 3), "flash")}))
    workload = memsim.load_workload("zipf-topic")
    want = memsim.simulate(paper_profile, paper_bank, level, workload, queries=3000, seed=2)
    got = memsim.simulate(paper_profile, paper_bank, blocks, workload, queries=3000, seed=2)
    assert got.fetch_time_s == want.fetch_time_s
    assert got.per_tier == want.per_tier
    for depth, entry in want.per_level.items():
        assert got.per_level[depth]["time_s"] == entry["time_s"]
        assert got.per_level[depth]["blocked_fraction"] == 0.0
    assert got.per_level[3]["tiers"] == {"flash": 1.0}
    assert got.cache_hit_ratio == want.cache_hit_ratio


def test_tier_load_of_a_whole_level_map_equals_the_level_layout(paper_profile, paper_bank):
    base = {2: "disk", 3: "disk", 4: "disk"}
    level = _layout({**base, 4: "cloud"})
    blocks = _layout(base).with_block_map(
        _map(paper_profile, {4: (np.arange(16 ** 4), "cloud")}))
    assert tier_load(paper_profile, paper_bank, blocks, 3.0) == pytest.approx(
        tier_load(paper_profile, paper_bank, level, 3.0), rel=1e-12)


def test_read_shares_match_the_estimators_uniform_routing(paper_profile, paper_bank):
    """Overlapping blocked subtrees, overrides inside them, and replicas (a read copy on one
    tier, the durable copy on another): shares count the tier each block is read from."""
    names = paper_profile.tier_names
    block_map = BlockMap(tiers=names)
    ids4 = np.arange(0, 65536, 5)
    block_map.set_level(4, ids4, np.full(ids4.size, names.index("flash")),
                        primary=np.full(ids4.size, names.index("cloud")))
    block_map.set_level(3, np.arange(16 * 20, 16 * 40), np.full(320, names.index("cloud")))
    layout = _layout({2: "flash", 3: "disk", 4: "disk"}, blocked=[
        {"level": 2, "block": 21}, {"level": 3, "block": 21 * 16 + 4},
        {"level": 3, "block": 99}]).with_block_map(block_map)
    shares = engine_module.read_shares(paper_profile, paper_bank, layout, block_map)
    n = 400_000
    est = memsim.estimate(paper_profile, paper_bank, layout, samples=n, seed=3,
                          workload=UNIFORM)
    for lv in est.per_level:
        want = {t: float(shares[lv.depth][i]) for i, t in enumerate(names)
                if shares[lv.depth][i]}
        assert lv.tiers == pytest.approx(want, abs=5 * 0.5 / n ** 0.5)
        assert 1 - sum(want.values()) == pytest.approx(lv.blocked_fraction,
                                                       abs=5 * 0.5 / n ** 0.5)
    assert shares[3][names.index("cloud")] == (320 - 16) / 4096  # block 21's children
    assert shares[4].sum() == 1 - (256 + 16) / 65536  # (3, 340) lies inside (2, 21)


# ----------------------------------------------------------------------------- (b) expectation


def _moments(tier: memsim.Tier, nbytes: int) -> tuple[float, float]:
    """E[T] and E[T^2] of one block alone on `tier`: overhead + latency + bytes / bandwidth."""
    shift = tier.request_overhead + nbytes / tier.stream_bandwidth
    lat = tier.latency
    if lat.is_constant:
        t = lat.mean() + shift
        return t, t * t
    mean = lat.mean()  # exponential: E[X^2] = 2 mean^2
    return mean + shift, 2 * mean * mean + 2 * mean * shift + shift * shift


def _exact(profile: memsim.Profile, bank: memsim.Bank, probs: dict[int, dict[str, float]]
           ) -> tuple[float, float]:
    """Mean of the sequential fetch time and an upper bound on its standard deviation
    (the sum over levels of each level's standard deviation)."""
    mean, std_bound = 0.0, 0.0
    for depth, by_tier in probs.items():
        nbytes = bank.level(depth).block_bytes
        m1 = sum(p * _moments(profile.tier(t), nbytes)[0] for t, p in by_tier.items())
        m2 = sum(p * _moments(profile.tier(t), nbytes)[1] for t, p in by_tier.items())
        mean += m1
        std_bound += max(m2 - m1 * m1, 0.0) ** 0.5
    return mean, std_bound


@pytest.mark.parametrize("profile_name", ["paper-hypothetical", "exp"])
def test_sequential_mean_is_the_exact_expectation_under_uniform_routing(paper_bank,
                                                                        profile_name):
    profile = EXPONENTIAL if profile_name == "exp" else memsim.load_profile(profile_name)
    fast, slow, cloud = profile.tier_names[1:]
    layout = _layout({2: fast, 3: slow, 4: slow}, fetch="sequential").with_block_map(_map(
        profile, {4: (np.arange(100), fast), 3: (np.arange(1000, 2000), cloud),
                  2: (np.arange(0, 256, 4), cloud)}))
    # Uniform routing: a level's block lies on a tier with P = the tier's share of blocks.
    probs = {2: {fast: 192 / 256, cloud: 64 / 256},
             3: {slow: 3096 / 4096, cloud: 1000 / 4096},
             4: {fast: 100 / 65536, slow: 65436 / 65536}}
    n = 200_000
    est = memsim.estimate(profile, paper_bank, layout, samples=n, seed=11, workload=UNIFORM)
    mean, std = _exact(profile, paper_bank, probs)
    assert abs(est.mean_s - mean) <= 5 * std / n ** 0.5
    for lv in est.per_level:
        assert lv.tiers == pytest.approx(probs[lv.depth], abs=5 * 0.5 / n ** 0.5)


def test_sequential_mean_is_the_exact_expectation_under_zipf_routing(paper_profile,
                                                                     paper_bank):
    routing = ZipfRouting(s=1.2, seed=3)
    b = paper_bank.branching
    rank = routing.rank_probabilities(b)
    # P(level-2 block p*b + c) = P(child p of the root) * P(child c of p), each the
    # probability of that child's popularity rank under its parent.
    top = rank[(np.arange(b) - routing.rank_offset(np.zeros(1), 1, b)[0]) % b]
    p2 = np.concatenate([top[p] * rank[(np.arange(b) - routing.rank_offset(
        np.array([p]), 2, b)[0]) % b] for p in range(b)])
    assert p2.sum() == pytest.approx(1.0)
    moved = np.arange(0, 256, 3)  # to the cloud; the rest of level 2 stays on flash
    p_moved = float(p2[moved].sum())
    layout = _layout({2: "flash", 3: "disk", 4: "disk"}, fetch="sequential").with_block_map(
        _map(paper_profile, {2: (moved, "cloud")}))
    probs = {2: {"flash": 1 - p_moved, "cloud": p_moved}, 3: {"disk": 1.0}, 4: {"disk": 1.0}}
    workload = workload_from_dict({"arrivals": {"kind": "poisson", "rate": "1/s"},
                                   "routing": routing.model_dump()})
    n = 200_000
    est = memsim.estimate(paper_profile, paper_bank, layout, samples=n, seed=1,
                          workload=workload)
    mean, std = _exact(paper_profile, paper_bank, probs)
    assert 0 < std and abs(est.mean_s - mean) <= 5 * std / n ** 0.5
    assert est.per_level[0].tiers["cloud"] == pytest.approx(p_moved, abs=5 * 0.5 / n ** 0.5)


# ----------------------------------------------------------------------------- (c) blocked


@pytest.fixture(scope="module")
def a2() -> memsim.Bank:
    return memsim.load_bank("A2")  # levels 1-3 non-empty


def _blocked_layout(**extra: object) -> memsim.Layout:
    return _layout({1: "flash", 2: "disk", 3: "cloud"}, blocked=[{"level": 1, "block": 3}],
                   **extra)


@pytest.mark.parametrize("fetch", ["parallel", "sequential"])
def test_a_blocked_subtree_is_never_fetched_by_the_estimator(paper_profile, a2, fetch):
    n = 100_000
    est = memsim.estimate(paper_profile, a2, _blocked_layout(fetch=fetch), samples=n, seed=4,
                          workload=UNIFORM)
    full = memsim.estimate(paper_profile, a2, _layout({1: "flash", 2: "disk", 3: "cloud"},
                                                      fetch=fetch))
    sigma = (1 / 16 * 15 / 16 / n) ** 0.5
    fractions = [lv.blocked_fraction for lv in est.per_level]
    assert fractions == [fractions[0]] * 3  # the whole path below a blocked root is blocked
    assert abs(fractions[0] - 1 / 16) <= 5 * sigma
    # A query is blocked at every level (time 0) or at none (the level layout's time).
    assert est.mean_s == pytest.approx((1 - fractions[0]) * full.mean_s, rel=1e-9)
    assert est.fetch_time_s["p50"] == pytest.approx(full.mean_s, rel=1e-12)
    for lv, ref in zip(est.per_level, full.per_level, strict=True):
        assert lv.time_s == pytest.approx((1 - fractions[0]) * ref.time_s, rel=1e-9)
    assert [t.query_fraction for t in est.per_tier] == pytest.approx([1 - fractions[0]] * 3)


def test_a_blocked_subtree_is_never_requested_by_the_simulator(tmp_path, paper_profile, a2):
    out = tmp_path / "trace.parquet"
    layout = _blocked_layout()
    result = memsim.simulate(paper_profile, a2, layout, workload_from_dict(SLOW),
                             queries=4000, seed=9, trace_out=out)
    trace = pq.read_table(out).to_pydict()
    root = np.asarray(trace["block_L1"])
    blocked = root == 3
    times = np.column_stack([trace[f"time_L{d}_s"] for d in (1, 2, 3)])
    assert blocked.any() and (~blocked).any()
    assert (times[blocked] == 0.0).all()
    assert (np.asarray(trace["fetch_time_s"])[blocked] == 0.0).all()
    assert (times[~blocked] > 0.0).all()  # no cache: every other block is requested
    # Exactly one request per level per unblocked query (no block splits on this profile).
    assert {t: v["requests"] for t, v in result.per_tier.items()} == {
        "flash": int((~blocked).sum()), "disk": int((~blocked).sum()),
        "cloud": int((~blocked).sum())}
    measured = blocked[result.warmup:]
    for depth in (1, 2, 3):
        assert result.per_level[depth]["blocked_fraction"] == measured.sum() / measured.size
    assert abs(result.per_level[1]["blocked_fraction"] - 1 / 16) <= 5 * (
        1 / 16 * 15 / 16 / measured.size) ** 0.5


@pytest.mark.parametrize("policy", ["lru", "lfu"])
def test_the_cache_never_admits_nor_serves_a_blocked_block(paper_profile, a2, policy):
    layout = _layout({1: "flash", 2: "disk", 3: "cloud"},
                     blocked=[{"level": 1, "block": 3}, {"level": 2, "block": 17}],
                     resident=[1], cache={"budget": "1 GB", "policy": policy})
    n = 3000
    paths = PathSampler(memsim.load_workload("zipf-topic"), a2,
                        np.random.default_rng(0)).sample(n)
    paths[::7, 0] = 3  # route many queries into the blocked subtrees, consistently
    paths[::7, 1] = 3 * 16 + paths[::7, 1] % 16
    paths[::7, 2] = paths[::7, 1] * 16 + paths[::7, 2] % 16
    paths[1::11, 1] = 17
    paths[1::11, 0] = 1
    paths[1::11, 2] = 17 * 16 + paths[1::11, 2] % 16
    engine = Engine(paper_profile, a2, layout, queries=n, warmup=0,
                    rng=np.random.default_rng(1), keep_trace=True)
    engine.env.process(engine.open_loop(np.arange(n) * 10.0, lambda i: paths[i]))
    engine.run()

    def is_blocked(depth: int, block: int) -> bool:
        return block // 16 ** (depth - 1) == 3 or (depth >= 2 and block // 16 ** (depth - 2)
                                                   == 17)

    cache = engine.cache
    assert cache.hits > 0 and cache._lru
    assert not any(is_blocked(d, b) for d, b in cache._lru)
    assert cache.resident[1] is not None and not is_blocked(1, cache.resident[1])
    flags = np.array([[is_blocked(d, int(p[d - 1])) for d in (1, 2, 3)] for p in paths])
    assert (engine.level_times[flags] == 0.0).all()
    lookups = sum(engine.stats.lookups.values())
    assert lookups == int((~flags).sum())  # a blocked block is not even looked up
    assert engine.stats.blocked == {d: int(flags[:, d - 1].sum()) for d in (1, 2, 3)}


# ----------------------------------------------------------------------------- (d) errors, CLI


def test_a_block_level_layout_needs_a_workload(paper_profile, paper_bank, a2):
    mapped = _layout({2: "flash", 3: "disk", 4: "cloud"}).with_block_map(
        _map(paper_profile, {4: (np.arange(10), "disk")}))
    for bank, layout in ((paper_bank, mapped), (a2, _blocked_layout())):
        with pytest.raises(memsim.InputError, match="give a workload") as info:
            memsim.estimate(paper_profile, bank, layout)
        assert info.value.field == "workload"


def test_cli_estimates_and_simulates_a_saved_block_map(tmp_path, cli, paper_profile):
    layout = _layout({2: "flash", 3: "disk", 4: "cloud"}).model_copy(update={
        "profile": "paper-hypothetical", "bank": "paper-storage-example", "name": "mapped"})
    layout.with_block_map(_map(paper_profile, {4: (np.arange(0, 65536, 2), "disk")}))
    path = layout.save(tmp_path / "L.yaml")
    assert (tmp_path / "L.blocks.parquet").exists()
    result = cli("estimate", "--layout", str(path), "--workload", "zipf-topic", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["workload"] == "zipf-topic"
    level4 = data["per_level"]["4"]
    assert level4["blocked_fraction"] == 0.0
    assert set(level4["tiers"]) == {"disk", "cloud"} and 0.3 < level4["tiers"]["disk"] < 0.7
    assert data["per_tier"]["cloud"]["query_fraction"] == level4["tiers"]["cloud"]
    # A level-4 block on the disk shares it with level 3's: (37.75 + 9.437) MB at 1 GB/s.
    share = level4["tiers"]["disk"]
    assert data["fetch_time_s"]["mean"] == pytest.approx(
        share * 0.04718592 + (1 - share) * 0.037748736, rel=1e-9)
    text = cli("estimate", "--layout", str(path), "--workload", "zipf-topic")
    assert text.exit_code == 0 and "routed by zipf-topic" in text.stdout
    missing = cli("estimate", "--layout", str(path))
    assert missing.exit_code == 2 and "give a workload" in missing.stderr
    sim = cli("simulate", "--layout", str(path), "--workload", "zipf-topic", "--queries",
              "2000", "--cache-budget", "200 MB", "--json")
    assert sim.exit_code == 0, sim.output
    level4 = json.loads(sim.stdout)["per_level"]["4"]
    assert set(level4["tiers"]) == {"disk", "cloud"} and level4["blocked_fraction"] == 0.0
