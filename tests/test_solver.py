"""Solver statuses are honest: a run stopped by its time limit is never called optimal."""

from __future__ import annotations

import numpy as np
import pulp
import pytest

from memsim.optimize.solver import solve


def _hard_knapsack(n: int = 120, m: int = 40, seed: int = 0) -> pulp.LpProblem:
    """A multi-dimensional 0-1 knapsack: small, yet far from provable in a fraction of a second."""
    rng = np.random.default_rng(seed)
    prob = pulp.LpProblem("knapsack", pulp.LpMaximize)
    x = [prob.add_variable(f"x{i}", cat="Binary") for i in range(n)]
    weights = rng.integers(1000, 2000, (m, n))
    values = rng.integers(1000, 2000, n)
    for j in range(m):
        prob += pulp.lpSum(int(weights[j, i]) * x[i] for i in range(n)) <= int(
            weights[j].sum() // 2)
    prob += pulp.lpSum(int(values[i]) * x[i] for i in range(n))
    return prob


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_time_limit_is_reported_as_such(solver):
    limit = 0.3
    outcome = solve(_hard_knapsack(), solver, time_limit=limit)
    assert outcome.solver == solver
    if outcome.seconds >= 0.9 * limit:  # it ran into the limit: PuLP would say "Optimal"
        assert outcome.status == "time_limit"
    assert outcome.status in {"time_limit", "optimal"}
    assert outcome.objective is not None and outcome.objective > 0


def test_infeasible_is_reported():
    prob = pulp.LpProblem("impossible", pulp.LpMinimize)
    x = prob.add_variable("x", cat="Binary")
    prob += x >= 2
    prob += x
    assert solve(prob, "highs").status == "infeasible"


def test_degenerate_models_never_raise_a_traceback(monkeypatch):
    from memsim.errors import SolverError

    empty = pulp.LpProblem("empty", pulp.LpMinimize)  # no objective, no variables
    assert solve(empty, "highs").status == "optimal"
    prob = pulp.LpProblem("m", pulp.LpMinimize)
    x = prob.add_variable("x", cat="Binary")
    prob += x

    def broken(*_a, **_k):
        raise IndexError("list index out of range")

    monkeypatch.setattr(prob, "solve", broken)
    with pytest.raises(SolverError, match="IndexError"):
        solve(prob, "highs")


def test_auto_falls_back_on_cbc_where_highs_gives_up():
    """HiGHS reports "Solve error" on this load model (chord rows of near-zero waits beside
    capacity rows in the thousands); "auto" must still answer, with CBC's optimum."""
    from memsim.bank import load_bank
    from memsim.optimize import optimize
    from memsim.optimize.goal import make_goal
    from memsim.profile import load_profile
    from memsim.workload import load_workload, workload_at_rate

    p, b = load_profile("phone"), load_bank("C2")
    wl = workload_at_rate(load_workload("zipf-topic"), 20.0)
    goal = make_goal(p, b, wl, objective="p99")
    results = {name: optimize(p, b, workload=wl, goal=goal, scenarios=16, solver=name)
               for name in ("auto", "cbc")}
    assert results["auto"].status == "optimal"
    assert results["auto"].layout.placement == results["cbc"].layout.placement
    assert results["auto"].objective_s == pytest.approx(results["cbc"].objective_s, rel=1e-6)
