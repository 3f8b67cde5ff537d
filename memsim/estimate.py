"""Analytic estimator: the fetch time of one query on an otherwise idle hierarchy.

With constant latencies the answer is exact from one evaluation; with latency distributions
it samples many queries (seeded, vectorized) and reports mean and percentiles.

A layout that places blocks individually (a block map) or blocks subtrees makes the fetch
depend on where a query routes, so paths are sampled from a workload: queries are grouped by
their tier pattern (the tier of each level's block, or not fetched) and each group goes
through the same tier model as a level layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memsim.bank import Bank
from memsim.blockmap import in_any
from memsim.cost_model import Request, fetch_requests, is_deterministic, sample_fetch
from memsim.errors import InputError
from memsim.layout import Layout
from memsim.profile import Profile
from memsim.workload import PathSampler, Workload

PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
DEFAULT_SAMPLES = 100_000
MAX_SAMPLES = 20_000_000  # 160 MB of fetch times kept for the percentiles
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
    workload: str | None = None  # the routing sampled, for block-level layouts

    @property
    def mean_s(self) -> float:
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
    """Fetch time of one query under `layout` on an idle `profile`.

    A layout with a block map or blocked subtrees needs `workload`, whose routing decides
    which blocks (so which tiers) a query reads; `samples` paths are drawn from it even when
    latencies are constant. A level layout ignores `workload`.
    """
    layout.check(bank, profile)
    if not 1 <= samples <= MAX_SAMPLES:
        raise InputError(f"samples must be between 1 and {MAX_SAMPLES:,}, got {samples:,}",
                         field="samples")
    if layout.block_map(profile) is not None or layout.blocked:
        if workload is None:
            raise InputError(
                f"layout {layout.name or layout.file or '(unnamed)'} places blocks "
                "individually (or blocks subtrees): give a workload to estimate it",
                field="workload")
        return _estimate_blocks(profile, bank, layout, workload, samples, seed)
    requests = fetch_requests(bank, layout)
    n = 1 if is_deterministic(profile, requests) else samples
    rng = np.random.default_rng(seed)
    total = np.empty(n)
    level_sum: dict[int, float] = {}
    tier_sum: dict[str, float] = {}
    for start in range(0, n, CHUNK):
        part = sample_fetch(profile, requests, layout.fetch, min(CHUNK, n - start), rng)
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
    return Estimate(fetch=layout.fetch, samples=n, seed=seed,
                    fetch_time_s=summarize(total), per_level=per_level, per_tier=per_tier)


NOT_FETCHED = 0  # pattern code of a level a query does not fetch (resident or blocked)


def _estimate_blocks(profile: Profile, bank: Bank, layout: Layout, workload: Workload,
                     samples: int, seed: int) -> Estimate:
    """Estimate a block-level layout by sampling paths and grouping queries by tier pattern.

    Latencies are drawn from `default_rng(seed)` exactly as for a level layout, so a group
    whose pattern is a level layout's requests gets the level estimator's numbers; paths come
    from an independent stream spawned from the same seed.
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
    total = np.empty(n)
    level_sum = np.zeros(len(levels))
    blocked_count = np.zeros(len(levels), dtype=np.int64)
    level_tier_count = np.zeros((len(levels), len(names)), dtype=np.int64)
    tier_sum = np.zeros(len(names))
    tier_used = np.zeros(len(names), dtype=np.int64)
    tier_bytes = np.zeros(len(names))
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        path = paths.sample(size)
        codes = np.empty((size, len(levels)), dtype=np.int64)
        for j, lv in enumerate(levels):
            blocks = path[:, lv.depth - 1]
            default = names.index(layout.placement[lv.depth])
            tier = (block_map.lookup(lv.depth, blocks, default) if block_map is not None
                    else np.full(size, default, dtype=np.int16)).astype(np.int64)
            level_tier_count[j] += np.bincount(tier, minlength=len(names))
            codes[:, j] = tier + 1
            if lv.depth in resident:
                codes[:, j] = NOT_FETCHED
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
                if level_tier_count[j, t] and lv.depth not in resident]
        per_tier.append(TierTime(
            tier=name, levels=used, bytes=float(tier_bytes[t] / n),
            time_s=float(tier_sum[t] / tier_used[t]), query_fraction=float(tier_used[t] / n),
        ))
    return Estimate(fetch=layout.fetch, samples=n, seed=seed, fetch_time_s=summarize(total),
                    per_level=per_level, per_tier=per_tier, workload=workload.name)


# `memsim.estimate(...)` calls estimate(); the module stays a module (`memsim.estimate.<name>`)
from memsim import make_callable  # noqa: E402

make_callable(__name__, "estimate")
