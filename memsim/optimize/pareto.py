"""Pareto fronts of layouts by the epsilon-constraint method.

Two of the model's figures (mean fetch time, p99, monthly cost, energy per query) trade off:
the front holds the layouts no other layout beats on both. Each point minimises metric x
subject to metric y <= eps (an SLO on time or p99, a cost or energy budget), keeping the base
goal's other targets (rate, ceilings, SLOs on other statistics). The endpoints are y's least
value and x's optimum; eps steps down from one to the other, skipping values the last point
already meets (AUGMECON's bypass: they give the same optimum again). Each point is made
lexicographic by a second solve, minimising y with x held at its optimum (plus a tiny slack),
so no point is beaten by a layout of the same x and smaller y. The p99 is the model's own:
exact over its scenarios when they are few (load.EXACT_QUANTILE_SCENARIOS), else its CVaR
bound, which is what the model constrains.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from memsim.bank import Bank
from memsim.errors import InfeasibleError, InputError, SolverError
from memsim.layout import Layout
from memsim.optimize.goal import Goal, Objective, Slo
from memsim.optimize.level import DEFAULT_SCENARIOS, goal_json, optimize, resident_switch
from memsim.optimize.load import LoadTables, ModelFigures, build_load, evaluate
from memsim.optimize.tables import CostTables, build_tables
from memsim.optimize.verify import simulated_workload
from memsim.profile import Profile
from memsim.workload import Workload

METRICS = ("time", "p99", "cost", "energy")  # time = mean fetch time
METRIC_KEYS = {"time": "mean_s", "p99": "p99_s", "cost": "cost_usd_month",
               "energy": "energy_j_per_query"}
P99 = Objective(kind="quantile", level=0.99)
REL_SLACK = 1e-6  # the lexicographic stage's slack on x, relative ...
ABS_SLACK = {"time": 1e-9, "p99": 1e-9, "cost": 1e-9, "energy": 1e-12}  # ... and absolute
SAME = 1e-9  # relative difference below which two figures count as equal
PROBE = 1e-5  # a gap's probe bounds y this far (relative) below the gap's upper point


def parse_metrics(text: str, field: str = "pareto") -> tuple[str, str]:
    """`"cost,p99"` -> ("cost", "p99"): two distinct names from METRICS."""
    parts = [p.strip().lower() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(f"cannot read {str(text)[:40]!r}: give two metrics as X,Y, e.g. "
                         f"'cost,p99' (from {', '.join(METRICS)})", field=field)
    for name in parts:
        if name not in METRICS:
            raise InputError(f"unknown metric {name[:20]!r} in {str(text)[:40]!r}: use two of "
                             f"{', '.join(METRICS)}", field=field)
    if parts[0] == parts[1]:
        raise InputError(f"the two metrics must differ, got {parts[0]!r} twice", field=field)
    return parts[0], parts[1]


@dataclass
class FrontPoint:
    """One layout of the front, the model's figures for it, and the eps that found it."""

    layout: Layout
    figures: ModelFigures
    epsilon: float | None  # the bound on y of its solve (None: an endpoint)
    simulated: dict[str, Any] | None = None  # fetch_time_s and its CIs, when verified
    p99_exact: bool = True  # the model's p99 is exact (else its CVaR bound)

    def metric(self, name: str) -> float:
        """The model's value of `name` (seconds, dollars per month, joules per query)."""
        f = self.figures
        if name == "time":
            return f.mean_s
        if name == "p99":
            return f.stat(P99, self.p99_exact)
        if name == "cost":
            return f.cost_usd_month
        if name == "energy":
            return f.energy_j_per_query
        raise InputError(f"unknown metric {name!r}: use {', '.join(METRICS)}", field="pareto")

    def simulated_metric(self, name: str) -> tuple[float, tuple[float, float] | None] | None:
        """The simulator's value of `name` and its interval (None: not verified, or the
        simulator does not measure it: cost follows from the layout and the rate)."""
        sim = self.simulated
        if sim is None:
            return None
        if name in ("time", "p99"):
            key = "mean" if name == "time" else "p99"
            value = sim["fetch_time_s"].get(key)
            ci = sim["fetch_time_ci_s"].get(key)
            return (value, (ci[0], ci[1]) if ci else None) if value is not None else None
        if name == "energy" and sim.get("energy_j_per_query") is not None:
            return sim["energy_j_per_query"], None
        return None

    def to_json(self, index: int, x: str, y: str, y_key: str) -> dict[str, Any]:
        return {"point": index, "x": self.metric(x), "y": self.metric(y),
                **{METRIC_KEYS[m]: self.metric(m) for m in METRICS},
                f"epsilon_{y_key}": self.epsilon,
                "placement": {str(d): t for d, t in sorted(self.layout.placement.items())},
                "resident": sorted(self.layout.resident),
                "model": self.figures.to_json(), "simulated": self.simulated}


