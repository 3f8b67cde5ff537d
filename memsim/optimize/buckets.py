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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pulp

from memsim.bank import Bank
from memsim.blockmap import BlockMap, Subtree, in_any
from memsim.cost_model import block_finish_times, draw_latencies, request_parts
from memsim.errors import InfeasibleError, InputError
from memsim.layout import FetchMode
from memsim.optimize.solver import SolveOutcome, SolverName, solve
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

    def candidates(self) -> list[float]:
        """z values where the parallel bound can be smallest."""
        values = {0.0}
        for item in self.items:
            values.update(float(v) for v in self.tau[item.depth][item.allowed])
        return sorted(values)

    def bound(self, masses: dict[int, np.ndarray]) -> float:
        """Expected fetch time (sequential) or its bound (parallel) for per-level tier masses."""
        if self.fetch == "sequential":
            return float(sum(masses[d] @ self.tau[d] for d in masses))
        best = np.inf
        for z in self.candidates():
            value = z + sum(float(masses[d] @ np.maximum(self.tau[d] - z, 0.0)) for d in masses)
            best = min(best, value)
        return float(best)

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
    return BucketProblem(profile=profile, bank=bank, fetch=fetch, policy=policy, items=items,
                         tau=tau, parts=parts)


@dataclass
class BucketModel:
    problem: pulp.LpProblem
    y: dict[tuple[int, int, int], pulp.LpVariable]  # (item, serve tier, primary tier)
    slack: dict[str, pulp.LpVariable]
    unit: float  # bytes per capacity unit in the model


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


def build_model(bp: BucketProblem, z: float | None, capacity_slack: bool = False
                ) -> BucketModel:
    """The ILP for one candidate z (parallel) or the exact sequential objective (z None)."""
    profile, bank = bp.profile, bp.bank
    prob = pulp.LpProblem("memsim_bucket_placement", pulp.LpMinimize)
    y: dict[tuple[int, int, int], pulp.LpVariable] = {}
    for i, item in enumerate(bp.items):
        for s_, p_ in _pairs(bp, item):
            y[i, s_, p_] = prob.add_variable(f"y_{i}_{s_}_{p_}", lowBound=0, upBound=item.size,
                                             cat="Integer")
        prob += pulp.lpSum(var for (ii, _s, _p), var in y.items() if ii == i) == item.size, (
            f"all_{i}")
    ram = profile.ram
    slack: dict[str, pulp.LpVariable] = {}
    # Bytes in units of the smallest block: coefficients >= 1, so the solver's feasibility
    # tolerance is far below one block (GB units let tiny blocks slip past a full tier).
    unit = float(min(item.block_bytes for item in bp.items)) if bp.items else 1.0
    stored: dict[int, list[tuple[float, pulp.LpVariable]]] = {}
    for (i, s_, p_), var in y.items():
        size = bp.items[i].block_bytes / unit
        stored.setdefault(s_, []).append((size, var))
        if p_ != s_:
            stored.setdefault(p_, []).append((size, var))
    for t, tier in enumerate(profile.tiers):
        if tier.capacity is None:
            continue
        room = (tier.capacity - (bank.anchor_bytes if ram and tier.name == ram.name
                                 else 0)) / unit
        used = pulp.lpSum(size * var for size, var in stored.get(t, []))
        if capacity_slack:
            slack[tier.name] = prob.add_variable(f"slack_{t}", lowBound=0)
            prob += used <= room + slack[tier.name], f"capacity_{t}"
        else:
            prob += used <= room, f"capacity_{t}"
    if bp.policy.replica_budget:
        prob += pulp.lpSum((bp.items[i].block_bytes / unit) * var
                           for (i, s_, p_), var in y.items() if s_ != p_) <= (
            bp.policy.replica_budget / unit), "replica_budget"
    if bp.policy.budget_usd_month is not None:
        cost = []
        for (i, s_, p_), var in y.items():
            item = bp.items[i]
            per_block = 0.0
            for t in {s_, p_}:
                tier = profile.tiers[t]
                if tier.cost is not None:
                    per_block += tier.cost.storage_usd_per_gb_month * item.block_bytes / GB
            served = profile.tiers[s_]
            if served.cost is not None:
                per_block += (served.cost.usd_per_1000_requests / 1000
                              * bp.parts[item.depth][s_] * bp.policy.rate * SECONDS_PER_MONTH
                              * item.mass / max(item.size, 1))
            if per_block:
                cost.append((per_block, var))
        budget = bp.policy.budget_usd_month
        if capacity_slack:
            slack["budget"] = prob.add_variable("slack_budget", lowBound=0)
            prob += pulp.lpSum(c * v for c, v in cost) <= budget + slack["budget"], "budget"
        else:
            # A block that alone costs more than the budget is excluded exactly. Below a
            # dollar the row is in units of the budget, so the solver's tolerance (about
            # 1e-6 of a row unit) stays a small fraction of it; above, in dollars.
            unit = min(budget, 1.0)
            within = []
            for c, var in cost:
                if c > budget:
                    var.upBound = 0
                else:
                    within.append((c / unit, var))
            if within:
                prob += pulp.lpSum(c * v for c, v in within) <= budget / unit, "budget"
    if capacity_slack:
        prob.setObjective(pulp.lpSum(slack.values()))
    else:
        terms = []
        for (i, s_, _p), var in y.items():
            item = bp.items[i]
            time = float(bp.tau[item.depth][s_])
            weight = time if z is None else max(time - z, 0.0)
            if weight and item.size:
                terms.append(weight * MS * item.mass / item.size * var)
        prob.setObjective(pulp.lpSum(terms) + (z * MS if z is not None else 0.0))
    return BucketModel(problem=prob, y=y, slack=slack, unit=unit)


