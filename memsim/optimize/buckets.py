"""Block-granularity placement: popularity buckets of each level, counted onto tiers.

Blocks of a level are sorted by how often queries route to them and grouped into buckets
(hot blocks in small buckets, the cold tail in big ones). An integer variable y[i, s, p] counts
the blocks of bucket i read from tier s whose durable copy is on tier p: s == p for a block
with one copy, s faster than p for a replicated block (a copy on s, within the replica
budget). Afterwards the hottest blocks of each bucket go to the level's fastest tiers. Each
bucket is treated as blocks of its average popularity, so with one block per bucket the model
is exact per block.

Objective. Let X_d be the stand-alone time of level d's block (mean latency plus transfer on
its tier, alone), which depends on where the routed block lives.
- sequential fetch: E[sum_d X_d] = sum_d sum_t P(block of d on t) * tau(d, t), exact.
- parallel fetch: E[max_d X_d] <= z + sum_d E[(X_d - z)^+] for every z, whatever the joint
  distribution of the X_d (tight when they move together; exact when each level sits on one
  tier). The ILP minimises this bound for each candidate z (the distinct tau values: the bound
  is piecewise linear in z with kinks there) and keeps the best. Two levels of one query
  sharing a tier are not modelled here (the level-granularity ILP models that exactly), so
  `--verify` reports the estimator's and the simulator's verdict on the chosen layout.

Load (Policy.max_utilization with a rate; LoadModel): each tier's channel and link
utilisation is linear in the counts and kept under the ceiling; each tier's queueing wait is
the max of chords of its convex delay curves (memsim.queueing), and the time bound adds the
largest (once per level for sequential fetch). Policy.minimize "cost" or "energy" minimises
monthly dollars or dynamic joules per query instead, with `mean_slo_s` bounding the time
(per candidate z: the cheapest over z) and `energy_budget_j` the joules, as rows.

Solving: the model is built as arrays (numpy) and given to highspy directly; the LP
relaxations of the candidate z share one HiGHS instance (only the objective moves); the
integer solve of `auto` is CBC's first (see `solve_integer`). A load-aware solve stops at
LOAD_GAP relative gap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from memsim import queueing
from memsim.bank import Bank
from memsim.blockmap import BlockMap, Subtree, in_any
from memsim.cost_model import block_finish_times, draw_latencies, request_parts
from memsim.energy import block_energy_j
from memsim.errors import InfeasibleError, InputError
from memsim.layout import FetchMode
from memsim.optimize.solver import (
    ArrayModel,
    RelaxationSweep,
    SolveOutcome,
    SolverName,
    cbc_available,
    highs_available,
    solve_arrays,
)
from memsim.popularity import Buckets, make_buckets
from memsim.profile import Profile
from memsim.units import format_size

GB = 1e9
MS = 1e3
SECONDS_PER_MONTH = 30 * 24 * 3600.0


@dataclass
class Item:
    """One bucket of one level (and one privacy class): blocks that move together."""

    depth: int
    buckets: Buckets
    index: int  # bucket number within `buckets`
    size: int
    mass: float  # probability that a query's block of this level is in the bucket
    block_bytes: int
    allowed: np.ndarray  # bool per tier


@dataclass
class Policy:
    """What the placement must respect besides capacity."""

    budget_usd_month: float | None = None
    rate: float = 0.0  # queries per second, for request costs
    private: list[Subtree] = field(default_factory=list)
    private_tiers: list[str] | None = None  # tiers private blocks may use
    blocked: list[Subtree] = field(default_factory=list)
    replica_budget: int | None = None  # bytes of extra copies on faster tiers; None: none
    volatile: list[str] = field(default_factory=list)  # tiers that may hold replicas only
    # Load (None: no load terms; the caller sets e.g. 0.8 when a rate is known and
    # load-aware placement is asked): every tier's channel and link utilisation at `rate`
    # stays at most this, and the time objective adds the queueing wait (see LoadModel).
    max_utilization: float | None = None
    # squared CV of query interarrival times; None: the workload's (queueing.arrival_scv)
    arrival_scv: float | None = None
    minimize: Literal["time", "cost", "energy"] = "time"
    mean_slo_s: float | None = None  # bound on the model's mean fetch time (with its wait)
    energy_budget_j: float | None = None  # dynamic joules per query

    def check(self) -> None:
        """Input errors in the load, objective and bound fields."""
        u = self.max_utilization
        if u is not None and not (0.0 < u < 1.0):
            raise InputError(f"the utilisation ceiling must be in (0, 1), got {u!r}",
                             field="max_utilization")
        if self.minimize not in ("time", "cost", "energy"):
            raise InputError(f"minimize must be time, cost or energy, got {self.minimize!r}",
                             field="minimize")
        for name in ("mean_slo_s", "energy_budget_j"):
            value = getattr(self, name)
            if value is not None and not (0.0 <= value < math.inf):
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}",
                                 field=name)
        if self.arrival_scv is not None and not (0.0 <= self.arrival_scv < math.inf):
            raise InputError(f"arrival_scv must be finite and >= 0, got {self.arrival_scv!r}",
                             field="arrival_scv")


CHORDS = 8  # pieces of each delay curve's piecewise-linear over-approximation


@dataclass
class LoadModel:
    """Tier utilisation and queueing wait of a placement at `rate` queries/s.

    A block of level d read from tier t with probability m[d, t] per query loads the tier's
    channels by rate * m * channel_s / concurrency and its link by rate * m * bytes /
    total bandwidth (both linear in the placement). The wait of a block on t is
    a_t g(rho_c) + b_t h(rho_l) (queueing.wait_scales, Allen-Cunneen channel wait and the
    link slowdown), with g and h replaced by the max of their chords on [0, ceiling] (never
    below the curves). (a_t, b_t) is the max over levels of each level's block alone on t,
    a conservative scale for a mix. The wait added to the time bound is the max over tiers,
    omega: E[max_d (X_d + W_d)] <= E[max_d X_d] + max_t W_t for parallel fetch; sequential
    fetch adds it once per level (E[sum_d (X_d + W_d)] <= E[sum_d X_d] + D max_t W_t).
    """

    rate: float
    ceiling: float
    channel: dict[int, np.ndarray]  # depth -> per tier: channel-s per read / concurrency
    link: dict[int, np.ndarray]  # depth -> per tier: bytes per read / total bandwidth
    a: np.ndarray  # per tier (seconds)
    b: np.ndarray
    chords_c: list[list[tuple[float, float]]]  # per tier: (intercept, slope)
    chords_l: list[list[tuple[float, float]]]
    repeat: int  # 1 (parallel) or the number of levels (sequential)

    def rho(self, masses: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(channel, link) utilisation per tier."""
        rc = sum((masses[d] * self.channel[d] for d in masses), np.zeros(self.a.shape[0]))
        rl = sum((masses[d] * self.link[d] for d in masses), np.zeros(self.a.shape[0]))
        return self.rate * rc, self.rate * rl

    def tier_wait_s(self, masses: dict[int, np.ndarray]) -> np.ndarray:
        """The model's wait per tier: a G_c + b G_l, G the max of the chords at rho."""
        rc, rl = self.rho(masses)
        out = np.zeros(self.a.shape[0])
        for t in range(out.shape[0]):
            if self.a[t] > 0:
                out[t] += self.a[t] * max(c + k * rc[t] for c, k in self.chords_c[t])
            if self.b[t] > 0:
                out[t] += self.b[t] * max(c + k * rl[t] for c, k in self.chords_l[t])
        return out

    def wait_s(self, masses: dict[int, np.ndarray]) -> float:
        """omega: the largest tier wait (0 with no tier)."""
        waits = self.tier_wait_s(masses)
        return float(max(waits.max(initial=0.0), 0.0))

    def within(self, masses: dict[int, np.ndarray], slack: float = 1e-6) -> bool:
        rc, rl = self.rho(masses)
        return bool(np.all(rc <= self.ceiling + slack) and np.all(rl <= self.ceiling + slack))


