"""What runs at one point of a sweep: optimize, estimate, simulate, and the row they give.

A point's inputs are plain data (`point.Point`); this module builds the profile, bank,
workload and layout from them with the same API `memsim optimize`, `estimate` and
`simulate` use (`make_goal`, `workload_at_rate`, `bucket_policy`, `optimize`,
`optimize_blocks`, `estimate`, `simulate`), so a point's row is what those commands report
for the same options. Nothing here raises or prints: an error becomes the row's `status`
(infeasible or failed), `error` (one line) and `failed_stage`, and warnings are silenced
(a worker's output would garble the progress bar; the simulator's instability is recorded
in `sim_stable`). The same point gives the same row in any process (except `wall_s`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from memsim.bank import Bank, bank_from_dict
from memsim.errors import InfeasibleError, InputError, MemsimError, one_line
from memsim.estimate import DEFAULT_SAMPLES, Estimate, estimate
from memsim.layout import Layout, layout_from_dict
from memsim.optimize.goal import Goal, bucket_policy, make_goal
from memsim.profile import Profile, profile_from_dict
from memsim.simulate import SimulationResult, saturation_rate, simulate
from memsim.sweep.columns import FIXED, empty_row
from memsim.sweep.point import OptimizeOptions, Point, Stages
from memsim.workload import Workload, poisson_workload, workload_at_rate, workload_from_dict

MAX_ERROR_CHARS = 2000  # an error message is cut to this in the row
LIGHT_LOAD = 0.1  # the simulator's rate without a workload or rate: this share of saturation
IDLE_SAMPLES = 1000  # the optimizer's own estimate, unread without an estimate stage
GB = 1e9  # storage prices are per GB-month, GB = 10^9 bytes
# options that apply to bucket granularity only (OptimizeOptions field -> its value when unset)
BUCKET_ONLY = {"private": [], "private_tiers": None, "blocked": [], "replica_budget": None,
               "volatile": None}


def run_batch(points: list[Point], *, simulate: bool = True) -> list[dict[str, Any]]:
    """The rows of `points`, in their order (`run_point` each)."""
    return [run_point(p, simulate=simulate) for p in points]


def run_point(point: Point, *, simulate: bool = True) -> dict[str, Any]:
    """One row (`columns.FIXED` plus the point's axis values): the point's stages run in
    order; `simulate=False` skips the simulate stage (screening). Never raises."""
    start = time.perf_counter()
    row = empty_row()
    row.update(point=point.key, index=point.index, sample=point.sample,
               rate=_rate_of(point.inputs))
    run = _Run(point)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nothing may reach stderr from a worker
            run.all(row, simulate=simulate)
        row["status"] = "ok"
    except InfeasibleError as exc:
        _fail(row, "infeasible", run.stage, str(exc))
    except MemsimError as exc:
        _fail(row, "failed", run.stage, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug costs this point's row, never the sweep
        _fail(row, "failed", run.stage, f"{type(exc).__name__}: {exc}")
    row["wall_s"] = time.perf_counter() - start
    _plain(row)
    row.update(point.axes)
    return row


def _plain(row: dict[str, Any]) -> None:
    """Every fixed column as a plain Python value of its Arrow type (no numpy scalars), so
    rows pickle small and compare equal across processes."""
    for name, (kind, _doc) in FIXED.items():
        value = row.get(name)
        if value is None:
            continue
        if pa.types.is_floating(kind):
            row[name] = float(value)
        elif pa.types.is_integer(kind):
            row[name] = int(value)
        elif pa.types.is_boolean(kind):
            row[name] = bool(value)
        else:
            row[name] = str(value)


def _rate_of(inputs: dict[str, Any]) -> float | None:
    rate = inputs.get("rate") if isinstance(inputs, dict) else None
    return float(rate) if isinstance(rate, int | float) and not isinstance(rate, bool) else None


def _fail(row: dict[str, Any], status: str, stage: str, message: str) -> None:
    row.update(status=status, failed_stage=stage, error=one_line(message)[:MAX_ERROR_CHARS])


@dataclass
class _Run:
    """One point's stages, and the stage under way (named in a failed row)."""

    point: Point
    stage: str = "optimize"
    where: str = ""
    estimated: Estimate | None = field(default=None, repr=False)

    def all(self, row: dict[str, Any], *, simulate: bool) -> None:
        point, inputs = self.point, self.point.inputs
        self.where = f"{point.source}#point-{point.index}"
        stages = Stages.model_validate(inputs.get("stages") or {})
        opts = OptimizeOptions.model_validate(inputs.get("optimize") or {})
        given = inputs.get("layout")
        self.stage = ("optimize" if given is None and stages.optimize else
                      "estimate" if stages.estimate is not None else "simulate")
        profile = profile_from_dict(inputs["profile"], file=self.where)
        bank = bank_from_dict(inputs["bank"], file=self.where)
        base = (workload_from_dict(inputs["workload"], file=self.where)
                if inputs.get("workload") is not None else None)
        wl = workload_at_rate(base, row["rate"])
        goal = make_goal(profile, bank, wl, fetch=opts.fetch, idle=opts.idle,
                         max_utilization=opts.max_utilization, objective=opts.objective,
                         slos=opts.slo, minimize=opts.minimize, budget=opts.budget,
                         energy_budget=opts.energy_budget)
        if goal.loaded:
            row["rate"] = goal.rate  # what the layout carries (a closed loop's, a burst's)
        if given is not None:
            layout = layout_from_dict(given, file=self.where)
            layout.check(bank, profile)
        elif stages.optimize:
            layout = self.optimize(row, profile, bank, wl, goal, opts, stages)
        else:
            raise InputError("the optimize stage is off and the point has no layout",
                             file=self.where, field="stages.optimize")
        row["placement"] = placement_text(layout, bank, profile)
        if stages.estimate is not None:
            self.stage = "estimate"
            est = self.estimated
            if est is None:
                est = estimate(profile, bank, layout, samples=stages.estimate.samples,
                               seed=stages.estimate.seed, workload=_routing(wl, layout, profile))
            _estimator_columns(row, est, wl)
        self.stage = "estimate"
        _idle_columns(row, profile, bank, layout)
        if simulate and stages.simulate is not None:
            self.stage = "simulate"
            sim_wl = wl
            if sim_wl is None:
                saturation = _saturation(profile, bank, layout)
                sim_wl = poisson_workload(LIGHT_LOAD * saturation if saturation < float("inf")
                                          else 1.0, name="light")
            _simulator_columns(row, simulate_point(profile, bank, layout, sim_wl,
                                                   queries=stages.simulate.queries,
                                                   seed=stages.simulate.seed,
                                                   warmup=stages.simulate.warmup))

    def optimize(self, row: dict[str, Any], profile: Profile, bank: Bank, wl: Workload | None,
                 goal: Goal, opts: OptimizeOptions, stages: Stages) -> Layout:
        """The optimize stage's layout, its objective and (under load) the model's figures."""
        from memsim.optimize import optimize, optimize_blocks
        from memsim.units import size_field

        name = f"{bank.name}-on-{profile.name}"
        row["objective"] = objective_name(goal)
        samples = stages.estimate.samples if stages.estimate is not None else DEFAULT_SAMPLES
        if opts.granularity == "bucket":
            if opts.resident or opts.resident_budget is not None:
                raise InputError("resident applies to level granularity only",
                                 file=self.where, field="optimize.resident")
            policy = bucket_policy(profile, bank, goal, budget=opts.budget,
                                   private=opts.private, private_tiers=opts.private_tiers,
                                   blocked=opts.blocked, replica_budget=opts.replica_budget,
                                   volatile=opts.volatile)
            routing = wl or poisson_workload(1.0, name="uniform")
            # the estimator picks among the candidates with the estimate stage's samples
            blocks = optimize_blocks(profile, bank, routing, fetch=opts.fetch,
                                     buckets=opts.buckets, policy=policy, solver=opts.solver,
                                     time_limit=opts.time_limit, gap=opts.gap, seed=opts.seed,
                                     samples=samples, name=name)
            if (stages.estimate is not None and stages.estimate.seed == opts.seed
                    and routing is _routing(wl, blocks.layout, profile)):
                self.estimated = blocks.estimate  # the estimate stage's own call
            row["objective_value"] = {"cost": blocks.monthly_cost_usd,
                                      "energy": blocks.energy_j_per_query}.get(
                goal.minimize, blocks.objective_s)
            row["cost_usd_month"] = blocks.monthly_cost_usd
            if blocks.utilization:
                row["max_utilization"] = max(blocks.utilization.values())
            return blocks.layout
        for option, unset in BUCKET_ONLY.items():
            if getattr(opts, option) != unset:
                raise InputError(f"{option} needs granularity bucket", file=self.where,
                                 field=f"optimize.{option}")
        result = optimize(profile, bank, fetch=opts.fetch, resident_levels=opts.resident,
                          resident_budget=size_field(opts.resident_budget,
                                                     "optimize.resident_budget"),
                          solver=opts.solver, time_limit=opts.time_limit, gap=opts.gap,
                          scenarios=opts.scenarios, seed=opts.seed, name=name,
                          samples=samples if stages.estimate is not None else IDLE_SAMPLES,
                          workload=wl, goal=goal)
        fig = result.figures
        if stages.estimate is not None and stages.estimate.seed == opts.seed:
            self.estimated = result.estimate  # the same call the estimate stage would make
        if fig is None:
            row["objective_value"] = result.objective_s
            return result.layout
        row["objective_value"] = {"cost": fig.cost_usd_month,
                                  "energy": fig.energy_j_per_query}.get(goal.minimize)
        if goal.minimize == "time":
            row["objective_value"] = fig.stat(goal.objective)
        row["cost_usd_month"] = fig.cost_usd_month
        if goal.loaded:
            row.update(est_source="load model", est_mean_s=fig.mean_s,
                       est_p50_s=fig.quantile_s["p50"], est_p99_s=fig.quantile_s["p99"],
                       max_utilization=max(fig.utilization.values(), default=0.0),
                       energy_j_per_query=fig.energy_j_per_query)
        return result.layout


def simulate_point(profile: Profile, bank: Bank, layout: Layout, workload: Workload, *,
                   queries: int, seed: int, warmup: float) -> SimulationResult:
    """The simulator's run (its OverloadWarnings silenced: `unstable` holds them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return simulate(profile, bank, layout, workload, queries=queries, seed=seed,
                        warmup=warmup)


def objective_name(goal: Goal) -> str:
    """What the optimizer minimised: time:mean, time:p99, time:cvar:0.99, cost or energy."""
    return f"time:{goal.objective}" if goal.minimize == "time" else goal.minimize


def placement_text(layout: Layout, bank: Bank, profile: Profile) -> str:
    """Level:tier pairs ('2:flash 3:disk 4:cloud'), a resident level's tier marked '*'
    ('2:flash*'); a level split by a block map lists its tiers by share of its blocks,
    most first ('2:flash=60%,ram=40%')."""
    parts = []
    for depth, counts in sorted(layout.tier_counts(bank, profile).items()):
        mark = "*" if depth in layout.resident else ""
        used = {t: c for t, c in counts.items() if c}
        total = sum(used.values())
        if len(used) <= 1:
            parts.append(f"{depth}:{next(iter(used), layout.placement[depth])}{mark}")
            continue
        order = sorted(used, key=lambda t: (-used[t], profile.tier_names.index(t)))
        parts.append(f"{depth}:" + ",".join(f"{t}={100 * used[t] / total:.3g}%"
                                            for t in order) + mark)
    return " ".join(parts)


def storage_cost(layout: Layout, bank: Bank, profile: Profile) -> float:
    """Dollars per month the layout's blocks cost to store (no requests)."""
    total = 0.0
    for depth, counts in layout.tier_counts(bank, profile).items():
        size = bank.level(depth).block_bytes
        for tier, count in counts.items():
            cost = profile.tier(tier).cost
            if cost is not None:
                total += cost.storage_usd_per_gb_month * count * size / GB
    return total


def _routing(wl: Workload | None, layout: Layout, profile: Profile) -> Workload | None:
    """The workload the estimator reads: the point's, or uniform routing when the layout
    places blocks (a block map or blocked subtrees need one)."""
    if wl is None and (layout.blocked or layout.block_map(profile) is not None):
        return poisson_workload(1.0, name="uniform")
    return wl


def _estimator_columns(row: dict[str, Any], est: Estimate, wl: Workload | None) -> None:
    """est_* from the estimator, unless the load model gave them; without a workload, a
    resident level switches on every query (the optimizer's own assumption)."""
    if row["est_source"] is not None:
        return
    times = est.fetch_time_s
    if wl is None and est.switch_fetch_time_s is not None:
        times = est.switch_fetch_time_s
    row.update(est_source="estimator", est_mean_s=times["mean"], est_p50_s=times["p50"],
               est_p99_s=times["p99"])
    if est.energy is not None:
        per_query = est.energy.j_per_query if wl is not None else None
        row["energy_j_per_query"] = (per_query if per_query is not None
                                     else est.energy.dynamic_j_per_query)


def _idle_columns(row: dict[str, Any], profile: Profile, bank: Bank, layout: Layout) -> None:
    """Cost and utilisation where no model gave them: the storage cost, and the busiest
    tier's utilisation at the point's rate (no cache hits)."""
    if row["cost_usd_month"] is None:
        row["cost_usd_month"] = storage_cost(layout, bank, profile)
    if row["max_utilization"] is None and row["rate"]:
        row["max_utilization"] = row["rate"] / _saturation(profile, bank, layout)


def _saturation(profile: Profile, bank: Bank, layout: Layout) -> float:
    """Queries per second at which the layout's busiest tier is saturated (inf: no load)."""
    try:
        return saturation_rate(profile, bank, layout)[0]
    except (ZeroDivisionError, ValueError):  # no tier is read
        return float("inf")


def _simulator_columns(row: dict[str, Any], sim: SimulationResult) -> None:
    f, ci = sim.fetch_time_s, sim.fetch_time_ci_s
    row.update(sim_queries=sim.queries, sim_stable=not sim.unstable,
               sim_max_utilization=max(sim.utilization.values(), default=0.0))
    for stat in ("mean", "p50", "p99"):
        interval = ci.get(stat)
        row[f"sim_{stat}_s"] = f[stat]
        row[f"sim_{stat}_lo_s"] = interval[0] if interval else None
        row[f"sim_{stat}_hi_s"] = interval[1] if interval else None
    if sim.energy is not None:
        per_query = sim.energy.j_per_query
        row["sim_energy_j_per_query"] = (per_query if per_query is not None
                                         else sim.energy.dynamic_j_per_query)


__all__ = ["run_point", "run_batch", "placement_text", "storage_cost", "objective_name"]
