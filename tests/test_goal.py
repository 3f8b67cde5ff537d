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
