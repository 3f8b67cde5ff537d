"""Layouts: which tier holds each level, which levels stay resident in RAM, how fetches run.

A layout is a plain data object (the policy); the estimator, the optimizer and later the
simulator and real-I/O backend read it, none of them owns it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from memsim import resources, yamlio
from memsim.bank import Bank
from memsim.blockmap import BlockMap, Subtree, outermost
from memsim.errors import InputError
from memsim.limits import MAX_PREFETCH_INFLIGHT, MAX_PREFETCH_LOOKAHEAD
from memsim.profile import Profile
from memsim.units import format_size, parse_size
from memsim.yamlio import validate_model

if TYPE_CHECKING:
    from memsim.client.prefetch import PrefetchConfig

FetchMode = Literal["parallel", "sequential"]


def _depth(key: Any) -> int:
    if isinstance(key, str) and key.strip().upper().startswith("L") and key.strip()[1:].isdigit():
        key = key.strip()[1:]
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, int) or key < 1:
        raise ValueError(f"level {key!r} must be a depth 1, 2, ... (or L1, L2, ...)")
    return key


class CacheConfig(BaseModel):
    """A RAM cache of fetched blocks (used by the simulator; the estimator assumes it cold)."""

    model_config = ConfigDict(extra="forbid")

    budget: Annotated[int, BeforeValidator(parse_size)] = Field(
        description='Bytes of RAM for cached blocks, e.g. "2 GB".')
    policy: Literal["lru", "lfu", "pinned"] = Field(
        default="lru", description="lru, lfu, or pinned (cache only `levels`, LRU among them).")
    levels: list[int] | None = Field(
        default=None, description="Levels the cache admits (default: all).")

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list):
            raise ValueError("levels must be a list, e.g. [2]")
        return [_depth(v) for v in value]

    @model_validator(mode="after")
    def _pinned_needs_levels(self) -> CacheConfig:
        if self.policy == "pinned" and not self.levels:
            raise ValueError("the pinned policy needs the levels it keeps, e.g. levels: [2]")
        return self


PREFETCH_POLICIES = ("none", "children", "trace")


class PrefetchSection(BaseModel):
    """The client's prefetch (`memsim.client.prefetch`), for `open_bank`, `simulate` and
    `replay`: what to read ahead into the RAM cache after each fetch, within a budget."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["none", "children", "trace"] = Field(
        description="none; children (the hottest children of each served path, by the "
        "workload's routing, else learned online); trace (the run's next queries).")
    max_inflight: int = Field(default=4, ge=0, le=MAX_PREFETCH_INFLIGHT,
                              description="Prefetch reads in flight at most.")
    max_bytes: Annotated[int, BeforeValidator(parse_size)] = Field(
        default=64 << 20, description='Prefetched-but-unused bytes at most, e.g. "64 MB".')
    lookahead: int = Field(default=1, ge=0, le=MAX_PREFETCH_LOOKAHEAD,
                           description="trace policy: following queries to prefetch.")

    @field_validator("max_inflight", "lookahead", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value

    def config(self, *, workload: Any = None, trace: Any = None) -> PrefetchConfig:
        """The client's `PrefetchConfig` for a run: children scores from `workload` (a
        Workload, file or shipped name; None: learned online); the trace policy follows
        `trace` (an (n, depths) array of paths, (arrivals, paths), or a trace file), which
        it needs. Inputs the policy does not use are left out."""
        from memsim.client.prefetch import PrefetchConfig

        if self.policy == "trace":
            if trace is None:
                raise InputError("the trace prefetch policy follows a trace of the run's "
                                 "paths, and this run has none: replay a trace, or choose "
                                 "policy children or none", field="prefetch.policy")
            if isinstance(trace, tuple) and len(trace) == 2:  # (arrivals, paths)
                trace = trace[1]
        return PrefetchConfig(self.policy, max_inflight=self.max_inflight,
                              max_bytes=self.max_bytes, lookahead=self.lookahead,
                              trace=trace if self.policy == "trace" else None,
                              workload=workload if self.policy == "children" else None)


class SubtreeRef(BaseModel):
    """A subtree of the bank: the cluster `block` at depth `level` and all below it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: int = Field(ge=1)
    block: int = Field(ge=0)


class Layout(BaseModel):
    """Where each level of a bank lives, and how a query fetches it."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    description: str = ""
    bank: str | None = Field(default=None, description="Bank preset or file this layout is for.")
    profile: str | None = Field(default=None, description="Profile this layout is for.")
    fetch: FetchMode = Field(
        default="parallel",
        description="parallel: all levels requested at once (time = slowest tier); "
        "sequential: one level after another (time = sum).",
    )
    placement: dict[int, str] = Field(description="Level depth -> tier name.")
    resident: list[int] = Field(
        default_factory=list,
        description="Levels whose current block stays in RAM between queries (consecutive "
        "queries share it), so fetching them costs nothing; each costs one block of RAM.",
    )

    cache: CacheConfig | None = Field(
        default=None, description="RAM cache of fetched blocks, for the simulator.")
    prefetch: PrefetchSection | None = Field(
        default=None, description="Blocks the client reads ahead into the RAM cache after "
        "each fetch (needs a cache with a budget).")
    blocks: str | None = Field(
        default=None, description="Parquet file (relative to this layout) listing blocks that "
        "live on another tier than their level's placement: columns level, block, tier.")
    blocked: list[SubtreeRef] = Field(
        default_factory=list, description="Subtrees never placed nor fetched (access control): "
        "a query routed into one gets nothing for those levels.")
    chunking: dict[int, int] = Field(
        default_factory=dict, description="Blocks per zarr shard, per level (default 1).")

    _doc: yamlio.Document | None = PrivateAttr(default=None)
    _block_map: BlockMap | None = PrivateAttr(default=None)

    @field_validator("placement", mode="before")
    @classmethod
    def _placement_keys(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("placement must map levels to tiers, e.g. {2: flash, 3: disk}")
        return {_depth(k): v for k, v in value.items()}

    @field_validator("chunking", mode="before")
    @classmethod
    def _chunking(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("chunking maps levels to blocks per shard, e.g. {4: 256}")
        out = {}
        for key, per_shard in value.items():
            if isinstance(per_shard, bool) or not isinstance(per_shard, int) or per_shard < 1:
                raise ValueError(f"blocks per shard of level {key} must be a whole number >= 1")
            out[_depth(key)] = per_shard
        return out

    @field_validator("resident", mode="before")
    @classmethod
    def _resident(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("resident must be a list of levels, e.g. [2]")
        return [_depth(v) for v in value]

    @property
    def file(self) -> str | None:
        return self._doc.file if self._doc else None

    @property
    def subtrees(self) -> list[Subtree]:
        """Blocked subtrees."""
        return [Subtree(depth=s.level, block=s.block) for s in self.blocked]

    def with_block_map(self, block_map: BlockMap | None) -> Layout:
        """This layout, with an in-memory block map (written beside the YAML by `save`)."""
        self._block_map = block_map
        return self

    def block_map(self, profile: Profile) -> BlockMap | None:
        """The block-level overrides, read from `blocks` on first use."""
        if self._block_map is None and self.blocks:
            base = Path(self.file).parent if self.file and not self.file.startswith("<") else (
                Path("."))
            path = Path(self.blocks)
            self._block_map = BlockMap.load(path if path.is_absolute() else base / path,
                                            profile.tier_names)
        return self._block_map

    def tier_counts(self, bank: Bank, profile: Profile) -> dict[int, dict[str, int]]:
        """Blocks of each level on each tier (blocked subtrees excluded)."""
        names = profile.tier_names
        block_map = self.block_map(profile)
        out: dict[int, dict[str, int]] = {}
        for lv in bank.active_levels:
            default = names.index(self.placement[lv.depth])
            blocked = sum(bank.branching ** (lv.depth - t.depth)
                          for t in outermost(self.subtrees, bank.branching)
                          if t.depth <= lv.depth)
            if block_map is not None:
                counts = block_map.counts(lv.depth, lv.blocks - blocked, default)
            else:
                counts = np.zeros(len(names), dtype=np.int64)
                counts[default] = lv.blocks - blocked
            out[lv.depth] = {n: int(c) for n, c in zip(names, counts, strict=True) if c}
        return out

    def _error(self, loc: tuple[Any, ...], message: str) -> InputError:
        if self._doc is not None:
            raw = _raw_key(self._doc, loc)
            return self._doc.error(raw, message)
        return InputError(message, field=yamlio.format_loc(loc))

    def check(self, bank: Bank, profile: Profile) -> None:
        """Raise an InputError if the layout does not fit this bank and profile."""
        names = profile.tier_names
        active = {lv.depth for lv in bank.active_levels}
        for depth, tier in self.placement.items():
            if depth > len(bank.levels):
                raise self._error(("placement", depth),
                                  f"level {depth} is not in bank '{bank.name}' "
                                  f"(it has levels 1..{len(bank.levels)})")
            if depth not in active:
                raise self._error(("placement", depth),
                                  f"level {depth} of bank '{bank.name}' is empty (multiplier 0)")
            if tier not in names:
                raise self._error(("placement", depth),
                                  f"unknown tier '{tier}' (profile '{profile.name}' has "
                                  f"{', '.join(names)})")
        missing = sorted(active - set(self.placement))
        if missing:
            raise self._error(("placement",),
                              f"level{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(map(str, missing))} of bank '{bank.name}' "
                              "placed on no tier")
        for i, depth in enumerate(self.resident):
            if depth not in active:
                raise self._error(("resident", i),
                                  f"resident level {depth} is not a non-empty level of bank "
                                  f"'{bank.name}'")
        if self.prefetch is not None and self.prefetch.policy != "none" and (
                self.cache is None or self.cache.budget <= 0):
            raise self._error(("prefetch",), f"prefetch policy {self.prefetch.policy} reads "
                              "blocks ahead into the RAM cache, but this layout has no cache "
                              "with a budget: add a cache: section or set policy: none")
        if self.cache is not None:
            for i, depth in enumerate(self.cache.levels or []):
                if depth not in active:
                    raise self._error(("cache", "levels", i),
                                      f"cache level {depth} is not a non-empty level of bank "
                                      f"'{bank.name}'")
        for i, tree in enumerate(self.blocked):
            if tree.level > len(bank.levels) or tree.block >= bank.branching ** tree.level:
                raise self._error(("blocked", i), f"subtree ({tree.level}, {tree.block}) is not "
                                  f"in bank '{bank.name}'")
        block_map = self.block_map(profile)
        if block_map is not None:
            for depth, ids in block_map.ids.items():
                if depth not in active:
                    raise self._error(("blocks",), f"the block map places level {depth}, which "
                                      f"is not a non-empty level of bank '{bank.name}'")
                if ids.size and (ids[0] < 0 or ids[-1] >= bank.branching ** depth):
                    raise self._error(("blocks",), f"the block map names a block of level "
                                      f"{depth} outside bank '{bank.name}'")
        if (self.resident or self.cache) and profile.ram is None:
            raise self._error(("resident",),
                              f"resident levels need a tier of kind ram; profile "
                              f"'{profile.name}' has none")

    def prefetch_config(self, *, workload: Any = None, trace: Any = None
                        ) -> PrefetchConfig | None:
        """`prefetch.config(...)` (None without a `prefetch:` section), its errors naming
        this layout's file and line."""
        if self.prefetch is None:
            return None
        try:
            return self.prefetch.config(workload=workload, trace=trace)
        except InputError as exc:
            if exc.file is not None or not (exc.field or "").startswith("prefetch"):
                raise
            raise self._error(tuple(exc.field.split(".")), exc.message) from None

    def overfilled(self, bank: Bank, profile: Profile) -> list[str]:
        """Tiers this layout overfills (levels, plus the anchor and resident blocks in RAM)."""
        ram = profile.ram
        problems = []
        counts = self.tier_counts(bank, profile)
        for tier in profile.tiers:
            used = sum(counts[lv.depth].get(tier.name, 0) * lv.block_bytes
                       for lv in bank.active_levels)
            if ram is not None and tier.name == ram.name:
                used += bank.anchor_bytes + sum(bank.level(d).block_bytes for d in self.resident)
                used += self.cache.budget if self.cache else 0
            if used > tier.capacity_bytes:
                problems.append(f"tier '{tier.name}' holds {format_size(tier.capacity_bytes)} "
                                f"but this layout puts {format_size(used)} on it")
        return problems

    def to_yaml(self, header: str = "") -> str:
        """The layout as YAML text, with an optional comment header."""
        data: dict[str, Any] = {}
        for key in ("name", "description", "bank", "profile"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        data["fetch"] = self.fetch
        data["placement"] = dict(sorted(self.placement.items()))
        data["resident"] = sorted(self.resident)
        if self.cache is not None:
            data["cache"] = self.cache.model_dump(exclude_none=True)
        if self.prefetch is not None:
            data["prefetch"] = self.prefetch.model_dump()
        for key in ("blocks", "chunking"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.blocked:
            data["blocked"] = [t.model_dump() for t in self.blocked]
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
        return comment + body

    def save(self, path: str | Path, header: str = "") -> Path:
        """Write atomically: a crash leaves the old file or the new one, never half of one.

        A block map goes beside the YAML as `<name>.blocks.parquet`, written first.
        """
        path = Path(path)
        if self._block_map is not None:
            target = path.with_name(path.stem + ".blocks.parquet")
            self._block_map.save(target)
            self.blocks = target.name
        return write_atomic(path, self.to_yaml(header))


def _raw_key(doc: yamlio.Document, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Map a normalised location (placement depth 2) back to the key as written (L2, '2')."""
    if len(loc) >= 2 and loc[0] == "placement" and isinstance(doc.data, dict):
        raw = doc.data.get("placement")
        if isinstance(raw, dict):
            for key in raw:
                try:
                    if _depth(key) == loc[1]:
                        return ("placement", key, *loc[2:])
                except ValueError:
                    continue
    return loc


def write_atomic(path: str | Path, text: str | bytes) -> Path:
    """Write `text` (or bytes) to `path` through a temporary file and a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", file=path) from None
    try:
        data = text.encode("utf-8") if isinstance(text, str) else text
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write: {exc.strerror or exc}", file=path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_layout(ref: str | Path) -> Layout:
    """A layout from a YAML file, or a shipped one by name (`paper-hierarchical`)."""
    path = resources.resolve(ref, "layouts")
    doc = yamlio.load(path)
    layout = validate_model(Layout, doc)
    layout._doc = doc
    return layout


def layout_from_dict(data: dict[str, Any], file: str = "<dict>") -> Layout:
    """A layout from plain data (notebooks, tests); errors name `file`."""
    doc = yamlio.Document(data=data, file=file)
    layout = validate_model(Layout, doc)
    layout._doc = doc
    return layout
