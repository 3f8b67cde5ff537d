"""Device profiles: the ordered tiers of a storage hierarchy, fast to slow."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from memsim import resources, yamlio
from memsim.errors import InputError
from memsim.latency import ConstantLatency, Latency, LatencyField, Seconds
from memsim.limits import MAX_TIERS, check_at_most
from memsim.units import (
    format_power,
    format_rate,
    format_time,
    parse_energy,
    parse_energy_per_byte,
    parse_power,
    parse_rate,
    parse_size,
)
from memsim.yamlio import FieldError, validate_model


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."

TierKind = Literal["ram", "flash", "disk", "cloud", "other"]


def _positive_rate(value: Any) -> float:
    rate = parse_rate(value)
    if rate <= 0:
        raise ValueError(f"bandwidth must be positive, got {value!r}")
    return rate


def _capacity(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in {
            "unlimited", "infinite", "inf", "none"}):
        return None
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"capacity must be positive (or 'unlimited'), got {value!r}")
    return size


Rate = Annotated[float, BeforeValidator(_positive_rate), WithJsonSchema({
    "anyOf": [{"type": "string", "description": 'a rate such as "4 GB/s", "250 MB/s", '
               '"1 Gbit/s"'}, {"type": "number", "exclusiveMinimum": 0,
                               "description": "bytes per second"}]})]
Capacity = Annotated[int | None, BeforeValidator(_capacity), WithJsonSchema({
    "anyOf": [{"type": "string", "description": 'a size such as "64 GB", "1.5 TiB", or '
               '"unlimited"'}, {"type": "integer", "exclusiveMinimum": 0,
                                "description": "bytes"}]})]
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]*$"


def _dollars(value: Any) -> float:
    if isinstance(value, str):
        value = value.strip().lstrip("$").strip()
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"cannot read {value!r} as dollars") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a dollar amount, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a cost must be a finite, non-negative amount, got {value!r}")
    return float(value)


Dollars = Annotated[float, BeforeValidator(_dollars), WithJsonSchema({
    "anyOf": [{"type": "number", "minimum": 0},
              {"type": "string", "description": 'dollars, e.g. "$0.023"'}]})]


class TierCost(BaseModel):
    """What a tier costs: storage in $ per GB-month (GB = 10^9 B), requests in $ per 1,000."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    storage_usd_per_gb_month: Dollars = 0.0
    usd_per_1000_requests: Dollars = 0.0


JoulesPerByte = Annotated[float, BeforeValidator(parse_energy_per_byte), WithJsonSchema({
    "anyOf": [{"type": "string", "description": 'an energy per byte such as "0.5 nJ/B", '
               '"4 pJ/bit", "0.1 J/MB"'}, {"type": "number", "minimum": 0,
                                          "description": "joules per byte"}]})]
Joules = Annotated[float, BeforeValidator(parse_energy), WithJsonSchema({
    "anyOf": [{"type": "string", "description": 'an energy such as "20 uJ", "0.1 mJ"'},
              {"type": "number", "minimum": 0, "description": "joules"}]})]
Watts = Annotated[float, BeforeValidator(parse_power), WithJsonSchema({
    "anyOf": [{"type": "string", "description": 'a power such as "1.5 W", "250 mW"'},
              {"type": "number", "minimum": 0, "description": "watts"}]})]


