"""Calibrate tiers on the bank's own blocks: the latency and overhead of reads as they lie.

A scratch object is not the bank: on a virtual machine the same device (or page cache) reads
one file 20% faster or slower than another, by where its pages landed. `calibrate_on_bank`
reads random blocks of a materialized bank from each chosen tier, arriving at random with one
channel busy `load` of the time (as `calibrate` measures its latency sizes), and refits the
tier's latency distribution (service time minus transfer at the tier's bandwidth) and request
overhead. Bandwidth, aggregate bandwidth and concurrency stay as the profile has them; the
arrival rate comes from a few pilot reads, not from the profile (which may be stale). It is a
calibration (one channel, before any workload), not a peek at the run it precedes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from memsim.aio import frozen_heap, run_sync
from memsim.bank import Bank
from memsim.calibrate.fit import LATENCY_GRID
from memsim.calibrate.measure import LOAD, one_channel, reads_under_load, timed_read
from memsim.errors import InputError
from memsim.layout import Layout
from memsim.materialize.manifest import placement_plan
from memsim.profile import Profile, Tier
from memsim.stores import ByteStore, tier_stores
from memsim.units import format_time

__all__ = ["BankCalibration", "calibrate_on_bank", "default_tiers"]

SAMPLES = 200  # reads per tier
PILOT = 10  # reads one after another first, to set the arrival rate (the profile may be stale)


@dataclass
class BankCalibration:
    """What one tier's reads of the bank gave."""

    tier: str
    reads: int
    utilization: float  # measured, of the one channel
    service_p50_s: float
    latency: dict[float, float]  # probability -> seconds
    request_overhead_s: float
    clipped: float  # share of reads faster than their transfer at the tier's bandwidth

    def text(self) -> str:
        return (f"recalibrated tier {self.tier} on the bank's own blocks: {self.reads} reads "
                f"under load (utilisation {self.utilization:.2f}), service p50 "
                f"{format_time(self.service_p50_s)}, latency p50 "
                f"{format_time(self.latency[0.5])}, request overhead "
                f"{format_time(self.request_overhead_s)}")

    def to_json(self) -> dict[str, Any]:
        return {"tier": self.tier, "reads": self.reads, "utilization": self.utilization,
                "service_p50_s": self.service_p50_s,
                "latency_quantiles_s": {str(q): v for q, v in self.latency.items()},
                "request_overhead_s": self.request_overhead_s, "clipped": self.clipped}


def _store_url(profile: Profile, name: str, stores: Mapping[str, str] | None) -> str | None:
    return (stores or {}).get(name) or profile.tier(name).store


def _in_memory(profile: Profile, name: str, stores: Mapping[str, str] | None) -> bool:
    """The tier lives in this process's RAM (memory://, or a RAM tier without a store)."""
    url = _store_url(profile, name, stores)
    return url.startswith("memory://") if url else (
        profile.ram is not None and profile.ram.name == name)


def default_tiers(profile: Profile, bank: Bank, layout: Layout,
                  stores: Mapping[str, str] | None = None) -> list[str]:
    """Tiers that hold non-resident levels in a persistent store (local or S3), after
    `stores` (TIER -> URL) overrides."""
    used = {layout.placement[lv.depth] for lv in bank.active_levels
            if lv.depth not in layout.resident}
    return [t.name for t in profile.tiers if t.name in used
            and _store_url(profile, t.name, stores) and not _in_memory(profile, t.name, stores)]


def _levels(bank: Bank, layout: Layout, tier: str) -> list[Any]:
    """The bank's levels placed on `tier` that are read (not resident)."""
    return [lv for lv in bank.active_levels
            if layout.placement[lv.depth] == tier and lv.depth not in layout.resident]


