"""The simulator in the loop: optimize, simulate the chosen layout under the workload, and
where the simulation misses the target, tighten the model where it was wrong and solve again.

Each round records the layout, the model's figures, the simulator's (with intervals) and what
was changed. A target is missed when the simulated statistic exceeds it beyond the run's
interval (or the run had no steady state). The model is then tightened at the tier whose
simulated time most exceeds the model's: an overloaded tier's utilisation ceiling drops
below what the simulator saw, another's modelled delay is scaled up by what the simulation
showed; when the model underestimated no tier, a cut excludes the layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memsim.bank import Bank
from memsim.errors import InfeasibleError, InputError
from memsim.optimize.goal import Goal
from memsim.optimize.level import OptimizeResult, optimize
from memsim.profile import Profile
from memsim.simulate import SimulationResult, saturation_rate, simulate
from memsim.units import format_time
from memsim.workload import Workload, poisson_workload

DEFAULT_ROUNDS = 3
TIGHTEN = 0.85  # a tightened ceiling: this fraction of the utilisation the simulator saw
MIN_CEILING = 0.05
MAX_SCALE = 100.0


@dataclass
class Round:
    """One optimize-then-simulate round."""

    index: int
    placement: dict[int, str]
    resident: list[int]
    model: dict[str, Any] | None
    simulated: dict[str, Any]
    met: bool
    misses: list[str]
    action: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"round": self.index, "placement": {str(d): t for d, t in
                                                   self.placement.items()},
                "resident": self.resident, "model": self.model, "simulated": self.simulated,
                "met": self.met, "misses": self.misses, "action": self.action}


@dataclass
class VerifiedResult:
    """The last round's optimizer result, every round, and the verdict."""

    result: OptimizeResult | None
    rounds: list[Round] = field(default_factory=list)
    met: bool = False
    message: str = ""
    saturation: tuple[float, str] | None = None  # (queries/s, tier) of the last layout

    def to_json(self) -> dict[str, Any]:
        return {"met": self.met, "message": self.message,
                "rounds": [r.to_json() for r in self.rounds],
                "saturation": ({"rate": self.saturation[0], "tier": self.saturation[1]}
                               if self.saturation else None)}


def simulated_workload(workload: Workload | None, goal: Goal,
                       light_rate: float | None = None) -> Workload:
    """What a verification simulates: the workload as given (its arrivals are the load the
    goal's rate was planned from), else Poisson arrivals at the goal's rate, else at
    `light_rate`."""
    if workload is not None:
        return workload
    rate = goal.rate or light_rate
    if not rate:
        raise InputError("verifying needs a workload or a rate", field="verify")
    return poisson_workload(rate)


def simulated_figures(sim: SimulationResult) -> dict[str, Any]:
    return {"fetch_time_s": sim.fetch_time_s, "fetch_time_ci_s": sim.fetch_time_ci_s,
            "offered_load": sim.offered_load, "utilization": sim.utilization,
            "wait_s": {t: v["wait_s"] for t, v in sim.per_tier.items()},
            "unstable": sim.unstable}


def misses(goal: Goal, sim: SimulationResult) -> list[str]:
    """The targets the simulation misses beyond its interval, and any overload."""
    out = [f"tier '{t}' overloaded (offered utilisation {rho:.2f})"
           for t, rho in sim.offered_load.items() if rho >= 1.0]
    for slo in goal.slos:
        key = "mean" if slo.level is None else slo.stat
        value = sim.fetch_time_s.get(key)
        if value is None:
            continue
        ci = sim.fetch_time_ci_s.get(key)
        low = ci[0] if ci else value
        if low > slo.limit_s:
            shown = f"{format_time(value)}" + (
                f" [{format_time(ci[0])} .. {format_time(ci[1])}]" if ci else "")
            out.append(f"{slo}: simulated {shown}")
    if sim.unstable and not out:
        out.append(sim.unstable[0])
    return out