class TierEnergy(BaseModel):
    """What serving from a tier costs in energy (memsim.energy): per byte and per request
    read, plus `active_power` drawn while the tier serves (in proportion to its channel
    utilisation) and `idle_power` drawn always. All default to 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_byte: JoulesPerByte = Field(
        default=0.0, description='Energy per byte read ("0.5 nJ/B", "4 pJ/bit").')
    per_request: Joules = Field(default=0.0, description='Energy per request ("20 uJ").')
    active_power: Watts = Field(
        default=0.0, description='Power drawn while the tier serves, at utilisation 1 '
        '("1.5 W"); at least idle_power.')
    idle_power: Watts = Field(default=0.0, description='Power drawn always ("40 mW").')
    source: str = Field(default="", description="Where the energy figures come from.")

    @model_validator(mode="after")
    def _active_at_least_idle(self) -> TierEnergy:
        if self.active_power < self.idle_power:
            raise FieldError(
                f"active_power {format_power(self.active_power)} is below idle_power "
                f"{format_power(self.idle_power)}: a tier serving draws at least its idle "
                "power", ("active_power",))
        return self


class Tier(BaseModel):
    """One storage device class: capacity, latency, bandwidth, concurrency and cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="Unique name, used by layouts.")
    kind: TierKind = Field(description="ram, flash, disk, cloud or other.")
    capacity: Capacity = Field(
        default=None, description='Bytes the tier can hold ("64 GB"), or "unlimited".'
    )
    latency: LatencyField = Field(
        default=ConstantLatency(value=0.0),
        description="Time to first byte of a request: a time, {p50, p99} or {quantiles}.",
    )
    bandwidth: Rate = Field(description='Bytes per second of one request stream ("4 GB/s").')
    aggregate_bandwidth: Rate | None = Field(
        default=None, description="Bytes per second of all streams together (default: bandwidth)."
    )
    concurrency: int = Field(default=1, ge=1, description="Requests served at once.")
    request_overhead: Seconds = Field(
        default=0.0, description="Fixed time added to every request (software, protocol).")
    max_request_size: Annotated[int | None, BeforeValidator(_capacity)] = Field(
        default=None, description='Largest single request ("16 MB"); bigger blocks are split '
        "into parts fetched at once. Default: no limit.")
    max_objects: int | None = Field(
        default=None, ge=1, description="Most files or objects the tier may hold (inode or "
        "object-count limit); the optimizer shards levels to stay under it.")
    cost: TierCost | None = None
    energy: TierEnergy | None = Field(
        default=None, description="Energy per byte and request, active and idle power "
        "(optional; estimate and simulate report joules per query and average power).")
    store: str | None = Field(
        default=None, description="Where the tier's data lives: file:///path, s3://bucket/prefix, "
        "memory://",
    )
    source: str = Field(default="", description="Where the numbers come from.")
    calibration: dict[str, Any] | None = Field(
        default=None, description="How the numbers were measured (memsim calibrate)")

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from memsim.stores.url import CREDENTIALS_MESSAGE, has_credentials, redact

        if has_credentials(value):
            raise ValueError(CREDENTIALS_MESSAGE)
        if not re.match(r"^(file|s3|memory)://", value):
            raise ValueError(
                f"store {_short(redact(value))!r} must start with file://, s3:// or memory://"
            )
        return value

    def block_time(self, size: float = 1e6) -> float:
        """Mean time to fetch one block of `size` bytes from an idle tier: how "fast" a tier
        is when profiles are checked for being listed fastest first."""
        return self.latency.mean() + self.request_overhead + size / self.stream_bandwidth

    @property
    def capacity_bytes(self) -> float:
        """Capacity as a number; unlimited tiers hold infinitely many bytes."""
        return math.inf if self.capacity is None else float(self.capacity)

    @property
    def total_bandwidth(self) -> float:
        """Aggregate bandwidth of the tier in B/s."""
        return self.aggregate_bandwidth if self.aggregate_bandwidth is not None else self.bandwidth

    @property
    def stream_bandwidth(self) -> float:
        """Bandwidth a single request can get, never above the aggregate."""
        return min(self.bandwidth, self.total_bandwidth)


