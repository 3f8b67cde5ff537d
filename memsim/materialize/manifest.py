"""How a bank sits in a tier's store, and which blocks go to which tier.

Per tier store (zarr v3, one group at the store root):
- `L<d>`: the level's blocks on this tier, shape (rows, params), chunk = one block, sharded
  as the layout's `chunking` says, no compression, CRC32C on shard indexes.
- `L<d>.ids`: the block id of each row (sorted).
- `L<d>.crc32c`: the CRC32C of each row's bytes: the manifest. Its chunks are written after
  the data they describe, so a present chunk means that unit of rows is complete; that is what
  makes materialize resumable after a kill.
The group's attributes record the bank, the content source and a fingerprint of all this.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from memsim.bank import Bank
from memsim.blockmap import in_any
from memsim.layout import Layout
from memsim.profile import Profile

FORMAT = 1
UNIT_BYTES = 16 << 20  # rows written (and checkpointed) together, about this many bytes
MAX_UNIT_ROWS = 4096
MISSING = 2**64 - 1  # a shard index entry for a chunk that was never written


def data_name(depth: int) -> str:
    return f"L{depth}"


def ids_name(depth: int) -> str:
    return f"L{depth}.ids"


def crc_name(depth: int) -> str:
    return f"L{depth}.crc32c"


def chunk_key(depth: int, index: int) -> str:
    """The object holding shard (or chunk) `index` of level `depth`'s data array."""
    return f"{data_name(depth)}/c/{index}/0"


def crc_chunk_key(depth: int, unit: int) -> str:
    return f"{crc_name(depth)}/c/{unit}"


@dataclass
class LevelPlan:
    """One level's rows on one tier."""

    depth: int
    ids: np.ndarray  # sorted block ids, one per row
    block_params: int
    block_bytes: int
    shard: int | None  # blocks per shard, None = one object per block
    unit: int  # rows per manifest chunk (a whole number of shards)

    @property
    def rows(self) -> int:
        return int(self.ids.size)

    @property
    def units(self) -> int:
        return -(-self.rows // self.unit) if self.rows else 0

    def unit_rows(self, u: int) -> tuple[int, int]:
        return u * self.unit, min((u + 1) * self.unit, self.rows)


def unit_rows(block_bytes: int, shard: int | None) -> int:
    """Rows per write unit: whole shards, or blocks, adding up to about UNIT_BYTES."""
    if shard:
        return shard * max(1, UNIT_BYTES // max(shard * block_bytes, 1))
    return max(1, min(MAX_UNIT_ROWS, UNIT_BYTES // max(block_bytes, 1)))


def placement_plan(profile: Profile, bank: Bank, layout: Layout
                   ) -> dict[str, dict[int, LevelPlan]]:
    """Tier -> level -> the blocks stored there (read copies and durable copies; blocked
    subtrees excluded)."""
    block_map = layout.block_map(profile)
    names = profile.tier_names
    subtrees = layout.subtrees
    plan: dict[str, dict[int, LevelPlan]] = {}
    for lv in bank.active_levels:
        ids = np.arange(lv.blocks, dtype=np.int64)
        if subtrees:
            ids = ids[~in_any(subtrees, lv.depth, ids, bank.branching)]
        default = names.index(layout.placement[lv.depth])
        if block_map is None or lv.depth not in block_map.ids:
            by_tier = {default: ids}
        else:
            read = block_map.lookup(lv.depth, ids, default)
            by_tier = {int(t): ids[read == t] for t in np.unique(read)}
            moved = block_map.ids[lv.depth]
            primary = block_map.primary[lv.depth]
            extra = primary != block_map.tier_index[lv.depth]
            for t in np.unique(primary[extra]).tolist():
                copies = moved[extra & (primary == t)]
                by_tier[t] = np.union1d(by_tier.get(t, np.zeros(0, np.int64)), copies)
        shard = layout.chunking.get(lv.depth)
        for t, rows in by_tier.items():
            if rows.size == 0:
                continue
            plan.setdefault(names[t], {})[lv.depth] = LevelPlan(
                depth=lv.depth, ids=np.sort(rows), block_params=lv.block_params,
                block_bytes=lv.block_bytes, shard=shard,
                unit=unit_rows(lv.block_bytes, shard))
    return plan


def fingerprint(bank: Bank, tier: str, levels: dict[int, LevelPlan],
                content: dict[str, Any]) -> str:
    """What a store must hold, hashed: a rerun with the same inputs resumes, others refuse."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT, "bank": bank.model_dump(mode="json"), "tier": tier,
                         "content": content}, sort_keys=True).encode())
    for depth in sorted(levels):
        lp = levels[depth]
        h.update(json.dumps([depth, lp.block_params, lp.shard, lp.unit]).encode())
        h.update(lp.ids.tobytes())
    return h.hexdigest()[:32]


def group_attributes(bank: Bank, tier: str, levels: dict[int, LevelPlan],
                     content: dict[str, Any], layout: Layout) -> dict[str, Any]:
    return {"memsim": {
        "format": FORMAT, "bank": bank.name, "dtype": bank.dtype, "tier": tier,
        "layout": layout.name, "content": content,
        "levels": sorted(levels), "fingerprint": fingerprint(bank, tier, levels, content),
    }}
