"""Block-level placement: the tier of every block of a level, stored compactly.

Each level has a default tier (the layout's `placement`); a block map lists only the blocks
that live elsewhere, as sorted ids with a tier each, in a Parquet file beside the layout YAML
(columns `level`, `block`, `tier`). Blocked subtrees are left out of placement and fetches.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memsim.errors import InputError


@dataclass(frozen=True)
class Subtree:
    """The cluster `block` at `depth` and everything below it."""

    depth: int
    block: int

    def contains(self, depth: int, ids: np.ndarray, branching: int) -> np.ndarray:
        """Which of the blocks `ids` at `depth` lie in this subtree."""
        ids = np.asarray(ids)
        if depth < self.depth:
            return np.zeros(ids.shape, dtype=bool)
        return ids // branching ** (depth - self.depth) == self.block


def parse_subtrees(values: Sequence[str], field: str) -> list[Subtree]:
    """Subtrees written LEVEL:BLOCK ("1:3"); a bad one is an InputError naming `field`."""
    out = []
    for value in values:
        level, sep, block = str(value).partition(":")
        if not sep or not level.strip().isdigit() or not block.strip().isdigit():
            raise InputError(f"cannot read subtree {value!r}; expected LEVEL:BLOCK, e.g. 1:3",
                             field=field)
        out.append(Subtree(depth=int(level), block=int(block)))
    return out


def outermost(subtrees: list[Subtree], branching: int) -> list[Subtree]:
    """The subtrees not inside another one (so counting their blocks counts each once)."""
    out: list[Subtree] = []
    for tree in sorted(set(subtrees), key=lambda t: (t.depth, t.block)):
        if not any(o.contains(tree.depth, np.array([tree.block]), branching)[0] for o in out):
            out.append(tree)
    return out


def in_any(subtrees: list[Subtree], depth: int, ids: np.ndarray, branching: int) -> np.ndarray:
    """Which blocks lie in any of `subtrees`."""
    out = np.zeros(np.shape(ids), dtype=bool)
    for tree in subtrees:
        out |= tree.contains(depth, ids, branching)
    return out


@dataclass
class BlockMap:
    """Per level, the blocks that do not live on the level's default tier."""

    tiers: list[str]  # tier names; overrides store indices into this list
    ids: dict[int, np.ndarray] = field(default_factory=dict)  # depth -> sorted block ids
    tier_index: dict[int, np.ndarray] = field(default_factory=dict)  # depth -> read-from tier
    primary: dict[int, np.ndarray] = field(default_factory=dict)  # depth -> durable-copy tier

    def set_level(self, depth: int, ids: np.ndarray, tiers: np.ndarray,
                  primary: np.ndarray | None = None) -> None:
        """Record that blocks `ids` of `depth` are read from `tiers` (indices), with their
        durable copy on `primary` (a replica when it differs; default: the same tier)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape[0] > 1 and not np.all(ids[1:] > ids[:-1]):  # else already in order
            order = np.argsort(ids, kind="stable")
            ids, tiers = ids[order], np.asarray(tiers)[order]
            primary = None if primary is None else np.asarray(primary)[order]
        self.ids[depth] = ids
        self.tier_index[depth] = np.asarray(tiers, dtype=np.int16)
        self.primary[depth] = (self.tier_index[depth] if primary is None
                               else np.asarray(primary, dtype=np.int16))

    @property
    def replicated(self) -> bool:
        return any((self.primary[d] != self.tier_index[d]).any() for d in self.ids)

    def lookup(self, depth: int, blocks: np.ndarray, default: int) -> np.ndarray:
        """Tier index of each of `blocks` at `depth` (`default` where not overridden)."""
        blocks = np.asarray(blocks, dtype=np.int64)
        ids = self.ids.get(depth)
        out = np.full(blocks.shape, default, dtype=np.int16)
        if ids is None or ids.size == 0:
            return out
        pos = np.searchsorted(ids, blocks)
        pos_clipped = np.minimum(pos, ids.size - 1)
        hit = ids[pos_clipped] == blocks
        out[hit] = self.tier_index[depth][pos_clipped[hit]]
        return out

    def counts(self, depth: int, nblocks: int, default: int) -> np.ndarray:
        """Copies of blocks of `depth` stored on each tier (read copies and durable ones)."""
        out = np.zeros(len(self.tiers), dtype=np.int64)
        moved = self.tier_index.get(depth)
        if moved is not None and moved.size:
            out += np.bincount(moved, minlength=len(self.tiers))
            primary = self.primary[depth]
            extra = primary != moved
            if extra.any():
                out += np.bincount(primary[extra], minlength=len(self.tiers))
        out[default] += nblocks - (0 if moved is None else moved.size)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the overrides as Parquet, atomically."""
        import pyarrow as pa  # imported here: pyarrow costs every command's start-up
        import pyarrow.parquet as pq

        path = Path(path)
        depths = sorted(self.ids)
        level = np.concatenate([np.full(self.ids[d].size, d, dtype=np.int16) for d in depths]
                               ) if depths else np.zeros(0, dtype=np.int16)
        block = np.concatenate([self.ids[d] for d in depths]) if depths else np.zeros(
            0, dtype=np.int64)
        tier = np.concatenate([self.tier_index[d] for d in depths]) if depths else np.zeros(
            0, dtype=np.int16)
        names = pa.array(self.tiers, pa.string())
        columns = {"level": level, "block": block,
                   "tier": pa.DictionaryArray.from_arrays(pa.array(tier.astype(np.int32)),
                                                          names)}
        if self.replicated:
            primary = np.concatenate([self.primary[d] for d in depths])
            columns["primary"] = pa.DictionaryArray.from_arrays(
                pa.array(primary.astype(np.int32)), names)
        table = pa.table(columns)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
        except OSError as exc:
            raise InputError(f"cannot write: {exc.strerror or exc}", file=path) from None
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise InputError(f"cannot write: {exc.strerror or exc}", file=path) from None
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, tiers: list[str]) -> BlockMap:
        """Read a block map; tiers not in `tiers` or malformed files are input errors."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise InputError("no such block map file", file=path) from None
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read the block map as Parquet: {exc}", file=path) from None
        missing = {"level", "block", "tier"} - set(table.column_names)
        if missing:
            raise InputError(f"block map lacks column{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(sorted(missing))}", file=path)
        level = table.column("level").to_numpy().astype(np.int64)
        block = table.column("block").to_numpy().astype(np.int64)
        index = {name: i for i, name in enumerate(tiers)}

        def indices(column: str) -> np.ndarray:
            names = table.column(column).cast(pa.string()).to_pylist()
            unknown = sorted({str(n) for n in names} - set(index))
            if unknown:
                raise InputError(f"unknown tier '{unknown[0]}' (the profile has "
                                 f"{', '.join(tiers)})", file=path, field=column)
            return np.array([index[n] for n in names], dtype=np.int16)

        tier = indices("tier")
        primary = indices("primary") if "primary" in table.column_names else tier
        out = cls(tiers=list(tiers))
        for depth in np.unique(level).tolist():
            mask = level == depth
            ids = block[mask]
            if np.unique(ids).size != ids.size:
                raise InputError(f"level {depth} lists a block twice", file=path, field="block")
            out.set_level(int(depth), ids, tier[mask], primary[mask])
        return out
