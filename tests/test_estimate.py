"""The analytic estimator: the paper's published numbers, the tier model against independent
calculations, and monotonicity."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memsim
from memsim.cost_model import tier_finish_times
from memsim.profile import Tier

PUBLISHED = {  # arXiv 2510.02375 storage example, as reconstructed in the reference
    "paper-hierarchical": 37.7e-3,
    "paper-flat": 198.2e-3,
    "paper-flat-resident-upper": 47.2e-3,
}


@pytest.mark.parametrize(("layout", "published"), sorted(PUBLISHED.items()))
def test_reproduces_published_storage_example(paper_profile, paper_bank, layout, published):
    est = memsim.estimate(paper_profile, paper_bank, memsim.load_layout(layout))
    assert est.mean_s == pytest.approx(published, rel=0.005)
    assert est.fetch_time_s["p99"] == est.mean_s  # constant latencies: no spread


def test_paper_closed_forms(paper_profile, paper_bank):
    """The reconstruction's arithmetic: max of per-tier times, sum on one tier."""
    b2, b3, b4 = (lv.block_bytes for lv in paper_bank.active_levels)
    hier = memsim.estimate(paper_profile, paper_bank, memsim.load_layout("paper-hierarchical"))
    assert hier.mean_s == pytest.approx(max(b2 / 4e9, b3 / 1e9, b4 / 250e6), rel=1e-12)
    flat = memsim.estimate(paper_profile, paper_bank, memsim.load_layout("paper-flat"))
    assert flat.mean_s == pytest.approx((b2 + b3 + b4) / 1e9, rel=1e-12)
    res = memsim.estimate(paper_profile, paper_bank,
                          memsim.load_layout("paper-flat-resident-upper"))
    assert res.mean_s == pytest.approx((b3 + b4) / 1e9, rel=1e-12)
    assert res.per_level[0].resident and res.per_level[0].time_s == 0.0


def test_sequential_fetch_adds_up(paper_profile, paper_bank):
    layout = memsim.load_layout("paper-hierarchical").model_copy(update={"fetch": "sequential"})
    est = memsim.estimate(paper_profile, paper_bank, layout)
    b2, b3, b4 = (lv.block_bytes for lv in paper_bank.active_levels)
    assert est.mean_s == pytest.approx(b2 / 4e9 + b3 / 1e9 + b4 / 250e6, rel=1e-12)


def _tier(**kw) -> Tier:
    base = {"name": "t", "kind": "disk", "bandwidth": 1.0}
    return Tier.model_validate({**base, **kw})


def test_one_channel_serves_in_order():
    tier = _tier(bandwidth=2.0, concurrency=1)
    lat = np.array([[0.5, 0.5, 0.5]])
    finish = tier_finish_times(tier, [4.0, 2.0, 6.0], lat)
    assert finish[0] == pytest.approx([2.5, 4.0, 7.5])


def test_processor_sharing_with_a_per_stream_cap():
    # Aggregate 2, stream cap 1.5, jobs of 3 and 1: both at rate 1 until t=1, then the big one
    # alone at 1.5 for the remaining 2 units: 1 + 2/1.5.
    tier = _tier(bandwidth=1.5, aggregate_bandwidth=2.0, concurrency=2)
    finish = tier_finish_times(tier, [3.0, 1.0], np.zeros((1, 2)))
    assert finish[0] == pytest.approx([1 + 2 / 1.5, 1.0])


def test_queued_request_starts_its_latency_when_a_channel_frees():
    tier = _tier(bandwidth=1.0, concurrency=2)
    finish = tier_finish_times(tier, [1.0, 1.0, 1.0], np.full((1, 3), 0.25))
    # two share the bandwidth: 0.25 + 2; the third then waits its latency and runs alone.
    assert finish[0] == pytest.approx([2.25, 2.25, 2.25 + 0.25 + 1.0])


