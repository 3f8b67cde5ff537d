"""The energy model: joules per query and average power of a layout.

A tier with energy figures (`Tier.energy`, memsim.profile.TierEnergy) spends, for every block
it serves:

    per_byte * bytes + per_request * parts + (active_power - idle_power) * channel_s / concurrency

where `parts` are the requests the block becomes (cost_model.request_parts) and `channel_s`
the channel time they hold on an idle tier: per part, the mean latency, the request overhead
and the part's transfer at the stream bandwidth. The tier draws active_power at channel
utilisation 1 and idle_power at 0, linearly in between, so a block's share of the active
power is its channel time over the tier's concurrency. On top, every tier with figures draws
its idle_power always, whether or not the layout uses it.

A query's dynamic energy sums this over the blocks it fetches: each level's block from its
tier (a block map's levels weighted by the share of blocks read from each tier, as
simulate.engine.tier_load weighs load), resident levels only when the query switches block.
No cache hits are assumed (as tier_load). At `rate` queries per second the average power is
idle + rate x dynamic, and the energy per query dynamic + idle / rate.

Device power that is throughput-bound (a flash drive drawing its active power whenever it
streams at full bandwidth, whatever the number of commands in flight) belongs in per_byte;
active_power is for power drawn while requests are outstanding (a disk seeking, a radio
waiting for the first byte). The shipped profiles say which they use, tier by tier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memsim.bank import Bank
from memsim.cost_model import request_parts
from memsim.errors import InputError
from memsim.layout import Layout
from memsim.profile import Profile, Tier

__all__ = ["EnergyFigures", "block_energy_j", "has_energy", "idle_power_w", "layout_energy",
           "measured_energy_j"]


def has_energy(profile: Profile) -> bool:
    """True when at least one tier of `profile` has energy figures."""
    return any(t.energy is not None for t in profile.tiers)


def block_energy_j(tier: Tier, block_bytes: int) -> float:
    """Dynamic energy (J) of fetching one block of `block_bytes` from `tier` (0 without
    figures): per byte, per request part, and the active power over the parts' channel time
    on an idle tier divided by its concurrency."""
    energy = tier.energy
    if energy is None:
        return 0.0
    parts = request_parts(tier, block_bytes)
    out = energy.per_byte * float(block_bytes) + energy.per_request * len(parts)
    extra = energy.active_power - energy.idle_power
    if extra:
        wait = tier.latency.mean() + tier.request_overhead
        channel = sum(wait + part / tier.stream_bandwidth for part in parts)
        out += extra * channel / tier.concurrency
    return out


def measured_energy_j(tier: Tier, nbytes: float, requests: int, busy_s: float) -> float:
    """Dynamic energy (J) a tier spent serving `requests` requests of `nbytes` bytes in all
    that held its channels `busy_s` channel-seconds (a simulation's counters)."""
    energy = tier.energy
    if energy is None:
        return 0.0
    return (energy.per_byte * nbytes + energy.per_request * requests
            + (energy.active_power - energy.idle_power) * busy_s / tier.concurrency)


def idle_power_w(profile: Profile) -> float:
    """Watts drawn always: the idle power of every tier with energy figures."""
    return sum(t.energy.idle_power for t in profile.tiers if t.energy is not None)


@dataclass(frozen=True)
class EnergyFigures:
    """Energy of a layout: dynamic joules per query, idle watts, and the query rate (None
    when unknown, e.g. a closed-loop workload or no workload)."""

    dynamic_j_per_query: float
    idle_power_w: float
    rate: float | None = None  # queries per second

    @property
    def average_power_w(self) -> float | None:
        """Idle power plus the dynamic energy at `rate` (None without a rate)."""
        if self.rate is None:
            return None
        return self.idle_power_w + self.rate * self.dynamic_j_per_query

    @property
    def j_per_query(self) -> float | None:
        """Dynamic energy plus each query's share of the idle power (None without a rate,
        or at rate 0)."""
        if self.rate is None or self.rate <= 0:
            return None
        return self.dynamic_j_per_query + self.idle_power_w / self.rate

    def to_json(self) -> dict[str, Any]:
        """Base units, unit in the key. `energy_j_per_query` includes the idle share when
        there is a rate, else it is the dynamic energy alone."""
        total = self.j_per_query
        return {
            "energy_j_per_query": self.dynamic_j_per_query if total is None else total,
            "dynamic_energy_j_per_query": self.dynamic_j_per_query,
            "idle_power_w": self.idle_power_w,
            "average_power_w": self.average_power_w,
            "rate_queries_per_s": self.rate,
        }


def _check_rate(rate: float | None) -> None:
    if rate is not None and not (isinstance(rate, int | float) and 0 <= rate < float("inf")):
        raise InputError(f"rate must be a finite, non-negative number of queries per second, "
                         f"got {rate!r}", field="rate")


def layout_energy(
    profile: Profile,
    bank: Bank,
    layout: Layout,
    *,
    kept_probability: Mapping[int, float] | None = None,
    rate: float | None = None,
    shares: Mapping[int, Mapping[str, float]] | None = None,
) -> EnergyFigures | None:
    """The analytic energy of one query under `layout` (None when no tier has figures).

    `kept_probability[d]`: the probability that a query finds resident level d's current
    block in RAM (1 - its switch probability); a resident level missing from it is always
    kept (the paper's assumption, as estimate without a workload). `shares[d]`, when given,
    is the fraction of queries reading level d from each tier (e.g. routing sampled from a
    workload, blocked queries excluded); otherwise the layout's placement, or with a block
    map or blocked subtrees the fraction of the level's blocks on each tier (exact for
    uniform routing).
    """
    if not has_energy(profile):
        return None
    _check_rate(rate)
    kept = dict(kept_probability or {})
    for depth, p in kept.items():
        if not 0.0 <= float(p) <= 1.0:
            raise InputError(f"kept probability of level {depth} must be in [0, 1], got {p}",
                             field="kept_probability")
    names = profile.tier_names
    block_map = layout.block_map(profile) if shares is None else None
    if shares is None and (block_map is not None or layout.blocked):
        from memsim.simulate.engine import read_shares  # engine imports SimPy lazily

        fractions = read_shares(profile, bank, layout, block_map)
        shares = {d: {names[t]: float(f) for t, f in enumerate(row) if f}
                  for d, row in fractions.items()}
    resident = set(layout.resident)
    dynamic = 0.0
    for lv in bank.active_levels:
        fetched = 1.0
        if lv.depth in resident:
            fetched = 1.0 - float(kept.get(lv.depth, 1.0))
            if fetched <= 0.0:
                continue
        if shares is not None:
            level_shares = shares.get(lv.depth, {})
        else:
            level_shares = {layout.placement[lv.depth]: 1.0}
        for name, share in level_shares.items():
            if share:
                dynamic += fetched * share * block_energy_j(profile.tier(name), lv.block_bytes)
    return EnergyFigures(dynamic_j_per_query=dynamic, idle_power_w=idle_power_w(profile),
                         rate=None if rate is None else float(rate))
