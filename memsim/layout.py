"""Layouts: which tier holds each level, which levels stay resident in RAM, how fetches run.

A layout is a plain data object (the policy); the estimator, the optimizer and later the
simulator and real-I/O backend read it, none of them owns it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

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
from memsim.errors import InputError
from memsim.profile import Profile
from memsim.units import format_size, parse_size
from memsim.validation import validate

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

    _doc: yamlio.Document | None = PrivateAttr(default=None)

    @field_validator("placement", mode="before")
    @classmethod
    def _placement_keys(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("placement must map levels to tiers, e.g. {2: flash, 3: disk}")
        return {_depth(k): v for k, v in value.items()}

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
        if self.cache is not None:
            for i, depth in enumerate(self.cache.levels or []):
                if depth not in active:
                    raise self._error(("cache", "levels", i),
                                      f"cache level {depth} is not a non-empty level of bank "
                                      f"'{bank.name}'")
        if (self.resident or self.cache) and profile.ram is None:
            raise self._error(("resident",),
                              f"resident levels need a tier of kind ram; profile "
                              f"'{profile.name}' has none")

    def overfilled(self, bank: Bank, profile: Profile) -> list[str]:
        """Tiers this layout overfills (levels, plus the anchor and resident blocks in RAM)."""
        ram = profile.ram
        problems = []
        for tier in profile.tiers:
            used = sum(lv.bytes for lv in bank.active_levels
                       if self.placement.get(lv.depth) == tier.name)
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
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
        return comment + body

    def save(self, path: str | Path, header: str = "") -> Path:
        """Write atomically: a crash leaves the old file or the new one, never half of one."""
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


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file and a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", file=path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
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
    layout = validate(Layout, doc)
    layout._doc = doc
    return layout


def layout_from_dict(data: dict[str, Any], file: str = "<dict>") -> Layout:
    """A layout from plain data (notebooks, tests); errors name `file`."""
    doc = yamlio.Document(data=data, file=file)
    layout = validate(Layout, doc)
    layout._doc = doc
    return layout