def load_model(profile: Profile, bank: Bank, fetch: FetchMode, policy: Policy
               ) -> LoadModel | None:
    """The load terms of `policy` (None without a ceiling or a rate)."""
    if policy.max_utilization is None or not policy.rate > 0:
        return None
    ceiling = float(policy.max_utilization)
    scv = policy.arrival_scv if policy.arrival_scv is not None else 1.0
    channel: dict[int, np.ndarray] = {}
    link: dict[int, np.ndarray] = {}
    tiers = profile.tiers
    a = np.zeros(len(tiers))
    b = np.zeros(len(tiers))
    for lv in bank.active_levels:
        demands = [queueing.block_demand(t, lv.block_bytes) for t in tiers]
        channel[lv.depth] = np.array([d.channel_s / t.concurrency
                                      for d, t in zip(demands, tiers, strict=True)])
        link[lv.depth] = np.array([d.bytes / t.total_bandwidth
                                   for d, t in zip(demands, tiers, strict=True)])
        for i, (t, d) in enumerate(zip(tiers, demands, strict=True)):
            ai, bi = queueing.wait_scales(t, [(1.0, d)], scv, fetch)
            a[i], b[i] = max(a[i], ai), max(b[i], bi)
    chords_c, chords_l = [], []
    for t in tiers:
        g, h = queueing.wait_curves(t)
        chords_c.append(queueing.chords(g, ceiling, CHORDS))
        chords_l.append(queueing.chords(h, ceiling, CHORDS))
    return LoadModel(rate=float(policy.rate), ceiling=ceiling, channel=channel, link=link,
                     a=a, b=b, chords_c=chords_c, chords_l=chords_l,
                     repeat=1 if fetch == "parallel" else len(bank.active_levels))


