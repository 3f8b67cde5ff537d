"""The level-placement ILP against brute force, capacities, the greedy baseline and
infeasibility diagnoses."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memsim
from memsim.errors import InfeasibleError
from memsim.optimize import build_tables, greedy_placement, resident_switch

ANCHOR = {"name": "tiny", "layers": 4, "d_model": 256, "d_ff": 1024, "heads": 4,
          "head_dim": 64}  # c0 = 3 * 4 * 256 = 3,072 params, 6 KB per multiplier in bf16


def test_default_run_finds_the_papers_hierarchical_layout(paper_profile, paper_bank):
    result = memsim.optimize(paper_profile, paper_bank)
    assert result.status == "optimal"
    assert result.layout.placement == {2: "flash", 3: "disk", 4: "cloud"}
    assert result.objective_s == pytest.approx(37.7e-3, rel=0.005)
    assert result.estimate.mean_s == pytest.approx(result.objective_s, rel=1e-12)
    assert result.baseline_s is not None and result.baseline_s >= result.objective_s


def test_sequential_prefers_fewer_slow_tiers(paper_profile, paper_bank):
    result = memsim.optimize(paper_profile, paper_bank, fetch="sequential")
    b2, b3, b4 = (lv.block_bytes for lv in paper_bank.active_levels)
    # level 4 on the disk (1 GB/s) beats the cloud (250 MB/s) once times add up
    assert result.layout.placement == {2: "flash", 3: "disk", 4: "disk"}
    assert result.objective_s == pytest.approx(b2 / 4e9 + (b3 + b4) / 1e9, rel=1e-9)


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_both_solvers_agree(solver, paper_bank):
    profile = memsim.load_profile("phone")
    result = memsim.optimize(profile, paper_bank, solver=solver, scenarios=16)
    tables = build_tables(profile, paper_bank, "parallel", 16, 0)
    best = min(tables.evaluate(dict(zip((2, 3, 4), combo, strict=True)))
               for combo in itertools.product(profile.tier_names, repeat=3)
               if _fits(profile, paper_bank, dict(zip((2, 3, 4), combo, strict=True)), set()))
    assert result.solver == solver
    assert result.objective_s == pytest.approx(best, rel=1e-9)


def _fits(profile, bank, placement, resident, budget=None) -> bool:
    ram = profile.ram
    for tier in profile.tiers:
        used = sum(lv.bytes for lv in bank.active_levels if placement[lv.depth] == tier.name)
        if tier.name == ram.name:
            used += bank.anchor_bytes + sum(bank.level(d).block_bytes for d in resident)
        if used > tier.capacity_bytes:
            return False
    if budget is not None and sum(bank.level(d).block_bytes for d in resident) > budget:
        return False
    return True


def fitting_layouts(profile, bank, candidates, budget):
    """Every (placement, resident set) that fits the tiers (and the resident budget)."""
    depths = [lv.depth for lv in bank.active_levels]
    for combo in itertools.product(profile.tier_names, repeat=len(depths)):
        placement = dict(zip(depths, combo, strict=True))
        for k in range(len(candidates) + 1):
            for resident in itertools.combinations(candidates, k):
                if _fits(profile, bank, placement, set(resident), budget):
                    yield placement, set(resident)


def _brute_force(tables, profile, bank, candidates, budget):
    return min((tables.evaluate(placement, resident) for placement, resident in
                fitting_layouts(profile, bank, candidates, budget)), default=None)


@st.composite
def instances(draw):
    n_tiers = draw(st.integers(2, 4))
    tiers = []
    for i in range(n_tiers):
        kind = "ram" if i == 0 else draw(st.sampled_from(["flash", "disk", "cloud", "other"]))
        cap = draw(st.one_of(st.none(), st.floats(0.05, 40.0))) if i else draw(
            st.floats(0.05, 20.0))
        tier = {"name": f"t{i}", "kind": kind,
                "capacity": "unlimited" if cap is None else int(cap * 1e9),
                "bandwidth": draw(st.floats(50, 20000)) * 1e6,
                "concurrency": draw(st.integers(1, 3))}
        if draw(st.booleans()):
            tier["aggregate_bandwidth"] = tier["bandwidth"] * draw(st.floats(0.5, 3.0))
        if draw(st.booleans()):
            p50 = draw(st.floats(1e-5, 5e-2))
            tier["latency"] = {"p50": p50, "p99": p50 * draw(st.floats(1.0, 8.0))}
        else:
            tier["latency"] = draw(st.floats(0, 2e-2))
        tiers.append(tier)
    profile = memsim.profile_from_dict({"name": "random", "tiers": tiers})
    levels = draw(st.lists(st.integers(0, 300), min_size=1, max_size=3).filter(any))
    bank = memsim.bank_from_dict({"name": "random", "levels": levels, "anchor": ANCHOR,
                                  "branching": 16})
    depths = [lv.depth for lv in bank.active_levels]
    candidates = draw(st.lists(st.sampled_from(depths), unique=True, max_size=len(depths)))
    budget = draw(st.one_of(st.none(), st.integers(0, 4 * 10**6)))
    fetch = draw(st.sampled_from(["parallel", "sequential"]))
    workload = None
    if candidates and draw(st.booleans()):
        spec = {"name": "w", "arrivals": {"kind": "poisson", "rate": 1.0},
                "routing": draw(st.sampled_from([{"kind": "uniform"},
                                                 {"kind": "zipf", "s": 1.2}]))}
        if draw(st.booleans()):
            spec["locality"] = {"p": draw(st.floats(0.0, 1.0)),
                                "depth": draw(st.sampled_from(depths))}
        workload = memsim.workload_from_dict(spec)
    return profile, bank, candidates, budget, fetch, workload


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_ilp_equals_brute_force_and_respects_constraints(instance):
    profile, bank, candidates, budget, fetch, workload = instance
    tables = build_tables(profile, bank, fetch, scenarios=8, seed=1,
                          switch=resident_switch(bank, candidates, workload))
    best = _brute_force(tables, profile, bank, candidates, budget)
    if best is None:
        with pytest.raises(InfeasibleError):
            memsim.optimize(profile, bank, fetch=fetch, resident_levels=candidates,
                            resident_budget=budget, scenarios=8, seed=1, samples=100,
                            workload=workload)
        return
    result = memsim.optimize(profile, bank, fetch=fetch, resident_levels=candidates,
                             resident_budget=budget, scenarios=8, seed=1, samples=100,
                             workload=workload)
    assert result.status == "optimal"
    assert result.objective_s == pytest.approx(best, rel=1e-7, abs=1e-12)
    placement, resident = result.layout.placement, set(result.layout.resident)
    assert set(placement) == {lv.depth for lv in bank.active_levels}
    assert resident <= set(candidates)
    assert _fits(profile, bank, placement, resident, budget)
    if result.baseline_s is not None:
        assert result.objective_s <= result.baseline_s * (1 + 1e-9)
        assert _fits(profile, bank, result.baseline.placement, set(result.baseline.resident),
                     budget)
    if all(t.latency.is_constant for t in profile.tiers):
        # the estimator mixes the switches with a workload; without one the optimizer takes
        # every query to switch, the estimator's `switch_fetch_time_s`
        est = result.estimate
        mean = (est.switch_fetch_time_s["mean"] if resident and workload is None
                else est.mean_s)
        assert mean == pytest.approx(result.objective_s, rel=1e-9, abs=1e-15)
        assert result.mean_s == mean and result.fetch_time_s["mean"] == mean


def test_greedy_is_a_real_baseline():
    """An instance where greedy's big-blocks-first choice is strictly worse than the optimum."""
    profile = memsim.load_profile("phone")
    bank = memsim.load_bank("paper-storage-example")
    tables = build_tables(profile, bank, "parallel", 64, 0)
    placement, _ = greedy_placement(tables)
    result = memsim.optimize(profile, bank)
    assert result.objective_s < tables.evaluate(placement)