def _requests(reader: Any, bank: Bank, layout: Layout, tier: str, n: int,
              rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """`n` random byte ranges of blocks of the levels placed on `tier`."""
    levels = _levels(bank, layout, tier)

    async def pick() -> list[tuple[str, int, int]]:
        out: list[tuple[str, int, int]] = []
        while len(out) < n:
            lv = levels[int(rng.integers(len(levels)))]
            block = int(rng.integers(lv.blocks))
            if reader.tier_of(lv.depth, block) != tier:
                continue  # a block map moved it: the reader holds only the tiers measured
            loc = await reader.locate(lv.depth, block)
            if loc is not None and loc.tier == tier:
                out += [(loc.key, start, length) for start, length in loc.ranges]
        return out[:n]

    return run_sync(pick())


async def _pilot(store: ByteStore, requests: list[tuple[str, int, int]]) -> float:
    """Median time of a few reads one after another (untimed by the fit): what one read
    costs now, from which the arrival rate for the wanted utilisation follows."""
    return float(np.median([await timed_read(store, key, start, length)
                            for key, start, length in requests]))


def _fit(tier: Tier, requests: list[tuple[str, int, int]], service: np.ndarray,
         overhead: np.ndarray, util: float) -> BankCalibration:
    lengths = np.array([length for _k, _s, length in requests], dtype=float)
    residual = service - lengths / tier.stream_bandwidth
    clipped = float(np.mean(residual < 0))
    values = np.maximum.accumulate(np.maximum(np.quantile(residual, LATENCY_GRID), 1e-9))
    return BankCalibration(
        tier=tier.name, reads=int(service.size), utilization=util,
        service_p50_s=float(np.median(service)),
        latency={q: float(v) for q, v in zip(LATENCY_GRID, values, strict=True)},
        request_overhead_s=float(overhead.mean()), clipped=clipped)


def calibrate_on_bank(profile: Profile, bank: Bank, layout: Layout,
                      tiers: list[str] | None = None, *,
                      stores: Mapping[str, str] | None = None, cold: bool = True,
                      load: float = LOAD, samples: int = SAMPLES, seed: int = 0
                      ) -> tuple[Profile, dict[str, BankCalibration]]:
    """The profile with each of `tiers` (default: `default_tiers`) recalibrated on the bank's
    blocks as they lie in the stores; and what each tier's reads gave."""
    from memsim.replay.reader import BankReader

    names = default_tiers(profile, bank, layout, stores) if tiers is None else list(tiers)
    for name in names:
        if name not in profile.tier_names:
            raise InputError(f"unknown tier '{name}'", field="recalibrate")
        if _in_memory(profile, name, stores):
            raise InputError(f"tier '{name}' lives in this process's memory (memory://): it "
                             "has no device to recalibrate", field="recalibrate")
        if not _levels(bank, layout, name):
            raise InputError(f"tier '{name}' holds no level of the bank: nothing to read",
                             field="recalibrate")
    if not 0 < load < 1:
        raise InputError("the load must be above 0 and below 1 (a utilisation)", field="load")
    if samples < 2:
        raise InputError("at least 2 reads per tier", field="samples")
    if not names:
        return profile, {}
    layout.check(bank, profile)
    # only the tiers measured: a memory tier is filled by the replay that follows, in this
    # process, and opening it here (empty) would fail as if the bank were not materialized
    plan = {t: lv for t, lv in placement_plan(profile, bank, layout).items() if t in names}
    opened: dict[str, ByteStore] = tier_stores(profile, plan, stores, cold=cold, seed=seed)
    rng = np.random.default_rng([seed, 7])
    done: dict[str, BankCalibration] = {}
    try:
        reader = BankReader(profile, bank, layout, opened, check_rate=0.0, seed=seed).open(
            plan)
        run_sync(reader.preload_indexes())
        for name in names:
            tier = profile.tier(name)
            requests = _requests(reader, bank, layout, name, samples, rng)
            store = one_channel(opened[name])
            try:
                store.prewarm(sorted({length for _k, _s, length in requests}), 4)
                estimate = run_sync(_pilot(store, requests[:PILOT]))
                with frozen_heap():
                    service, overhead, util = run_sync(reads_under_load(
                        store, requests, load / max(estimate, 1e-6), seed))
            finally:
                if store is not opened[name]:
                    store.close()
            done[name] = _fit(tier, requests, service, overhead, util)
    finally:
        for store in opened.values():
            store.close()
    day = dt.datetime.now(dt.UTC).date().isoformat()
    new = profile
    for name, cal in done.items():
        tier = new.tier(name)
        record = dict(tier.calibration or {})
        record["on_bank"] = {"date": day, "bank": bank.name, **cal.to_json()}
        new = new.with_tier(
            name, latency={"quantiles": cal.latency}, request_overhead=cal.request_overhead_s,
            calibration=record,
            source=(f"{tier.source}; " if tier.source else "") + "latency and request "
                   f"overhead recalibrated on bank {bank.name}'s blocks, {day}")
    return new, done
