"""Verify: read every stored block back and check it against the manifest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from memsim.aio import run_sync
from memsim.bank import Bank
from memsim.errors import DataError
from memsim.layout import Layout
from memsim.materialize.manifest import placement_plan
from memsim.profile import Profile
from memsim.stores import tier_stores

BATCH = 64  # blocks read at once


@dataclass
class VerifyResult:
    """Blocks checked per tier, and every bad one (missing, unwritten, or wrong bytes)."""

    checked: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    bad: list[Any] = field(default_factory=list)  # BadBlock
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "bytes": self.bytes,
                "bad_blocks": [vars(b) for b in self.bad], "seconds": self.seconds}


def scan(reader: Any, progress: Callable[[int], None] | None = None,
         checked: dict[str, int] | None = None) -> list[Any]:
    """Read every row of every level the (opened) reader holds and check it against the
    manifest; the bad blocks (BadBlock), in (tier, level, row) order. `checked` counts the
    blocks checked per tier; `progress(n)` is told of every n bytes read."""
    from memsim.replay.reader import BadBlock

    async def check_row(level: Any, row: int) -> None:
        if not level.complete[row]:
            reader.bad.append(BadBlock(level.depth, int(level.ids[row]), level.tier,
                                       level.store.url, "never written (materialize was "
                                       "interrupted: rerun it to finish)"))
            return
        try:
            loc = await reader.locate_row(level, row)
            parts = await reader.read_parts(loc)
        except DataError as exc:
            reader.bad.append(BadBlock(level.depth, int(level.ids[row]), level.tier,
                                       level.store.url, exc.message))
            return
        reader.check(loc, parts)
        reader.release(loc, parts)

    async def run() -> None:
        for (tier, _depth), level in sorted(reader.levels.items(),
                                            key=lambda kv: (kv[0][0], kv[0][1])):
            for a in range(0, level.ids.size, BATCH):
                rows = range(a, min(a + BATCH, level.ids.size))
                await asyncio.gather(*(check_row(level, r) for r in rows))
                if checked is not None:
                    checked[tier] = checked.get(tier, 0) + len(rows)
                if progress is not None:
                    progress(len(rows) * level.block_bytes)

    start = len(reader.bad)
    run_sync(run())
    bad = reader.bad[start:]
    order = {key: i for i, key in enumerate(sorted(reader.levels))}
    return sorted(bad, key=lambda b: (order[(b.tier, b.depth)], b.block))


def verify(profile: Profile, bank: Bank, layout: Layout, *,
           stores: Mapping[str, str] | None = None,
           progress: Callable[[int], None] | None = None,
           on_total: Callable[[int], None] | None = None) -> VerifyResult:
    """Check every block the layout stores, on every tier, against its manifest."""
    from memsim.replay.reader import BankReader

    layout.check(bank, profile)
    plan = placement_plan(profile, bank, layout)
    opened = tier_stores(profile, plan, stores, cold=False)
    started = time.perf_counter()
    result = VerifyResult()
    try:
        empty = [t for t, s in opened.items() if not s.persistent
                 and "zarr.json" not in getattr(s, "data", {})]
        for tier in empty:  # a memory tier of another process: nothing to check here
            plan.pop(tier)
        reader = BankReader(profile, bank, layout, {t: opened[t] for t in plan},
                            check_rate=1.0).open(plan)
        if on_total is not None:
            on_total(sum(lp.rows * lp.block_bytes for lv in plan.values() for lp in lv.values()))

        def counted(n: int) -> None:
            result.bytes += n
            if progress is not None:
                progress(n)

        result.bad = scan(reader, counted, result.checked)
    finally:
        for store in opened.values():
            store.close()
    result.seconds = time.perf_counter() - started
    return result
