"""Latency distributions of a tier: constant, lognormal (from p50 and p99), empirical, exponential.

Each can give its mean and quantiles and draw seeded samples as numpy arrays, so the
estimator and the optimizer can evaluate many queries at once.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from statistics import NormalDist
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from memsim.units import parse_time

TIME_SCHEMA = {
    "anyOf": [{"type": "string", "description": 'a time such as "80 us", "8 ms", "1.5 s"'},
              {"type": "number", "minimum": 0, "description": "seconds"}],
}
Seconds = Annotated[float, BeforeValidator(parse_time), WithJsonSchema(TIME_SCHEMA)]

_NORMAL = NormalDist()
Z99 = _NORMAL.inv_cdf(0.99)


def normal_ppf(q: float) -> float:
    """Standard normal quantile, as scipy's `norm.ppf`: -inf at 0, inf at 1, nan outside.

    The standard library's `NormalDist` is exact to double precision here, and importing it
    costs nothing, where `scipy.stats` took seconds at every start of the command line.
    """
    if q == 0.0:
        return -math.inf
    if q == 1.0:
        return math.inf
    if not 0.0 < q < 1.0:
        return math.nan
    return _NORMAL.inv_cdf(q)


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def is_constant(self) -> bool:
        return False

    @abstractmethod
    def mean(self) -> float:
        """Expected latency in seconds."""

    @abstractmethod
    def second_moment(self) -> float:
        """E[latency^2] in s^2: with the mean, the variability queueing formulas need."""

    @abstractmethod
    def quantile(self, q: float) -> float:
        """Latency at probability q (0..1)."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        """Seeded draws in seconds."""


class ConstantLatency(_Base):
    """The same latency for every request."""

    distribution: Literal["constant"] = "constant"
    value: Seconds

    @property
    def is_constant(self) -> bool:
        return True

    def mean(self) -> float:
        return self.value

    def second_moment(self) -> float:
        return self.value**2

    def quantile(self, q: float) -> float:
        return self.value

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return np.full(size, self.value)


class LognormalLatency(_Base):
    """Lognormal fitted through a median and a 99th percentile."""

    distribution: Literal["lognormal"] = "lognormal"
    p50: Seconds
    p99: Seconds

    @model_validator(mode="after")
    def _check(self) -> LognormalLatency:
        if self.p50 <= 0:
            raise ValueError("p50 must be positive for a lognormal latency")
        if self.p99 < self.p50:
            raise ValueError(f"p99 ({self.p99:g} s) must not be below p50 ({self.p50:g} s)")
        return self

    @property
    def mu(self) -> float:
        return math.log(self.p50)

    @property
    def sigma(self) -> float:
        return math.log(self.p99 / self.p50) / Z99

    @property
    def is_constant(self) -> bool:
        return self.sigma == 0.0

    def mean(self) -> float:
        return math.exp(self.mu + self.sigma**2 / 2)

    def second_moment(self) -> float:
        return math.exp(2 * self.mu + 2 * self.sigma**2)

    def quantile(self, q: float) -> float:
        if self.sigma == 0.0:
            return self.p50
        return math.exp(self.mu + self.sigma * normal_ppf(q))

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        out = rng.standard_normal(size)
        out *= self.sigma
        out += self.mu
        return np.exp(out, out=out)


class ExponentialLatency(_Base):
    """Exponential latency with a given mean (mostly for checking against queueing theory)."""

    distribution: Literal["exponential"] = "exponential"
    mean_value: Seconds = Field(alias="mean")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def mean(self) -> float:
        return self.mean_value

    def second_moment(self) -> float:
        return 2 * self.mean_value**2

    def quantile(self, q: float) -> float:
        return -self.mean_value * math.log1p(-q)

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.exponential(self.mean_value, size)


def _probability(key: Any) -> float:
    """Quantile keys: 0.5, "p50", "p99.9", "min" (0), "max" (1)."""
    if isinstance(key, str):
        text = key.strip().lower()
        if text == "min":
            return 0.0
        if text == "max":
            return 1.0
        if text.startswith("p"):
            return float(text[1:]) / 100
        return float(text)
    if isinstance(key, bool) or not isinstance(key, (int, float)):
        raise ValueError(f"quantile key {key!r} is not a probability")
    return float(key)


class EmpiricalLatency(_Base):
    """Latency given by measured quantiles, linearly interpolated between them.

    Below the lowest and above the highest given quantile the end values are used.
    """

    distribution: Literal["empirical"] = "empirical"
    quantiles: dict[float, Seconds]

    @field_validator("quantiles", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError('give quantiles as a mapping, e.g. {p50: "80 us", p99: "2 ms"}')
        out = {}
        for key, v in value.items():
            try:
                q = _probability(key)
            except ValueError:
                raise ValueError(f"quantile key {key!r} is not like 'p50' or 0.5") from None
            if not 0.0 <= q <= 1.0 or math.isnan(q):
                raise ValueError(f"quantile {key!r} is outside 0..1 (p0..p100)")
            out[q] = v
        return out

    @model_validator(mode="after")
    def _monotone(self) -> EmpiricalLatency:
        qs = sorted(self.quantiles)
        values = [self.quantiles[q] for q in qs]
        if any(b < a for a, b in zip(values, values[1:], strict=False)):
            raise ValueError("quantile values must not decrease as the probability grows")
        return self

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        qs = np.array(sorted(self.quantiles))
        vs = np.array([self.quantiles[q] for q in qs])
        if qs[0] > 0:
            qs, vs = np.r_[0.0, qs], np.r_[vs[0], vs]
        if qs[-1] < 1:
            qs, vs = np.r_[qs, 1.0], np.r_[vs, vs[-1]]
        return qs, vs

    def mean(self) -> float:
        qs, vs = self._grid()
        return float(np.sum((vs[1:] + vs[:-1]) / 2 * np.diff(qs)))

    def second_moment(self) -> float:
        # The quantile function is linear between grid points: integrate its square exactly.
        qs, vs = self._grid()
        a, b = vs[:-1], vs[1:]
        return float(np.sum((a * a + a * b + b * b) / 3 * np.diff(qs)))

    def quantile(self, q: float) -> float:
        qs, vs = self._grid()
        return float(np.interp(q, qs, vs))

    @property
    def is_constant(self) -> bool:
        return len(set(self.quantiles.values())) == 1

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        qs, vs = self._grid()
        return np.interp(rng.random(size), qs, vs)


Latency = ConstantLatency | LognormalLatency | EmpiricalLatency | ExponentialLatency


def coerce_latency(value: Any) -> Any:
    """Accept the short forms users write and tag each with its distribution.

    `80 us` is a constant; `{p50, p99}` a lognormal; `{quantiles: ...}` empirical;
    `{mean}` with `distribution: exponential` an exponential.
    """
    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, dict):
        return {"distribution": "constant", "value": value}
    if "distribution" in value:
        return value
    if "quantiles" in value:
        return {"distribution": "empirical", **value}
    if "p50" in value or "p99" in value:
        return {"distribution": "lognormal", **value}
    if "value" in value:
        return {"distribution": "constant", **value}
    raise ValueError(
        'latency must be a time ("80 us"), {p50: ..., p99: ...} (lognormal), '
        "{quantiles: {p50: ..., p99: ...}} (empirical) or {distribution: exponential, mean: ...}"
    )


LATENCY_SCHEMA = {
    "description": 'A constant time ("80 us"), a lognormal {p50, p99}, empirical {quantiles: '
                   '{p50: ..., p99: ...}}, or {distribution: exponential, mean: ...}.',
    "anyOf": [
        TIME_SCHEMA,
        {"type": "object", "additionalProperties": False, "required": ["p50", "p99"],
         "properties": {"distribution": {"const": "lognormal"}, "p50": TIME_SCHEMA,
                        "p99": TIME_SCHEMA}},
        {"type": "object", "additionalProperties": False, "required": ["quantiles"],
         "properties": {"distribution": {"const": "empirical"},
                        "quantiles": {"type": "object", "additionalProperties": TIME_SCHEMA}}},
        {"type": "object", "additionalProperties": False, "required": ["distribution", "mean"],
         "properties": {"distribution": {"const": "exponential"}, "mean": TIME_SCHEMA}},
        {"type": "object", "additionalProperties": False, "required": ["value"],
         "properties": {"distribution": {"const": "constant"}, "value": TIME_SCHEMA}},
    ],
}

LatencyField = Annotated[
    Latency,
    BeforeValidator(coerce_latency),
    Field(discriminator="distribution"),
    WithJsonSchema(LATENCY_SCHEMA),
]
