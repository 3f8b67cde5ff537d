"""The bank reader: where a block is, and its bytes, the way an inference server reads them.

It reads zarr v3 stores around zarr-python: each shard's index is read once (CRC32C checked)
and cached, and a block is one byte range (split at the tier's `max_request_size`), so the
blocks of a query can be fetched in parallel. Access control lives here: `locate` refuses
blocks in blocked subtrees (counted, never requested), so no caller can reach their bytes.
Checks against the manifest happen on a seeded sample of reads.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field

import crc32c
import numpy as np

from memsim.aio import run_sync
from memsim.bank import Bank
from memsim.blockmap import Subtree
from memsim.errors import DataError, InputError
from memsim.layout import Layout
from memsim.materialize.manifest import (
    MISSING,
    chunk_key,
    crc_name,
    data_name,
    ids_name,
)
from memsim.profile import Profile
from memsim.stores import ByteStore


@dataclass
class StoredLevel:
    """One level's array on one tier, as read from the store."""

    tier: str
    depth: int
    store: ByteStore
    ids: np.ndarray
    crc: np.ndarray
    complete: np.ndarray  # per row: its manifest chunk exists (the row was written)
    block_bytes: int
    shard: int | None
    indexes: dict[int, np.ndarray] = field(default_factory=dict)  # shard -> (k, 2) uint64

    def row(self, block: int) -> int | None:
        pos = int(np.searchsorted(self.ids, block))
        if pos < self.ids.size and self.ids[pos] == block:
            return pos
        return None


@dataclass(frozen=True)
class Location:
    """Where a block's bytes are: an object and byte ranges in it."""

    tier: str
    depth: int
    block: int
    row: int
    key: str
    ranges: tuple[tuple[int, int], ...]  # (start, length), one per request

    @property
    def nbytes(self) -> int:
        return sum(n for _s, n in self.ranges)


@dataclass(frozen=True)
class BadBlock:
    """A block that is missing or does not match its manifest."""

    depth: int
    block: int
    tier: str
    store: str
    reason: str

    def __str__(self) -> str:
        return (f"level {self.depth} block {self.block} on tier '{self.tier}' ({self.store}): "
                f"{self.reason}")


def _split(start: int, length: int, max_request: int | None) -> tuple[tuple[int, int], ...]:
    if not max_request or length <= max_request:
        return ((start, length),)
    return tuple((start + o, min(max_request, length - o)) for o in range(0, length, max_request))


