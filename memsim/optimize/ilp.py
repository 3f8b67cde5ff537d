"""Level placement as an integer program (PuLP).

Variables: x[l,t] = 1 if level l is stored on tier t; r[l] = 1 if level l is resident in RAM;
y[t,S] = 1 if S is the set of levels tier t serves per query (its non-resident levels).
Each tier picks exactly one subset, whose time comes from the cost tables, so queueing and
bandwidth sharing inside a tier are modelled exactly. The parallel objective is the mean over
scenarios of an epigraph variable z_q >= time of every tier in scenario q; the sequential one
is the sum of the tiers' mean times. Capacities count level banks, the anchor and resident
blocks in RAM; only the levels the caller names may be resident (those that consecutive
queries share), within an optional budget. Bytes are counted in units of the smallest block
(coefficients >= 1, so the solver's tolerance stays far below one block) and times in ms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulp

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
    y: dict[tuple[str, Subset], pulp.LpVariable]

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


def build_model(tables: CostTables, resident_levels: Sequence[int] = (),
                resident_budget: int | None = None, capacity_slack: bool = False
                ) -> PlacementModel:
    """The placement ILP; with `capacity_slack`, capacities may be exceeded at a cost
    (minimising the excess) so an infeasible instance says where room is missing."""
    profile, bank = tables.profile, tables.bank
    tiers = [t.name for t in profile.tiers]
    levels = bank.active_levels
    depths = [lv.depth for lv in levels]
    ram = profile.ram
    prob = pulp.LpProblem("memsim_level_placement", pulp.LpMinimize)
    x = {(d, t): _variable(prob, f"x_{d}_{t}", cat="Binary") for d in depths for t in tiers}
    candidates = [d for d in depths if d in set(resident_levels)] if ram is not None else []
    r = {d: _variable(prob, f"r_{d}", cat="Binary") for d in candidates}
    subsets = tables.subsets()
    y = {(t, s): _variable(prob, f"y_{t}_{'_'.join(map(str, s)) or 'none'}", cat="Binary")
         for t in tiers for s in subsets}

    for d in depths:
        prob += pulp.lpSum(x[d, t] for t in tiers) == 1, f"place_{d}"
    for t in tiers:
        prob += pulp.lpSum(y[t, s] for s in subsets) == 1, f"one_subset_{t}"
        for d in depths:
            chosen = pulp.lpSum(y[t, s] for s in subsets if d in s)
            if d in r:
                # chosen = x AND NOT r, linearised
                prob += chosen <= x[d, t], f"fetch_le_x_{d}_{t}"
                prob += chosen <= 1 - r[d], f"fetch_le_notr_{d}_{t}"
                prob += chosen >= x[d, t] - r[d], f"fetch_ge_{d}_{t}"
            else:
                prob += chosen == x[d, t], f"fetch_{d}_{t}"

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
        z = [_variable(prob, f"z_{q}", low=0) for q in range(n)]
        for q in range(n):
            for t in tiers:
                prob += z[q] >= pulp.lpSum(
                    float(tables.times[t][s][q] * MS) * y[t, s] for s in subsets if s
                ), f"epigraph_{q}_{t}"
        prob += pulp.lpSum(z) * (1.0 / n)
    else:
        prob += pulp.lpSum(
            float(tables.times[t][s].mean() * MS) * y[t, s] for t in tiers for s in subsets if s
        )
    return PlacementModel(problem=prob, x=x, r=r, slack=slack, unit=unit, y=y)


def prefer_faster_tiers(model: PlacementModel, tables: CostTables, optimum_ms: float) -> None:
    """Turn `model` into the tie-break stage: keep the optimum, then minimise the tiers' summed
    busy time, so equally fast layouts resolve the same way (each level on its faster tier)."""
    prob = model.problem
    slack = max(abs(optimum_ms) * 1e-9, 1e-9)
    prob += prob.objective <= optimum_ms + slack, "keep_optimum"
    prob.setObjective(pulp.lpSum(
        float(tables.times[t][s].mean() * MS) * var for (t, s), var in model.y.items() if s))