def _reference_fluid(tier: Tier, sizes, lats, dt=1e-4):
    """Independent check: a time-stepped simulation of the same tier model."""
    k = len(sizes)
    remaining = list(map(float, sizes))
    start = [0.0 if i < tier.concurrency else None for i in range(k)]
    finish = [None] * k
    t = 0.0
    while any(f is None for f in finish):
        active = [i for i in range(k) if start[i] is not None and finish[i] is None
                  and t >= start[i] + lats[i] - 1e-12]
        if active:
            rate = min(tier.stream_bandwidth, tier.total_bandwidth / len(active))
            for i in active:
                remaining[i] -= rate * dt
        t += dt
        for i in active:
            if remaining[i] <= 1e-12 and finish[i] is None:
                finish[i] = t
                waiting = [j for j in range(k) if start[j] is None]
                if waiting:
                    start[waiting[0]] = t
    return finish


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=4),
    lat=st.lists(st.floats(0.0, 0.3), min_size=4, max_size=4),
    concurrency=st.integers(1, 4),
    stream=st.floats(0.5, 3.0),
    aggregate=st.floats(0.5, 3.0),
)
def test_tier_model_matches_time_stepped_reference(sizes, lat, concurrency, stream, aggregate):
    tier = _tier(bandwidth=stream, aggregate_bandwidth=aggregate, concurrency=concurrency)
    lats = lat[: len(sizes)]
    exact = tier_finish_times(tier, sizes, np.array([lats]))[0]
    reference = _reference_fluid(tier, sizes, lats)
    assert exact == pytest.approx(reference, abs=5e-3 * len(sizes))


def test_sampled_latency_mean_matches_the_distribution(paper_bank):
    profile = memsim.profile_from_dict({"name": "x", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "8 GB"},
        {"name": "disk", "kind": "disk", "bandwidth": "1 GB/s",
         "latency": {"p50": "10 ms", "p99": "40 ms"}},
    ]})
    layout = memsim.layout_from_dict({"placement": {2: "disk", 3: "disk", 4: "disk"},
                                      "fetch": "sequential"})
    est = memsim.estimate(profile, paper_bank, layout, samples=200_000, seed=3)
    lat = profile.tier("disk").latency
    expected = 3 * lat.mean() + paper_bank.fetched_bytes / 1e9
    assert est.mean_s == pytest.approx(expected, rel=0.01)
    assert est.fetch_time_s["p50"] < est.fetch_time_s["p95"] < est.fetch_time_s["p99"]
    again = memsim.estimate(profile, paper_bank, layout, samples=200_000, seed=3)
    assert again.fetch_time_s == est.fetch_time_s  # same seed, same answer


def _random_profile(bw: list[float], conc: list[int]) -> memsim.Profile:
    tiers = [{"name": "ram", "kind": "ram", "bandwidth": "20 GB/s", "capacity": "1 TB"}]
    for i, (b, c) in enumerate(zip(bw, conc, strict=True)):
        tiers.append({"name": f"t{i}", "kind": "other", "bandwidth": b * 1e6,
                      "aggregate_bandwidth": b * 1e6 * 1.5, "concurrency": c,
                      "latency": {"p50": f"{1 + i} ms", "p99": f"{5 + 3 * i} ms"}})
    return memsim.profile_from_dict({"name": "rand", "tiers": tiers})


@settings(max_examples=30, deadline=None)
@given(
    bw=st.lists(st.floats(10, 5000), min_size=3, max_size=3),
    conc=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    which=st.integers(0, 2),
    factor=st.floats(1.0, 10.0),
    placement=st.lists(st.integers(0, 2), min_size=3, max_size=3),
    fetch=st.sampled_from(["parallel", "sequential"]),
)
def test_more_bandwidth_is_never_slower(bw, conc, which, factor, placement, fetch, paper_bank):
    layout = memsim.layout_from_dict({"fetch": fetch, "placement": {
        d: f"t{t}" for d, t in zip((2, 3, 4), placement, strict=True)}})
    slow = memsim.estimate(_random_profile(bw, conc), paper_bank, layout, samples=2000, seed=5)
    faster = list(bw)
    faster[which] *= factor
    fast = memsim.estimate(_random_profile(faster, conc), paper_bank, layout, samples=2000,
                           seed=5)
    for key in ("mean", "p50", "p95", "p99"):
        assert fast.fetch_time_s[key] <= slow.fetch_time_s[key] * (1 + 1e-12)


