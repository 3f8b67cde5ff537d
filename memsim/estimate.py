"""Analytic estimator: the fetch time of one query on an otherwise idle hierarchy.

With constant latencies the answer is exact from one evaluation; with latency distributions
it samples many queries (seeded, vectorized) and reports mean and percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memsim.bank import Bank
from memsim.cost_model import fetch_requests, is_deterministic, sample_fetch
from memsim.errors import InputError
from memsim.layout import Layout
from memsim.profile import Profile

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
    time_s: float  # mean time until this level's block is in RAM


@dataclass
class TierTime:
    tier: str
    levels: list[int]
    bytes: int
    time_s: float  # mean time until the tier has delivered all its blocks


@dataclass
class Estimate:
    """Uncontended fetch time of a layout."""

    fetch: str
    samples: int
    seed: int
    fetch_time_s: dict[str, float]
    per_level: list[LevelTime] = field(default_factory=list)
    per_tier: list[TierTime] = field(default_factory=list)

    @property
    def mean_s(self) -> float:
        return self.fetch_time_s["mean"]

    def to_json(self) -> dict[str, Any]:
        """Base units, unit in the key."""
        return {
            "fetch": self.fetch,
            "samples": self.samples,
            "seed": self.seed,
            "fetch_time_s": self.fetch_time_s,
            "per_level": {
                str(lv.depth): {"tier": lv.tier, "bytes": lv.block_bytes, "resident": lv.resident,
                                "time_s": lv.time_s}
                for lv in self.per_level
            },
            "per_tier": {
                t.tier: {"levels": t.levels, "bytes": t.bytes, "time_s": t.time_s}
                for t in self.per_tier
            },
        }


def estimate(
    profile: Profile,
    bank: Bank,
    layout: Layout,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> Estimate:
    """Fetch time of one query under `layout` on an idle `profile`."""
    layout.check(bank, profile)
    if not 1 <= samples <= MAX_SAMPLES:
        raise InputError(f"samples must be between 1 and {MAX_SAMPLES:,}, got {samples:,}",
                         field="samples")
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
