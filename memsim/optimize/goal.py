"""What the optimizer is asked for: a plain data object, like the layout it returns.

A `Goal` says what to minimise (fetch time by a statistic, dollars, or joules), which targets
must hold (`Slo`: "p99 <= 50 ms"), the budgets, and the load the layout must carry (queries
per second, and the utilisation ceiling no tier may pass). The level and bucket models read
it; neither knows about the command line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from memsim.errors import InfeasibleError, InputError
from memsim.units import format_energy, format_time, parse_energy, parse_time

if TYPE_CHECKING:
    from memsim.bank import Bank
    from memsim.optimize.buckets import Policy
    from memsim.profile import Profile
    from memsim.workload import Workload

Minimize = Literal["time", "cost", "energy"]
Stat = Literal["mean", "p50", "p90", "p95", "p99", "p999"]
STAT_LEVEL = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999}
DEFAULT_MAX_UTILIZATION = 0.8
MAX_SLOS = 8


@dataclass(frozen=True)
class Slo:
    """A target on the fetch time: `stat <= limit_s` (stat: mean or a percentile)."""

    stat: Stat
    limit_s: float

    @property
    def level(self) -> float | None:
        """The percentile as a probability (0.99 for p99); None for the mean."""
        return STAT_LEVEL.get(self.stat)

    def __str__(self) -> str:
        return f"{self.stat} <= {format_time(self.limit_s)}"

    @classmethod
    def parse(cls, text: str, field_name: str = "slo") -> Slo:
        """`"p99 <= 50 ms"`, `"mean<=8ms"`, `"p95 <= 0.02"` (seconds)."""
        match = re.fullmatch(r"\s*([A-Za-z0-9]+)\s*<=?\s*(.+?)\s*", str(text))
        if not match:
            raise InputError(f"cannot read SLO {str(text)[:60]!r}: write it as 'p99 <= 50 ms' "
                             f"(mean, {', '.join(STAT_LEVEL)})", field=field_name)
        stat = match.group(1).lower()
        if stat not in ("mean", *STAT_LEVEL):
            raise InputError(f"unknown statistic {stat!r} in SLO {text!r}: use mean, "
                             f"{', '.join(STAT_LEVEL)}", field=field_name)
        try:
            limit = parse_time(match.group(2))
        except ValueError as exc:
            raise InputError(f"SLO {text!r}: {exc}", field=field_name) from None
        if not (limit > 0 and math.isfinite(limit)):
            raise InputError(f"SLO {text!r}: the limit must be a positive time",
                             field=field_name)
        return cls(stat=stat, limit_s=limit)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Objective:
    """The fetch-time statistic minimised when minimising time: mean, a percentile (p99,
    modelled exactly over the scenarios when they are few, else bounded by CVaR), or CVaR at
    a level (the mean of the worst 1 - level of the scenarios)."""

    kind: Literal["mean", "quantile", "cvar"] = "mean"
    level: float = 0.0

    def __str__(self) -> str:
        if self.kind == "mean":
            return "mean"
        if self.kind == "cvar":
            return f"cvar:{self.level:g}"
        return next((k for k, v in STAT_LEVEL.items() if v == self.level),
                    f"p{100 * self.level:g}")

    @classmethod
    def parse(cls, text: str, field_name: str = "objective") -> Objective:
        """`mean`, `p99` (any of p50..p999), `cvar:0.99`."""
        value = str(text).strip().lower()
        if value == "mean":
            return cls()
        if value in STAT_LEVEL:
            return cls(kind="quantile", level=STAT_LEVEL[value])
        match = re.fullmatch(r"cvar:([0-9.]+)", value)
        if match:
            try:
                level = float(match.group(1))
            except ValueError:
                level = -1.0
            if 0.0 < level < 1.0:
                return cls(kind="cvar", level=level)
            raise InputError(f"CVaR level in {text!r} must be between 0 and 1 (cvar:0.99)",
                             field=field_name)
        raise InputError(f"unknown objective {str(text)[:40]!r}: use mean, p50, p90, p95, p99, "
                         "p999 or cvar:LEVEL (e.g. cvar:0.99)", field=field_name)


@dataclass(frozen=True)
class Goal:
    """What to minimise, the targets and budgets that must hold, and the load to carry.

    `rate` (queries/s) switches the load model on: each tier's utilisation under the layout
    must stay at or below `max_utilization` (or the tier's own entry in `tier_ceilings`), and
    each tier's queueing delay is part of every fetch time. Without a rate the layout is
    judged on an idle machine. `cuts` are placements the model must not choose again (the
    simulator-in-the-loop rounds add them).
    """

    minimize: Minimize = "time"
    objective: Objective = field(default_factory=Objective)
    slos: tuple[Slo, ...] = ()
    budget_usd_month: float | None = None
    energy_budget_j: float | None = None  # joules per query (dynamic plus the idle share)
    rate: float | None = None
    max_utilization: float = DEFAULT_MAX_UTILIZATION
    tier_ceilings: dict[str, float] = field(default_factory=dict)
    # per tier, a factor on the modelled queueing delay (>= 1; the simulator-in-the-loop
    # rounds raise it where the simulation waited longer than the model said)
    delay_scales: dict[str, float] = field(default_factory=dict)
    arrival_scv: float = 1.0
    rate_note: str = ""  # why this rate (the bursts of a workload, a closed loop's limit)
    cuts: tuple[tuple[tuple[int, str], ...], ...] = ()

    def __post_init__(self) -> None:
        if self.minimize not in ("time", "cost", "energy"):
            raise InputError(f"minimize must be time, cost or energy, got {self.minimize!r}",
                             field="minimize")
        if len(self.slos) > MAX_SLOS:
            raise InputError(f"at most {MAX_SLOS} SLOs, got {len(self.slos)}", field="slo")
        if self.rate is not None and not (self.rate >= 0 and math.isfinite(self.rate)):
            raise InputError(f"rate must be a finite number of queries per second >= 0, got "
                             f"{self.rate}", field="rate")
        for name, value in (("max-utilization", self.max_utilization),
                            *((f"ceiling of tier {t}", v) for t, v in self.tier_ceilings.items())):
            if not (0.0 < value < 1.0):
                raise InputError(f"{name} must be above 0 and below 1, got {value}",
                                 field="max-utilization")
        for name, value in (("budget", self.budget_usd_month),
                            ("energy-budget", self.energy_budget_j)):
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise InputError(f"--{name} must be a finite number >= 0, got {value}",
                                 field=name)
        for tier, scale in self.delay_scales.items():
            if not (1.0 <= scale < math.inf):
                raise InputError(f"delay scale of tier {tier} must be >= 1, got {scale}",
                                 field="delay_scales")
        if not (self.arrival_scv >= 0 and math.isfinite(self.arrival_scv)):
            raise InputError("arrival variability must be finite and >= 0", field="arrivals")

    @property
    def loaded(self) -> bool:
        """Whether the load model applies (a positive rate)."""
        return bool(self.rate)

    @property
    def idle(self) -> bool:
        """The plain question: least mean fetch time on an idle machine, nothing else."""
        return (self.minimize == "time" and self.objective.kind == "mean" and not self.slos
                and self.budget_usd_month is None and self.energy_budget_j is None
                and not self.loaded and not self.cuts and not self.delay_scales)

    def ceiling(self, tier: str) -> float:
        return self.tier_ceilings.get(tier, self.max_utilization)

    def with_changes(self, **changes: object) -> Goal:
        return replace(self, **changes)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for reports: what was minimised under which targets."""
        what = {"time": f"{self.objective} fetch time", "cost": "monthly cost",
                "energy": "energy per query"}[self.minimize]
        parts = [f"minimise {what}"]
        parts += [f"s.t. {s}" for s in self.slos]
        if self.budget_usd_month is not None:
            parts.append(f"budget ${self.budget_usd_month:g}/month")
        if self.energy_budget_j is not None:
            parts.append(f"energy <= {self.energy_budget_j * 1e3:.4g} mJ/query")
        if self.loaded:
            why = f" ({self.rate_note})" if self.rate_note else ""
            parts.append(f"at {self.rate:.4g} queries/s{why}, utilisation <= "
                         f"{self.max_utilization:g}")
        return ", ".join(parts)


def parse_slos(texts: tuple[str, ...] | list[str]) -> tuple[Slo, ...]:
    """Several `--slo` values; one per statistic."""
    slos = tuple(Slo.parse(t) for t in texts)
    stats = [s.stat for s in slos]
    for stat in set(stats):
        if stats.count(stat) > 1:
            raise InputError(f"two SLOs on {stat}: give one", field="slo")
    return slos


def make_goal(profile: Profile, bank: Bank, workload: Workload | None, *,
              fetch: Literal["parallel", "sequential"] = "parallel", idle: bool = False,
              max_utilization: float = DEFAULT_MAX_UTILIZATION, objective: str = "mean",
              slos: Sequence[str] = (), minimize: str = "time", budget: float | None = None,
              energy_budget: str | float | None = None) -> Goal:
    """The Goal of `memsim optimize`'s options (and a sweep's optimize stage).

    The rate is what the load model plans for under `workload` (`level.planning_load`: its
    rate, a burst's, or a closed loop's), unless `idle` or there is no workload; `workload`
    is already at the rate asked for (`workload.workload_at_rate`). `energy_budget` is
    joules per query, or text such as "500 mJ".
    """
    from memsim.optimize.level import planning_load  # level imports this module

    energy = None
    if isinstance(energy_budget, str):
        try:
            energy = parse_energy(energy_budget)
        except ValueError as exc:
            raise InputError(f"--energy-budget: {exc}", field="energy-budget") from None
    elif energy_budget is not None:
        energy = float(energy_budget)
    plan = None
    if not idle and workload is not None:
        plan = planning_load(profile, bank, workload, fetch=fetch,
                             max_utilization=max_utilization)
    return Goal(minimize=minimize, objective=Objective.parse(objective),  # type: ignore[arg-type]
                slos=parse_slos(slos), budget_usd_month=budget, energy_budget_j=energy,
                rate=plan.rate if plan else None, max_utilization=max_utilization,
                arrival_scv=plan.arrival_scv if plan else 1.0,
                rate_note=plan.note if plan else "")


def bucket_policy(profile: Profile, bank: Bank, goal: Goal, *, budget: float | None = None,
                  private: Sequence[str] = (), private_tiers: Sequence[str] | None = None,
                  blocked: Sequence[str] = (), replica_budget: str | int | None = None,
                  volatile: Sequence[str] | None = None) -> Policy:
    """The bucket model's Policy for `goal` and the placement rules (`memsim optimize
    --granularity bucket`'s options): subtrees as LEVEL:BLOCK text, tiers by name, the
    replica budget a size. The bucket model bounds the mean fetch time only, and counts
    dynamic energy (the idle power's share at the rate is taken off the energy budget)."""
    from memsim.blockmap import parse_subtrees
    from memsim.optimize.buckets import Policy
    from memsim.units import size_field

    replicas = size_field(replica_budget, "replica-budget")
    volatile_tiers = profile.check_tiers(list(volatile or []), "volatile")
    if private and private_tiers is None:
        raise InputError("--private needs --private-tiers (where private blocks may live)",
                         field="private-tiers")
    policy = Policy(budget_usd_month=budget, private=parse_subtrees(private, "private"),
                    private_tiers=profile.check_tiers(list(private_tiers or []),
                                                      "private-tiers") or None,
                    blocked=parse_subtrees(blocked, "blocked"), replica_budget=replicas,
                    volatile=volatile_tiers, **_bucket_load(profile, goal))
    for tree in policy.private + policy.blocked:
        if tree.depth > len(bank.levels) or tree.block >= bank.branching ** tree.depth:
            raise InputError(f"subtree {tree.depth}:{tree.block} is not in bank '{bank.name}'",
                             field="private" if tree in policy.private else "blocked")
    return policy


def _bucket_load(profile: Profile, goal: Goal) -> dict[str, object]:
    """The Policy fields of the goal: minimise, the mean SLO, the energy budget (dynamic),
    and the load when there is a rate."""
    if goal.objective.kind != "mean":
        raise InputError("--objective applies to level granularity only: the bucket model "
                         "bounds the mean fetch time", field="objective")
    tails = [s for s in goal.slos if s.level is not None]
    if tails:
        raise InputError(f"--slo '{tails[0]}': the bucket model bounds the mean fetch time "
                         "only; use a mean SLO or level granularity", field="slo")
    energy = goal.energy_budget_j
    if energy is not None and goal.rate:
        from memsim.energy import idle_power_w

        energy = energy - idle_power_w(profile) / goal.rate
        if energy < 0:
            raise InfeasibleError(f"--energy-budget {format_energy(goal.energy_budget_j or 0)} "
                                  "is below the idle power's share alone at "
                                  f"{goal.rate:g} queries/s", field="energy-budget")
    out: dict[str, object] = {"minimize": goal.minimize, "energy_budget_j": energy,
                              "mean_slo_s": next((s.limit_s for s in goal.slos), None)}
    if goal.loaded:
        out.update(rate=goal.rate, max_utilization=goal.max_utilization,
                   arrival_scv=goal.arrival_scv)
    return out