@dataclass
class BucketProblem:
    """Everything the bucket ILP, the greedy baseline and brute force evaluate."""

    profile: Profile
    bank: Bank
    fetch: FetchMode
    policy: Policy
    items: list[Item]
    tau: dict[int, np.ndarray]  # depth -> stand-alone mean time per tier (seconds)
    parts: dict[int, np.ndarray]  # depth -> requests per block per tier
    load: LoadModel | None = None
    energy: dict[int, np.ndarray] = field(default_factory=dict)  # depth -> J per read, per tier
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # per-problem arrays

    def candidates(self) -> list[float]:
        """z values where the parallel bound can be smallest."""
        values = {0.0}
        for item in self.items:
            values.update(float(v) for v in self.tau[item.depth][item.allowed])
        return sorted(values)

    def bound(self, masses: dict[int, np.ndarray]) -> float:
        """Expected fetch time (sequential) or its bound (parallel) for per-level tier masses,
        plus the queueing wait of the load model, if any."""
        return self.idle_bound(masses) + self.wait_s(masses)

    def idle_bound(self, masses: dict[int, np.ndarray]) -> float:
        """`bound` on an idle machine."""
        if self.fetch == "sequential":
            return float(sum(masses[d] @ self.tau[d] for d in masses))
        best = np.inf
        for z in self.candidates():
            value = z + sum(float(masses[d] @ np.maximum(self.tau[d] - z, 0.0)) for d in masses)
            best = min(best, value)
        return float(best)

    def wait_s(self, masses: dict[int, np.ndarray]) -> float:
        """What the load model adds to the time bound (its omega, once per level for
        sequential fetch); 0 without load."""
        if self.load is None:
            return 0.0
        return self.load.repeat * self.load.wait_s(masses)

    def energy_j(self, masses: dict[int, np.ndarray]) -> float:
        """Dynamic joules per query of reading the levels' blocks from their tiers."""
        return float(sum(masses[d] @ self.energy[d] for d in masses if d in self.energy))

    def objective(self, counts: np.ndarray) -> float:
        """The minimised quantity of counts, bucket-average (s, $/month or J)."""
        if self.policy.minimize == "cost":
            return self.monthly_cost(counts)
        masses = self.masses(counts)
        return self.energy_j(masses) if self.policy.minimize == "energy" else self.bound(masses)

    def violations(self, masses: dict[int, np.ndarray], counts: np.ndarray | None = None
                   ) -> list[str]:
        """The load, time and energy bounds these masses break (empty: none)."""
        out = []
        if self.load is not None and not self.load.within(masses):
            out.append("utilisation ceiling")
        slo = self.policy.mean_slo_s
        if slo is not None and self.bound(masses) > slo * (1 + 1e-6) + 1e-12:
            out.append("mean fetch-time bound")
        joules = self.policy.energy_budget_j
        if joules is not None and self.energy_j(masses) > joules * (1 + 1e-6) + 1e-15:
            out.append("energy budget")
        return out

    def masses(self, counts: np.ndarray) -> dict[int, np.ndarray]:
        """Per-level masses of the tiers blocks are read from (counts: items x serve x
        primary), with bucket-average popularity."""
        out = {d: np.zeros(len(self.profile.tiers)) for d in self.tau}
        for item, block in zip(self.items, counts, strict=True):
            if item.size:
                out[item.depth] += item.mass * block.sum(axis=1) / item.size
        return out

    def used_bytes(self, counts: np.ndarray) -> np.ndarray:
        """Bytes stored on each tier: every copy, read or durable."""
        used = np.zeros(len(self.profile.tiers))
        for item, block in zip(self.items, counts, strict=True):
            copies = block.sum(axis=1) + block.sum(axis=0) - np.diagonal(block)
            used += item.block_bytes * copies
        return used

    def replica_bytes(self, counts: np.ndarray) -> float:
        return float(sum(item.block_bytes * (block.sum() - np.trace(block))
                         for item, block in zip(self.items, counts, strict=True)))

    def monthly_cost(self, counts: np.ndarray) -> float:
        """Storage plus request dollars per month."""
        total = 0.0
        masses = self.masses(counts)
        used = self.used_bytes(counts)
        for t, tier in enumerate(self.profile.tiers):
            if tier.cost is None:
                continue
            total += tier.cost.storage_usd_per_gb_month * used[t] / GB
            requests = sum(masses[d][t] * self.parts[d][t] for d in masses)
            total += (tier.cost.usd_per_1000_requests / 1000 * requests * self.policy.rate
                      * SECONDS_PER_MONTH)
        return total


