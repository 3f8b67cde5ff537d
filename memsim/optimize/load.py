"""The level model's load, queueing, cost and energy terms, and their exact evaluation.

For every tier and every set of levels it may serve per query (the subsets of `tables`), this
holds what that set asks of the tier per query (channel-seconds, bytes, requests), the scales
of its queueing delay (`queueing.wait_scales`), its dynamic energy and its request cost. A
tier's utilisation is then linear in the ILP's subset choices; its delay is a convex function
of utilisation, over-approximated by chords (`queueing.chords`), so the model stays a MILP.

`evaluate` computes the same model for one concrete layout in plain numpy: brute force uses
it as the independent check of the ILP, and reports use it to state the model's figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from memsim import queueing
from memsim.energy import block_energy_j, idle_power_w
from memsim.optimize.goal import Goal, Objective
from memsim.optimize.tables import CostTables, Subset

GB = 1e9
SECONDS_PER_MONTH = 30 * 24 * 3600.0
CHORD_PIECES = 10
EXACT_QUANTILE_SCENARIOS = 512  # joint scenarios up to which a percentile is modelled exactly


@dataclass(frozen=True)
class SubsetLoad:
    """What one query asks of a tier when the tier serves this set of levels."""

    channel_s: float
    bytes: float
    requests: float
    wait_a: float  # queueing delay = wait_a * g(rho_c) + wait_b * slowdown(rho_l)
    wait_b: float
    energy_j: float


@dataclass
class LoadTables:
    """Per tier and level subset, the load, delay, energy and cost terms of the level model."""

    goal: Goal
    rate: float  # queries/s (0: idle)
    per: dict[str, dict[Subset, SubsetLoad]]
    chords_c: dict[str, list[tuple[float, float]]]  # (intercept, slope) over channel rho
    chords_l: dict[str, list[tuple[float, float]]]  # over link rho
    storage_usd: dict[tuple[int, str], float]  # (depth, tier) -> $ per month for the level
    request_usd: dict[str, float]  # tier -> $ per request
    idle_power_w: float
    exact_quantiles: bool = True
    # per tier, the scenarios' multipliers of the mean delay (unit mean): a request that
    # waits, waits an exponential time in M/M/c, so percentiles see a tail and not the mean
    spread: dict[str, np.ndarray] = field(default_factory=dict)
    concurrency: dict[str, int] = field(default_factory=dict)
    bandwidth: dict[str, float] = field(default_factory=dict)

    def ceiling(self, tier: str) -> float:
        return self.goal.ceiling(tier)

    def rho(self, tier: str, mix: Sequence[tuple[float, Subset]]) -> tuple[float, float]:
        """(channel, link) utilisation of `tier` when pattern weights pick these subsets."""
        loads = self.per[tier]
        chan = sum(w * loads[s].channel_s for w, s in mix)
        nbytes = sum(w * loads[s].bytes for w, s in mix)
        return (self.rate * chan / self.concurrency[tier],
                self.rate * nbytes / self.bandwidth[tier])

    def factors(self, tier: str, rho_c: float, rho_l: float) -> tuple[float, float]:
        """The model's (over-approximated) g(rho_c) and slowdown(rho_l): the chords' maximum."""
        gc = max((a + b * rho_c for a, b in self.chords_c[tier]), default=0.0)
        gl = max((a + b * rho_l for a, b in self.chords_l[tier]), default=0.0)
        return max(gc, 0.0), max(gl, 0.0)

    def max_factors(self, tier: str) -> tuple[float, float]:
        c = self.ceiling(tier)
        return self.factors(tier, c, c)


def delay_spread(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` seeded exponential multipliers scaled to mean exactly 1 (1 when n is 1)."""
    if n <= 1:
        return np.ones(max(n, 1))
    draws = -np.log1p(-(np.arange(n) + 0.5) / n)  # exponential quantiles: no sampling noise
    rng.shuffle(draws)
    return draws / draws.mean()


