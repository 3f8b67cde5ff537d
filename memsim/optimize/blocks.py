"""Block placement: the hottest blocks of each level on its fastest tiers, by popularity
buckets (the bucket ILP in buckets.py), compared with greedy and whole-level placements."""


from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from memsim import queueing
from memsim.bank import Bank
from memsim.errors import InputError, MemsimError, SolverError
from memsim.estimate import DEFAULT_SAMPLES, Estimate, estimate
from memsim.layout import FetchMode, Layout, SubtreeRef
from memsim.limits import MAX_BUCKET_CELLS, MAX_BUCKETS, check_at_most
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
from memsim.optimize.diagnose import precheck, subtree_bytes
from memsim.optimize.level import optimize
from memsim.optimize.solver import SolverName
from memsim.popularity import block_popularity
from memsim.profile import Profile
from memsim.workload import Workload


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
    # Load (with Policy.max_utilization and a rate): the load model's utilisation per tier
    # (max of channel and link) and wait (omega, in objective_s) of the chosen layout
    utilization: dict[str, float] | None = None
    wait_s: float | None = None
    energy_j_per_query: float | None = None  # dynamic joules per query (0: no figures)
    minimize: str = "time"

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
            "fetch_time_s": self.fetch_time_s, "minimize": self.minimize,
            "utilization": self.utilization, "wait_s": self.wait_s,
            "energy_j_per_query": self.energy_j_per_query,
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
    blocked subtrees (never placed nor fetched). With `policy.max_utilization` and a rate
    (`policy.rate`, else an open-loop workload's mean rate) the model is load-aware: tier
    utilisation ceilings and the queueing wait in the time bound (buckets.LoadModel);
    `policy.minimize` picks time, cost or energy, with `mean_slo_s` and `energy_budget_j`
    as bounds. Candidates (greedy, whole-level) that break a ceiling or bound are dropped,
    and for cost or energy only the ILP's layout is a candidate.
    """
    check_at_most(buckets, MAX_BUCKETS, "buckets per level", field="buckets")
    check_at_most(buckets * len(bank.active_levels) * len(profile.tiers), MAX_BUCKET_CELLS,
                  "buckets x levels x tiers of the bucket ILP", field="buckets")
    if buckets < 1:
        raise InputError(f"buckets must be at least 1, got {buckets}", field="buckets")
    policy = replace(policy) if policy is not None else Policy()  # never change the caller's
    if policy.rate == 0.0 and workload.open_loop:
        policy.rate = workload.arrivals.mean_rate()
    if policy.arrival_scv is None:
        policy.arrival_scv = queueing.arrival_scv(workload)
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
    if greedy is not None and problem.violations(exact_masses(problem, greedy)):
        greedy = None  # over a tier's ceiling, or past the time or energy bound
    if greedy is not None:
        baseline_s = problem.bound(exact_masses(problem, greedy))
        if verify_estimate and policy.minimize == "time":  # a layout only to estimate it
            maps["greedy"] = to_block_map(problem, greedy)
            candidates["greedy"] = (as_layout("greedy", "greedy block placement"), greedy)
    level_s, level_layout = _level_under_bucket_model(problem, profile, bank, fetch, policy,
                                                      solver)
    if level_layout is not None and policy.minimize == "time":
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
    utilization = wait_s = None
    if problem.load is not None:
        rc, rl = problem.load.rho(masses)
        utilization = {t.name: float(max(c, link)) for t, c, link in zip(
            profile.tiers, rc, rl, strict=True)}
        wait_s = problem.wait_s(masses)
    return BlockOptimizeResult(
        utilization=utilization, wait_s=wait_s, energy_j_per_query=problem.energy_j(masses),
        minimize=policy.minimize,
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
    broken = problem.violations(problem.masses(counts))
    if broken:
        raise SolverError(f"the solver's answer breaks the {' and the '.join(broken)} "
                          "(numerical tolerance)")


def _level_under_bucket_model(problem: BucketProblem, profile: Profile, bank: Bank,
                              fetch: FetchMode, policy: Policy, solver: SolverName
                              ) -> tuple[float | None, Layout | None]:
    """The best whole-level placement, valued with the bucket model (for comparison)."""
    if (policy.private or policy.blocked or policy.volatile
            or policy.budget_usd_month is not None or policy.minimize != "time"):
        return None, None  # the level ILP does not know these constraints
    try:
        level = optimize(profile, bank, fetch=fetch, solver=solver, samples=1)
    except MemsimError:
        return None, None
    names = profile.tier_names
    masses = {d: np.eye(len(names))[names.index(t)] for d, t in level.layout.placement.items()}
    if problem.violations(masses):
        return None, None  # over a tier's ceiling, or past the time or energy bound
    layout = level.layout.model_copy(update={"description": "best whole-level placement"})
    return problem.bound(masses), layout