@dataclass
class Front:
    """The non-dominated layouts, sorted by x, and what computing them took."""

    x: str
    y: str
    points: list[FrontPoint]
    solves: int
    seconds: float
    skipped: int = 0  # eps values with no layout (infeasible) or a failed solve
    goal: Goal | None = None
    p99_exact: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "x_key": METRIC_KEYS[self.x],
                "y_key": METRIC_KEYS[self.y],
                "p99": "exact" if self.p99_exact else "cvar_bound",
                "solves": self.solves, "seconds": self.seconds, "skipped": self.skipped,
                "goal": goal_json(self.goal),
                "points": [p.to_json(i, self.x, self.y, METRIC_KEYS[self.y])
                           for i, p in enumerate(self.points, 1)]}


def constrain(goal: Goal, metric: str, bound: float) -> Goal:
    """`goal` with `metric <= bound` added (or tightened where it already bounds it)."""
    if metric in ("time", "p99"):
        stat = "mean" if metric == "time" else "p99"
        old = next((s for s in goal.slos if s.stat == stat), None)
        limit = bound if old is None else min(old.limit_s, bound)
        slos = tuple(s for s in goal.slos if s.stat != stat) + (Slo(stat, limit),)
        return goal.with_changes(slos=slos)
    if metric == "cost":
        old = goal.budget_usd_month
        return goal.with_changes(budget_usd_month=bound if old is None else min(old, bound))
    old = goal.energy_budget_j
    return goal.with_changes(energy_budget_j=bound if old is None else min(old, bound))


def minimising(goal: Goal, metric: str) -> Goal:
    """`goal` asked to minimise `metric` (its targets kept)."""
    if metric == "time":
        return goal.with_changes(minimize="time", objective=Objective())
    if metric == "p99":
        return goal.with_changes(minimize="time", objective=P99)
    return goal.with_changes(minimize=metric)


def _loosen(value: float, metric: str) -> float:
    return value * (1 + REL_SLACK) + ABS_SLACK[metric]


def _key(layout: Layout) -> tuple[Any, ...]:
    return tuple(sorted(layout.placement.items())), tuple(sorted(layout.resident))


def _dominates(a: FrontPoint, b: FrontPoint, x: str, y: str) -> bool:
    """a is at least as good as b on both metrics and better on one (beyond rounding)."""
    ax, ay, bx, by = a.metric(x), a.metric(y), b.metric(x), b.metric(y)
    le_x, le_y = ax <= bx + SAME * abs(bx) + 1e-15, ay <= by + SAME * abs(by) + 1e-15
    lt_x, lt_y = ax < bx - SAME * abs(bx), ay < by - SAME * abs(by)
    return le_x and le_y and (lt_x or lt_y)


