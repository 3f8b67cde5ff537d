"""Greedy baseline: biggest blocks first, each to the tier that adds least fetch time."""

from __future__ import annotations

import math
from collections.abc import Sequence

from memsim.optimize.tables import CostTables


def greedy_placement(tables: CostTables, resident_levels: Sequence[int] = (),
                     resident_budget: int | None = None
                     ) -> tuple[dict[int, str], set[int]] | None:
    """A feasible placement built one level at a time, or None if greedy gets stuck.

    Levels go in order of decreasing block size, each to the tier (with room left) that makes
    the partial fetch time smallest, ties to the faster tier. Then the allowed resident levels
    are made resident one by one, biggest gain first, while RAM and the budget allow.
    """
    profile, bank = tables.profile, tables.bank
    ram = profile.ram
    free = {t.name: t.capacity_bytes for t in profile.tiers}
    if ram is not None:
        free[ram.name] -= bank.anchor_bytes
    placement: dict[int, str] = {}
    for lv in sorted(bank.active_levels, key=lambda lv: (-lv.block_bytes, lv.depth)):
        best: tuple[float, int, str] | None = None
        for index, tier in enumerate(profile.tiers):
            if lv.bytes > free[tier.name]:
                continue
            cost = tables.evaluate({**placement, lv.depth: tier.name})
            if best is None or (cost, index) < best[:2]:
                best = (cost, index, tier.name)
        if best is None:
            return None
        placement[lv.depth] = best[2]
        free[best[2]] -= lv.bytes
    resident: set[int] = set()
    if resident_levels and ram is not None:
        budget = math.inf if resident_budget is None else float(resident_budget)
        while True:
            current = tables.evaluate(placement, resident)
            options = []
            for lv in bank.active_levels:
                if lv.depth not in resident_levels or lv.depth in resident:
                    continue
                if lv.block_bytes > min(budget, free[ram.name]):
                    continue
                gain = current - tables.evaluate(placement, resident | {lv.depth})
                if gain > 0:
                    options.append((gain, -lv.depth, lv))
            if not options:
                break
            _, _, chosen = max(options)
            resident.add(chosen.depth)
            budget -= chosen.block_bytes
            free[ram.name] -= chosen.block_bytes
    return placement, resident