def counts_of(bp: BucketProblem, model: BucketModel) -> np.ndarray:
    tiers = len(bp.profile.tiers)
    counts = np.zeros((len(bp.items), tiers, tiers), dtype=np.int64)
    for (i, s_, p_), var in model.y.items():
        counts[i, s_, p_] = int(round(var.value() or 0.0))
    return counts


@dataclass
class BucketSolution:
    counts: np.ndarray  # items x serve tier x primary tier
    objective_s: float  # the model's objective (bucket-average popularity)
    outcome: SolveOutcome
    solves: int
    seconds: float = 0.0  # all solves together


def solve_buckets(bp: BucketProblem, solver: SolverName = "auto",
                  time_limit: float | None = None, gap: float = 0.0) -> BucketSolution:
    """Best counts over the candidate z values (one solve for sequential fetch)."""
    zs: Sequence[float | None] = [None] if bp.fetch == "sequential" else bp.candidates()
    best: BucketSolution | None = None
    best_z: float | None = None
    solves = 0
    seconds = 0.0
    lower: dict[float | None, float] = {}
    if len(zs) > 1:
        # The LP relaxation of each candidate is a lower bound on its integer optimum and
        # takes milliseconds: solve the integer models best bound first and stop when no
        # remaining bound can beat the best answer found (usually after one).
        for z in zs:
            relaxed = solve(build_model(bp, z).problem, solver, time_limit, 0.0, relax=True)
            seconds += relaxed.seconds
            if relaxed.status == "infeasible":
                raise InfeasibleError(_shortfall(bp, solver, time_limit))
            lower[z] = relaxed.objective / MS if relaxed.objective is not None else -np.inf
        zs = sorted(zs, key=lambda z: lower[z])
    for z in zs:
        if best is not None and lower.get(z, -np.inf) >= best.objective_s * (1 - 1e-9):
            break
        model = build_model(bp, z)
        outcome = solve(model.problem, solver, time_limit, gap)
        solves += 1
        seconds += outcome.seconds
        if outcome.status == "infeasible":
            raise InfeasibleError(_shortfall(bp, solver, time_limit))
        if outcome.status not in ("optimal", "time_limit"):
            continue
        counts = counts_of(bp, model)
        if any(block.sum() != item.size for item, block in zip(bp.items, counts, strict=True)):
            continue  # no usable point (e.g. a constant objective left values unset)
        value = bp.bound(bp.masses(counts))
        if best is None or value < best.objective_s - 1e-15:
            best = BucketSolution(counts=counts, objective_s=value, outcome=outcome,
                                  solves=solves)
            best_z = z
    if best is None:
        raise InfeasibleError("the solver found no placement within its limits")
    if best_z is not None and best.outcome.bound is not None:
        # HiGHS reports its dual bound without the objective's constant term (z)
        best.outcome = replace(best.outcome, bound=best.outcome.bound + best_z * MS)
    if bp.fetch == "parallel" and best.outcome.status == "optimal":
        # Ties in the bound are common (a level well under the bottleneck may sit on any
        # tier); among them, spread levels over tiers: least expected work on the busiest
        # tier, since levels sharing a tier slow each other and the bound cannot see it.
        model = build_model(bp, best_z)
        spread_out(bp, model, best.outcome.objective)
        # Only a choice among equally good answers: never let it cost much time.
        cap = SPREAD_SECONDS if time_limit is None else min(time_limit, SPREAD_SECONDS)
        outcome = solve(model.problem, solver, cap, gap)
        solves += 1
        seconds += outcome.seconds
        if outcome.status == "optimal":
            counts = counts_of(bp, model)
            value = bp.bound(bp.masses(counts))
            if value <= best.objective_s * (1 + 1e-9) + 1e-15:
                # the primary solve's status, bound and gap describe the optimum
                best = BucketSolution(counts=counts, objective_s=value, outcome=best.outcome,
                                      solves=solves)
    best.solves = solves
    best.seconds = seconds
    return best


