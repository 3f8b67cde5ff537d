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
from memsim.optimize.goal import Goal, Objective
from memsim.optimize.greedy import greedy_placement
from memsim.optimize.ilp import PlacementModel, build_model, prefer_faster_tiers
from memsim.optimize.load import LoadTables, ModelFigures, build_load, evaluate
from memsim.optimize.solver import SolverName, solve
from memsim.optimize.tables import CostTables, build_tables
from memsim.popularity import switch_probabilities
from memsim.profile import Profile
from memsim.units import format_time
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
    goal: Goal | None = None  # what was asked (None: least mean fetch time, idle)
    # the level model's figures of the chosen layout under the goal's load (None: idle)
    figures: ModelFigures | None = None
    baseline_figures: ModelFigures | None = None

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
            "goal": goal_json(self.goal),
            "model": self.figures.to_json() if self.figures is not None else None,
            "baseline_model": (self.baseline_figures.to_json()
                               if self.baseline_figures is not None else None),
        }


def goal_json(goal: Goal | None) -> dict[str, Any] | None:
    """The goal as plain data for --json output."""
    if goal is None:
        return None
    return {"minimize": goal.minimize, "objective": str(goal.objective),
            "slo": [str(s) for s in goal.slos], "budget_usd_month": goal.budget_usd_month,
            "energy_budget_j": goal.energy_budget_j, "rate": goal.rate,
            "max_utilization": goal.max_utilization,
            "tier_ceilings": dict(goal.tier_ceilings) or None}