def stand_alone_times(profile: Profile, block_bytes: int, samples: int = 2048, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Mean time of one block alone on each tier, and the requests it takes there."""
    rng = np.random.default_rng(seed)
    tau = np.empty(len(profile.tiers))
    parts = np.empty(len(profile.tiers))
    for t, tier in enumerate(profile.tiers):
        k = len(request_parts(tier, block_bytes))
        n = 1 if tier.latency.is_constant else samples
        lat = draw_latencies(tier, rng, n, k)
        tau[t] = float(block_finish_times(tier, [block_bytes], lat)[:, 0].mean())
        parts[t] = k
    return tau, parts


def build_problem(profile: Profile, bank: Bank, fetch: FetchMode,
                  popularity: dict[int, np.ndarray], bucket_count: int, policy: Policy
                  ) -> BucketProblem:
    """Buckets per level (and privacy class), and the tier times they are weighed with."""
    names = profile.tier_names
    policy.check()
    if policy.private_tiers is not None:
        for name in policy.private_tiers:
            if name not in names:
                raise InputError(f"unknown tier '{name}' for private blocks (profile "
                                 f"'{profile.name}' has {', '.join(names)})",
                                 field="private-tiers")
    everywhere = np.ones(len(names), dtype=bool)
    private_ok = (np.array([n in policy.private_tiers for n in names])
                  if policy.private_tiers is not None else everywhere)
    items: list[Item] = []
    tau: dict[int, np.ndarray] = {}
    parts: dict[int, np.ndarray] = {}
    for lv in bank.active_levels:
        tau[lv.depth], parts[lv.depth] = stand_alone_times(profile, lv.block_bytes)
        ids = np.arange(lv.blocks, dtype=np.int64) if policy.private or policy.blocked else None
        blocked = (in_any(policy.blocked, lv.depth, ids, bank.branching) if policy.blocked
                   else None)
        private = (in_any(policy.private, lv.depth, ids, bank.branching) if policy.private
                   else None)
        pop = popularity[lv.depth]
        classes = [(None, everywhere)] if private is None else [
            (~private, everywhere), (private, private_ok)]
        for mask, allowed in classes:
            eligible = mask
            if blocked is not None:
                eligible = ~blocked if eligible is None else eligible & ~blocked
            buckets = make_buckets(pop, lv.depth, bucket_count, eligible=eligible)
            for k in range(buckets.count):
                items.append(Item(depth=lv.depth, buckets=buckets, index=k,
                                  size=int(buckets.size[k]), mass=float(buckets.mass[k]),
                                  block_bytes=lv.block_bytes, allowed=allowed))
    energy = {lv.depth: np.array([block_energy_j(t, lv.block_bytes) for t in profile.tiers])
              for lv in bank.active_levels}
    return BucketProblem(profile=profile, bank=bank, fetch=fetch, policy=policy, items=items,
                         tau=tau, parts=parts, load=load_model(profile, bank, fetch, policy),
                         energy=energy)


@dataclass
class BucketModel:
    """The bucket ILP as arrays (built with numpy: a PuLP model of it cost more than its
    solve). Columns: the integer counts y[i, s, p] first, then continuous ones (slacks)."""

    y: np.ndarray  # (count columns, 3) int64: item, serve tier, primary tier
    arrays: ArrayModel
    slack: dict[str, int]  # slack name -> column
    unit: float  # bytes per capacity unit in the model
    rows: list[str]  # row names, in order

    @property
    def columns(self) -> int:
        return int(self.arrays.cost.shape[0])


class _Rows:
    """Rows of a model in the making, kept as (columns, coefficients, lower, upper)."""

    def __init__(self) -> None:
        self.index: list[np.ndarray] = []
        self.value: list[np.ndarray] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.names: list[str] = []

    def add_block(self, names: list[str], starts: np.ndarray, index: np.ndarray,
                  value: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Several rows at once, given as CSR (starts of len(names) + 1)."""
        for r in range(len(names)):
            self.index.append(index[starts[r]:starts[r + 1]])
            self.value.append(value[starts[r]:starts[r + 1]])
        self.lower.extend(np.asarray(lower, dtype=float).tolist())
        self.upper.extend(np.asarray(upper, dtype=float).tolist())
        self.names.extend(names)

    def add(self, name: str, index: np.ndarray, value: np.ndarray | float,
            lower: float = -np.inf, upper: float = np.inf) -> None:
        index = np.asarray(index, dtype=np.int64)
        self.index.append(index)
        self.value.append(np.broadcast_to(np.asarray(value, dtype=np.float64),
                                          index.shape).copy())
        self.lower.append(float(lower))
        self.upper.append(float(upper))
        self.names.append(name)

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lengths = [i.shape[0] for i in self.index]
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if not self.index:
            return starts, np.zeros(0, np.int64), np.zeros(0)
        return starts, np.concatenate(self.index), np.concatenate(self.value)


def _pairs(bp: BucketProblem, item: Item) -> list[tuple[int, int]]:
    """(serve, primary) tier pairs a block of `item` may take."""
    allowed = np.flatnonzero(item.allowed).tolist()
    names = bp.profile.tier_names
    durable = [t for t in allowed if names[t] not in bp.policy.volatile]
    pairs = [(t, t) for t in durable]
    if bp.policy.replica_budget:
        tau = bp.tau[item.depth]
        pairs += [(s, p) for s in allowed for p in durable if tau[s] < tau[p]]
    return pairs


def count_columns(bp: BucketProblem) -> np.ndarray:
    """(item, serve, primary) of every count column, grouped by item (computed once)."""
    if "columns" not in bp.cache:
        cols = [(i, s_, p_) for i, item in enumerate(bp.items) for s_, p_ in _pairs(bp, item)]
        bp.cache["columns"] = np.array(cols, dtype=np.int64).reshape(-1, 3)
    return bp.cache["columns"]


def column_cost_usd(bp: BucketProblem, y: np.ndarray) -> np.ndarray:
    """Monthly dollars of one block of each count column: storage of its copies plus its
    requests at the policy's rate."""
    profile = bp.profile
    storage = np.array([t.cost.storage_usd_per_gb_month if t.cost is not None else 0.0
                        for t in profile.tiers])
    per_request = np.array([t.cost.usd_per_1000_requests / 1000 if t.cost is not None
                            else 0.0 for t in profile.tiers])
    item, s_, p_ = y[:, 0], y[:, 1], y[:, 2]
    nbytes = np.array([it.block_bytes for it in bp.items], dtype=np.float64)[item]
    share = np.array([it.mass / max(it.size, 1) for it in bp.items])[item]
    parts = np.array([bp.parts[it.depth] for it in bp.items]).reshape(len(bp.items), -1)
    cost = storage[s_] * nbytes / GB + np.where(p_ != s_, storage[p_] * nbytes / GB, 0.0)
    return cost + (per_request[s_] * parts[item, s_] * bp.policy.rate * SECONDS_PER_MONTH
                   * share)


def build_model(bp: BucketProblem, z: float | None, capacity_slack: bool = False,
                peak_load: bool = False) -> BucketModel:
    """The ILP for one candidate z (parallel) or the exact sequential objective (z None).

    With `capacity_slack`: the least extra capacity and budget that make it feasible (no
    load, time or energy rows). With `peak_load`: the least peak utilisation per query/s
    over the tiers, under capacity and budget (the highest rate any placement carries)."""
    profile, bank = bp.profile, bp.bank
    y = count_columns(bp)
    item, s_, p_ = y[:, 0], y[:, 1], y[:, 2]
    n = y.shape[0]
    sizes = np.array([it.size for it in bp.items], dtype=np.float64)
    nbytes = np.array([it.block_bytes for it in bp.items], dtype=np.float64)
    rows = _Rows()
    bounds = np.searchsorted(item, np.arange(len(bp.items) + 1))  # columns grouped by item
    rows.add_block([f"all_{i}" for i in range(len(bp.items))], bounds, np.arange(n),
                   np.ones(n), sizes, sizes)
    extra: list[tuple[str, float]] = []  # continuous columns after the counts: (name, cost)
    slack: dict[str, int] = {}

    def column(name: str, cost: float) -> int:
        extra.append((name, cost))
        return n + len(extra) - 1

    ram = profile.ram
    # Bytes in units of the smallest block: coefficients >= 1, so the solver's feasibility
    # tolerance is far below one block (GB units let tiny blocks slip past a full tier).
    unit = float(nbytes.min()) if bp.items else 1.0
    size_units = nbytes[item] / unit
    for t, tier in enumerate(profile.tiers):
        if tier.capacity is None:
            continue
        room = (tier.capacity - (bank.anchor_bytes if ram and tier.name == ram.name
                                 else 0)) / unit
        on = np.flatnonzero((s_ == t) | ((p_ == t) & (p_ != s_)))
        index, value = on, size_units[on]
        if capacity_slack:
            slack[tier.name] = column(f"slack_{t}", 1.0)
            index, value = np.r_[on, slack[tier.name]], np.r_[value, -1.0]
        rows.add(f"capacity_{t}", index, value, upper=room)
    upper = sizes[item].copy()
    if bp.policy.replica_budget:
        copies = np.flatnonzero(s_ != p_)
        rows.add("replica_budget", copies, size_units[copies],
                 upper=bp.policy.replica_budget / unit)
    if bp.policy.budget_usd_month is not None:
        cost = column_cost_usd(bp, y)
        budget = bp.policy.budget_usd_month
        paid = np.flatnonzero(cost != 0)
        if capacity_slack:
            slack["budget"] = column("slack_budget", 1.0)
            rows.add("budget", np.r_[paid, slack["budget"]], np.r_[cost[paid], -1.0],
                     upper=budget)
        else:
            # A block that alone costs more than the budget is excluded exactly. Below a
            # dollar the row is in units of the budget, so the solver's tolerance (about
            # 1e-6 of a row unit) stays a small fraction of it; above, in dollars.
            scale = min(budget, 1.0)
            upper[paid[cost[paid] > budget]] = 0.0
            within = paid[cost[paid] <= budget]
            if within.shape[0]:
                rows.add("budget", within, cost[within] / scale, upper=budget / scale)
    share = np.array([it.mass / it.size if it.size else 0.0 for it in bp.items])[item]
    depth = np.array([it.depth for it in bp.items], dtype=np.int64)[item]
    minimize = "peak" if peak_load else "slack" if capacity_slack else bp.policy.minimize
    omega = _load_rows(bp, rows, column, s_, share, depth, minimize) if (
        bp.load is not None and not capacity_slack) else None
    if not capacity_slack and not peak_load:
        slo = bp.policy.mean_slo_s
        if slo is not None:  # the time bound at this z, wait included
            index, value = np.arange(n), time_cost(bp, y, z)
            if omega is not None:
                index, value = np.r_[index, omega], np.r_[value, float(bp.load.repeat)]
            rows.add("mean_slo", index, value, upper=(slo - (z or 0.0)) * MS)
        joules = bp.policy.energy_budget_j
        per_read = share * _per_tier(bp.energy, depth, s_)
        if joules is not None and per_read.any():
            rows.add("energy_budget", np.arange(n), per_read, upper=joules)
    offset = 0.0
    if minimize in ("slack", "peak"):
        objective = np.zeros(n)
    elif minimize == "cost":
        objective = column_cost_usd(bp, y)
    elif minimize == "energy":
        objective = share * _per_tier(bp.energy, depth, s_)
    else:
        objective = time_cost(bp, y, z)
        offset = z * MS if z is not None else 0.0
    starts, index, value = rows.csr()
    arrays = ArrayModel(
        cost=np.r_[objective, [c for _n, c in extra]], offset=offset,
        lower=np.zeros(n + len(extra)), upper=np.r_[upper, np.full(len(extra), np.inf)],
        integer=np.r_[np.ones(n, dtype=bool), np.zeros(len(extra), dtype=bool)],
        starts=starts, index=index, value=value, row_lower=np.array(rows.lower),
        row_upper=np.array(rows.upper))
    return BucketModel(y=y, arrays=arrays, slack=slack, unit=unit, rows=rows.names)


def _per_tier(table: dict[int, np.ndarray], depth: np.ndarray, tier: np.ndarray
              ) -> np.ndarray:
    """table[depth][tier] per column (0 for a depth the table lacks)."""
    out = np.zeros(depth.shape[0])
    for d, row in table.items():
        on = depth == d
        out[on] = row[tier[on]]
    return out


def _load_rows(bp: BucketProblem, rows: _Rows, column: Callable[[str, float], int],
               serve: np.ndarray, share: np.ndarray, depth: np.ndarray, minimize: str
               ) -> int | None:
    """Utilisation rows, the chords of each tier's wait, and omega >= every tier's wait;
    the omega column, in ms (None when no tier can wait). For `peak`, rows util / rate <= m and
    m the objective instead."""
    load = bp.load
    assert load is not None
    channel = _per_tier(load.channel, depth, serve)
    link = _per_tier(load.link, depth, serve)
    peak = column("peak_utilization_per_rate", 1.0) if minimize == "peak" else None
    waits: list[tuple[int, int]] = []  # (tier, wait column in ms)
    names = bp.profile.tier_names
    for t in range(len(names)):
        on = np.flatnonzero(serve == t)
        for kind, per_read, curve, scale in (
                ("channel", channel, load.chords_c[t], load.a[t]),
                ("link", link, load.chords_l[t], load.b[t])):
            coef = share[on] * per_read[on]  # utilisation per query/s
            if not on.shape[0] or not coef.any():
                continue
            if peak is not None:
                rows.add(f"peak_{kind}_{t}", np.r_[on, peak], np.r_[coef, -1.0], upper=0.0)
                continue
            rows.add(f"{kind}_utilization_{t}", on, load.rate * coef, upper=load.ceiling)
            if scale > 0:
                # W = scale * G in ms, W >= scale (intercept + slope rho) per chord. In ms,
                # like the objective: in seconds a wait of a microsecond is within the
                # solver's feasibility tolerance (~1e-7 after scaling), and HiGHS returned
                # omega = 0 for a 1 us wait on a 0.94 ms bound.
                w = column(f"wait_{kind}_{t}", 0.0)
                a_ms = float(scale) * MS
                for intercept, slope in curve:
                    rows.add(f"chord_{kind}_{t}", np.r_[on, w],
                             np.r_[-a_ms * slope * load.rate * coef, 1.0],
                             lower=a_ms * intercept)
                waits.append((t, w))
    if peak is not None or not waits:
        return None
    omega = column("omega", load.repeat if minimize == "time" else 0.0)  # ms
    for t in sorted({t for t, _w in waits}):
        mine = [w for u, w in waits if u == t]
        rows.add(f"wait_{t}", np.r_[omega, mine], np.r_[1.0, -np.ones(len(mine))], lower=0.0)
    return omega


def time_cost(bp: BucketProblem, y: np.ndarray, z: float | None) -> np.ndarray:
    """Objective coefficient (ms) of each count column: its block's share of the level's
    mass times its tier time (sequential), or the time above z (parallel)."""
    item, s_ = y[:, 0], y[:, 1]
    tau = np.array([bp.tau[it.depth] for it in bp.items]).reshape(len(bp.items), -1)
    time = tau[item, s_]
    weight = time if z is None else np.maximum(time - z, 0.0)
    share = np.array([it.mass / it.size if it.size else 0.0 for it in bp.items])[item]
    return weight * MS * share


def counts_of(bp: BucketProblem, model: BucketModel, x: np.ndarray) -> np.ndarray:
    """Counts (items x serve x primary) from a solution's column values."""
    tiers = len(bp.profile.tiers)
    counts = np.zeros((len(bp.items), tiers, tiers), dtype=np.int64)
    y = model.y
    counts[y[:, 0], y[:, 1], y[:, 2]] = np.rint(x[:y.shape[0]]).astype(np.int64)
    return counts


@dataclass
class BucketSolution:
    counts: np.ndarray  # items x serve tier x primary tier
    objective_s: float  # the model's time bound, wait included (bucket-average popularity)
    outcome: SolveOutcome
    solves: int
    seconds: float = 0.0  # all solves together
    value: float = math.nan  # the minimised quantity: objective_s, $/month or J per query


# Relative gap at which a load-aware solve stops. The max over tiers of the chorded waits
# leaves the LP relaxation ~5e-4 below the integer optimum on the paper bank, and proving
# the last digits took both solvers over 20 s (0.3 s to reach 3e-4); the chords themselves
# over-approximate the wait by far more than this.
LOAD_GAP = 1e-3


def solve_buckets(bp: BucketProblem, solver: SolverName = "auto",
                  time_limit: float | None = None, gap: float = 0.0) -> BucketSolution:
    """Best counts over the candidate z values (one solve for sequential fetch, and for cost
    or energy without a time bound, where z plays no part)."""
    minimize = bp.policy.minimize
    per_z = bp.fetch == "parallel" and (minimize == "time" or bp.policy.mean_slo_s is not None)
    zs: Sequence[float | None] = bp.candidates() if per_z else [None]
    scale = MS if minimize == "time" else 1.0  # model units per objective unit
    if bp.load is not None:
        gap = max(gap, LOAD_GAP)
    best: BucketSolution | None = None
    solves = 0
    seconds = 0.0
    lower: dict[float | None, float] = {}
    if len(zs) > 1:
        # The LP relaxation of each candidate is a lower bound on its integer optimum and
        # takes milliseconds: solve the integer models best bound first and stop when no
        # remaining bound can beat the best answer found (usually after one). With a time
        # bound some z may be infeasible while others are not.
        feasible = []
        sweep = None
        if bp.policy.mean_slo_s is None and solver in ("auto", "highs") and highs_available():
            # only the objective moves with z: one LP, re-solved from its last basis
            base = build_model(bp, zs[0])
            sweep = RelaxationSweep(base.arrays, time_limit)
            cost = base.arrays.cost.copy()
        for z in zs:
            if sweep is not None:
                cost[:base.y.shape[0]] = time_cost(bp, base.y, z)
                relaxed = sweep.solve(cost, (z or 0.0) * MS)
            else:
                relaxed, _x = solve_arrays(build_model(bp, z).arrays, solver, time_limit, 0.0,
                                           relax=True)
            seconds += relaxed.seconds
            if relaxed.status == "infeasible":
                continue
            feasible.append(z)
            lower[z] = relaxed.objective / scale if relaxed.objective is not None else -np.inf
        if not feasible:
            raise InfeasibleError(_shortfall(bp, solver, time_limit))
        zs = sorted(feasible, key=lambda z: lower[z])
    infeasible = 0
    for z in zs:
        if best is not None and lower.get(z, -np.inf) >= best.value * (1 - max(gap, 1e-9)) + (
                -1e-12 if best.value == 0 else 0.0):
            break
        model = build_model(bp, z)
        outcome, x = solve_integer(model.arrays, solver, time_limit, gap)
        solves += 1
        seconds += outcome.seconds
        if outcome.status == "infeasible":
            infeasible += 1
            continue
        if outcome.status not in ("optimal", "time_limit") or x is None:
            continue
        counts = counts_of(bp, model, x)
        if any(block.sum() != item.size for item, block in zip(bp.items, counts, strict=True)):
            continue  # no usable point
        value = bp.objective(counts)
        if best is None or value < best.value - 1e-15:
            best = BucketSolution(counts=counts, objective_s=bp.bound(bp.masses(counts)),
                                  outcome=outcome, solves=solves, value=value)
    if best is None:
        if infeasible:
            raise InfeasibleError(_shortfall(bp, solver, time_limit))
        raise InfeasibleError("the solver found no placement within its limits")
    best.solves = solves
    best.seconds = seconds
    return best


CBC_FIRST_SECONDS = 2.0


def solve_integer(model: ArrayModel, solver: SolverName, time_limit: float | None,
                  gap: float) -> tuple[SolveOutcome, np.ndarray | None]:
    """The integer solve, by the solver that suits the bucket ILP.

    For `auto`, CBC first: on these models HiGHS spends over a second in its root node
    (domain propagation over integer columns with domains of millions of blocks; the LP
    itself takes milliseconds) where CBC proves the same optimum in a tenth of that. CBC is
    given CBC_FIRST_SECONDS (or the time limit, if smaller); if it has not proved its
    answer by then, HiGHS solves the model. LP relaxations stay with HiGHS, which is fast
    on them and needs no subprocess.
    """
    if solver == "auto" and cbc_available():
        cap = CBC_FIRST_SECONDS if time_limit is None else min(time_limit, CBC_FIRST_SECONDS)
        outcome, x = solve_arrays(model, "cbc", cap, gap)
        if outcome.status == "infeasible" or (outcome.status == "optimal" and x is not None):
            return outcome, x  # (CBC leaves values unset under a constant objective)
        rest = None if time_limit is None else max(time_limit - outcome.seconds, 0.1)
        fallback, y = solve_arrays(model, "auto", rest, gap)
        fallback.seconds += outcome.seconds
        return fallback, y
    return solve_arrays(model, solver, time_limit, gap)


def _shortfall(bp: BucketProblem, solver: SolverName, time_limit: float | None) -> str:
    model = build_model(bp, None, capacity_slack=True)
    outcome, x = solve_arrays(model.arrays, solver, time_limit, 0.0)
    if outcome.status not in ("optimal", "time_limit") or x is None:
        return "no placement satisfies the constraints"
    parts = []
    for name, col in model.slack.items():
        amount = float(x[col])
        if amount <= 1e-9:
            continue
        if name == "budget":
            parts.append(f"the budget of ${bp.policy.budget_usd_month:,.2f}/month is short by "
                         f"${amount:,.2f}")
        else:
            cap = bp.profile.tier(name).capacity_bytes
            parts.append(f"tier '{name}' is short by {format_size(amount * model.unit)} (holds "
                         f"{format_size(cap)})")
    if parts:
        return ("no placement fits: " + "; ".join(parts) + " in the placement needing least "
                "extra")
    load = bp.load
    if load is not None:
        peak = build_model(bp, None, peak_load=True)
        outcome, x = solve_arrays(peak.arrays, solver, time_limit, 0.0, relax=True)
        if outcome.status == "optimal" and x is not None and outcome.objective:
            carried = load.ceiling / outcome.objective  # queries/s at the ceiling, at best
            if carried < load.rate * (1 - 1e-9):
                counts = np.zeros((len(bp.items),) + (len(bp.profile.tiers),) * 2)
                y = peak.y
                counts[y[:, 0], y[:, 1], y[:, 2]] = x[:y.shape[0]]
                masses = bp.masses(counts)
                rc, rl = load.rho(masses)
                worst = int(np.argmax(np.maximum(rc, rl)))
                what = "channels" if rc[worst] >= rl[worst] else "link"
                name = bp.profile.tiers[worst].name
                return (f"tier '{name}' cannot carry the load: at {load.rate:.4g} queries/s "
                        f"no placement keeps every tier at most {load.ceiling:.0%} busy; the "
                        f"least loaded placement still has '{name}' ({what}) at "
                        f"{max(rc[worst], rl[worst]):.0%}, and would carry at most "
                        f"{carried:.4g} queries/s")
    bounds = []
    if bp.policy.mean_slo_s is not None:
        bounds.append(f"a mean fetch time of at most {bp.policy.mean_slo_s * MS:.4g} ms"
                      + (" (queueing wait included)" if load is not None else ""))
    if bp.policy.energy_budget_j is not None:
        bounds.append(f"at most {bp.policy.energy_budget_j:.4g} J per query")
    if bounds:
        return "no placement meets " + " and ".join(bounds) + " within the constraints"
    return "no placement satisfies the constraints"


def greedy_counts(bp: BucketProblem) -> np.ndarray | None:
    """Hottest blocks first (per-block popularity), each to its level's fastest tier with room."""
    free = np.array([t.capacity_bytes for t in bp.profile.tiers], dtype=float)
    ram = bp.profile.ram
    if ram is not None:
        free[bp.profile.tier_names.index(ram.name)] -= bp.bank.anchor_bytes
    tiers = len(bp.profile.tiers)
    counts = np.zeros((len(bp.items), tiers, tiers), dtype=np.int64)
    order = sorted(range(len(bp.items)), key=lambda i: -bp.items[i].mass / max(
        bp.items[i].size, 1))
    for i in order:
        item = bp.items[i]
        left = item.size
        for t in np.argsort(bp.tau[item.depth], kind="stable").tolist():
            if not left or not item.allowed[t] or bp.profile.tiers[t].name in bp.policy.volatile:
                continue
            fit = left if np.isinf(free[t]) else min(left, int(free[t] // item.block_bytes))
            counts[i, t, t] += fit
            free[t] -= fit * item.block_bytes
            left -= fit
        if left:
            return None
    if bp.policy.budget_usd_month is not None and (
            bp.monthly_cost(counts) > bp.policy.budget_usd_month):
        return None
    return counts


def exact_masses(bp: BucketProblem, counts: np.ndarray) -> dict[int, np.ndarray]:
    """Per-level masses of the tiers blocks are read from, hottest blocks of each bucket on
    the fastest tiers (as `to_block_map` places them), without building the map."""
    masses = {d: np.zeros(len(bp.profile.tiers)) for d in bp.tau}
    for item, block in zip(bp.items, counts, strict=True):
        b = item.buckets
        start = int(b.bounds[item.index])
        for s_ in np.argsort(bp.tau[item.depth], kind="stable").tolist():
            k = int(block[s_].sum())
            if k:
                masses[item.depth][s_] += float(b.cumulative[start + k - 1] - (
                    b.cumulative[start - 1] if start else 0.0))
                start += k
    return masses


def to_block_map(bp: BucketProblem, counts: np.ndarray) -> tuple[dict[int, str], BlockMap,
                                                                 dict[int, np.ndarray]]:
    """Concrete blocks per tier: within each bucket, the hottest are read from the fastest
    tiers (replicated blocks keep their durable copy on the slower tier).

    Returns the default tier per level (the one most blocks are read from), the overrides,
    and the exact popularity mass per level and tier of this assignment.
    """
    names = bp.profile.tier_names
    tiers = len(names)
    placement: dict[int, str] = {}
    block_map = BlockMap(tiers=names)
    for depth in bp.tau:
        mine = [(item, block) for item, block in zip(bp.items, counts, strict=True)
                if item.depth == depth]
        total = sum((block for _item, block in mine), np.zeros((tiers, tiers), np.int64))
        if not total.any():
            placement[depth] = names[-1]
            continue
        own = np.diagonal(total)  # blocks with one copy, per tier
        default = int(own.argmax() if own.any() else total.sum(axis=1).argmax())
        placement[depth] = names[default]
        # One tier per block of the level (blocked ones stay on the default): a scatter,
        # and the moved blocks come out sorted without a sort.
        blocks = bp.bank.level(depth).blocks
        small = np.int8 if tiers <= 127 else np.int16  # 12M blocks: 12 MB, not 24
        serve = np.full(blocks, default, dtype=small)
        replicas = any((block.sum() - np.trace(block)) > 0 for _item, block in mine)
        primary = np.full(blocks, default, dtype=small) if replicas else serve
        fastest = np.argsort(bp.tau[depth], kind="stable").tolist()
        for item, block in mine:
            b = item.buckets
            start = int(b.bounds[item.index])
            for s_ in fastest:
                for p_ in range(tiers):
                    k = int(block[s_, p_])
                    if k:
                        ids = b.order[start:start + k]
                        serve[ids] = s_
                        if replicas:
                            primary[ids] = p_
                        start += k
        moved = np.flatnonzero((serve != default) | (primary != serve) if replicas
                               else serve != default)
        if moved.shape[0]:
            block_map.set_level(depth, moved, serve[moved], primary[moved])
    return placement, block_map, exact_masses(bp, counts)


SHARD_CANDIDATES = (1, 16, 256, 4096, 65536)


def choose_chunking(profile: Profile, tier_blocks: dict[int, dict[str, int]]
                    ) -> dict[int, int]:
    """Blocks per zarr shard for each level: the fewest that keep every tier under its limit
    on files or objects.

    One block is one chunk. A shard of k blocks is one object holding k chunks plus an index
    (16 bytes per chunk + 4); memsim's reader caches shard indexes, so after the first touch
    of a shard a block costs the same single ranged request at any k, and sharding only trades
    object count against index RAM. Levels with the most objects on a full tier are sharded
    first.
    """
    chunking = {depth: 1 for depth in tier_blocks}
    for tier in profile.tiers:
        limit = tier.max_objects
        if limit is None:
            continue

        def objects(depth: int, name: str = tier.name) -> int:
            return -(-tier_blocks[depth].get(name, 0) // chunking[depth])

        while sum(objects(d) for d in tier_blocks) > limit:
            growable = [d for d in tier_blocks if objects(d) > 1 and chunking[d] < max(
                SHARD_CANDIDATES)]
            if not growable:
                total = sum(objects(d) for d in tier_blocks)
                raise InfeasibleError(
                    f"tier '{tier.name}' may hold {limit:,} objects but needs {total:,} even "
                    f"with {max(SHARD_CANDIDATES):,} blocks per shard; short by "
                    f"{total - limit:,} objects", field="max_objects")
            depth = max(growable, key=objects)
            chunking[depth] = next(k for k in SHARD_CANDIDATES if k > chunking[depth])
    return {d: k for d, k in chunking.items() if k > 1}
