"""One point of a sweep: the fully resolved inputs of one configuration, and its key.

A point is plain data (dicts, strings, numbers), so it pickles to worker processes and Dask
workers unchanged; its key is a hash of everything that decides its result, which is how an
interrupted sweep knows what it already has.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import memsim

KEY_CHARS = 16  # hex digits of the sha256 kept as a point's key


class OptimizeOptions(BaseModel):
    """The options of the optimize stage: `memsim optimize`'s, named as its flags are
    (`--max-utilization` -> `max_utilization`), values as a YAML file gives them."""

    model_config = ConfigDict(extra="forbid")

    fetch: Literal["parallel", "sequential"] = "parallel"
    granularity: Literal["level", "bucket"] = "level"
    resident: list[int] = Field(default_factory=list)
    resident_budget: str | None = None
    solver: Literal["auto", "highs", "cbc"] = "auto"
    time_limit: float | None = None
    gap: float = 0.0
    scenarios: int = 64
    buckets: int = 64
    budget: float | None = None  # dollars per month
    energy_budget: str | None = None  # "500 mJ"
    idle: bool = False
    max_utilization: float = 0.8
    objective: str = "mean"  # mean, p50..p999, cvar:LEVEL
    slo: list[str] = Field(default_factory=list)  # ["p99 <= 50 ms"]
    minimize: Literal["time", "cost", "energy"] = "time"
    private: list[str] = Field(default_factory=list)  # ["1:3"]
    private_tiers: list[str] | None = None
    blocked: list[str] = Field(default_factory=list)
    replica_budget: str | None = None
    volatile: list[str] | None = None
    seed: int = 0


class EstimateStage(BaseModel):
    """The estimate stage: the analytic fetch time of the point's layout."""

    model_config = ConfigDict(extra="forbid")

    samples: int = 20_000
    seed: int = 0


class SimulateStage(BaseModel):
    """The simulate stage: the discrete-event simulator under the point's workload."""

    model_config = ConfigDict(extra="forbid")

    queries: int = 20_000
    seed: int = 0
    warmup: float = 0.1


class Stages(BaseModel):
    """What runs at each point, in this order: optimize (unless the base gives a layout),
    estimate, simulate. A stage left out (null) does not run."""

    model_config = ConfigDict(extra="forbid")

    optimize: bool = True
    estimate: EstimateStage | None = Field(default_factory=EstimateStage)
    simulate: SimulateStage | None = None


@dataclass(frozen=True)
class Point:
    """One configuration of a sweep.

    `axes` holds each axis's value at this point as the spec gives it (axis path -> value);
    `inputs` the resolved plain data the stages read:
      profile, bank: the documents as mappings (axes applied);
      workload: a mapping, or None (uniform routing, and Poisson at `rate` if one is set);
      layout: a mapping, or None (the optimize stage chooses one);
      rate: queries per second the point carries (scales the workload), or None;
      optimize: OptimizeOptions as a mapping; stages: Stages as a mapping.
    `source` names the spec (for messages); `sample` is the spec's sampling method. Neither
    is part of the key.
    """

    index: int
    axes: dict[str, Any]
    inputs: dict[str, Any]
    source: str = "<sweep>"
    sample: str = "grid"
    key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", point_key(self.inputs))


def point_key(inputs: dict[str, Any]) -> str:
    """The hash of a point's full inputs (and memsim's version): equal inputs, equal key."""
    text = json.dumps({"inputs": inputs, "memsim": memsim.__version__}, sort_keys=True,
                      separators=(",", ":"), default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_CHARS]