def _tie_break(model: PlacementModel, tables: CostTables, optimum_ms: float,
               placement: dict[int, str], resident: set[int], solver: SolverName,
               time_limit: float | None, load: LoadTables | None = None
               ) -> tuple[dict[int, str], set[int]]:
    """Among optimal layouts pick the one with the least summed tier time (deterministic
    what-if sweeps); keep the first answer if the second stage is not exactly as good."""
    prefer_faster_tiers(model, tables, optimum_ms)
    second = solve(model.problem, solver, time_limit, 0.0)
    if second.status != "optimal":
        return placement, resident
    new_placement, new_resident = model.placement()
    if set(new_placement) != set(placement):
        return placement, resident
    if load is not None:
        new = evaluate(tables, load, new_placement, new_resident)
        if not _meets(tables, load, new_placement, new_resident, new) or _score(
                tables, load, new_placement, new_resident, new) > _score(
                tables, load, placement, resident) * (1 + 1e-9):
            return placement, resident
        return new_placement, new_resident
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
    goal: Goal | None = None,
) -> OptimizeResult:
    """The level placement with the least expected fetch time, under capacity constraints.

    `goal` asks for more (see `Goal`): a percentile or CVaR instead of the mean, SLOs, least
    cost or energy, budgets, and above all the load: with a rate, every tier's utilisation
    stays under its ceiling and its queueing delay is part of every fetch time (`load.py`).

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
    if goal is not None and goal.idle:
        goal = None
    if goal is not None and goal.loaded:
        tables = tables.repeated(scenarios)
    load = build_load(tables, goal, seed) if goal is not None else None
    model = build_model(tables, resident_levels, resident_budget, load=load)
    outcome = solve(model.problem, solver, time_limit, gap)
    if outcome.status == "infeasible" and load is not None and solve(build_model(
            tables, resident_levels, resident_budget).problem, solver, time_limit,
            gap).status != "infeasible":
        raise InfeasibleError(_goal_shortfall(tables, load, resident_levels, resident_budget,
                                              solver, time_limit, gap, seed),
                              field=_goal_field(load.goal))
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
    greedy_figures = (evaluate(tables, load, *greedy) if greedy is not None and load is not None
                      else None)
    if greedy_figures is not None and not _meets(tables, load, *greedy, greedy_figures):
        greedy = greedy_figures = None  # it breaks the goal: no baseline to fall back on
    placement: dict[int, str] = {}
    resident: set[int] = set()
    if outcome.status in ("optimal", "time_limit") and outcome.objective is not None:
        placement, resident = model.placement()
    complete = set(placement) == set(active)
    chosen = "ilp"
    if outcome.status == "time_limit" and greedy is not None and (
            not complete or _score(tables, load, *greedy, greedy_figures) < _score(
                tables, load, placement, resident)):
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
                                         solver, time_limit, load)
    layout = Layout(
        name=name, bank=bank.name, profile=profile.name, fetch=fetch,
        placement=dict(sorted(placement.items())), resident=sorted(resident),
        description="chosen by memsim optimize",
    )
    _check_solution(layout, bank, profile, resident_budget)
    figures = evaluate(tables, load, placement, resident) if load is not None else None
    if figures is not None and not _meets(tables, load, placement, resident, figures):
        raise SolverError("the solver's answer breaks the goal's load, SLO or budget rows by "
                          "a rounding margin; loosen a target slightly")
    objective_s = figures.mean_s if figures is not None else tables.evaluate(placement,
                                                                             resident)
    baseline = baseline_s = None
    baseline_figures = None
    if greedy is not None:
        g_place, g_res = greedy
        if greedy_figures is not None:  # under a goal: the model's figures, evaluated above
            baseline_figures = greedy_figures
            baseline_s = greedy_figures.mean_s
        else:
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
        goal=goal, figures=figures, baseline_figures=baseline_figures,
    )


def _score(tables: CostTables, load: LoadTables | None, placement: dict[int, str],
           resident: set[int], figures: ModelFigures | None = None) -> float:
    """What the model minimises, for one layout (to compare a fallback with the solver's);
    `figures`, when given, are that layout's `evaluate`."""
    if load is None:
        return tables.evaluate(placement, resident)
    figures = figures if figures is not None else evaluate(tables, load, placement, resident)
    goal = load.goal
    if goal.minimize == "cost":
        return figures.cost_usd_month
    if goal.minimize == "energy":
        return figures.energy_j_per_query
    return figures.stat(goal.objective, load.exact_quantiles)


TOLERANCE = 1e-6


def _meets(tables: CostTables, load: LoadTables, placement: dict[int, str], resident: set[int],
           figures: ModelFigures | None = None) -> bool:
    """Whether a layout keeps the goal's ceilings, SLOs and budgets under the model."""
    f = figures if figures is not None else evaluate(tables, load, placement, resident)
    goal = load.goal
    for t, rho in f.utilization.items():
        if rho > load.ceiling(t) * (1 + TOLERANCE):
            return False
    for slo in goal.slos:
        if slo.level is None:
            value = f.mean_s
        elif load.exact_quantiles:
            value = f.stat(Objective(kind="quantile", level=slo.level))
        else:
            value = f.stat(Objective(kind="cvar", level=slo.level))
        if value > slo.limit_s * (1 + TOLERANCE) + 1e-9:
            return False
    if goal.budget_usd_month is not None and f.cost_usd_month > (
            goal.budget_usd_month * (1 + TOLERANCE) + 1e-9):
        return False
    if goal.energy_budget_j is not None and f.energy_j_per_query > (
            goal.energy_budget_j * (1 + TOLERANCE) + 1e-12):
        return False
    return not any(all(placement.get(d) == t for d, t in cut) for cut in goal.cuts)


def _goal_field(goal: Goal) -> str:
    if goal.slos:
        return "slo"
    if goal.budget_usd_month is not None:
        return "budget"
    if goal.energy_budget_j is not None:
        return "energy-budget"
    return "max-utilization" if goal.loaded else "slo"


def _goal_shortfall(tables: CostTables, load: LoadTables, resident_levels: Sequence[int],
                    resident_budget: int | None, solver: SolverName, time_limit: float | None,
                    gap: float, seed: int = 0) -> str:
    """Why no layout meets the goal: the rate no layout carries (naming the tier that
    saturates and the load at which it does), or the best any layout reaches on the target
    that cannot be met."""
    goal = load.goal
    rate = load.rate
    if goal.loaded:
        least = _least_loaded(tables, load, resident_levels, resident_budget, solver,
                              time_limit, gap)
        if least is not None and least[1] > 1 + TOLERANCE:
            worst, ratio = least
            busy = ratio * load.ceiling(worst)
            why = f" ({goal.rate_note})" if goal.rate_note else ""
            return (f"no layout carries {rate:.4g} queries/s{why} with every tier at or below "
                    f"utilisation {load.ceiling(worst):g}: even the least-loaded layout asks "
                    f"tier '{worst}' for {busy:.2f}, so '{worst}' saturates (reaches the "
                    f"ceiling) at {rate / ratio:.3g} queries/s and is fully busy at "
                    f"{rate / busy:.3g} queries/s; lower the rate, raise --max-utilization, "
                    "or give the bank faster tiers")
    if goal.cuts:
        return ("every layout the model allows was excluded after missing the target in "
                "simulation")
    relaxed = goal.with_changes(slos=(), budget_usd_month=None, energy_budget_j=None,
                                minimize="time")
    reasons = []
    for slo in goal.slos:
        kind = "mean" if slo.level is None else (
            "quantile" if load.exact_quantiles else "cvar")
        best = _best(tables, relaxed.with_changes(objective=Objective(
            kind=kind, level=slo.level or 0.0)), resident_levels, resident_budget, solver,
            time_limit, gap, seed)
        if best is not None and best > slo.limit_s * (1 + TOLERANCE):
            how = "" if kind != "cvar" else " (bounded by its CVaR)"
            reasons.append(f"no layout meets {slo}{how}: the best any layout reaches is "
                           f"{format_time(best)}")
    at = f" at {rate:g} queries/s" if rate else ""
    if goal.budget_usd_month is not None:
        cheapest = _best(tables, relaxed.with_changes(minimize="cost", slos=goal.slos),
                         resident_levels, resident_budget, solver, time_limit, gap, seed)
        if cheapest is not None and cheapest > goal.budget_usd_month:
            reasons.append(f"the cheapest layout meeting the targets costs "
                           f"${cheapest:.4g}/month, over the ${goal.budget_usd_month:g} budget")
    if goal.energy_budget_j is not None:
        frugal = _best(tables, relaxed.with_changes(minimize="energy", slos=goal.slos),
                       resident_levels, resident_budget, solver, time_limit, gap, seed)
        if frugal is not None and frugal > goal.energy_budget_j:
            reasons.append(f"the most frugal layout meeting the targets uses "
                           f"{frugal * 1e3:.4g} mJ per query, over the "
                           f"{goal.energy_budget_j * 1e3:.4g} mJ budget")
    if not reasons:
        reasons.append("the targets cannot all be met together")
    return "; ".join(reasons) + at


def _best(tables: CostTables, goal: Goal, resident_levels: Sequence[int],
          resident_budget: int | None, solver: SolverName, time_limit: float | None,
          gap: float, seed: int = 0) -> float | None:
    """The optimum of `goal`'s objective (seconds, dollars or joules), None if none found."""
    load = build_load(tables, goal, seed)
    model = build_model(tables, resident_levels, resident_budget, load=load)
    if solve(model.problem, solver, time_limit, gap).status not in ("optimal", "time_limit"):
        return None
    placement, resident = model.placement()
    return _score(tables, load, placement, resident)


BURST_QUERIES = 10.0  # a burst (or schedule step) holding this many queries is judged alone


@dataclass(frozen=True)
class PlanningLoad:
    """The rate a layout must carry for a workload, the variability of its arrivals, and
    why that rate (for reports)."""

    rate: float
    arrival_scv: float
    note: str = ""


def planning_load(profile: Profile, bank: Bank, workload: Workload,
                  fetch: FetchMode = "parallel", max_utilization: float = 0.8
                  ) -> PlanningLoad:
    """What the load model plans for under `workload`.

    Poisson: its rate. On/off and schedules: when a burst (a step) holds many queries
    (BURST_QUERIES), queues settle within it, so the layout must carry the burst's own rate
    (Poisson within it); shorter bursts count through their long-run mean and the on/off
    process's interarrival variability. A closed loop never overloads a tier, it slows
    down: its rate is its clients over (mean think time + the idle-optimal fetch time), at
    most what the least-loaded layout carries at `max_utilization`.
    """
    from memsim.queueing import arrival_scv
    from memsim.workload import OnOffArrivals, ScheduleArrivals

    arrivals = workload.arrivals
    if isinstance(arrivals, OnOffArrivals):
        mean = float(arrivals.mean_rate())
        if arrivals.rate_on * arrivals.mean_on >= BURST_QUERIES:
            return PlanningLoad(float(arrivals.rate_on), 1.0,
                                f"the bursts of {workload.name}; long-run mean {mean:.3g}/s")
        return PlanningLoad(mean, arrival_scv(workload))
    if isinstance(arrivals, ScheduleArrivals):
        long = [st.rate for st in arrivals.steps if st.rate * st.duration >= BURST_QUERIES]
        mean = float(arrivals.mean_rate())
        if long and max(long) > mean:
            return PlanningLoad(float(max(long)), 1.0, f"the busiest step of {workload.name} "
                                f"; long-run mean {mean:.3g}/s")
        return PlanningLoad(mean, 1.0)
    if workload.open_loop:
        return PlanningLoad(float(arrivals.mean_rate()), arrival_scv(workload))
    think = float(arrivals.think_time.mean())  # type: ignore[union-attr]
    clients = float(arrivals.clients)  # type: ignore[union-attr]
    fetch_s = optimize(profile, bank, fetch=fetch, samples=1000, scenarios=16).objective_s
    nominal = clients / max(think + fetch_s, 1e-9)
    most = carrying_capacity(profile, bank, fetch, max_utilization)
    if most < nominal:
        return PlanningLoad(most, 1.0, f"what the least-loaded layout carries: the closed loop "
                            f"{workload.name} would ask {nominal:.3g}/s of an idle machine and "
                            "slows down to what the storage serves")
    return PlanningLoad(nominal, 1.0, f"{workload.name}'s clients over think plus fetch time")


def workload_rate(profile: Profile, bank: Bank, workload: Workload, fetch: FetchMode = "parallel"
                  ) -> float:
    """Queries per second the load model plans for under `workload` (`planning_load`)."""
    return planning_load(profile, bank, workload, fetch).rate


def carrying_capacity(profile: Profile, bank: Bank, fetch: FetchMode = "parallel",
                      max_utilization: float = 0.8) -> float:
    """The highest rate (queries/s) some layout carries with every tier at or below
    `max_utilization` (inf when no level is fetched from a tier with finite capacity)."""
    tables = build_tables(profile, bank, fetch, 1, 0)
    load = build_load(tables, Goal(rate=1.0, max_utilization=max_utilization))
    least = _least_loaded(tables, load, (), None, "auto", None, 0.0)
    if least is None:
        raise InfeasibleError("no layout fits the tiers", file=profile.file, field="tiers")
    return 1.0 / least[1] if least[1] > 0 else float("inf")


def _least_loaded(tables: CostTables, load: LoadTables, resident_levels: Sequence[int],
                  resident_budget: int | None, solver: SolverName, time_limit: float | None,
                  gap: float) -> tuple[str, float] | None:
    """The layout whose busiest tier, as a fraction of its ceiling at the load's rate, is
    least: that tier and that fraction (None when no layout fits; fraction 0 when no tier
    is read)."""
    peak = build_model(tables, resident_levels, resident_budget, load=load, peak_load=True)
    if solve(peak.problem, solver, time_limit, gap).status != "optimal" or peak.peak is None:
        return None
    placement, resident = peak.placement()
    used = evaluate(tables, load, placement, resident).utilization
    if not used:
        return "", 0.0
    worst = max(used, key=lambda t: used[t] / load.ceiling(t))
    return worst, used[worst] / load.ceiling(worst)