def _tighten(goal: Goal, result: OptimizeResult, sim: SimulationResult) -> tuple[Goal, str]:
    """Tighten the model where the simulation says it was wrong.

    An overloaded tier gets a ceiling below what the simulator saw. Otherwise the tier where
    a query's simulated time (mean, or p99 when a percentile target was missed: the slowest
    of its levels there) most exceeds the model's gets its modelled delay scaled up by the
    ratio of the simulated excess over idle to the modelled one. When the model
    underestimated no tier by more than 5%, a cut excludes the layout."""
    fig = result.figures
    overloaded = {t: rho for t, rho in sim.offered_load.items() if rho >= 1.0}
    if overloaded:
        tier = max(overloaded, key=lambda t: overloaded[t])
        model_rho = fig.utilization.get(tier, 0.0) if fig is not None else 0.0
        ceiling = max(min(goal.ceiling(tier), model_rho) * TIGHTEN, MIN_CEILING)
        if ceiling < goal.ceiling(tier):
            return goal.with_changes(tier_ceilings={**goal.tier_ceilings, tier: ceiling}), (
                f"tier '{tier}' was overloaded in simulation (offered utilisation "
                f"{overloaded[tier]:.2f}, model {model_rho:.2f}): its ceiling drops to "
                f"{ceiling:.2f}")
    if fig is not None:
        tail = any(s.level is not None for s in goal.slos)
        key = "p99_s" if tail else "time_s"
        modelled = fig.tier_p99_s if tail else fig.tier_time_s
        idle = fig.tier_idle_p99_s if tail else fig.tier_idle_s
        resident = set(result.layout.resident)
        excess: dict[str, tuple[float, float]] = {}
        for t, model_t in modelled.items():
            times = [float(v[key]) for d, v in sim.per_level.items()
                     if v.get("tier") == t and d not in resident]
            if times and max(times) > model_t * 1.05:
                extra_model = max(model_t - idle.get(t, 0.0), 1e-9)
                extra_sim = max(times) - idle.get(t, 0.0)
                excess[t] = (max(times) - model_t, extra_sim / extra_model)
        if excess:
            tier = max(excess, key=lambda t: excess[t][0])
            ratio = min(max(excess[tier][1], 1.0) * 1.1, MAX_SCALE)
            scale = min(goal.delay_scales.get(tier, 1.0) * ratio, MAX_SCALE)
            what = "p99" if tail else "mean"
            return goal.with_changes(delay_scales={**goal.delay_scales, tier: scale}), (
                f"a query's {what} time on tier '{tier}' was "
                f"{format_time(modelled[tier] + excess[tier][0])} in simulation against the "
                f"model's {format_time(modelled[tier])}: its modelled delay is scaled by "
                f"{scale:.2f}")
    cut = tuple(sorted(result.layout.placement.items()))
    return goal.with_changes(cuts=(*goal.cuts, cut)), "the layout is excluded (a cut)"


def optimize_verified(profile: Profile, bank: Bank, workload: Workload, goal: Goal, *,
                      rounds: int = DEFAULT_ROUNDS, queries: int = 20_000, seed: int = 0,
                      on_round: Callable[[Round], None] | None = None,
                      **options: Any) -> VerifiedResult:
    """Optimize under `goal`, simulate under `workload`, and repeat for up to `rounds`
    rounds until the simulation meets the goal's targets; say so if it never does.

    `options` go to `optimize` (fetch, resident levels, solver, scenarios, ...)."""
    if rounds < 1:
        raise InfeasibleError("--verify-rounds must be at least 1", field="verify-rounds")
    out = VerifiedResult(result=None)
    for index in range(1, rounds + 1):
        try:
            result = optimize(profile, bank, workload=workload, goal=goal, seed=seed,
                              **options)
        except InfeasibleError as exc:
            if index == 1:
                raise
            out.message = (f"after {index - 1} round(s) the tightened model has no layout: "
                           f"{exc.message}")
            break
        sim = simulate(profile, bank, result.layout, workload, queries=queries, seed=seed)
        missed = misses(goal, sim)
        step = Round(index=index, placement=dict(result.layout.placement),
                     resident=list(result.layout.resident),
                     model=result.figures.to_json() if result.figures is not None else None,
                     simulated=simulated_figures(sim), met=not missed, misses=missed)
        out.result = result
        out.rounds.append(step)
        out.saturation = saturation_rate(profile, bank, result.layout)
        if not missed:
            out.met = True
            out.message = (f"the layout meets the targets in simulation (round {index})")
            if on_round:
                on_round(step)
            break
        if index < rounds:
            goal, step.action = _tighten(goal, result, sim)
        if on_round:
            on_round(step)
    if not out.met:
        rate, tier = out.saturation if out.saturation else (float("nan"), "?")
        last = out.rounds[-1].misses if out.rounds else []
        out.message = (out.message or f"no layout met the targets in simulation after "
                       f"{len(out.rounds)} round(s)") + (
            f"; last round: {'; '.join(last)}" if last else "") + (
            f"; tier '{tier}' of the last layout saturates at {rate:.3g} queries/s"
            if out.saturation else "")
    return out
