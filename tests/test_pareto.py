"""Pareto fronts by the epsilon-constraint method against brute force, and the CLI's table,
JSON, layout files, plot and errors.

Brute force enumerates every placement of a 4-level bank on 4 tiers, keeps those that fit the
tiers and meet the goal under `load.evaluate` (the model in numpy, no solver), and computes
the non-dominated set directly; the front must be on it, reach both minima, and (its points
being more than the true front holds) be all of it."""

from __future__ import annotations

import itertools
import json
import string
import sys

import click
import click.testing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memsim
import memsim.cli.pareto as cli_pareto
import memsim.optimize.pareto as pareto_mod
from memsim.cli.common import handle_errors
from memsim.errors import InfeasibleError, InputError
from memsim.optimize.goal import Goal, Objective, Slo
from memsim.optimize.level import _meets
from memsim.optimize.load import evaluate
from memsim.optimize.pareto import METRICS, FrontPoint, pareto_front, parse_metrics

ANCHOR = {"name": "tiny", "layers": 4, "d_model": 256, "d_ff": 1024, "heads": 4,
          "head_dim": 64}
# RAM for the first level only, a small priced flash, a disk that is cheap but slow and
# power-hungry, and a cheaper, slower cloud (benchmarks/bench_pareto.py --synthetic uses it)
TIERS = [
    {"name": "ram", "kind": "ram", "capacity": 20_000_000, "bandwidth": 20e9,
     "latency": 1e-7, "concurrency": 4, "energy": {"per_byte": 1e-11}},
    {"name": "flash", "kind": "flash", "capacity": 1_000_000_000, "bandwidth": 2e9,
     "latency": {"p50": 1e-4, "p99": 1e-3}, "concurrency": 2,
     "cost": {"storage_usd_per_gb_month": 0.5, "usd_per_1000_requests": 0.0},
     "energy": {"per_byte": 5e-10, "per_request": 1e-5, "active_power": 1.0,
                "idle_power": 0.05}},
    {"name": "disk", "kind": "disk", "capacity": "unlimited", "bandwidth": 3e8,
     "latency": {"p50": 4e-3, "p99": 2e-2}, "concurrency": 1,
     "cost": {"storage_usd_per_gb_month": 0.1, "usd_per_1000_requests": 0.0},
     "energy": {"per_byte": 1e-9, "per_request": 1e-3, "active_power": 3.0,
                "idle_power": 0.5}},
    {"name": "cloud", "kind": "cloud", "capacity": "unlimited", "bandwidth": 1e8,
     "latency": {"p50": 2e-2, "p99": 1e-1}, "concurrency": 8,
     "cost": {"storage_usd_per_gb_month": 0.004, "usd_per_1000_requests": 0.00002},
     "energy": {"per_byte": 2e-9, "per_request": 1e-4}},
]
OPTIONS = {"scenarios": 4, "samples": 20}  # few latency scenarios: small, fast models
FRONT_OPTIONS = {("energy", "p99"): OPTIONS, ("time", "cost"): OPTIONS}
RATE = 5.0
GOAL = Goal(rate=RATE)


@pytest.fixture(scope="module")
def instance() -> tuple[memsim.Profile, memsim.Bank]:
    """RAM for the first level only, a small priced flash, a disk that is cheap but slow and
    power-hungry, and a cheaper, slower cloud: cost, time and energy pull apart."""
    profile = memsim.profile_from_dict({"name": "tri", "tiers": TIERS})
    bank = memsim.bank_from_dict({"name": "b", "levels": [50, 100, 100, 20], "anchor": ANCHOR,
                                  "branching": 16})
    return profile, bank


@pytest.fixture(scope="module")
def workload() -> memsim.Workload:
    return memsim.workload_from_dict({"name": "w", "arrivals": {"kind": "poisson",
                                                                "rate": RATE}})


