"""Level placement: choose the tier of every level (and what stays resident) by the ILP."""


from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from memsim.bank import Bank
from memsim.errors import InfeasibleError, InputError, SolverError
from memsim.estimate import DEFAULT_SAMPLES, Estimate, estimate
from memsim.layout import FetchMode, Layout
from memsim.limits import MAX_SCENARIOS, check_at_most
from memsim.optimize.diagnose import precheck, shortfall_message
from memsim.optimize.greedy import greedy_placement
from memsim.optimize.ilp import PlacementModel, build_model, prefer_faster_tiers
from memsim.optimize.solver import SolverName, solve
from memsim.optimize.tables import CostTables, build_tables
from memsim.popularity import switch_probabilities
from memsim.profile import Profile
from memsim.workload import Workload

DEFAULT_SCENARIOS = 64


@dataclass
class OptimizeResult:
    """The chosen layout, how the solve went, and the greedy baseline beside it."""

    layout: Layout
    status: str
    solver: str
    objective_s: float
    bound_s: float | None
    gap: float | None
    solve_time_s: float
    scenarios: int
    baseline_s: float | None
    baseline: Layout | None
    estimate: Estimate
    # P(switch) of each resident level of the layout (1 without a workload) and the fetch
    # time if every resident block were current (the paper's assumption; None: no resident).
    switch_probability: dict[int, float] = field(default_factory=dict)
    current_s: float | None = None
    chosen: str = "ilp"  # ilp, or greedy when the solver stopped early with nothing better
    workload: str | None = None

    @property
    def fetch_time_s(self) -> dict[str, float]:
        """The chosen layout's fetch time (mean, p50, p95, p99; seconds) by the estimator,
        under the optimizer's own assumption about resident levels: mixed by the workload's
        switch rate, or every resident level switching when there was no workload."""
        est = self.estimate
        if self.workload is None and est.switch_fetch_time_s is not None:
            return est.switch_fetch_time_s
        return est.fetch_time_s

    @property
    def mean_s(self) -> float:
        """The mean of `fetch_time_s` (seconds); `objective_s` is the model's own value."""
        return self.fetch_time_s["mean"]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "solver": self.solver,
            "chosen": self.chosen,
            "fetch": self.layout.fetch,
            "objective_s": self.objective_s,
            "current_s": self.current_s,
            "switch_probability": {str(d): v for d, v in self.switch_probability.items()},
            "workload": self.workload,
            "bound_s": self.bound_s,
            "gap": self.gap,
            "solve_time_s": self.solve_time_s,
            "scenarios": self.scenarios,
            "placement": {str(d): t for d, t in sorted(self.layout.placement.items())},
            "resident": sorted(self.layout.resident),
            "baseline_s": self.baseline_s,
            "baseline_placement": (
                {str(d): t for d, t in sorted(self.baseline.placement.items())}
                if self.baseline else None),
            "fetch_time_s": self.fetch_time_s,
        }


def _tie_break(model: PlacementModel, tables: CostTables, optimum_ms: float,
               placement: dict[int, str], resident: set[int], solver: SolverName,
               time_limit: float | None) -> tuple[dict[int, str], set[int]]:
    """Among optimal layouts pick the one with the least summed tier time (deterministic
    what-if sweeps); keep the first answer if the second stage is not exactly as good."""
    prefer_faster_tiers(model, tables, optimum_ms)
    second = solve(model.problem, solver, time_limit, 0.0)
    if second.status != "optimal":
        return placement, resident
    new_placement, new_resident = model.placement()
    if set(new_placement) != set(placement):
        return placement, resident
    if tables.evaluate(new_placement, new_resident) <= tables.evaluate(placement, resident):
        return new_placement, new_resident
    return placement, resident


def _check_solution(layout: Layout, bank: Bank, profile: Profile, budget: int | None) -> None:
    """Exact byte check of the solver's answer (it works with float tolerances)."""
    if set(layout.placement) != {lv.depth for lv in bank.active_levels}:
        raise SolverError("the solver left a level unplaced")
    problems = layout.overfilled(bank, profile)
    if budget is not None and sum(bank.level(d).block_bytes for d in layout.resident) > budget:
        problems.append("the resident blocks exceed the resident budget")
    if problems:
        raise SolverError("the solver's answer breaks a constraint by a rounding margin ("
                          + "; ".join(problems) + "); leave a little headroom in capacities")


def resident_switch(bank: Bank, resident_levels: Sequence[int], workload: Workload | None
                    ) -> dict[int, float]:
    """P(a query needs another block than the current one) per level that may be resident:
    from the workload's locality and routing, or 1 (every query switches) without one."""
    depths = sorted(set(resident_levels))
    if workload is None:
        return {d: 1.0 for d in depths}
    return switch_probabilities(bank, workload, depths)