class Profile(BaseModel):
    """A storage hierarchy: tiers ordered from fastest to slowest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Name of the device or machine.")
    description: str = ""
    source: str = ""
    tiers: list[Tier] = Field(min_length=1, description="Tiers, fastest first.")

    _doc: yamlio.Document | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _unique(self) -> Profile:
        seen: dict[str, int] = {}
        for i, tier in enumerate(self.tiers):
            if tier.name in seen:
                raise FieldError(f"tier name '{tier.name}' is used twice (first by "
                                 f"tiers[{seen[tier.name]}])", ("tiers", i, "name"))
            seen[tier.name] = i
        if not any(t.kind == "ram" for t in self.tiers):
            raise FieldError("no tier of kind ram: every command keeps the anchor model, "
                             "resident blocks and fetched blocks in RAM", ("tiers",))
        check_at_most(len(self.tiers), MAX_TIERS, "the number of tiers")
        return self

    def order_warnings(self) -> list[str]:
        """Tiers listed after a faster one (by the mean time to fetch a 1 MB block from an
        idle tier), as `FILE:LINE: field 'tiers[i]': ...` lines: the optimizer does not need
        the order, but people read the profile, and the reports, as fastest first."""
        out = []
        for i in range(1, len(self.tiers)):
            before, tier = self.tiers[i - 1], self.tiers[i]
            if tier.block_time() < before.block_time():
                where = InputError(
                    f"tier '{tier.name}' is faster than '{before.name}' before it "
                    f"({format_time(tier.block_time())} against "
                    f"{format_time(before.block_time())} for a 1 MB block); list tiers "
                    "fastest first", file=self.file, line=self.line_of("tiers", i),
                    field=f"tiers[{i}]")
                out.append(str(where))
        return out

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def tier(self, name: str) -> Tier:
        """The tier called `name`."""
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)

    def check_tiers(self, names: list[str], field: str) -> list[str]:
        """`names` if every one is a tier of this profile, else an InputError naming `field`
        (option lists such as --volatile and --private-tiers)."""
        for tier in names:
            if tier not in self.tier_names:
                raise InputError(f"unknown tier '{tier}' (profile '{self.name}' has "
                                 f"{', '.join(self.tier_names)})", field=field)
        return list(names)

    @property
    def ram(self) -> Tier | None:
        """The first tier of kind ram: where the anchor model and resident blocks live."""
        return next((t for t in self.tiers if t.kind == "ram"), None)

    @property
    def file(self) -> str | None:
        return self._doc.file if self._doc else None

    def with_tier(self, name: str, **changes: Any) -> Profile:
        """A validated copy with tier `name` changed, for what-if studies.

        `profile.with_tier("disk", bandwidth="2 GB/s")` accepts the same values as the YAML;
        unlike pydantic's `model_copy`, the new values are checked and units are parsed.
        A per-stream `bandwidth` above the tier's explicit `aggregate_bandwidth` raises an
        InputError instead of being silently capped (a sweep over bandwidth would change
        nothing): pass `aggregate_bandwidth` too. A tier without an explicit aggregate has
        the new bandwidth as its aggregate.
        """
        if name not in self.tier_names:
            raise InputError(f"unknown tier '{name}' (profile '{self.name}' has "
                             f"{', '.join(self.tier_names)})", field="tiers")
        data = self.model_dump(by_alias=True)
        for tier in data["tiers"]:
            if tier["name"] == name:
                tier.update(changes)
        changed = profile_from_dict(data, file=f"<{self.name} with {name} changed>")
        tier = changed.tier(name)
        if "bandwidth" in changes and tier.aggregate_bandwidth is not None and (
                tier.bandwidth > tier.aggregate_bandwidth):
            raise InputError(
                f"bandwidth {format_rate(tier.bandwidth)} is above the tier's "
                f"aggregate_bandwidth {format_rate(tier.aggregate_bandwidth)}, so it would be "
                "capped and change nothing; pass aggregate_bandwidth too",
                field=f"tiers[{self.tier_names.index(name)}].bandwidth")
        return changed

    def line_of(self, *loc: str | int) -> int | None:
        return self._doc.line_of(loc) if self._doc else None


def load_profile(ref: str | Path) -> Profile:
    """A profile from a YAML file, or a shipped one by name (`paper-hypothetical`)."""
    path = resources.resolve(ref, "device_profiles")
    doc = yamlio.load(path)
    profile = validate_model(Profile, doc)
    profile._doc = doc
    return profile


def profile_from_dict(data: dict[str, Any], file: str = "<dict>") -> Profile:
    """A profile from plain data (notebooks, tests); errors name `file`."""
    return validate_model(Profile, yamlio.Document(data=data, file=file))


__all__ = ["Profile", "Tier", "TierCost", "TierEnergy", "Latency", "load_profile",
           "profile_from_dict", "InputError"]
