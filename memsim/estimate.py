"""Analytic estimator: the fetch time of one query on an otherwise idle hierarchy.

With constant latencies the answer is exact from one evaluation; with latency distributions
it samples many queries (seeded, vectorized) and reports mean and percentiles.

A layout that places blocks individually (a block map) or blocks subtrees makes the fetch
depend on where a query routes, so paths are sampled from a workload: queries are grouped by
their tier pattern (the tier of each level's block, or not fetched) and each group goes
through the same tier model as a level layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from memsim.bank import Bank
from memsim.blockmap import in_any
from memsim.cost_model import (
    Request,
    check_work,
    fetch_requests,
    is_deterministic,
    part_count,
    queries_per_pass,
    resident_patterns,
    sample_fetch,
    tier_parts,
)
from memsim.energy import EnergyFigures, has_energy, layout_energy
from memsim.errors import InputError
from memsim.layout import Layout
from memsim.limits import MAX_SAMPLES, check_at_most
from memsim.popularity import switch_probabilities
from memsim.profile import Profile
from memsim.workload import PathSampler, Workload

PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
DEFAULT_SAMPLES = 100_000
CHUNK = 1_000_000  # queries sampled per pass: bounds the per-level and per-tier temporaries


def summarize(times: np.ndarray) -> dict[str, float]:
    """Mean and percentiles of fetch times in seconds."""
    out = {"mean": float(np.mean(times))}
    values = np.percentile(times, list(PERCENTILES.values()))
    out.update({k: float(v) for k, v in zip(PERCENTILES, values, strict=True)})
    return out


@dataclass
class LevelTime:
    depth: int
    tier: str
    block_bytes: int
    resident: bool
    time_s: float  # mean time until this level's block is in RAM (0 when not fetched)
    blocked_fraction: float | None = None  # block-level estimates: queries routed to a
    tiers: dict[str, float] | None = None  # blocked subtree; fraction of queries per tier


@dataclass
class TierTime:
    tier: str
    levels: list[int]
    bytes: float  # per query (expected bytes per query for block-level estimates)
    time_s: float  # mean time until the tier has delivered all its blocks, over the queries
    query_fraction: float | None = None  # that used it; block-level: the fraction that did


@dataclass
class Estimate:
    """Uncontended fetch time of a layout."""

    fetch: str
    samples: int
    seed: int
    fetch_time_s: dict[str, float]
    per_level: list[LevelTime] = field(default_factory=list)
    per_tier: list[TierTime] = field(default_factory=list)
    workload: str | None = None  # the routing sampled (block-level) or switching (resident)
    # Layouts with resident levels: the fetch time with every resident block current (the
    # paper's assumption), with every resident level switching, and (with a workload) the
    # probability each resident level switches, which `fetch_time_s` then mixes over.
    current_fetch_time_s: dict[str, float] | None = None
    switch_fetch_time_s: dict[str, float] | None = None
    switch_probability: dict[int, float] | None = None
    # Joules per query and average power (memsim.energy), None when no tier of the profile
    # has energy figures; the rate is the workload's mean open-loop rate, when there is one.
    energy: EnergyFigures | None = None

    @property
    def mean_s(self) -> float:
        """The mean fetch time (seconds), `fetch_time_s["mean"]`."""
        return self.fetch_time_s["mean"]

    def to_json(self) -> dict[str, Any]:
        """Base units, unit in the key. Block-level estimates add `workload`, per level
        `blocked_fraction` and `tiers` (fraction of queries per tier), per tier
        `query_fraction`."""
        per_level = {}
        for lv in self.per_level:
            entry: dict[str, Any] = {"tier": lv.tier, "bytes": lv.block_bytes,
                                     "resident": lv.resident, "time_s": lv.time_s}
            if lv.blocked_fraction is not None:
                entry["blocked_fraction"] = lv.blocked_fraction
            if lv.tiers is not None:
                entry["tiers"] = lv.tiers
            per_level[str(lv.depth)] = entry
        per_tier = {}
        for t in self.per_tier:
            entry = {"levels": t.levels, "bytes": t.bytes, "time_s": t.time_s}
            if t.query_fraction is not None:
                entry["query_fraction"] = t.query_fraction
            per_tier[t.tier] = entry
        out: dict[str, Any] = {
            "fetch": self.fetch,
            "samples": self.samples,
            "seed": self.seed,
            "fetch_time_s": self.fetch_time_s,
            "per_level": per_level,
            "per_tier": per_tier,
        }
        if self.workload is not None:
            out["workload"] = self.workload
        if self.current_fetch_time_s is not None:
            out["current_fetch_time_s"] = self.current_fetch_time_s
        if self.switch_fetch_time_s is not None:
            out["switch_fetch_time_s"] = self.switch_fetch_time_s
        if self.switch_probability is not None:
            out["switch_probability"] = {str(d): v for d, v in
                                         sorted(self.switch_probability.items())}
        out["energy"] = self.energy.to_json() if self.energy is not None else None
        return out


def estimate(
    profile: Profile,
    bank: Bank,
    layout: Layout,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    workload: Workload | None = None,
) -> Estimate:
    """Fetch time of one query under `layout` on an idle `profile`, and its energy.

    A layout with a block map or blocked subtrees needs `workload`, whose routing decides
    which blocks (so which tiers) a query reads; `samples` paths are drawn from it even when
    latencies are constant.

    Resident levels: a resident level's current block is free, but a query that switches to
    another block fetches it from the level's tier. With `workload`, the estimate is the
    mixture over the switch patterns its locality and routing give (what the simulator sees);
    without one, `fetch_time_s` assumes every resident block current (the paper's figures)
    and `switch_fetch_time_s` gives the time when every resident level switches.

    Energy (`energy`, when the profile has energy figures): the same blocks through
    memsim.energy, resident levels fetched with the probabilities `fetch_time_s` mixes over,
    block-level layouts by the routing sampled; the rate is the workload's mean open-loop
    rate (none without a workload or with a closed loop).
    """
    est = _estimate(profile, bank, layout, samples, seed, workload)
    if has_energy(profile):
        est.energy = _energy(profile, bank, layout, est, workload)
    return est


def _energy(profile: Profile, bank: Bank, layout: Layout, est: Estimate,
            workload: Workload | None) -> EnergyFigures | None:
    """The estimate's energy: its switch probabilities and (block-level) sampled routing."""
    rate = workload.arrivals.mean_rate() if workload is not None and workload.open_loop else None
    switch = est.switch_probability or {}
    kept = {d: 1.0 - s for d, s in switch.items()}
    shares = None
    if any(lv.tiers is not None for lv in est.per_level):  # block-level: routing sampled;
        # a resident level is read on a switch, taken as independent of its block's tier
        shares = {lv.depth: dict(lv.tiers or {}) for lv in est.per_level}
    return layout_energy(profile, bank, layout, kept_probability=kept, rate=rate,
                         shares=shares)


def _estimate(profile: Profile, bank: Bank, layout: Layout, samples: int, seed: int,
              workload: Workload | None) -> Estimate:
    """`estimate` without the energy."""
    layout.check(bank, profile)
    check_at_most(samples, MAX_SAMPLES, "samples", field="samples")
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples:,}", field="samples")
    if layout.block_map(profile) is not None or layout.blocked:
        if workload is None:
            raise InputError(
                f"layout {layout.name or layout.file or '(unnamed)'} places blocks "
                "individually (or blocks subtrees): give a workload to estimate it",
                field="workload")
        return _estimate_blocks(profile, bank, layout, workload, samples, seed)
    if not layout.resident:
        return _estimate_levels(profile, bank, layout, samples, seed, None)[0]
    current, current_times = _estimate_levels(profile, bank, layout, samples, seed, None)
    switched, switched_times = _estimate_levels(profile, bank, layout, samples, seed, ())
    current.current_fetch_time_s = dict(current.fetch_time_s)
    current.switch_fetch_time_s = dict(switched.fetch_time_s)
    if workload is None:
        return current
    switch = switch_probabilities(bank, workload, sorted(layout.resident))
    patterns = [(w, kept) for w, kept in resident_patterns(switch) if w > 0]
    check_at_most(samples * len(patterns), MAX_SAMPLES,
                  "samples x resident switch patterns", field="samples")
    runs = []
    for weight, kept in patterns:
        if kept == frozenset(layout.resident):
            runs.append((weight, current, current_times))
        elif not kept:
            runs.append((weight, switched, switched_times))
        else:
            runs.append((weight, *_estimate_levels(profile, bank, layout, samples, seed, kept)))
    out = _mixture(runs)
    out.current_fetch_time_s = current.current_fetch_time_s
    out.switch_fetch_time_s = current.switch_fetch_time_s
    out.switch_probability = switch
    out.workload = workload.name
    return out