def optimize(
    profile: Profile,
    bank: Bank,
    *,
    fetch: FetchMode = "parallel",
    resident_levels: Sequence[int] = (),
    resident_budget: int | None = None,
    solver: SolverName = "auto",
    time_limit: float | None = None,
    gap: float = 0.0,
    scenarios: int = DEFAULT_SCENARIOS,
    seed: int = 0,
    samples: int = DEFAULT_SAMPLES,
    name: str = "",
    workload: Workload | None = None,
) -> OptimizeResult:
    """The level placement with the least expected fetch time, under capacity constraints.

    `resident_levels` may stay resident in RAM (levels that consecutive queries share), within
    `resident_budget` bytes if given, always within the RAM tier's capacity. A resident level
    is free only while queries keep its current block: `workload`'s locality and routing give
    how often they switch (without a workload, every query is taken to switch, so the level's
    tier still matters), and the objective is the expectation over the switches. With latency
    distributions, the objective is the mean over `scenarios` seeded draws; the chosen layout
    is then estimated with `samples` fresh draws (mixing the switches when `workload` is
    given). With `time_limit`, a solve that stops early returns the best layout found (the
    solver's or the greedy baseline's) with status `time_limit`.
    """
    check_at_most(scenarios, MAX_SCENARIOS, "scenarios", field="scenarios")
    if scenarios < 1:
        raise InputError(f"scenarios must be at least 1, got {scenarios}", field="scenarios")
    if resident_budget is not None and resident_budget < 0:
        raise InputError("the resident budget must not be negative", field="resident-budget")
    if time_limit is not None and not (time_limit > 0 and math.isfinite(time_limit)):
        raise InputError(f"time limit must be a positive number of seconds, got {time_limit}",
                         field="time-limit")
    if not (gap >= 0 and math.isfinite(gap)):
        raise InputError(f"gap must be a finite number >= 0, got {gap}", field="gap")
    active = [lv.depth for lv in bank.active_levels]
    for depth in resident_levels:
        if depth not in active:
            raise InputError(f"resident level {depth} is not a non-empty level of bank "
                             f"'{bank.name}' (levels {', '.join(map(str, active))})",
                             field="resident")
    precheck(profile, bank)
    switch = resident_switch(bank, resident_levels, workload)
    tables = build_tables(profile, bank, fetch, scenarios, seed, switch)
    model = build_model(tables, resident_levels, resident_budget)
    outcome = solve(model.problem, solver, time_limit, gap)
    if outcome.status == "infeasible":
        slack_model = build_model(tables, resident_levels, resident_budget,
                                  capacity_slack=True)
        slack_outcome = solve(slack_model.problem, solver, time_limit, gap)
        slack = {}
        if slack_outcome.status in ("optimal", "time_limit"):
            slack = {t: (v.value() or 0.0) * slack_model.unit
                     for t, v in slack_model.slack.items()}
        raise InfeasibleError(shortfall_message(profile, bank, slack), file=profile.file,
                              field="tiers")
    greedy = greedy_placement(tables, resident_levels, resident_budget)
    placement: dict[int, str] = {}
    resident: set[int] = set()
    if outcome.status in ("optimal", "time_limit") and outcome.objective is not None:
        placement, resident = model.placement()
    complete = set(placement) == set(active)
    chosen = "ilp"
    if outcome.status == "time_limit" and greedy is not None and (
            not complete or tables.evaluate(*greedy) < tables.evaluate(placement, resident)):
        placement, resident = dict(greedy[0]), set(greedy[1])  # the best found in time
        chosen = "greedy"
    elif not complete:
        if outcome.status == "time_limit":
            raise SolverError(f"{outcome.solver} found no placement within --time-limit "
                              f"{time_limit:g} s (and the greedy baseline found none either); "
                              "raise --time-limit")
        raise SolverError(
            f"{outcome.solver} found no placement ({outcome.status}"
            + (f", time limit {time_limit:g} s" if time_limit else "") + ")")
    if outcome.status == "optimal":
        placement, resident = _tie_break(model, tables, outcome.objective, placement, resident,
                                         solver, time_limit)
    layout = Layout(
        name=name, bank=bank.name, profile=profile.name, fetch=fetch,
        placement=dict(sorted(placement.items())), resident=sorted(resident),
        description="chosen by memsim optimize",
    )
    _check_solution(layout, bank, profile, resident_budget)
    objective_s = tables.evaluate(placement, resident)
    baseline = baseline_s = None
    if greedy is not None:
        g_place, g_res = greedy
        baseline_s = tables.evaluate(g_place, g_res)
        baseline = Layout(name="greedy", bank=bank.name, profile=profile.name, fetch=fetch,
                          placement=dict(sorted(g_place.items())), resident=sorted(g_res))
    bound_s = outcome.bound / 1e3 if outcome.bound is not None else None
    current_s = tables.evaluate_current(placement, resident) if resident else None
    return OptimizeResult(
        layout=layout, status=outcome.status, solver=outcome.solver, objective_s=objective_s,
        bound_s=bound_s, gap=outcome.gap, solve_time_s=outcome.seconds,
        scenarios=tables.scenarios, baseline_s=baseline_s, baseline=baseline,
        estimate=estimate(profile, bank, layout, samples=samples, seed=seed,
                          workload=workload),
        switch_probability={d: switch[d] for d in sorted(resident)} if resident else {},
        current_s=current_s, chosen=chosen, workload=workload.name if workload else None,
    )