@pytest.fixture(scope="module")
def fronts(instance, workload):
    """Two fronts computed once: energy-p99 (verified in simulation) and time-cost."""
    profile, bank = instance
    calls: list[tuple[int, int]] = []
    out = {
        ("energy", "p99"): pareto_front(profile, bank, ("energy", "p99"), goal=GOAL,
                                        workload=workload, verify=True, verify_queries=400,
                                        points=4,
                                        progress=lambda d, t: calls.append((d, t)),
                                        **FRONT_OPTIONS["energy", "p99"]),
        ("time", "cost"): pareto_front(profile, bank, ("time", "cost"), goal=GOAL,
                                       workload=workload, points=4,
                                       **FRONT_OPTIONS["time", "cost"]),
    }
    return out, calls


def _feasible(profile, bank, workload, goal, options):
    """Every placement that fits and meets `goal` under the model, as FrontPoints."""
    tables, load = pareto_mod._model(profile, bank, workload, goal, 0, dict(options))
    depths = [lv.depth for lv in bank.active_levels]
    out = []
    for combo in itertools.product(profile.tier_names, repeat=len(depths)):
        placement = dict(zip(depths, combo, strict=True))
        layout = memsim.Layout(name="x", bank=bank.name, profile=profile.name,
                               placement=placement)
        if layout.overfilled(bank, profile) or not _meets(tables, load, placement, set()):
            continue
        out.append(FrontPoint(layout=layout, figures=evaluate(tables, load, placement, set()),
                              epsilon=None, p99_exact=load.exact_quantiles))
    return out


def _true_front(points, x, y):
    """The (x, y) pairs no feasible layout beats (computed directly, pairwise)."""
    pairs = {(round(p.metric(x), 12), round(p.metric(y), 12)) for p in points}
    return sorted(a for a in pairs if not any(
        b[0] <= a[0] and b[1] <= a[1] and b != a for b in pairs))


@pytest.mark.parametrize("metrics", [("energy", "p99"), ("time", "cost")])
def test_front_is_the_brute_force_front(instance, workload, fronts, metrics):
    profile, bank = instance
    front = fronts[0][metrics]
    x, y = metrics
    feasible = _feasible(profile, bank, workload, GOAL, FRONT_OPTIONS[metrics])
    truth = _true_front(feasible, x, y)
    assert len(truth) >= 3  # the instance has a real trade-off
    got = [(p.metric(x), p.metric(y)) for p in front.points]
    for gx, gy in got:  # on the true front: no feasible layout beats it
        assert not any(q.metric(x) < gx * (1 - 1e-9) and q.metric(y) <= gy * (1 + 1e-9)
                       or q.metric(x) <= gx * (1 + 1e-9) and q.metric(y) < gy * (1 - 1e-9)
                       for q in feasible)
    assert got[0][0] == pytest.approx(min(q.metric(x) for q in feasible), rel=1e-9)
    assert got[-1][1] == pytest.approx(min(q.metric(y) for q in feasible), rel=1e-9)
    # more points allowed than the true front has: the gap probes find all of it
    assert [(round(a, 12), round(b, 12)) for a, b in got] == truth
    for p in front.points:
        assert not p.layout.overfilled(bank, profile)


def test_points_sorted_distinct_and_mutually_non_dominated(fronts):
    for (x, y), front in fronts[0].items():
        xs = [p.metric(x) for p in front.points]
        ys = [p.metric(y) for p in front.points]
        assert xs == sorted(xs) and len(set(xs)) == len(xs)
        assert all(b < a for a, b in itertools.pairwise(ys))  # y falls as x rises
        keys = {tuple(sorted(p.layout.placement.items())) for p in front.points}
        assert len(keys) == len(front.points)
        assert front.solves >= 2 * len(front.points)


def test_verified_points_carry_simulated_figures(fronts):
    front = fronts[0][("energy", "p99")]
    for p in front.points:
        assert p.simulated is not None
        assert set(p.simulated["fetch_time_s"]) == {"mean", "p99"}
        assert p.simulated["fetch_time_s"]["mean"] > 0
        value, _ci = p.simulated_metric("p99")
        assert value == p.simulated["fetch_time_s"]["p99"]
    assert fronts[0][("time", "cost")].points[0].simulated is None
    calls = fronts[1]
    assert calls and all(0 < d <= t for d, t in calls) and calls[-1][0] == calls[-1][1]