def weighted_summary(values: list[np.ndarray], weights: list[float]) -> dict[str, float]:
    """Mean and percentiles of a mixture: `values[j]` are equally likely draws of component
    j, which has probability `weights[j]` (the percentile is the least value whose
    cumulative probability reaches it)."""
    if len(values) == 1:
        return summarize(values[0])
    flat = np.concatenate(values)
    mass = np.concatenate([np.full(v.size, w / v.size) for v, w in zip(values, weights,
                                                                        strict=True)])
    order = np.argsort(flat, kind="stable")
    flat, cum = flat[order], np.cumsum(mass[order])
    total = cum[-1]
    out = {"mean": float(np.dot(flat, mass[order]) / total)}
    for key, q in PERCENTILES.items():
        i = int(np.searchsorted(cum, q / 100.0 * total * (1 - 1e-12), side="left"))
        out[key] = float(flat[min(i, flat.size - 1)])
    return out


def _mixture(runs: list[tuple[float, Estimate, np.ndarray]]) -> Estimate:
    """One estimate of the mixture of several (probability, estimate, fetch times)."""
    weights = [w for w, _e, _t in runs]
    total = sum(weights)
    first = runs[0][1]
    per_level = []
    for j, lv in enumerate(first.per_level):
        time = sum(w * e.per_level[j].time_s for w, e, _t in runs) / total
        per_level.append(replace(lv, time_s=time))
    tiers: dict[str, list[tuple[float, TierTime]]] = {}
    for w, e, _t in runs:
        for t in e.per_tier:
            tiers.setdefault(t.tier, []).append((w, t))
    per_tier = []
    for name, used in tiers.items():
        share = sum(w for w, _t in used)
        levels = sorted({d for _w, t in used for d in t.levels})
        per_tier.append(TierTime(
            tier=name, levels=levels, bytes=sum(w * t.bytes for w, t in used) / total,
            time_s=sum(w * t.time_s for w, t in used) / share,
            query_fraction=share / total if share < total * (1 - 1e-12) else None))
    order = {n: i for i, n in enumerate(t.tier for _w, e, _t in runs for t in e.per_tier)}
    per_tier.sort(key=lambda t: order[t.tier])
    return Estimate(fetch=first.fetch, samples=first.samples, seed=first.seed,
                    fetch_time_s=weighted_summary([t for _w, _e, t in runs], weights),
                    per_level=per_level, per_tier=per_tier)


