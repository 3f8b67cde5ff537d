"""Layout optimizer: choose the tier of every level to minimise the expected fetch time.

The pieces are separate, as in FlexGen: the policy is a plain `Layout`; `tables` evaluates
policies with the shared cost model; `ilp` states the integer program; `solver` runs it;
`greedy` gives the baseline it must beat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from memsim.bank import Bank
from memsim.errors import InfeasibleError, InputError, MemsimError, SolverError
from memsim.estimate import DEFAULT_SAMPLES, Estimate, estimate
from memsim.layout import FetchMode, Layout, SubtreeRef
from memsim.limits import MAX_BUCKET_CELLS, MAX_BUCKETS, MAX_SCENARIOS, check_at_most
from memsim.optimize.buckets import (
    BucketProblem,
    Policy,
    build_problem,
    choose_chunking,
    exact_masses,
    greedy_counts,
    solve_buckets,
    to_block_map,
)
from memsim.optimize.diagnose import precheck, shortfall_message, subtree_bytes
from memsim.optimize.greedy import greedy_placement
from memsim.optimize.ilp import PlacementModel, build_model, prefer_faster_tiers
from memsim.optimize.solver import SolverName, solve
from memsim.optimize.tables import CostTables, build_tables
from memsim.popularity import block_popularity, switch_probabilities
from memsim.profile import Profile
from memsim.workload import Workload

__all__ = ["OptimizeResult", "optimize", "greedy_placement", "build_tables", "CostTables",
           "resident_switch",
           "BlockOptimizeResult", "optimize_blocks", "Policy"]

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


@dataclass
class BlockOptimizeResult:
    """A block-granularity placement: the layout (with its block map) and how it was found."""

    layout: Layout
    status: str
    solver: str
    objective_s: float  # the model's objective on the concrete blocks (see buckets.py)
    level_objective_s: float | None  # the level placement, under the same model
    baseline_s: float | None  # greedy, under the same model
    monthly_cost_usd: float
    solve_time_s: float
    solves: int
    buckets: int
    tier_blocks: dict[int, dict[str, int]]
    estimate: Estimate | None = None
    bound_s: float | None = None  # the solver's dual bound on the winning model
    gap: float | None = None
    chosen: str = "bucket"  # bucket, greedy or level: the fastest by the estimator
    model_objective_s: float | None = None  # the bucket ILP's own optimum
    candidates_s: dict[str, float] | None = None  # estimator mean of each candidate

    @property
    def fetch_time_s(self) -> dict[str, float] | None:
        """The chosen layout's fetch time by the estimator (None without verify_estimate)."""
        return self.estimate.fetch_time_s if self.estimate is not None else None

    @property
    def mean_s(self) -> float | None:
        """The mean of `fetch_time_s` (seconds); `objective_s` is the bucket model's value."""
        f = self.fetch_time_s
        return f["mean"] if f is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "granularity": "bucket", "status": self.status, "solver": self.solver,
            "fetch": self.layout.fetch, "objective_s": self.objective_s,
            "level_objective_s": self.level_objective_s, "baseline_s": self.baseline_s,
            "monthly_cost_usd": self.monthly_cost_usd, "solve_time_s": self.solve_time_s,
            "solves": self.solves, "buckets": self.buckets, "chosen": self.chosen,
            "bound_s": self.bound_s, "gap": self.gap,
            "model_objective_s": self.model_objective_s, "candidates_s": self.candidates_s,
            "placement": {str(d): t for d, t in sorted(self.layout.placement.items())},
            "tier_blocks": {str(d): v for d, v in self.tier_blocks.items()},
            "fetch_time_s": self.fetch_time_s,
        }