def build_load(tables: CostTables, goal: Goal, seed: int = 0) -> LoadTables:
    """The load terms of every (tier, subset) of `tables` under `goal`'s rate."""
    profile, bank = tables.profile, tables.bank
    sizes = {lv.depth: lv.block_bytes for lv in bank.active_levels}
    per: dict[str, dict[Subset, SubsetLoad]] = {}
    chords_c: dict[str, list[tuple[float, float]]] = {}
    chords_l: dict[str, list[tuple[float, float]]] = {}
    storage: dict[tuple[int, str], float] = {}
    request_usd: dict[str, float] = {}
    rate = float(goal.rate or 0.0)
    for tier in profile.tiers:
        demand = {d: queueing.block_demand(tier, sizes[d]) for d in tables.depths}
        energy = {d: block_energy_j(tier, sizes[d]) for d in tables.depths}
        table: dict[Subset, SubsetLoad] = {}
        for subset in tables.subsets():
            ds = [demand[d] for d in subset]
            # the query's whole time on the tier: parallel, a batch it waits for the last of;
            # sequential, each block its own turn
            a, b = (queueing.query_scales(tier, [(1.0, x) for x in ds], goal.arrival_scv,
                                          tables.fetch) if subset else (0.0, 0.0))
            scale = goal.delay_scales.get(tier.name, 1.0)
            a, b = a * scale, b * scale
            table[subset] = SubsetLoad(
                channel_s=sum(x.channel_s for x in ds), bytes=sum(x.bytes for x in ds),
                requests=sum(x.requests for x in ds), wait_a=a, wait_b=b,
                energy_j=sum(energy[d] for d in subset))
        per[tier.name] = table
        ceiling = goal.ceiling(tier.name)
        channel_curve, link_curve = queueing.wait_curves(tier)
        chords_c[tier.name] = queueing.chords(channel_curve, ceiling, CHORD_PIECES)
        chords_l[tier.name] = queueing.chords(link_curve, ceiling, CHORD_PIECES)
        price = tier.cost.storage_usd_per_gb_month if tier.cost else 0.0
        for lv in bank.active_levels:
            storage[lv.depth, tier.name] = price * lv.bytes / GB
        request_usd[tier.name] = (tier.cost.usd_per_1000_requests / 1000 if tier.cost else 0.0)
    joint = sum(1 for w, _k in tables.patterns if w > 0) * tables.scenarios
    rng = np.random.default_rng(seed + 0x5EED)
    spread = {t.name: delay_spread(tables.scenarios, rng) for t in profile.tiers}
    return LoadTables(spread=spread,
        goal=goal, rate=rate, per=per, chords_c=chords_c, chords_l=chords_l,
        storage_usd=storage, request_usd=request_usd, idle_power_w=idle_power_w(profile),
        exact_quantiles=joint <= EXACT_QUANTILE_SCENARIOS,
        concurrency={t.name: t.concurrency for t in profile.tiers},
        bandwidth={t.name: t.total_bandwidth for t in profile.tiers})


@dataclass
class ModelFigures:
    """The level model's figures for one layout (what the ILP optimises, exactly)."""

    mean_s: float
    quantile_s: dict[str, float]  # p50..p999 over the joint scenarios (exact discrete)
    cost_usd_month: float
    energy_j_per_query: float  # dynamic + the idle power's share at the rate (idle: dynamic)
    dynamic_energy_j: float
    utilization: dict[str, float]  # max(channel, link) per tier with load
    wait_s: dict[str, float]  # the model's mean queueing delay of a query on each tier
    tier_time_s: dict[str, float]  # a query's mean time on each tier it reads (with delay)
    tier_p99_s: dict[str, float]  # and its 99th percentile over the scenarios
    tier_idle_s: dict[str, float]  # the same two without the queueing delay
    tier_idle_p99_s: dict[str, float]
    feasible: bool  # every tier within its ceiling
    scenario_times: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    scenario_weights: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def stat(self, objective: Objective, exact: bool = True) -> float:
        """The objective's value: the mean, a percentile (exact, or CVaR as its bound), or
        CVaR."""
        if objective.kind == "mean":
            return self.mean_s
        if objective.kind == "quantile" and exact:
            return discrete_quantile(self.scenario_times, self.scenario_weights,
                                     objective.level)
        return discrete_cvar(self.scenario_times, self.scenario_weights, objective.level)

    def to_json(self) -> dict[str, object]:
        return {"mean_s": self.mean_s, "quantile_s": self.quantile_s,
                "cost_usd_month": self.cost_usd_month,
                "energy_j_per_query": self.energy_j_per_query,
                "dynamic_energy_j_per_query": self.dynamic_energy_j,
                "utilization": self.utilization, "wait_s": self.wait_s,
                "tier_time_s": self.tier_time_s, "tier_p99_s": self.tier_p99_s}