def _estimate_levels(profile: Profile, bank: Bank, layout: Layout, samples: int, seed: int,
                     kept: frozenset[int] | tuple[()] | None
                     ) -> tuple[Estimate, np.ndarray]:
    """A level layout's estimate when the resident levels in `kept` (all: None) are current,
    and the sampled fetch times behind it."""
    requests = fetch_requests(bank, layout, kept)
    n = 1 if is_deterministic(profile, requests) else samples
    parts = tier_parts(profile, requests)
    check_work(n, parts, "samples", "samples")
    chunk = queries_per_pass(parts, CHUNK)
    rng = np.random.default_rng(seed)
    total = np.empty(n)
    level_sum: dict[int, float] = {}
    tier_sum: dict[str, float] = {}
    for start in range(0, n, chunk):
        part = sample_fetch(profile, requests, layout.fetch, min(chunk, n - start), rng)
        total[start:start + len(part.total)] = part.total
        for depth, times in part.per_level.items():
            level_sum[depth] = level_sum.get(depth, 0.0) + float(times.sum())
        for name, times in part.per_tier.items():
            tier_sum[name] = tier_sum.get(name, 0.0) + float(times.sum())
    resident = set(layout.resident)
    per_level = []
    for lv in bank.active_levels:
        per_level.append(LevelTime(
            depth=lv.depth, tier=layout.placement[lv.depth], block_bytes=lv.block_bytes,
            resident=lv.depth in resident, time_s=level_sum.get(lv.depth, 0.0) / n,
        ))
    per_tier = []
    for tier in profile.tiers:
        levels = [r.depth for r in requests if r.tier == tier.name]
        if levels:
            per_tier.append(TierTime(
                tier=tier.name, levels=levels,
                bytes=sum(r.bytes for r in requests if r.tier == tier.name),
                time_s=tier_sum[tier.name] / n,
            ))
    est = Estimate(fetch=layout.fetch, samples=n, seed=seed,
                   fetch_time_s=summarize(total), per_level=per_level, per_tier=per_tier)
    return est, total


NOT_FETCHED = 0  # pattern code of a level a query does not fetch (resident or blocked)