def _two_tier_profile(ram_gb: float, a_gb: float, b_gb: float) -> memsim.Profile:
    return memsim.profile_from_dict({"name": "small", "tiers": [
        {"name": "ram", "kind": "ram", "capacity": round(ram_gb * 1e9), "bandwidth": "10 GB/s"},
        {"name": "a", "kind": "flash", "capacity": round(a_gb * 1e9), "bandwidth": "2 GB/s"},
        {"name": "b", "kind": "disk", "capacity": round(b_gb * 1e9), "bandwidth": "1 GB/s"},
    ]})


def test_bank_larger_than_all_capacity_is_diagnosed(paper_bank):
    with pytest.raises(InfeasibleError, match="short by") as info:
        memsim.optimize(_two_tier_profile(16, 500, 200), paper_bank)
    assert "618.5 GB" in str(info.value) or "811.7 GB" in str(info.value)


def test_anchor_too_big_for_ram(paper_bank):
    with pytest.raises(InfeasibleError, match=r"tier 'ram' is short by 323\.3 MB"):
        memsim.optimize(_two_tier_profile(0.5, 2000, 2000), paper_bank)


def test_packing_infeasibility_names_the_short_tier():
    # Three levels of 4096 * c0 * 2 bytes each (about 25.2 MB); each tier holds one level only.
    bank = memsim.bank_from_dict({"name": "even", "levels": [256, 16, 1], "anchor": ANCHOR})
    level = bank.active_levels[0].bytes
    assert all(lv.bytes == level for lv in bank.active_levels)
    ram_gb = (bank.anchor_bytes + 0.6 * level) / 1e9
    profile = _two_tier_profile(ram_gb, 1.5 * level / 1e9, 1.5 * level / 1e9)
    with pytest.raises(InfeasibleError) as info:
        memsim.optimize(profile, bank)
    message = str(info.value)
    assert "short by" in message and "tier '" in message
    # Least extra room: one level each, RAM (0.6 of a level free) short by 0.4 of a level;
    # two levels on a 1.5-level tier would need 0.5.
    assert f"tier 'ram' is short by {memsim.format_size(0.4 * level)}" in message