def test_json_has_base_units_and_every_point(fronts):
    front = fronts[0][("time", "cost")]
    data = front.to_json()
    assert data["x"] == "time" and data["y_key"] == "cost_usd_month"
    assert len(data["points"]) == len(front.points)
    first = data["points"][0]
    assert first["mean_s"] == front.points[0].metric("time")
    assert {"p99_s", "cost_usd_month", "energy_j_per_query", "placement"} <= set(first)
    json.dumps(data)


def test_infeasible_epsilon_is_skipped_and_base_targets_kept(instance, workload,
                                                             monkeypatch):
    """A bound with no layout is skipped; an SLO of the base goal on another statistic (the
    mean) holds at every point."""
    profile, bank = instance
    real = pareto_mod.optimize
    bounded = []

    def flaky(*args, goal, **kwargs):
        if goal.minimize == "energy" and any(s.stat == "p99" for s in goal.slos):
            bounded.append(goal)
            if len(bounded) == 2:  # the first interior bound (the 1st is the low endpoint's)
                raise InfeasibleError("no layout", field="slo")
        return real(*args, goal=goal, **kwargs)

    monkeypatch.setattr(pareto_mod, "optimize", flaky)
    limit = 0.05  # excludes the most frugal layout (mean 56 ms), keeps the next two
    goal = GOAL.with_changes(slos=(Slo("mean", limit),))
    front = pareto_front(profile, bank, ("energy", "p99"), goal=goal, workload=workload,
                         points=3, **OPTIONS)
    assert front.skipped == 1
    ys = [p.metric("p99") for p in front.points]
    assert ys and all(b < a for a, b in itertools.pairwise(ys))
    assert all(p.metric("time") <= limit * (1 + 1e-6) for p in front.points)
    assert all(any(s.stat == "mean" and s.limit_s == limit for s in g.slos) for g in bounded)


def test_p99_by_its_cvar_bound_when_scenarios_are_many(instance, workload, monkeypatch):
    """Past EXACT_QUANTILE_SCENARIOS the model bounds p99 by CVaR: the front is the brute-force
    front of that bound (what the solves constrain), and says so."""
    profile, bank = instance
    monkeypatch.setattr(memsim.optimize.load, "EXACT_QUANTILE_SCENARIOS", 2)
    front = pareto_front(profile, bank, ("energy", "p99"), goal=GOAL, workload=workload,
                         points=4, **OPTIONS)
    assert not front.p99_exact and front.to_json()["p99"] == "cvar_bound"
    feasible = _feasible(profile, bank, workload, GOAL, OPTIONS)
    assert not feasible[0].p99_exact
    got = [(round(p.metric("energy"), 12), round(p.metric("p99"), 12)) for p in front.points]
    assert got == _true_front(feasible, "energy", "p99")
    cvar = Objective(kind="cvar", level=0.99)
    assert front.points[0].metric("p99") == front.points[0].figures.stat(cvar)


def test_progress_line_only_on_a_terminal(monkeypatch, capsys):
    update, close = cli_pareto._progress_line("pareto cost,p99")
    assert update is None
    close()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    update, close = cli_pareto._progress_line("pareto cost,p99")
    assert update is not None
    update(2, 10)
    close()
    err = capsys.readouterr().err
    assert "pareto cost,p99: step 2/10" in err and "\n" not in err


def test_infeasible_goal_raises(instance):
    profile, bank = instance
    with pytest.raises(InfeasibleError):
        pareto_front(profile, bank, ("cost", "p99"), goal=Goal(rate=1e6), **OPTIONS)


# --- the CLI function -----------------------------------------------------------------


def _run(monkeypatch, front, **kwargs):
    monkeypatch.setattr(cli_pareto, "pareto_front", lambda *a, **k: front)
    args = dict(points=10, out_dir=None, plot=None, verify=False, verify_queries=1000,
                seed=0, as_json=False, options={})
    args.update(kwargs)
    return args


