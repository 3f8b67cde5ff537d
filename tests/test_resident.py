"""Resident levels are free only while queries keep their block: the switch probability from a
workload's locality and routing, and the estimator, the optimizer and the simulator agree."""

from __future__ import annotations

import numpy as np
import pytest

import memsim
from memsim.cost_model import resident_patterns
from memsim.optimize import build_tables, resident_switch
from memsim.popularity import switch_probabilities

ANCHOR = {"name": "tiny", "layers": 4, "d_model": 256, "d_ff": 1024, "heads": 4,
          "head_dim": 64}


def _workload(routing: dict, locality: dict | None = None, rate: float = 1.0
              ) -> memsim.Workload:
    spec = {"name": "w", "arrivals": {"kind": "poisson", "rate": rate}, "routing": routing}
    if locality is not None:
        spec["locality"] = locality
    return memsim.workload_from_dict(spec)


@pytest.mark.parametrize("routing,locality", [
    ({"kind": "uniform"}, None),
    ({"kind": "zipf", "s": 1.0}, {"p": 0.9}),
    ({"kind": "zipf", "s": 1.5, "seed": 3}, {"p": 0.6, "depth": 3}),
    ({"kind": "uniform"}, {"p": 0.3, "depth": 2}),
])
def test_switch_probability_matches_sampled_paths(routing, locality):
    bank = memsim.bank_from_dict({"name": "b", "levels": [0, 4, 2, 1], "anchor": ANCHOR,
                                  "branching": 6})
    wl = _workload(routing, locality)
    exact = switch_probabilities(bank, wl, [1, 2, 3, 4])
    paths = wl.sampler(bank, np.random.default_rng(7)).sample(200_000)
    for d, s in exact.items():
        seen = float((paths[1:, d - 1] != paths[:-1, d - 1]).mean())
        assert seen == pytest.approx(s, abs=0.006)  # 200k draws: sd below 0.0012


def test_switch_probability_closed_forms():
    bank = memsim.bank_from_dict({"name": "b", "levels": [0, 4, 2], "anchor": ANCHOR,
                                  "branching": 4})
    assert switch_probabilities(bank, _workload({"kind": "uniform"}), [2, 3]) == {
        2: pytest.approx(1 - 1 / 16), 3: pytest.approx(1 - 1 / 64)}
    kept = _workload({"kind": "uniform"}, {"p": 1.0, "depth": 2})
    assert switch_probabilities(bank, kept, [2, 3]) == {2: 0.0, 3: pytest.approx(0.75)}


def test_patterns_are_nested_prefixes():
    patterns = resident_patterns({2: 0.1, 3: 0.8})
    assert patterns == [(pytest.approx(0.1), frozenset()), (pytest.approx(0.7), frozenset({2})),
                        (pytest.approx(0.2), frozenset({2, 3}))]
    assert sum(w for w, _k in patterns) == pytest.approx(1.0)


def test_readme_phone_example_keeps_level_2_off_the_cloud():
    """Parking the resident level 2 in the cloud was free under the old model; switches make
    the cloud's queue explode (offered load 8.4 under zipf-topic)."""
    profile = memsim.load_profile("phone")
    bank = memsim.load_bank("paper-storage-example")
    wl = memsim.load_workload("zipf-topic")
    for workload in (None, wl):
        result = memsim.optimize(profile, bank, resident_levels=[2], workload=workload,
                                 samples=2_000)
        assert result.layout.placement[2] != "cloud"
        assert result.layout.resident == [2]
    with_wl = memsim.optimize(profile, bank, resident_levels=[2], workload=wl, samples=2_000)
    assert with_wl.switch_probability[2] == pytest.approx(0.0981, abs=1e-3)
    # the objective mixes "level 2 current" with "level 2 fetched from flash"
    assert with_wl.current_s < with_wl.objective_s < memsim.optimize(
        profile, bank, resident_levels=[2], samples=10).objective_s


def _small() -> tuple[memsim.Profile, memsim.Bank]:
    profile = memsim.profile_from_dict({"name": "small", "tiers": [
        {"name": "ram", "kind": "ram", "capacity": "2 GB", "bandwidth": "20 GB/s"},
        {"name": "flash", "kind": "flash", "capacity": "3 GB", "bandwidth": "2 GB/s",
         "latency": "100 us"},
        {"name": "disk", "kind": "disk", "capacity": "unlimited", "bandwidth": "400 MB/s",
         "latency": "2 ms"},
    ]})
    bank = memsim.bank_from_dict({"name": "b", "levels": [0, 32, 16, 8], "anchor": ANCHOR,
                                  "branching": 8})
    return profile, bank