def test_no_stall_when_rounding_leaves_bytes():
    """Regression: a small transfer late in time left ~1e-8 bytes and the model stopped."""
    tier = _tier(bandwidth=1.173e9, concurrency=1,
                 latency={"p50": 0.03125, "p99": 0.03125})
    lat = np.full((1, 2), 0.03125)
    finish = tier_finish_times(tier, [6144.0, 6144.0], lat)
    assert finish[0] == pytest.approx([0.03125 + 6144 / 1.173e9,
                                       0.0625 + 2 * 6144 / 1.173e9])


def test_chunked_sampling_fills_every_query(monkeypatch, paper_bank):
    estimate_module = importlib.import_module("memsim.estimate")  # the name is also a function
    monkeypatch.setattr(estimate_module, "CHUNK", 1000)
    profile = _random_profile([100, 200, 300], [1, 2, 3])
    layout = memsim.layout_from_dict({"fetch": "sequential",
                                      "placement": {2: "t0", 3: "t1", 4: "t2"}})
    est = memsim.estimate(profile, paper_bank, layout, samples=5500, seed=2)
    assert est.samples == 5500
    # sequential: the mean of the sum is the sum of the per-level means, query by query
    assert est.mean_s == pytest.approx(sum(lv.time_s for lv in est.per_level), rel=1e-12)
    assert est.fetch_time_s["p99"] < 10 * est.mean_s
    with pytest.raises(memsim.InputError, match="samples"):
        memsim.estimate(profile, paper_bank, layout, samples=10**9)


@pytest.mark.parametrize(("concurrency", "latencies"), [(1, 3), (3, 1)])
def test_blocks_split_at_max_request_size(concurrency, latencies):
    """A 25 MB block with a 10 MB request limit is 3 requests: one after another on one
    channel (3 latencies), or all at once sharing the bandwidth on three (1 latency)."""
    profile = memsim.profile_from_dict({"name": "split", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "8 GB"},
        {"name": "obj", "kind": "cloud", "bandwidth": "100 MB/s", "latency": "20 ms",
         "concurrency": concurrency, "max_request_size": "10 MB"},
    ]})
    bank = memsim.bank_from_dict({"name": "one", "levels": [1], "anchor": {
        "layers": 1, "d_model": 1, "d_ff": 1, "heads": 1, "head_dim": 1, "params": 1},
        "memory_type": "ffn", "branching": 2, "dtype": "int8"})
    bank = bank.model_copy(update={"levels": [25_000_000 // 3 + 1]})  # 3 B/unit: ~25 MB block
    size = bank.level(1).block_bytes
    layout = memsim.layout_from_dict({"placement": {1: "obj"}})
    est = memsim.estimate(profile, bank, layout)
    assert est.mean_s == pytest.approx(latencies * 0.020 + size / 100e6, rel=1e-9)


def test_too_many_parts_is_an_input_error(paper_bank):
    profile = memsim.load_profile("paper-hypothetical").with_tier("disk", max_request_size=1000)
    with pytest.raises(memsim.InputError, match="max_request_size"):
        memsim.estimate(profile, paper_bank, memsim.load_layout("paper-flat"))


def test_absurd_sizes_are_refused_not_crashed():
    import memsim
    from memsim.cost_model import request_parts
    from memsim.errors import InputError

    tier = memsim.load_profile("paper-hypothetical").tiers[1]
    with pytest.raises(InputError, match="limit"):
        request_parts(tier, 10**400)  # was OverflowError
    # many parts per query: refused up front instead of a huge array or minutes of work
    from memsim.cost_model import check_work, queries_per_pass

    with pytest.raises(InputError, match="tier model's work"):
        check_work(1_000_000, 1_000, "samples", "samples")
    assert queries_per_pass(4096, 1_000_000) * 4096 <= 4_000_000
