"""Cost tables for level placement: the exact fetch time of every set of levels on every tier.

A tier's time depends non-linearly on which levels share it (queueing, bandwidth sharing), so
the ILP does not model it with linear terms: it picks, for each tier, one subset of levels,
whose time was computed here with the shared cost model. With latency distributions, times are
computed on `scenarios` seeded draws (sample average approximation), so the ILP minimises the
average over those draws of the fetch time, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from memsim.bank import Bank
from memsim.cost_model import block_finish_times, draw_latencies, part_count, request_parts
from memsim.errors import InputError
from memsim.layout import FetchMode
from memsim.profile import Profile

MAX_LEVELS = 10
Subset = tuple[int, ...]  # depths, ascending


@dataclass
class CostTables:
    """Per tier and subset of levels, the tier's time in each scenario (seconds)."""

    profile: Profile
    bank: Bank
    fetch: FetchMode
    depths: list[int]
    scenarios: int
    times: dict[str, dict[Subset, np.ndarray]]  # tier -> subset -> (scenarios,)

    def subsets(self) -> list[Subset]:
        return list(self.times[self.profile.tiers[0].name])

    def evaluate(self, placement: dict[int, str], resident: frozenset[int] | set[int] = frozenset()
                 ) -> float:
        """Mean fetch time over the scenarios; levels missing from `placement` are skipped."""
        per_tier = []
        for tier in self.profile.tiers:
            subset = tuple(sorted(d for d, t in placement.items()
                                  if t == tier.name and d not in resident))
            per_tier.append(self.times[tier.name][subset])
        stacked = np.vstack(per_tier)
        combined = stacked.max(axis=0) if self.fetch == "parallel" else stacked.sum(axis=0)
        return float(combined.mean())


def build_tables(profile: Profile, bank: Bank, fetch: FetchMode, scenarios: int, seed: int
                 ) -> CostTables:
    """Compute every tier's time for every subset of the bank's non-empty levels."""
    levels = bank.active_levels
    if len(levels) > MAX_LEVELS:
        raise InputError(
            f"level placement handles up to {MAX_LEVELS} non-empty levels; bank '{bank.name}' "
            f"has {len(levels)}", field="levels")
    depths = [lv.depth for lv in levels]
    sizes = {lv.depth: lv.block_bytes for lv in levels}
    deterministic = all(t.latency.is_constant for t in profile.tiers)
    n = 1 if deterministic else scenarios
    rng = np.random.default_rng(seed)
    times: dict[str, dict[Subset, np.ndarray]] = {}
    for tier in profile.tiers:
        # one latency draw per (scenario, request part) of every level
        lat = draw_latencies(tier, rng, n, part_count(tier, list(sizes.values())))
        col: dict[int, list[int]] = {}
        start = 0
        for d in depths:
            k = len(request_parts(tier, sizes[d]))
            col[d] = list(range(start, start + k))
            start += k
        table: dict[Subset, np.ndarray] = {(): np.zeros(n)}
        for size in range(1, len(depths) + 1):
            for subset in combinations(depths, size):
                if fetch == "parallel":
                    cols = lat[:, [c for d in subset for c in col[d]]]
                    finish = block_finish_times(tier, [sizes[d] for d in subset], cols)
                    table[subset] = finish.max(axis=1)
                else:
                    table[subset] = sum(
                        block_finish_times(tier, [sizes[d]], lat[:, col[d]])[:, 0]
                        for d in subset)
        times[tier.name] = table
    return CostTables(profile=profile, bank=bank, fetch=fetch, depths=depths, scenarios=n,
                      times=times)
