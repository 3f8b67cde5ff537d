"""Cost tables for level placement: the exact fetch time of every set of levels on every tier.

A tier's time depends non-linearly on which levels share it (queueing, bandwidth sharing), so
the ILP does not model it with linear terms: it picks, for each tier, one subset of levels,
whose time was computed here with the shared cost model. With latency distributions, times are
computed on `scenarios` seeded draws (sample average approximation), so the ILP minimises the
average over those draws of the fetch time, exactly.

Resident levels are free only while a query keeps their current block; the tables carry the
switch patterns (`cost_model.resident_patterns`) and `evaluate` is the expectation over them,
the same mixture the estimator reports with a workload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import combinations

import numpy as np

from memsim.bank import Bank
from memsim.cost_model import (
    block_finish_times,
    check_work,
    draw_latencies,
    part_count,
    request_parts,
    resident_patterns,
)
from memsim.errors import InputError
from memsim.layout import FetchMode
from memsim.limits import MAX_FLUID_CELLS, MAX_SCENARIO_CELLS, check_at_most
from memsim.profile import Profile

MAX_LEVELS = 10
Pattern = tuple[float, frozenset[int]]  # probability, resident levels whose block is current
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
    # P(switch) of each level that may be resident (absent: 1, fetched every query) and the
    # switch patterns that follow; the last pattern keeps every resident block current.
    switch: dict[int, float] = field(default_factory=dict)
    patterns: list[Pattern] = field(default_factory=lambda: [(1.0, frozenset())])

    def repeated(self, n: int) -> CostTables:
        """These tables with `n` identical scenarios (constant latencies give one): the
        load model draws a different queueing delay in each, so percentiles under load need
        several even when the idle times do not vary."""
        if self.scenarios != 1 or n <= 1:
            return self
        times = {t: {s: np.repeat(v, n) for s, v in table.items()}
                 for t, table in self.times.items()}
        return replace(self, times=times, scenarios=n)

    def subsets(self) -> list[Subset]:
        return list(self.times[self.profile.tiers[0].name])

    def _pattern_time(self, placement: dict[int, str], skipped: frozenset[int] | set[int]
                      ) -> float:
        per_tier = []
        for tier in self.profile.tiers:
            subset = tuple(sorted(d for d, t in placement.items()
                                  if t == tier.name and d not in skipped))
            per_tier.append(self.times[tier.name][subset])
        stacked = np.vstack(per_tier)
        combined = stacked.max(axis=0) if self.fetch == "parallel" else stacked.sum(axis=0)
        return float(combined.mean())

    def evaluate(self, placement: dict[int, str], resident: frozenset[int] | set[int] = frozenset()
                 ) -> float:
        """Expected fetch time over the scenarios and the resident switch patterns; levels
        missing from `placement` are skipped. A resident level is skipped only in the patterns
        that keep its block current (levels without a switch probability are always fetched)."""
        resident = frozenset(resident)
        return sum(w * self._pattern_time(placement, resident & kept)
                   for w, kept in self.patterns if w > 0)

    def evaluate_current(self, placement: dict[int, str],
                         resident: frozenset[int] | set[int] = frozenset()) -> float:
        """Mean fetch time with every resident block current (the paper's assumption)."""
        return self._pattern_time(placement, frozenset(resident))


def build_tables(profile: Profile, bank: Bank, fetch: FetchMode, scenarios: int, seed: int,
                 switch: Mapping[int, float] | None = None) -> CostTables:
    """Compute every tier's time for every subset of the bank's non-empty levels.

    `switch` gives, per level that may be resident, the probability a query needs another
    block than the current one (see `popularity.switch_probabilities`); without it resident
    levels are fetched every query (switch probability 1).
    """
    levels = bank.active_levels
    if len(levels) > MAX_LEVELS:
        raise InputError(
            f"level placement handles up to {MAX_LEVELS} non-empty levels; bank '{bank.name}' "
            f"has {len(levels)}", file=bank.file, field="levels")
    depths = [lv.depth for lv in levels]
    sizes = {lv.depth: lv.block_bytes for lv in levels}
    deterministic = all(t.latency.is_constant for t in profile.tiers)
    n = 1 if deterministic else scenarios
    check_at_most(n * len(profile.tiers) * 2 ** len(depths), MAX_SCENARIO_CELLS,
                  "scenarios x tiers x level subsets of the level ILP", field="scenarios")
    parts = part_count_bound(profile, sizes)
    check_at_most(parts, MAX_TABLE_PARTS, "request parts per query on one tier",
                  field="max_request_size", file=profile.file)
    check_at_most(n * parts, MAX_FLUID_CELLS, "scenarios x request parts on one tier",
                  field="scenarios")
    check_work(n * 2 ** len(depths), parts, "scenarios x level subsets", "scenarios")
    switch = {int(d): float(v) for d, v in (switch or {}).items()}
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
                      times=times, switch=switch, patterns=resident_patterns(switch))


MAX_TABLE_PARTS = 4096  # requests of all levels on one tier: the fluid model is O(k^2) each


def part_count_bound(profile: Profile, sizes: Mapping[int, int]) -> int:
    """The most requests the levels' blocks become on any one tier (before splitting them)."""
    worst = 0
    for tier in profile.tiers:
        limit = tier.max_request_size
        count = (len(sizes) if limit is None
                 else sum(-(-int(b) // max(int(limit), 1)) for b in sizes.values()))
        worst = max(worst, count)
    return worst