def test_resident_level_under_budget(paper_bank):
    profile = memsim.load_profile("paper-hypothetical")
    flat = {"name": "flat", "tiers": [t.model_dump() for t in profile.tiers]}
    for tier in flat["tiers"]:  # only RAM and the disk: the paper's third case
        tier.pop("source")
    flat["tiers"] = [flat["tiers"][0], flat["tiers"][2]]
    disk_only = memsim.profile_from_dict(flat)
    # queries that always keep level 2's block (locality p = 1 down to level 2): the paper's
    # 47.2 ms; without a workload every query switches, so residency saves nothing
    always = memsim.workload_from_dict({"name": "same-topic", "arrivals": {
        "kind": "poisson", "rate": 1.0}, "locality": {"p": 1.0, "depth": 2}})
    free = memsim.optimize(disk_only, paper_bank, resident_levels=[2], workload=always)
    assert free.layout.resident == [2]
    assert free.objective_s == pytest.approx(47.2e-3, rel=0.005)
    unknown = memsim.optimize(disk_only, paper_bank, resident_levels=[2])
    assert unknown.layout.resident == [2]  # the tie-break keeps it resident
    assert unknown.objective_s == pytest.approx(198.2e-3, rel=0.005)
    assert unknown.current_s == pytest.approx(47.2e-3, rel=0.005)
    tight = memsim.optimize(disk_only, paper_bank, resident_levels=[2],
                            resident_budget=100 * 10**6)  # 151 MB block does not fit
    assert tight.layout.resident == []
    assert tight.objective_s == pytest.approx(198.2e-3, rel=0.005)


def test_ties_resolve_to_the_faster_tier(paper_profile, paper_bank):
    """With a 2 GB/s disk, level 4 on the disk or the cloud is equally fast (flash is the
    bottleneck); the optimizer consistently picks the faster tier."""
    fast_disk = paper_profile.with_tier("disk", bandwidth="2 GB/s", aggregate_bandwidth="2 GB/s")
    for seed in range(3):
        result = memsim.optimize(fast_disk, paper_bank, seed=seed)
        assert result.objective_s == pytest.approx(paper_bank.level(2).block_bytes / 4e9)
        assert result.layout.placement == {2: "flash", 3: "disk", 4: "disk"}
