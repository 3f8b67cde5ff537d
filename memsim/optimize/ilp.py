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
                resident_budget: int | None = None, capacity_slack: bool = False
                ) -> PlacementModel:
    """The placement ILP; with `capacity_slack`, capacities may be exceeded at a cost
    (minimising the excess) so an infeasible instance says where room is missing.

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
    elif tables.fetch == "parallel":
        n = tables.scenarios
        objective = []
        for j, (w, _kept) in enumerate(patterns):
            if w <= 0:
                continue
            z = [_variable(prob, f"z_{j}_{q}", low=0) for q in range(n)]
            for q in range(n):
                for t in tiers:
                    prob += z[q] >= pulp.lpSum(
                        float(tables.times[t][s][q] * MS) * y[j, t, s] for s in subsets if s
                    ), f"epigraph_{j}_{q}_{t}"
            objective.append(pulp.lpSum(z) * (w / n))
        prob += pulp.lpSum(objective)
    else:
        prob += pulp.lpSum(
            w * float(tables.times[t][s].mean() * MS) * y[j, t, s]
            for j, (w, _kept) in enumerate(patterns) if w > 0
            for t in tiers for s in subsets if s
        )
    return PlacementModel(problem=prob, x=x, r=r, slack=slack, unit=unit, y=y,
                          patterns=patterns)


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