def test_cli_table(instance, workload, fronts, monkeypatch, capsys):
    profile, bank = instance
    front = fronts[0][("energy", "p99")]
    args = _run(monkeypatch, front, verify=True)
    cli_pareto.run_pareto(profile, bank, workload, GOAL, "energy,p99", **args)
    out = capsys.readouterr().out
    assert "energy per query" in out and "p99 fetch time" in out and "simulated p99" in out
    assert " ms" in out and " mJ" in out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == len(front.points)
    assert "1:ram" in rows[0]


def test_cli_json_out_dir_and_plot(instance, workload, fronts, monkeypatch, capsys, tmp_path):
    profile, bank = instance
    front = fronts[0][("energy", "p99")]
    out_dir = tmp_path / "front"
    out_dir.mkdir()
    (out_dir / "point-09.yaml").write_text("stale")
    (out_dir / "notes.txt").write_text("mine")
    plot = tmp_path / "front.png"
    args = _run(monkeypatch, front, out_dir=str(out_dir), plot=str(plot), as_json=True)
    cli_pareto.run_pareto(profile, bank, workload, GOAL, "energy,p99", **args)
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads(json.dumps(front.to_json()))
    names = sorted(p.name for p in out_dir.iterdir())
    expected = [f"point-{i:02d}.yaml" for i in range(1, len(front.points) + 1)]
    assert names == sorted(expected + ["notes.txt"])  # the stale point went, notes stayed
    assert (out_dir / "notes.txt").read_text() == "mine"
    for i, p in enumerate(front.points, 1):
        layout = memsim.load_layout(out_dir / f"point-{i:02d}.yaml")
        assert layout.placement == p.layout.placement
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_nothing_when_the_front_fails(instance, workload, monkeypatch, tmp_path):
    profile, bank = instance

    def fail(*_a, **_k):
        raise InfeasibleError("no layout", field="slo")

    monkeypatch.setattr(cli_pareto, "pareto_front", fail)
    out_dir, plot = tmp_path / "front", tmp_path / "front.png"
    with pytest.raises(InfeasibleError):
        cli_pareto.run_pareto(profile, bank, workload, GOAL, "cost,p99", points=4,
                              out_dir=str(out_dir), plot=str(plot), verify=False,
                              verify_queries=1000, seed=0, as_json=False, options={})
    assert not out_dir.exists() and not plot.exists()


@pytest.mark.parametrize("text", ["cost", "cost,cost", "foo,p99", "cost,p99,time", ",", ""])
def test_bad_metrics_are_one_line_errors(instance, workload, text, monkeypatch):
    profile, bank = instance
    monkeypatch.setattr(cli_pareto, "pareto_front", lambda *a, **k: pytest.fail("ran"))

    @click.command()
    @handle_errors
    def cmd() -> None:
        cli_pareto.run_pareto(profile, bank, workload, GOAL, text, points=4, out_dir=None,
                              plot=None, verify=False, verify_queries=1000, seed=0,
                              as_json=False, options={})

    result = click.testing.CliRunner().invoke(cmd, [])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memsim: error:") and "pareto" in lines[0]


def _expected(text: str) -> tuple[str, str] | None:
    parts = [p.strip().lower() for p in text.split(",")]
    if len(parts) == 2 and all(p in METRICS for p in parts) and parts[0] != parts[1]:
        return parts[0], parts[1]
    return None


WORDS = st.sampled_from([*METRICS, "COST", " p99 ", "mean", "p95", "", " ", ",", "x",
                         "time ", "energy,"])


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.lists(WORDS, max_size=4).map(",".join), st.text(
    alphabet=string.ascii_letters + string.digits + ", \t\n", max_size=20)))
def test_metrics_text_is_accepted_or_refused_cleanly(text):
    expected = _expected(text)
    if expected is not None:
        assert parse_metrics(text) == expected
        return
    with pytest.raises(InputError) as info:
        parse_metrics(text)
    assert info.value.field == "pareto"
    assert "\n" not in info.value.message