def _estimate_blocks(profile: Profile, bank: Bank, layout: Layout, workload: Workload,
                     samples: int, seed: int) -> Estimate:
    """Estimate a block-level layout by sampling paths and grouping queries by tier pattern.

    Latencies are drawn from `default_rng(seed)` exactly as for a level layout, so a group
    whose pattern is a level layout's requests gets the level estimator's numbers; paths come
    from an independent stream spawned from the same seed. A resident level's block is
    fetched when it differs from the previous query's (`switch_probability` is the fraction).
    """
    names = profile.tier_names
    block_map = layout.block_map(profile)
    subtrees = layout.subtrees
    resident = set(layout.resident)
    levels = bank.active_levels
    base = len(names) + 1  # codes: 0 not fetched, 1 + tier index
    rng = np.random.default_rng(seed)
    paths = PathSampler(workload, bank, np.random.default_rng(
        np.random.SeedSequence(seed).spawn(1)[0]))
    n = samples
    # the worst a query can ask of one tier: every level's block on it
    worst = max(part_count(t, [lv.block_bytes for lv in levels]) for t in profile.tiers)
    check_work(n, worst, "samples", "samples")
    chunk_size = queries_per_pass(worst, CHUNK)
    # A resident level is fetched when a query's block differs from the previous query's: the
    # path before the first sample is drawn too (its successor follows the locality rule).
    previous = paths.sample(1)[0] if resident else None
    switched = np.zeros(len(levels), dtype=np.int64)
    total = np.empty(n)
    level_sum = np.zeros(len(levels))
    blocked_count = np.zeros(len(levels), dtype=np.int64)
    level_tier_count = np.zeros((len(levels), len(names)), dtype=np.int64)
    tier_sum = np.zeros(len(names))
    tier_used = np.zeros(len(names), dtype=np.int64)
    tier_bytes = np.zeros(len(names))
    for start in range(0, n, chunk_size):
        size = min(chunk_size, n - start)
        path = paths.sample(size)
        before = (np.vstack([previous[None, :], path[:-1]]) if previous is not None
                  else None)
        if previous is not None:
            previous = path[-1].copy()
        codes = np.empty((size, len(levels)), dtype=np.int64)
        for j, lv in enumerate(levels):
            blocks = path[:, lv.depth - 1]
            default = names.index(layout.placement[lv.depth])
            tier = (block_map.lookup(lv.depth, blocks, default) if block_map is not None
                    else np.full(size, default, dtype=np.int16)).astype(np.int64)
            level_tier_count[j] += np.bincount(tier, minlength=len(names))
            codes[:, j] = tier + 1
            if lv.depth in resident and before is not None:
                same = blocks == before[:, lv.depth - 1]
                codes[same, j] = NOT_FETCHED
                switched[j] += int((~same).sum())
            if subtrees:
                blocked = in_any(subtrees, lv.depth, blocks, bank.branching)
                codes[blocked, j] = NOT_FETCHED
                blocked_count[j] += int(blocked.sum())
                level_tier_count[j] -= np.bincount(tier[blocked], minlength=len(names))
        key = codes @ (base ** np.arange(len(levels), dtype=np.int64))
        patterns, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=patterns.size))
        chunk_total = np.empty(size)
        for g in range(patterns.size):
            rows = order[(bounds[g - 1] if g else 0):bounds[g]]
            pattern = codes[first[g]]
            requests = [Request(depth=lv.depth, tier=names[c - 1], bytes=lv.block_bytes)
                        for lv, c in zip(levels, pattern.tolist(), strict=True)
                        if c != NOT_FETCHED]
            part = sample_fetch(profile, requests, layout.fetch, rows.size, rng)
            chunk_total[rows] = part.total
            for j, lv in enumerate(levels):
                if lv.depth in part.per_level:
                    level_sum[j] += float(part.per_level[lv.depth].sum())
            for name, times in part.per_tier.items():
                t = names.index(name)
                tier_sum[t] += float(times.sum())
                tier_used[t] += rows.size
                tier_bytes[t] += rows.size * sum(r.bytes for r in requests if r.tier == name)
        total[start:start + size] = chunk_total
    per_level = []
    for j, lv in enumerate(levels):
        per_level.append(LevelTime(
            depth=lv.depth, tier=layout.placement[lv.depth], block_bytes=lv.block_bytes,
            resident=lv.depth in resident, time_s=float(level_sum[j] / n),
            blocked_fraction=float(blocked_count[j] / n),
            tiers={name: float(level_tier_count[j, t] / n) for t, name in enumerate(names)
                   if level_tier_count[j, t]},
        ))
    per_tier = []
    for t, name in enumerate(names):
        if not tier_used[t]:
            continue
        used = [lv.depth for j, lv in enumerate(levels)
                if level_tier_count[j, t] and (lv.depth not in resident or switched[j])]
        per_tier.append(TierTime(
            tier=name, levels=used, bytes=float(tier_bytes[t] / n),
            time_s=float(tier_sum[t] / tier_used[t]), query_fraction=float(tier_used[t] / n),
        ))
    measured = ({lv.depth: float(switched[j] / n) for j, lv in enumerate(levels)
                 if lv.depth in resident} if resident else None)
    return Estimate(fetch=layout.fetch, samples=n, seed=seed, fetch_time_s=summarize(total),
                    per_level=per_level, per_tier=per_tier, workload=workload.name,
                    switch_probability=measured)


# `memsim.estimate(...)` calls estimate(); the module stays a module (`memsim.estimate.<name>`)
from memsim import make_callable  # noqa: E402

make_callable(__name__, "estimate")