def non_dominated(points: list[FrontPoint], x: str, y: str) -> list[FrontPoint]:
    """The points no other beats, one per layout and per (x, y) pair, sorted by x then y."""
    unique: dict[tuple[Any, ...], FrontPoint] = {}
    for p in points:
        unique.setdefault(_key(p.layout), p)
    kept = [p for p in unique.values()
            if not any(_dominates(q, p, x, y) for q in unique.values() if q is not p)]
    kept.sort(key=lambda p: (p.metric(x), p.metric(y)))
    out: list[FrontPoint] = []
    for p in kept:  # equal figures from different layouts: keep the first
        if out and not _dominates(p, out[-1], x, y) and not _dominates(out[-1], p, x, y):
            q = out[-1]
            if (abs(p.metric(x) - q.metric(x)) <= SAME * abs(q.metric(x)) + 1e-15
                    and abs(p.metric(y) - q.metric(y)) <= SAME * abs(q.metric(y)) + 1e-15):
                continue
        out.append(p)
    return out


def _gap(a: FrontPoint, b: FrontPoint, front: list[FrontPoint], x: str, y: str) -> float:
    """How far apart two neighbours are, each metric scaled by the front's range."""
    span_x = abs(front[-1].metric(x) - front[0].metric(x)) or 1.0
    span_y = abs(front[0].metric(y) - front[-1].metric(y)) or 1.0
    return (abs(b.metric(x) - a.metric(x)) / span_x) + (abs(a.metric(y) - b.metric(y))
                                                         / span_y)


