"""The goal options of `memsim optimize`: parsing, one-line errors, the explained infeasible
rate, and the simulator-in-the-loop rounds."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memsim
from memsim.errors import InfeasibleError, InputError
from memsim.optimize.goal import Goal, Objective, Slo, parse_slos
from memsim.optimize.verify import optimize_verified


def test_slo_and_objective_parse():
    assert Slo.parse("p99 <= 50 ms") == Slo("p99", 0.05)
    assert Slo.parse("mean<=8ms") == Slo("mean", 0.008)
    assert Slo.parse(" P95 < 0.02 ") == Slo("p95", 0.02)
    assert Objective.parse("mean") == Objective()
    assert Objective.parse("p99") == Objective("quantile", 0.99)
    assert Objective.parse("cvar:0.95") == Objective("cvar", 0.95)
    assert str(Objective.parse("cvar:0.95")) == "cvar:0.95" and str(Slo("p99", 0.05)) == (
        "p99 <= 50 ms")
    for bad in ("p99 = 5 ms", "p42 <= 5 ms", "p99 <= -1 ms", "p99 <= soon", ""):
        with pytest.raises(InputError):
            Slo.parse(bad)
    for bad in ("median", "cvar:1.5", "cvar:x", "p100"):
        with pytest.raises(InputError):
            Objective.parse(bad)
    with pytest.raises(InputError, match="two SLOs on p99"):
        parse_slos(["p99 <= 1 s", "p99 <= 2 s"])
    with pytest.raises(InputError):
        Goal(max_utilization=1.0)
    with pytest.raises(InputError):
        Goal(rate=-1.0)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.text(max_size=20))
def test_generated_slo_and_objective_text_parses_or_says_why(slo, objective):
    """Any text is a target (whose limit is a positive time) or one clean InputError."""
    for parse, text in ((Slo.parse, slo), (Objective.parse, objective)):
        try:
            value = parse(text)
        except InputError as exc:
            assert "\n" not in str(exc)
            continue
        if isinstance(value, Slo):
            assert value.limit_s > 0
        else:
            assert value.kind == "mean" or 0 < value.level < 1


@pytest.mark.parametrize(("args", "words"), [
    (["--slo", "p99 is fast"], "cannot read SLO"),
    (["--objective", "median"], "unknown objective"),
    (["--rate", "fast"], "--rate"),
    (["--rate", "10/s", "--idle"], "--rate or --idle"),
    (["--rate", "10/s", "--energy-budget", "5 W"], "--energy-budget"),
    (["--out-dir", "x"], "--out-dir needs --pareto"),
    (["--pareto", "cost,cost"], "pareto"),
])
def test_bad_goal_options_are_one_line(cli, args, words):
    result = cli("optimize", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and words in result.stderr, result.stderr


def test_the_rate_no_layout_carries_is_named_and_is_the_boundary(paper_bank):
    """The error names the tier and the rate where it reaches the ceiling; just below that
    rate a layout exists, just above none does."""
    profile = memsim.load_profile("phone")
    with pytest.raises(InfeasibleError) as info:
        memsim.optimize(profile, paper_bank, scenarios=8, samples=100,
                        goal=Goal(rate=30.0))
    match = re.search(r"'([\w.-]+)' saturates \(reaches the ceiling\) at ([\d.]+) "
                      r"queries/s", str(info.value))
    assert match, str(info.value)
    boundary = float(match.group(2))
    below = memsim.optimize(profile, paper_bank, scenarios=8, samples=100,
                            goal=Goal(rate=boundary * 0.98))
    assert max(below.figures.utilization.values()) <= 0.8 + 1e-6
    # the analytic load of the simulator agrees with the model's utilisation
    load = memsim.simulate.tier_load(profile, paper_bank, below.layout, boundary * 0.98)
    for tier, rho in below.figures.utilization.items():
        assert load[tier] == pytest.approx(rho, rel=1e-6)
    with pytest.raises(InfeasibleError):
        memsim.optimize(profile, paper_bank, scenarios=8, samples=100,
                        goal=Goal(rate=boundary * 1.02))


def test_verify_rounds_tighten_the_model_and_say_when_they_cannot(cli, tmp_path):
    """p99 <= 235 ms: the model's first layout meets it (227.7 ms) but the simulation does
    not (its interval lies above): the next round scales the delay of the tier the
    simulation showed slower, and the answer is that no layout meets the target."""
    out = tmp_path / "l.yaml"
    result = cli("optimize", "--profile", "phone", "--workload", "zipf-topic", "--slo",
                 "p99 <= 235 ms", "--verify", "--verify-queries", "5000", "--scenarios", "32",
                 "--out", str(out), "--json")
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    rounds = data["verify"]["rounds"]
    assert len(rounds) >= 2 and not any(r["met"] for r in rounds)
    assert "modelled delay is scaled" in rounds[0]["action"]
    first = rounds[0]
    ci = first["simulated"]["fetch_time_ci_s"]["p99"]
    assert first["model"]["quantile_s"]["p99"] <= 0.235 < ci[0]
    assert "p99 <= 235 ms" in result.stderr and not out.exists()


def test_verify_met_writes_the_layout(paper_profile, paper_bank):
    wl = memsim.load_workload("zipf-topic")
    verified = optimize_verified(paper_profile, paper_bank, wl,
                                 Goal(rate=10.0, slos=(Slo("mean", 0.2),)), queries=3000,
                                 scenarios=8, samples=100)
    assert verified.met and len(verified.rounds) == 1
    sim = verified.rounds[0].simulated
    assert sim["fetch_time_s"]["mean"] <= 0.2
    assert all(rho < 1 for rho in sim["offered_load"].values())


def test_idle_ignores_the_rate_and_rate_scales_the_workload(cli):
    idle = json.loads(cli("optimize", "--profile", "phone", "--workload", "zipf-topic",
                          "--idle", "--json").stdout)
    plain = json.loads(cli("optimize", "--profile", "phone", "--json").stdout)
    assert idle["goal"] is None and idle["placement"] == plain["placement"]
    loaded = json.loads(cli("optimize", "--profile", "phone", "--workload", "zipf-topic",
                            "--rate", "12/s", "--json").stdout)
    assert loaded["goal"]["rate"] == 12.0
    assert max(loaded["model"]["utilization"].values()) <= 0.8 + 1e-6


def test_where_the_idle_layout_saturates_the_load_aware_one_wins_in_simulation():
    """Two 9.8 MB levels: idle, both are fastest on the one-channel tier (1 ms + 19.7 ms on
    its 1 GB/s link, against 15 ms + 9.8 ms on the other). At 55 queries/s that link is asked
    for 1.08 of itself; the load-aware layout moves levels to the eight-channel tier, and the
    simulator agrees: its mean and p99 intervals lie wholly below the idle layout's run
    (which has no steady state, so no interval: its point values are the bound)."""
    profile = memsim.profile_from_dict({"name": "two-ways", "tiers": [
        {"name": "ram", "kind": "ram", "capacity": "100 MB", "bandwidth": "20 GB/s"},
        {"name": "fast", "kind": "flash", "capacity": "10 GB", "bandwidth": "1 GB/s",
         "latency": "1 ms", "concurrency": 1},
        {"name": "wide", "kind": "disk", "capacity": "10 GB", "bandwidth": "1 GB/s",
         "aggregate_bandwidth": "8 GB/s", "latency": "15 ms", "concurrency": 8}]})
    bank = memsim.bank_from_dict({"name": "two", "levels": [1600, 1600], "branching": 16,
                                  "anchor": {"name": "tiny", "layers": 4, "d_model": 256,
                                             "d_ff": 1024, "heads": 4, "head_dim": 64}})
    wl = memsim.workload_from_dict({"name": "p55", "arrivals": {"kind": "poisson",
                                                                "rate": 55}})
    idle = memsim.optimize(profile, bank, scenarios=4, samples=100)
    assert set(idle.layout.placement.values()) == {"fast"}
    assert memsim.simulate.tier_load(profile, bank, idle.layout, 55.0)["fast"] > 1.0
    aware = memsim.optimize(profile, bank, workload=wl, goal=Goal(rate=55.0), scenarios=4,
                            samples=100)
    assert "wide" in aware.layout.placement.values()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", memsim.errors.OverloadWarning)
        slow = memsim.simulate(profile, bank, idle.layout, wl, queries=3000, seed=0)
    quick = memsim.simulate(profile, bank, aware.layout, wl, queries=3000, seed=0)
    assert slow.unstable and not quick.unstable
    assert max(quick.offered_load.values()) < 1.0
    for stat in ("mean", "p99"):
        assert quick.fetch_time_ci_s[stat][1] < slow.fetch_time_s[stat], stat
    # the model's mean under load is close to the simulated one (within 10%)
    assert aware.figures.mean_s == pytest.approx(quick.fetch_time_s["mean"], rel=0.10)
