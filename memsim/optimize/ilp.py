"""Level placement as an integer program (PuLP).

Variables: x[l,t] = 1 if level l is stored on tier t; r[l] = 1 if level l is resident in RAM;
y[t,S] = 1 if S is the set of levels tier t serves per query (its non-resident levels).
Each tier picks exactly one subset, whose time comes from the cost tables, so queueing and
bandwidth sharing inside a tier are modelled exactly. The parallel objective is the mean over
scenarios of an epigraph variable z_q >= time of every tier in scenario q; the sequential one
is the sum of the tiers' mean times. Resident levels are free only in the switch patterns that
keep their current block (one copy of the y variables per pattern, weighted by its
probability). Capacities count level banks, the anchor and resident
blocks in RAM; only the levels the caller names may be resident (those that consecutive
queries share), within an optional budget. Bytes are counted in units of the smallest block
(coefficients >= 1, so the solver's tolerance stays far below one block) and times in ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulp

from memsim.limits import check_at_most
from memsim.optimize.load import SECONDS_PER_MONTH, LoadTables
from memsim.optimize.tables import CostTables, Subset

MS = 1e3


@dataclass
class PlacementModel:
    """The PuLP problem and its variables, so callers can read the solution back."""

    problem: pulp.LpProblem
    x: dict[tuple[int, str], pulp.LpVariable]
    r: dict[int, pulp.LpVariable]
    slack: dict[str, pulp.LpVariable]
    unit: float  # bytes per capacity unit in the model
    y: dict[tuple[int, str, Subset], pulp.LpVariable]  # (pattern, tier, subset)
    patterns: list[tuple[float, frozenset[int]]]  # the switch patterns modelled, by index
    peak: pulp.LpVariable | None = None  # the highest utilisation (peak_load models)

    def placement(self) -> tuple[dict[int, str], set[int]]:
        """Level -> tier and resident levels of the solved model."""
        placement = {}
        for (depth, tier), var in self.x.items():
            if (var.value() or 0) > 0.5:
                placement[depth] = tier
        resident = {d for d, var in self.r.items() if (var.value() or 0) > 0.5}
        return placement, resident


def _variable(prob: pulp.LpProblem, name: str, low: float | None = None,
              cat: str = "Continuous") -> pulp.LpVariable:
    """A variable attached to `prob` (PuLP 3.3 deprecates free-standing LpVariable)."""
    return prob.add_variable(name, lowBound=low, cat=cat)


MAX_MODEL_TERMS = 2_000_000  # coefficients PuLP builds in Python: beyond, minutes of work


def model_patterns(tables: CostTables, candidates: Sequence[int]
                   ) -> list[tuple[float, frozenset[int]]]:
    """The switch patterns the ILP models: those with positive probability, plus the one
    that keeps every resident block current (weight possibly 0, for the tie-break)."""
    patterns = [(w, kept & frozenset(candidates)) for w, kept in tables.patterns]
    chosen = [p for p in patterns if p[0] > 0]
    last = patterns[-1]
    if not chosen or chosen[-1] is not last:
        chosen.append(last)
    return chosen


def build_model(tables: CostTables, resident_levels: Sequence[int] = (),
                resident_budget: int | None = None, capacity_slack: bool = False,
                load: LoadTables | None = None, peak_load: bool = False) -> PlacementModel:
    """The placement ILP; with `capacity_slack`, capacities may be exceeded at a cost
    (minimising the excess) so an infeasible instance says where room is missing.

    With `load`, its goal sets the objective (time by mean, percentile or CVaR; cost;
    energy), the SLO, budget and utilisation rows, and each tier's queueing delay (see
    `_add_goal`). `peak_load` instead minimises the highest utilisation of any tier (the
    diagnosis of a rate no layout can carry).

    The objective is the expectation over the switch patterns of resident levels: in pattern
    j the query fetches level d from tier t iff x[d,t] and not (r[d] and d's block is current
    in j), so each pattern has its own subset choice y[j,t,S]."""
    profile, bank = tables.profile, tables.bank
    tiers = [t.name for t in profile.tiers]
    levels = bank.active_levels
    depths = [lv.depth for lv in levels]
    ram = profile.ram
    candidates = [d for d in depths if d in set(resident_levels)] if ram is not None else []
    patterns = model_patterns(tables, candidates) if not capacity_slack else [(1.0, frozenset())]
    subsets = tables.subsets()
    terms = len(patterns) * len(tiers) * len(subsets) * (
        tables.scenarios + len(depths) + 1)
    check_at_most(terms, MAX_MODEL_TERMS, "coefficients of the level ILP (switch patterns x "
                  "tiers x level subsets x scenarios)", field="scenarios")
    prob = pulp.LpProblem("memsim_level_placement", pulp.LpMinimize)
    x = {(d, t): _variable(prob, f"x_{d}_{t}", cat="Binary") for d in depths for t in tiers}
    r = {d: _variable(prob, f"r_{d}", cat="Binary") for d in candidates}
    y = {(j, t, s): _variable(prob, f"y{j}_{t}_{'_'.join(map(str, s)) or 'none'}",
                              cat="Binary")
         for j in range(len(patterns)) for t in tiers for s in subsets}

    for d in depths:
        prob += pulp.lpSum(x[d, t] for t in tiers) == 1, f"place_{d}"
    for j, (_w, kept) in enumerate(patterns):
        for t in tiers:
            prob += pulp.lpSum(y[j, t, s] for s in subsets) == 1, f"one_subset_{j}_{t}"
            for d in depths:
                chosen = pulp.lpSum(y[j, t, s] for s in subsets if d in s)
                if d in r and d in kept:
                    # chosen = x AND NOT r, linearised
                    prob += chosen <= x[d, t], f"fetch_le_x_{j}_{d}_{t}"
                    prob += chosen <= 1 - r[d], f"fetch_le_notr_{j}_{d}_{t}"
                    prob += chosen >= x[d, t] - r[d], f"fetch_ge_{j}_{d}_{t}"
                else:
                    prob += chosen == x[d, t], f"fetch_{j}_{d}_{t}"

    slack: dict[str, pulp.LpVariable] = {}
    unit = float(min(lv.block_bytes for lv in levels))
    for tier in profile.tiers:
        used = pulp.lpSum((lv.bytes / unit) * x[lv.depth, tier.name] for lv in levels)
        extra = 0.0
        if ram is not None and tier.name == ram.name:
            extra = bank.anchor_bytes / unit
            used += pulp.lpSum((lv.block_bytes / unit) * r[lv.depth] for lv in levels
                               if lv.depth in r)
        if tier.capacity is None:
            continue
        room = tier.capacity / unit - extra
        if capacity_slack:
            slack[tier.name] = _variable(prob, f"slack_{tier.name}", low=0)
            prob += used <= room + slack[tier.name], f"capacity_{tier.name}"
        else:
            prob += used <= room, f"capacity_{tier.name}"
    if r and resident_budget is not None:
        prob += pulp.lpSum((lv.block_bytes / unit) * r[lv.depth] for lv in levels
                           if lv.depth in r) <= resident_budget / unit, "resident_budget"

    if capacity_slack:
        prob += pulp.lpSum(slack.values())
    else:
        _add_goal(prob, tables, load, patterns, x, y, peak_load=peak_load)
    model = PlacementModel(problem=prob, x=x, r=r, slack=slack, unit=unit, y=y,
                           patterns=patterns)
    if peak_load:
        model.peak = prob.variablesDict().get("peak_utilization")
    return model


def prefer_faster_tiers(model: PlacementModel, tables: CostTables, optimum_ms: float) -> None:
    """Turn `model` into the tie-break stage: keep the optimum, then minimise the tiers' summed
    busy time over the modelled switch patterns, so equally fast layouts resolve the same way
    (each level on its faster tier, and a resident level kept resident where its switches
    cost nothing extra)."""
    prob = model.problem
    slack = max(abs(optimum_ms) * 1e-9, 1e-9)
    prob += prob.objective <= optimum_ms + slack, "keep_optimum"
    prob.setObjective(pulp.lpSum(
        float(tables.times[t][s].mean() * MS) * var for (_j, t, s), var in model.y.items()
        if s))


def _add_goal(prob: pulp.LpProblem, tables: CostTables, load: LoadTables | None,
              patterns: list[tuple[float, frozenset[int]]],
              x: dict[tuple[int, str], pulp.LpVariable],
              y: dict[tuple[int, str, Subset], pulp.LpVariable], peak_load: bool = False
              ) -> None:
    """Objective and goal rows. Scenario (j, q) is switch pattern j with latency draw q, of
    probability w_j / n; its fetch time T[j, q] is the max (parallel) or sum (sequential) over
    tiers of the chosen subset's time in draw q plus the tier's queueing delay W[j, t].

    Load (a rate in the goal): tier t's channel and link utilisation are linear in y,
    rho_c = rate * sum_j w_j sum_S y[j,t,S] channel_s(S) / concurrency (bytes over the
    aggregate bandwidth for rho_l), each at most the tier's ceiling. G_c >= every chord of the
    Allen-Cunneen factor g(rho_c) and G_l >= every chord of rho_l / (1 - rho_l); the delay of
    subset S is a_S G_c + b_S G_l, charged to W[j, t] for the chosen S through a big-M row per
    subset (M_S: the delay at the ceiling). Percentiles are exact over the scenarios by
    indicators (when few) or bounded by CVaR (Rockafellar-Uryasev), as the goal's objective
    and SLO rows need."""
    tiers = [t.name for t in tables.profile.tiers]
    subsets = tables.subsets()
    n = tables.scenarios
    live = [(j, w) for j, (w, _k) in enumerate(patterns) if w > 0]
    goal = load.goal if load is not None else None
    loaded = load is not None and load.rate > 0

    waits: dict[tuple[int, str], pulp.LpVariable] = {}
    if loaded:
        assert load is not None
        peak = _variable(prob, "peak_utilization", low=0) if peak_load else None
        for t in tiers:
            per = load.per[t]
            conc, bw = load.concurrency[t], load.bandwidth[t]
            rho_c = pulp.lpSum(load.rate * w * per[s].channel_s / conc * y[j, t, s]
                               for j, w in live for s in subsets if s and per[s].channel_s)
            rho_l = pulp.lpSum(load.rate * w * per[s].bytes / bw * y[j, t, s]
                               for j, w in live for s in subsets if s and per[s].bytes)
            ceiling = load.ceiling(t)
            if peak is not None:  # utilisation as a fraction of the tier's ceiling
                _row(prob, rho_c - peak * ceiling, 0.0, f"peak_c_{t}")
                _row(prob, rho_l - peak * ceiling, 0.0, f"peak_l_{t}")
                continue
            _row(prob, rho_c, ceiling, f"ceiling_c_{t}")
            _row(prob, rho_l, ceiling, f"ceiling_l_{t}")
            g_c = _variable(prob, f"g_c_{t}", low=0)
            g_l = _variable(prob, f"g_l_{t}", low=0)
            for k, (a, b) in enumerate(load.chords_c[t]):
                prob += g_c >= a + b * rho_c, f"chord_c_{t}_{k}"
            for k, (a, b) in enumerate(load.chords_l[t]):
                prob += g_l >= a + b * rho_l, f"chord_l_{t}_{k}"
            mc, ml = load.max_factors(t)
            for j, _w in live:
                wait = _variable(prob, f"wait_{j}_{t}", low=0)
                waits[j, t] = wait
                for s in subsets:
                    a, b = per[s].wait_a * MS, per[s].wait_b * MS
                    if not s or (a <= 0 and b <= 0):
                        continue
                    big = a * mc + b * ml
                    prob += wait >= a * g_c + b * g_l - big * (1 - y[j, t, s]), (
                        f"delay_{j}_{t}_{'_'.join(map(str, s))}")
        if peak is not None:
            prob.setObjective(peak + 0.0)
            return

    # Scenario fetch times T[j, q] (ms): variables for parallel fetch (an epigraph of the
    # max over tiers), expressions for sequential fetch.
    times: dict[tuple[int, int], pulp.LpAffineExpression | pulp.LpVariable] = {}
    for j, _w in live:
        for q in range(n):
            per_tier = [pulp.lpSum(float(tables.times[t][s][q] * MS) * y[j, t, s]
                                   for s in subsets if s)
                        + (float(load.spread[t][q]) * waits[j, t] if (j, t) in waits else 0.0)
                        for t in tiers]
            if tables.fetch == "parallel":
                z = _variable(prob, f"z_{j}_{q}", low=0)
                for t, expr in zip(tiers, per_tier, strict=True):
                    prob += z >= expr, f"epigraph_{j}_{q}_{t}"
                times[j, q] = z
            else:
                times[j, q] = pulp.lpSum(per_tier)
    prob_of = {(j, q): w / n for j, w in live for q in range(n)}
    mean = pulp.lpSum(p * times[k] for k, p in prob_of.items())
    if goal is None:
        prob += mean
        return
    upper = _time_upper_bound(tables, load, live) if (
        goal.slos or goal.objective.kind == "quantile") else 0.0

    def tail(level: float, name: str) -> pulp.LpAffineExpression | pulp.LpVariable:
        """The percentile at `level` (exact by indicators) or its CVaR bound."""
        assert load is not None
        if load.exact_quantiles:
            value = _variable(prob, f"var_{name}", low=0)
            over = {k: _variable(prob, f"over_{name}_{k[0]}_{k[1]}", cat="Binary")
                    for k in prob_of}
            for k, var in over.items():
                prob.addConstraint(times[k] <= value + upper * var,
                                   f"quantile_{name}_{k[0]}_{k[1]}")
            prob.addConstraint(pulp.lpSum(prob_of[k] * var for k, var in over.items())
                               <= 1.0 - level + 1e-9, f"tail_mass_{name}")
            return value
        return _cvar(level, name)

    def _cvar(level: float, name: str) -> pulp.LpAffineExpression:
        eta = _variable(prob, f"eta_{name}")
        excess = {k: _variable(prob, f"excess_{name}_{k[0]}_{k[1]}", low=0) for k in prob_of}
        for k, var in excess.items():
            prob.addConstraint(var >= times[k] - eta, f"cvar_{name}_{k[0]}_{k[1]}")
        return eta + pulp.lpSum(prob_of[k] * v for k, v in excess.items()) / (1.0 - level)

    for slo in goal.slos:
        limit = slo.limit_s * MS
        if slo.level is None:
            _row(prob, mean, limit, "slo_mean")
        else:
            _row(prob, tail(slo.level, slo.stat), limit, f"slo_{slo.stat}")
    cost = _cost(tables, load, live, x, y)
    energy = pulp.lpSum(w * load.per[t][s].energy_j * 1e3 * y[j, t, s]  # mJ
                        for j, w in live for t in tiers for s in subsets
                        if s and load.per[t][s].energy_j)
    idle_mj = load.idle_power_w / load.rate * 1e3 if load.rate else 0.0
    if goal.budget_usd_month is not None:
        # in units of the budget below a dollar (the solver's tolerance is about 1e-6 of a
        # row unit), never below a micro-dollar
        unit = max(min(goal.budget_usd_month, 1.0), 1e-6)
        _row(prob, cost * (1.0 / unit), goal.budget_usd_month / unit, "budget")
    if goal.energy_budget_j is not None:
        _row(prob, energy, goal.energy_budget_j * 1e3 - idle_mj, "energy_budget")
    for c, cut in enumerate(goal.cuts):
        prob += pulp.lpSum(x[d, t] for d, t in cut) <= len(cut) - 1, f"cut_{c}"
    if goal.minimize == "cost":
        prob += cost * _unit_scale(cost)
    elif goal.minimize == "energy":
        prob += (energy + idle_mj) * _unit_scale(energy)
    elif goal.objective.kind == "mean":
        prob += mean
    elif goal.objective.kind == "quantile":
        prob += tail(goal.objective.level, "objective")
    else:
        prob += _cvar(goal.objective.level, "objective")


def _cost(tables: CostTables, load: LoadTables | None, live: list[tuple[int, float]],
          x: dict[tuple[int, str], pulp.LpVariable],
          y: dict[tuple[int, str, Subset], pulp.LpVariable]) -> pulp.LpAffineExpression:
    """Dollars per month: storage of each level where it is placed, plus requests at the
    rate (a resident level's requests only when queries switch its block)."""
    if load is None:
        return pulp.LpAffineExpression()
    storage = pulp.lpSum(load.storage_usd[key] * var for key, var in x.items()
                         if load.storage_usd.get(key))
    month = load.rate * SECONDS_PER_MONTH
    requests = pulp.lpSum(
        w * load.per[t][s].requests * load.request_usd[t] * month * y[j, t, s]
        for j, w in live for (jj, t, s) in y if jj == j and s and load.request_usd[t])
    return storage + requests


def _time_upper_bound(tables: CostTables, load: LoadTables | None,
                      live: list[tuple[int, float]]) -> float:
    """A fetch time (ms) no scenario can exceed: every tier's slowest subset plus its
    largest delay at the ceiling (the big M of the percentile indicators)."""
    total = 0.0
    for tier in tables.profile.tiers:
        t = tier.name
        worst = max(float(v.max()) for v in tables.times[t].values())
        if load is not None and load.rate > 0:
            mc, ml = load.max_factors(t)
            worst += max(s.wait_a * mc + s.wait_b * ml for s in load.per[t].values())
        total += worst
    return total * MS * 1.01 + 1.0


def _row(prob: pulp.LpProblem, expr: pulp.LpAffineExpression | pulp.LpVariable, rhs: float,
         name: str) -> None:
    """`expr <= rhs`, or nothing when `expr` has no variables (PuLP's HiGHS bridge fails on
    an empty row; a constant that breaks the row is caught by the exact check afterwards,
    `level._meets`, and by the diagnosis of infeasibility)."""
    expr = pulp.LpAffineExpression(expr) if isinstance(expr, pulp.LpVariable) else expr
    if not any(coef for coef in expr.values()):
        if expr.constant > rhs + 1e-9 * max(1.0, abs(rhs)):
            prob += pulp.LpAffineExpression() + _infeasible(prob) >= 1, name
        return
    prob += expr <= rhs, name


def _infeasible(prob: pulp.LpProblem) -> pulp.LpVariable:
    """A variable fixed to 0, for a row that can never hold (so the model is infeasible)."""
    var = prob.variablesDict().get("never")
    if var is None:
        var = prob.add_variable("never", lowBound=0, upBound=0)
    return var


def _unit_scale(expr: pulp.LpAffineExpression) -> float:
    """A factor that brings an objective's largest coefficient to 1: the solver's absolute
    tolerances (about 1e-6) then stay relative, so a layout a micro-dollar dearer than the
    optimum is not taken for it."""
    largest = max((abs(c) for c in expr.values()), default=0.0)
    return 1.0 / largest if largest > 0 else 1.0