def optimize_blocks(
    profile: Profile,
    bank: Bank,
    workload: Workload,
    *,
    fetch: FetchMode = "parallel",
    buckets: int = 64,
    policy: Policy | None = None,
    solver: SolverName = "auto",
    time_limit: float | None = None,
    gap: float = 0.0,
    seed: int = 0,
    samples: int = DEFAULT_SAMPLES,
    name: str = "",
    verify_estimate: bool = True,
) -> BlockOptimizeResult:
    """Place blocks by popularity: the hottest blocks of each level on its fastest tiers.

    Popularity comes from the workload's routing. Blocks are grouped into `buckets` per level
    (per privacy class); the ILP counts how many of each bucket go to each tier, under
    capacity, an optional dollar budget, privacy (private subtrees only on listed tiers) and
    blocked subtrees (never placed nor fetched).
    """
    check_at_most(buckets, MAX_BUCKETS, "buckets per level", field="buckets")
    check_at_most(buckets * len(bank.active_levels) * len(profile.tiers), MAX_BUCKET_CELLS,
                  "buckets x levels x tiers of the bucket ILP", field="buckets")
    if buckets < 1:
        raise InputError(f"buckets must be at least 1, got {buckets}", field="buckets")
    policy = replace(policy) if policy is not None else Policy()  # never change the caller's
    if policy.rate == 0.0 and workload.open_loop:
        policy.rate = workload.arrivals.mean_rate()
    precheck(profile, bank, whole_levels=False,
             excluded_bytes=subtree_bytes(bank, policy.blocked))
    popularity = {lv.depth: block_popularity(bank, workload.routing, lv.depth)
                  for lv in bank.active_levels}
    problem = build_problem(profile, bank, fetch, popularity, buckets, policy)
    solution = solve_buckets(problem, solver, time_limit, gap)
    _check_bucket_solution(problem, solution.counts)
    blocked_refs = [SubtreeRef(level=t.depth, block=t.block) for t in policy.blocked]

    maps = {"bucket": to_block_map(problem, solution.counts)}  # the costly step: once each

    def as_layout(key: str, how: str) -> Layout:
        placement, block_map, _masses = maps[key]
        return Layout(name=name, bank=bank.name, profile=profile.name, fetch=fetch,
                      placement=dict(sorted(placement.items())), resident=[],
                      blocked=blocked_refs, description=how).with_block_map(
            block_map if block_map.ids else None)

    candidates: dict[str, tuple[Layout, np.ndarray | None]] = {
        "bucket": (as_layout("bucket", f"chosen by memsim optimize --granularity bucket "
                                       f"({buckets} buckets per level)"), solution.counts)}
    greedy = greedy_counts(problem)
    baseline_s = None
    if greedy is not None:
        baseline_s = problem.bound(exact_masses(problem, greedy))
        if verify_estimate:  # a layout only to estimate it
            maps["greedy"] = to_block_map(problem, greedy)
            candidates["greedy"] = (as_layout("greedy", "greedy block placement"), greedy)
    level_s, level_layout = _level_under_bucket_model(problem, profile, bank, fetch, policy,
                                                      solver)
    if level_layout is not None:
        candidates["level"] = (level_layout, None)
    # The bound cannot see two levels of one query sharing a tier. With the estimator at
    # hand, keep whichever candidate really fetches fastest (the ILP's in a tie).
    chosen = "bucket"
    estimates: dict[str, Estimate] = {}
    if verify_estimate:
        for key, (lay, _c) in candidates.items():
            estimates[key] = estimate(profile, bank, lay, samples=samples, seed=seed,
                                      workload=workload)
        chosen = min(estimates, key=lambda k: (estimates[k].mean_s, k != "bucket"))
    layout, counts = candidates[chosen]
    if counts is None:  # the level layout: a whole level per tier, every block on it
        names = profile.tier_names
        masses = {d: np.eye(len(names))[names.index(t)] for d, t in layout.placement.items()}
        cost = None
    else:
        masses = maps[chosen][2]
        cost = problem.monthly_cost(counts)
    tier_blocks = layout.tier_counts(bank, profile)
    layout.chunking = choose_chunking(profile, tier_blocks)
    return BlockOptimizeResult(
        layout=layout, status=solution.outcome.status, solver=solution.outcome.solver,
        objective_s=problem.bound(masses), level_objective_s=level_s, baseline_s=baseline_s,
        monthly_cost_usd=cost if cost is not None else problem.monthly_cost(solution.counts),
        solve_time_s=solution.seconds, solves=solution.solves,
        buckets=len(problem.items), tier_blocks=tier_blocks, estimate=estimates.get(chosen),
        chosen=chosen, model_objective_s=solution.objective_s,
        bound_s=solution.outcome.bound / 1e3 if solution.outcome.bound is not None else None,
        gap=solution.outcome.gap,
        candidates_s={k: e.mean_s for k, e in estimates.items()},
    )


def _check_bucket_solution(problem: BucketProblem, counts: np.ndarray) -> None:
    """Exact byte and dollar checks of the solver's answer (it works with tolerances)."""
    used = problem.used_bytes(counts)
    ram = problem.profile.ram
    for t, tier in enumerate(problem.profile.tiers):
        extra = problem.bank.anchor_bytes if ram is not None and tier.name == ram.name else 0
        if used[t] + extra > tier.capacity_bytes:
            raise SolverError(f"the solver's answer overfills tier '{tier.name}' by "
                              f"{used[t] + extra - tier.capacity_bytes:.0f} bytes (numerical "
                              "tolerance); leave a little headroom in the capacity")
    replicas = problem.policy.replica_budget
    if problem.replica_bytes(counts) > (replicas or 0):
        raise SolverError("the solver's answer exceeds the replica budget (numerical tolerance)")
    budget = problem.policy.budget_usd_month
    # the solver may overshoot its budget row by its tolerance: about 1e-6 of a row unit
    # (a dollar, or the budget when below a dollar)
    if budget is not None and problem.monthly_cost(counts) > budget + 1e-6 * min(budget, 1.0):
        raise SolverError("the solver's answer exceeds the budget (numerical tolerance)")


def _level_under_bucket_model(problem: BucketProblem, profile: Profile, bank: Bank,
                              fetch: FetchMode, policy: Policy, solver: SolverName
                              ) -> tuple[float | None, Layout | None]:
    """The best whole-level placement, valued with the bucket model (for comparison)."""
    if (policy.private or policy.blocked or policy.volatile
            or policy.budget_usd_month is not None):
        return None, None  # the level ILP does not know these constraints
    try:
        level = optimize(profile, bank, fetch=fetch, solver=solver, samples=1)
    except MemsimError:
        return None, None
    names = profile.tier_names
    masses = {d: np.eye(len(names))[names.index(t)] for d, t in level.layout.placement.items()}
    layout = level.layout.model_copy(update={"description": "best whole-level placement"})
    return problem.bound(masses), layout


# `memsim.optimize(...)` calls optimize(); the module stays a module (`memsim.optimize.<name>`)
from memsim import make_callable  # noqa: E402

make_callable(__name__, "optimize")