def test_objective_equals_estimator_and_simulator_at_low_load():
    profile, bank = _small()
    wl = _workload({"kind": "zipf", "s": 1.1}, {"p": 0.7, "depth": 2}, rate=0.05)
    result = memsim.optimize(profile, bank, resident_levels=[2, 3], workload=wl)
    assert result.layout.resident  # something is worth keeping resident
    est = memsim.estimate(profile, bank, result.layout, workload=wl)
    assert est.mean_s == pytest.approx(result.objective_s, rel=1e-9)
    assert est.switch_probability == {d: pytest.approx(result.switch_probability[d])
                                      for d in result.layout.resident}
    sim = memsim.simulate(profile, bank, result.layout, wl, queries=20_000, seed=3)
    low, high = sim.fetch_time_ci_s["mean"]
    spread = high - low
    assert low - spread <= est.mean_s <= high + spread
    # and far from what "resident is free" would claim
    assert result.current_s is not None and result.current_s < low


def test_ilp_enumerates_patterns_like_brute_force():
    """Several resident levels: the ILP's objective equals the best over every layout under
    the tables' own mixture."""
    import itertools

    profile, bank = _small()
    wl = _workload({"kind": "uniform"}, {"p": 0.8, "depth": 3})
    candidates = [2, 3]
    tables = build_tables(profile, bank, "parallel", 1, 0, resident_switch(bank, candidates, wl))
    best = None
    depths = [lv.depth for lv in bank.active_levels]
    for combo in itertools.product(profile.tier_names, repeat=len(depths)):
        placement = dict(zip(depths, combo, strict=True))
        used = {t: 0 for t in profile.tier_names}
        for lv in bank.active_levels:
            used[placement[lv.depth]] += lv.bytes
        for k in range(3):
            for res in itertools.combinations(candidates, k):
                ram = used["ram"] + bank.anchor_bytes + sum(bank.level(d).block_bytes
                                                            for d in res)
                if ram > 2e9 or used["flash"] > 3e9:
                    continue
                cost = tables.evaluate(placement, set(res))
                best = cost if best is None else min(best, cost)
    result = memsim.optimize(profile, bank, resident_levels=candidates, workload=wl)
    assert result.objective_s == pytest.approx(best, rel=1e-9)


def test_estimate_without_workload_keeps_the_papers_number_and_shows_the_switch():
    profile = memsim.load_profile("paper-hypothetical")
    bank = memsim.load_bank("paper-storage-example")
    layout = memsim.load_layout("paper-flat-resident-upper")
    est = memsim.estimate(profile, bank, layout)
    assert est.mean_s == pytest.approx(47.19e-3, rel=1e-3)
    assert est.switch_fetch_time_s["mean"] == pytest.approx(198.2e-3, rel=1e-3)
    assert est.switch_probability is None
    data = est.to_json()
    assert data["current_fetch_time_s"]["mean"] == est.mean_s
    mixed = memsim.estimate(profile, bank, layout, workload=memsim.load_workload("zipf-topic"))
    s = mixed.switch_probability[2]
    assert mixed.mean_s == pytest.approx((1 - s) * 47.19e-3 + s * 198.2e-3, rel=1e-3)
    assert mixed.fetch_time_s["p99"] == pytest.approx(198.2e-3, rel=1e-3)
    assert mixed.fetch_time_s["p50"] == pytest.approx(47.19e-3, rel=1e-3)


def test_block_level_estimate_fetches_resident_switches():
    profile, bank = _small()
    layout = memsim.Layout(name="l", bank="b", profile="small", fetch="parallel",
                           placement={2: "flash", 3: "disk", 4: "disk"}, resident=[2],
                           blocked=[{"level": 4, "block": 0}])
    wl = _workload({"kind": "uniform"})
    est = memsim.estimate(profile, bank, layout, workload=wl, samples=20_000)
    assert est.switch_probability[2] == pytest.approx(1 - 1 / 64, abs=0.01)
    assert est.per_level[0].time_s > 0