def discrete_quantile(values: np.ndarray, weights: np.ndarray, level: float) -> float:
    """The smallest v with P(T <= v) >= level for a discrete distribution."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    k = int(np.searchsorted(cum, level * cum[-1] - 1e-12))
    return float(values[order][min(k, len(order) - 1)])


def discrete_cvar(values: np.ndarray, weights: np.ndarray, level: float) -> float:
    """Rockafellar-Uryasev: min over eta of eta + E[(T - eta)^+] / (1 - level), exactly."""
    weights = weights / weights.sum()
    best = np.inf
    for eta in np.unique(values):
        best = min(best, float(eta + (weights * np.maximum(values - eta, 0.0)).sum()
                               / (1.0 - level)))
    return best


def fetched(placement: dict[int, str], resident: frozenset[int], kept: frozenset[int],
            tier: str) -> Subset:
    return tuple(sorted(d for d, t in placement.items() if t == tier
                        and not (d in resident and d in kept)))


def evaluate(tables: CostTables, load: LoadTables, placement: dict[int, str],
             resident: set[int] | frozenset[int] = frozenset()) -> ModelFigures:
    """The model's figures for a layout, computed directly (no solver)."""
    resident = frozenset(resident)
    patterns = [(w, kept) for w, kept in tables.patterns if w > 0]
    tiers = [t.name for t in tables.profile.tiers]
    utilization: dict[str, float] = {}
    factors: dict[str, tuple[float, float]] = {}
    feasible = True
    for t in tiers:
        mix = [(w, fetched(placement, resident, kept, t)) for w, kept in patterns]
        rc, rl = load.rho(t, mix)
        if rc > 0 or rl > 0:
            utilization[t] = max(rc, rl)
        if max(rc, rl) > load.ceiling(t) * (1 + 1e-9):
            feasible = False
        factors[t] = load.factors(t, min(rc, load.ceiling(t)), min(rl, load.ceiling(t)))
    times, weights = [], []
    wait_s: dict[str, float] = {}
    tier_time: dict[str, float] = {}
    tier_runs: dict[str, list[tuple[float, np.ndarray, np.ndarray]]] = {}
    dynamic = 0.0
    requests_cost = 0.0
    n = tables.scenarios
    for w, kept in patterns:
        per_tier = []
        for t in tiers:
            s = fetched(placement, resident, kept, t)
            sl = load.per[t][s]
            gc, gl = factors[t]
            wait = (sl.wait_a * gc + sl.wait_b * gl) if load.rate else 0.0
            if s and load.rate:
                wait_s[t] = wait_s.get(t, 0.0) + w * wait
            loaded_times = tables.times[t][s] + wait * load.spread[t]
            if s:
                tier_time[t] = tier_time.get(t, 0.0) + w * (float(tables.times[t][s].mean())
                                                            + wait)
                tier_runs.setdefault(t, []).append((w, tables.times[t][s], loaded_times))
            per_tier.append(loaded_times)
            dynamic += w * sl.energy_j
            requests_cost += w * sl.requests * load.request_usd[t]
        stacked = np.vstack(per_tier)
        combined = stacked.max(axis=0) if tables.fetch == "parallel" else stacked.sum(axis=0)
        times.append(combined)
        weights.append(np.full(n, w / n))
    values, probs = np.concatenate(times), np.concatenate(weights)
    storage = sum(load.storage_usd[d, t] for d, t in placement.items())
    cost = storage + requests_cost * load.rate * SECONDS_PER_MONTH
    quantiles = {k: discrete_quantile(values, probs, v)
                 for k, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}
    energy = energy_per_query(load, dynamic)
    total = float(probs.sum())
    tier_p99, tier_idle, tier_idle_p99 = {}, {}, {}
    for t, runs in tier_runs.items():
        w = np.concatenate([np.full(len(idle), wt / len(idle)) for wt, idle, _l in runs])
        idle = np.concatenate([i for _w, i, _l in runs])
        loaded = np.concatenate([lt for _w, _i, lt in runs])
        tier_p99[t] = discrete_quantile(loaded, w, 0.99)
        tier_idle[t] = float((idle * w).sum() / w.sum())
        tier_idle_p99[t] = discrete_quantile(idle, w, 0.99)
    return ModelFigures(
        mean_s=float((values * probs).sum() / total), quantile_s=quantiles,
        cost_usd_month=cost, energy_j_per_query=energy, dynamic_energy_j=dynamic,
        utilization=utilization, wait_s=wait_s, tier_time_s=tier_time, tier_p99_s=tier_p99,
        tier_idle_s=tier_idle, tier_idle_p99_s=tier_idle_p99, feasible=feasible,
        scenario_times=values,
        scenario_weights=probs)


def energy_per_query(load: LoadTables, dynamic_j: float) -> float:
    """Joules per query the energy objective and budget count: dynamic plus the idle
    power's share at the rate (dynamic only when idle)."""
    return dynamic_j + (load.idle_power_w / load.rate if load.rate else 0.0)