class BankReader:
    """Reads a materialized bank from its tier stores, honouring blocked subtrees."""

    def __init__(self, profile: Profile, bank: Bank, layout: Layout,
                 stores: dict[str, ByteStore], *, blocked: list[Subtree] | None = None,
                 check_rate: float = 0.1, seed: int = 0) -> None:
        if not 0.0 <= check_rate <= 1.0:
            raise InputError(f"check rate must be in [0, 1], got {check_rate}",
                             field="check-rate")
        self.profile, self.bank, self.layout, self.stores = profile, bank, layout, stores
        self.blocked = list(layout.subtrees) + list(blocked or [])
        self.check_rate = check_rate
        self._rng = random.Random(seed)
        self.block_map = layout.block_map(profile)
        self.levels: dict[tuple[str, int], StoredLevel] = {}
        self.blocked_reads: dict[int, int] = {}
        self.checked = 0
        self.bad: list[BadBlock] = []
        self._index_locks: dict[tuple[str, int, int], asyncio.Lock] = {}

    # ------------------------------------------------------------------ opening
    def open(self, plan: dict[str, dict[int, object]] | None = None) -> BankReader:
        """Read every (level, tier) array's metadata and manifest."""
        run_sync(self._open(plan))
        return self

    async def _open(self, plan: dict[str, dict[int, object]] | None) -> None:
        from memsim.materialize.manifest import placement_plan

        plan = plan if plan is not None else placement_plan(self.profile, self.bank, self.layout)
        for tier, levels in plan.items():
            if tier not in self.stores:  # a reader of some tiers only
                continue
            store = self.stores[tier]
            for depth in levels:
                self.levels[(tier, depth)] = await self._open_level(store, tier, depth)

    async def _open_level(self, store: ByteStore, tier: str, depth: int) -> StoredLevel:
        meta = await store.read(f"{data_name(depth)}/zarr.json")
        if meta is None:
            raise DataError(f"level {depth} is not in {store.url} (tier '{tier}'): run "
                            "`memsim materialize` first")
        try:
            info = json.loads(bytes(meta))
            rows, params = info["shape"]
            shard = None
            codec = info["codecs"][0]
            if codec["name"] == "sharding_indexed":
                shard = int(info["chunk_grid"]["configuration"]["chunk_shape"][0])
            itemsize = np.dtype(info["data_type"]).itemsize
        except (ValueError, KeyError, IndexError, TypeError):
            raise DataError(f"level {depth} metadata in {store.url} is unreadable") from None
        block_bytes = self.bank.level(depth).block_bytes
        if params * itemsize != block_bytes:
            raise DataError(f"level {depth} in {store.url} holds {params * itemsize}-byte "
                            f"blocks, bank '{self.bank.name}' has {block_bytes}-byte ones")
        ids = await self._array(store, ids_name(depth), rows, np.int64)
        crc = await self._array(store, crc_name(depth), rows, np.uint32)
        unit = await self._unit(store, depth)
        done = np.zeros(-(-rows // unit), dtype=bool)
        for key in await store.list_keys(f"{crc_name(depth)}/c"):
            tail = key.rsplit("/", 1)[-1]
            if tail.isdigit() and int(tail) < done.size:
                done[int(tail)] = True
        complete = np.repeat(done, unit)[:rows]
        return StoredLevel(tier=tier, depth=depth, store=store, ids=ids, crc=crc,
                           complete=complete, block_bytes=block_bytes, shard=shard)

    async def _unit(self, store: ByteStore, depth: int) -> int:
        meta = await store.read(f"{crc_name(depth)}/zarr.json")
        if meta is None:
            raise DataError(f"the manifest of level {depth} is missing from {store.url}")
        info = json.loads(bytes(meta))
        return int(info["chunk_grid"]["configuration"]["chunk_shape"][0])

    async def _array(self, store: ByteStore, name: str, rows: int, dtype: type) -> np.ndarray:
        """A 1-D uncompressed zarr array, read chunk by chunk (missing chunks: fill)."""
        meta = await store.read(f"{name}/zarr.json")
        if meta is None:
            raise DataError(f"'{name}' is missing from {store.url}")
        info = json.loads(bytes(meta))
        chunk = int(info["chunk_grid"]["configuration"]["chunk_shape"][0])
        fill = info.get("fill_value", 0)
        out = np.full(rows, fill, dtype=dtype)
        parts = await asyncio.gather(*(store.read(f"{name}/c/{i}")
                                       for i in range(-(-rows // chunk))))
        for i, raw in enumerate(parts):
            if raw is None:
                continue
            values = np.frombuffer(bytes(raw), dtype=np.dtype(dtype).newbyteorder("<"))
            n = min(chunk, rows - i * chunk)
            out[i * chunk:i * chunk + n] = values[:n]
        return out

    # ------------------------------------------------------------------ locating
    def tier_of(self, depth: int, block: int) -> str:
        """The tier a block is read from."""
        default = self.layout.placement[depth]
        if self.block_map is None or depth not in self.block_map.ids:
            return default
        names = self.profile.tier_names
        index = self.block_map.lookup(depth, np.array([block]), names.index(default))[0]
        return names[int(index)]

    def is_blocked(self, depth: int, block: int) -> bool:
        b = self.bank.branching
        return any(t.depth <= depth and block // b ** (depth - t.depth) == t.block
                   for t in self.blocked)

    async def locate(self, depth: int, block: int) -> Location | None:
        """Where to read a block; None (and counted) when access control blocks it."""
        if self.is_blocked(depth, block):
            self.blocked_reads[depth] = self.blocked_reads.get(depth, 0) + 1
            return None
        tier = self.tier_of(depth, block)
        level = self.levels.get((tier, depth))
        row = level.row(block) if level is not None else None
        store_url = self.stores[tier].url if tier in self.stores else "?"
        if level is None or row is None:
            raise DataError(f"level {depth} block {block} is not stored on tier '{tier}' "
                            f"({store_url})")
        if not level.complete[row]:
            raise DataError(f"level {depth} block {block} on tier '{tier}' ({store_url}) was "
                            "never written: rerun `memsim materialize` to finish the bank")
        return await self.locate_row(level, row)

    async def locate_row(self, level: StoredLevel, row: int) -> Location:
        """Where row `row` of a stored level is (no access control: for verification)."""
        depth, tier, block = level.depth, level.tier, int(level.ids[row])
        max_request = self.profile.tier(tier).max_request_size
        if level.shard is None:
            return Location(tier, depth, block, row, chunk_key(depth, row),
                            _split(0, level.block_bytes, max_request))
        shard, inner = divmod(row, level.shard)
        index = await self._index(level, shard)
        offset, nbytes = int(index[inner, 0]), int(index[inner, 1])
        if offset == MISSING or nbytes == MISSING:
            raise DataError(f"level {depth} block {block} on tier '{tier}' "
                            f"({level.store.url}) is missing from its shard")
        if nbytes != level.block_bytes:
            raise DataError(f"level {depth} block {block} on tier '{tier}' ({level.store.url}) "
                            f"has {nbytes} bytes in its shard index, not {level.block_bytes}")
        return Location(tier, depth, block, row, chunk_key(depth, shard),
                        _split(offset, nbytes, max_request))

    async def _index(self, level: StoredLevel, shard: int) -> np.ndarray:
        """A shard's index, read once (CRC32C checked) and cached."""
        cached = level.indexes.get(shard)
        if cached is not None:
            return cached
        lock = self._index_locks.setdefault((level.tier, level.depth, shard), asyncio.Lock())
        async with lock:
            cached = level.indexes.get(shard)
            if cached is not None:
                return cached
            k = level.shard or 1
            key = chunk_key(level.depth, shard)
            raw = await level.store.read_suffix(key, 16 * k + 4)
            if raw is None:
                raise DataError(f"shard '{key}' of level {level.depth} is missing from "
                                f"{level.store.url}")
            raw = bytes(raw)
            body, tail = raw[:-4], raw[-4:]
            if crc32c.crc32c(body) != int.from_bytes(tail, "little"):
                raise DataError(f"the index of shard '{key}' in {level.store.url} fails its "
                                "CRC32C check")
            index = np.frombuffer(body, dtype="<u8").reshape(k, 2)
            level.indexes[shard] = index
            return index

    async def preload_indexes(self) -> int:
        """Read every shard index now (an inference server does this at start-up)."""
        jobs = []
        for level in self.levels.values():
            if level.shard:
                jobs += [self._index(level, s) for s in range(-(-level.ids.size // level.shard))]
        await asyncio.gather(*jobs)
        return len(jobs)

    # ------------------------------------------------------------------ checking
    def should_check(self) -> bool:
        return self.check_rate >= 1.0 or (self.check_rate > 0
                                          and self._rng.random() < self.check_rate)

    def check(self, loc: Location, parts: list[bytes | memoryview]) -> bool:
        """Compare a block's bytes with the manifest; a mismatch is recorded as bad."""
        self.checked += 1
        level = self.levels[(loc.tier, loc.depth)]
        value = 0
        for part in parts:
            value = crc32c.crc32c(part, value)
        if sum(len(memoryview(p)) for p in parts) != loc.nbytes or value != level.crc[loc.row]:
            self.bad.append(BadBlock(loc.depth, loc.block, loc.tier, level.store.url,
                                     "checksum does not match the manifest"))
            return False
        return True

    def report_missing(self, depth: int, block: int, error: DataError) -> None:
        tier = self.tier_of(depth, block)
        store = self.stores[tier].url if tier in self.stores else "?"
        self.bad.append(BadBlock(depth, block, tier, store, error.message))

    # ------------------------------------------------------------------ reading
    async def read_parts(self, loc: Location) -> list[memoryview | bytes]:
        """The block's bytes, as one buffer per request, fetched in parallel."""
        store = self.stores[loc.tier]
        if len(loc.ranges) == 1:
            start, length = loc.ranges[0]
            return [await store.read_range(loc.key, start, length)]
        return list(await asyncio.gather(*(store.read_range(loc.key, s, n)
                                           for s, n in loc.ranges)))

    async def read_block(self, depth: int, block: int, *, check: bool = True) -> bytes | None:
        """One block's bytes (None when blocked); checked against the manifest if asked."""
        loc = await self.locate(depth, block)
        if loc is None:
            return None
        parts = await self.read_parts(loc)
        if check and not self.check(loc, parts):
            raise DataError(str(self.bad[-1]))
        return b"".join(bytes(p) for p in parts)

    def release(self, loc: Location, parts: list[memoryview | bytes]) -> None:
        """Return pooled buffers to their store."""
        release = getattr(self.stores[loc.tier], "release", None)
        if release is not None:
            for part in parts:
                if isinstance(part, memoryview):
                    release(part)

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