def pareto_front(profile: Profile, bank: Bank, metrics: tuple[str, str], *, goal: Goal,
                 points: int = 10, workload: Workload | None = None, verify: bool = False,
                 verify_queries: int = 20_000, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None,
                 **options: Any) -> Front:
    """The front of `metrics` = (x, y) under `goal`: up to `points` layouts, each minimising
    x with y bounded, sorted by x (so y falls). `options` go to `optimize` (fetch,
    resident_levels, solver, scenarios, ...). With `verify`, each point is simulated under
    `workload` at the goal's rate and its simulated mean and p99 (with intervals) stored.
    An infeasible base goal raises InfeasibleError; an infeasible eps is skipped."""
    x, y = parse_metrics(metrics if isinstance(metrics, str) else ",".join(metrics))
    if not 2 <= int(points) <= 200:
        raise InputError(f"points must be between 2 and 200, got {points}", field="points")
    for name in ("goal", "workload", "seed"):
        options.pop(name, None)
    sim_workload = simulated_workload(workload, goal) if verify else None
    start = time.perf_counter()
    tables, load = _model(profile, bank, workload, goal, seed, options)
    exact = load.exact_quantiles
    solves = 0
    skipped = 0

    def solve(g: Goal) -> Layout:
        nonlocal solves
        solves += 1
        return optimize(profile, bank, workload=workload, goal=g, seed=seed,
                        **options).layout

    def point(layout: Layout, eps: float | None) -> FrontPoint:
        figures = evaluate(tables, load, layout.placement, set(layout.resident))
        return FrontPoint(layout=layout, figures=figures, epsilon=eps, p99_exact=exact)

    def lexicographic(first: FrontPoint, eps: float | None) -> FrontPoint:
        """The least y among layouts within a hair of `first`'s x (and eps)."""
        bounded = constrain(goal, x, _loosen(first.metric(x), x))
        if eps is not None:
            bounded = constrain(bounded, y, eps)
        try:
            second = point(solve(minimising(bounded, y)), eps)
        except (InfeasibleError, SolverError):  # rounding at the bound: keep the first
            return first
        better = second.metric(y) < first.metric(y) and second.metric(x) <= _loosen(
            first.metric(x), x)
        return second if better else first

    total = int(points)
    # endpoints: y's least value (then the least x there), and x's optimum (then the
    # least y there)
    least = point(solve(minimising(goal, y)), None)
    low = least
    try:
        bound = _loosen(least.metric(y), y)
        low = point(solve(minimising(constrain(goal, y, bound), x)), None)
    except (InfeasibleError, SolverError):  # rounding at the bound: keep y's optimum
        pass
    y_min = low.metric(y)
    high = lexicographic(point(solve(minimising(goal, x)), None), None)
    y_max = high.metric(y)
    found = [high, low]
    done = 2
    if progress:
        progress(done, total)
    if y_max > y_min * (1 + SAME) + 1e-15:
        grid = np.linspace(y_max, y_min, total)[1:-1]  # interior values, descending
        last_y = y_max
        for eps in grid:
            done += 1
            eps = float(eps)
            if eps >= last_y:  # the last point meets this bound: same optimum again
                if progress:
                    progress(done, total)
                continue
            try:
                first = point(solve(minimising(constrain(goal, y, eps), x)), eps)
            except (InfeasibleError, SolverError):
                skipped += 1
                if progress:
                    progress(done, total)
                continue
            p = lexicographic(first, eps)
            found.append(p)
            last_y = min(last_y, p.metric(y))
            if progress:
                progress(done, total)
    front = non_dominated(found, x, y)
    # points left: probe the widest open gap just below its upper point, which finds the
    # front point next to it, or shows the gap holds none (the front is then complete there)
    closed: set[tuple[Any, Any]] = set()
    while len(front) < total:
        gaps = [(a, b) for a, b in zip(front, front[1:], strict=False)
                if (_key(a.layout), _key(b.layout)) not in closed]
        if not gaps:
            break
        a, b = max(gaps, key=lambda g: _gap(g[0], g[1], front, x, y))
        closed.add((_key(a.layout), _key(b.layout)))
        eps = a.metric(y) * (1 - PROBE) - ABS_SLACK[y]
        done += 1
        if progress:
            progress(done, max(done + 1, total + len(gaps)))
        if eps <= b.metric(y):
            continue
        try:
            first = point(solve(minimising(constrain(goal, y, eps), x)), eps)
        except (InfeasibleError, SolverError):
            skipped += 1
            continue
        if first.metric(x) >= b.metric(x) * (1 - SAME) or _key(first.layout) == _key(
                b.layout):
            continue  # nothing between a and b
        found.append(lexicographic(first, eps))
        front = non_dominated(found, x, y)
    if progress:
        progress(done, done)
    if verify:
        assert sim_workload is not None
        from memsim.optimize.verify import simulated_figures
        from memsim.simulate import simulate

        total = done + len(front)
        for i, p in enumerate(front, 1):
            sim = simulate(profile, bank, p.layout, sim_workload, queries=verify_queries,
                           seed=seed)
            figures = simulated_figures(sim)
            p.simulated = {
                "fetch_time_s": {k: sim.fetch_time_s.get(k) for k in ("mean", "p99")},
                "fetch_time_ci_s": {k: sim.fetch_time_ci_s.get(k) for k in ("mean", "p99")},
                "energy_j_per_query": sim.energy.j_per_query if sim.energy else None,
                "offered_load": figures["offered_load"], "unstable": figures["unstable"],
                "queries": sim.queries}
            if progress:
                progress(done + i, total)
    return Front(x=x, y=y, points=front, solves=solves,
                 seconds=time.perf_counter() - start, skipped=skipped, goal=goal,
                 p99_exact=exact)


def _model(profile: Profile, bank: Bank, workload: Workload | None, goal: Goal, seed: int,
           options: dict[str, Any]) -> tuple[CostTables, LoadTables]:
    """The tables and load terms `optimize` builds for these options, to evaluate layouts
    under the base goal's load (the same figures whatever each solve minimised)."""
    residents = tuple(options.get("resident_levels", ()) or ())
    scenarios = int(options.get("scenarios", DEFAULT_SCENARIOS))
    if scenarios < 1:
        raise InputError(f"scenarios must be at least 1, got {scenarios}", field="scenarios")
    tables = build_tables(profile, bank, options.get("fetch", "parallel"), scenarios, seed,
                          resident_switch(bank, residents, workload))
    return tables, build_load(tables, goal, seed)