SPREAD_SECONDS = 1.0


def spread_out(bp: BucketProblem, model: BucketModel, optimum_ms: float) -> None:
    """Second stage: keep the bound's optimum, minimise the busiest tier's expected work."""
    prob = model.problem
    prob += prob.objective <= optimum_ms + max(abs(optimum_ms) * 1e-9, 1e-9), "keep_optimum"
    busiest = prob.add_variable("busiest_tier_ms", lowBound=0)
    work: dict[int, list[tuple[float, pulp.LpVariable]]] = {}
    for (i, s_, _p), var in model.y.items():
        item = bp.items[i]
        if item.size:
            coef = float(bp.tau[item.depth][s_]) * MS * item.mass / item.size
            work.setdefault(s_, []).append((coef, var))
    for t, terms in work.items():
        prob += busiest >= pulp.lpSum(c * v for c, v in terms), f"busiest_{t}"
    prob.setObjective(busiest)


def _shortfall(bp: BucketProblem, solver: SolverName, time_limit: float | None) -> str:
    model = build_model(bp, None, capacity_slack=True)
    outcome = solve(model.problem, solver, time_limit, 0.0)
    if outcome.status not in ("optimal", "time_limit"):
        return "no placement satisfies the constraints"
    parts = []
    for name, var in model.slack.items():
        amount = var.value() or 0.0
        if amount <= 1e-9:
            continue
        if name == "budget":
            parts.append(f"the budget of ${bp.policy.budget_usd_month:,.2f}/month is short by "
                         f"${amount:,.2f}")
        else:
            cap = bp.profile.tier(name).capacity_bytes
            parts.append(f"tier '{name}' is short by {format_size(amount * model.unit)} (holds "
                         f"{format_size(cap)})")
    if not parts:
        return "no placement satisfies the constraints"
    return "no placement fits: " + "; ".join(parts) + " in the placement needing least extra"


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
    ids_of: dict[int, list[np.ndarray]] = {}
    serve_of: dict[int, list[np.ndarray]] = {}
    primary_of: dict[int, list[np.ndarray]] = {}
    for item, block in zip(bp.items, counts, strict=True):
        b = item.buckets
        start = int(b.bounds[item.index])
        for s_ in np.argsort(bp.tau[item.depth], kind="stable").tolist():
            for p_ in range(len(names)):
                k = int(block[s_, p_])
                if not k:
                    continue
                ids_of.setdefault(item.depth, []).append(b.order[start:start + k])
                serve_of.setdefault(item.depth, []).append(np.full(k, s_, dtype=np.int16))
                primary_of.setdefault(item.depth, []).append(np.full(k, p_, dtype=np.int16))
                start += k
    placement: dict[int, str] = {}
    block_map = BlockMap(tiers=names)
    for depth in bp.tau:
        if depth not in ids_of:
            placement[depth] = names[-1]
            continue
        ids = np.concatenate(ids_of[depth])
        serve = np.concatenate(serve_of[depth])
        primary = np.concatenate(primary_of[depth])
        default = int(np.bincount(serve[serve == primary], minlength=len(names)).argmax()
                      if (serve == primary).any() else np.bincount(serve).argmax())
        placement[depth] = names[default]
        moved = (serve != default) | (primary != serve)
        if moved.any():
            block_map.set_level(depth, ids[moved], serve[moved], primary[moved])
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
