"""Streaming statistics: bounded memory whatever the run length.

Means are exact (running sums). Percentiles come from a log-spaced histogram (0.46% wide
bins, clamped to the exact min and max, so a constant series reports its exact value).
Confidence intervals use batch means: the run is cut into a fixed number of batches whose
means (and percentiles) are treated as independent samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as st

_LOW, _HIGH, _PER_DECADE = -9.0, 6.0, 500  # 1 ns .. 11.6 days
_BINS = int((_HIGH - _LOW) * _PER_DECADE)
_EDGES = 10.0 ** (_LOW + np.arange(_BINS + 1) / _PER_DECADE)
_CENTERS = np.sqrt(_EDGES[:-1] * _EDGES[1:])
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


def _bin(x: float) -> int:
    if x <= 0.0:
        return 0
    b = int((math.log10(x) - _LOW) * _PER_DECADE)
    return min(max(b, 0), _BINS - 1)


def _quantile(hist: np.ndarray, total: int, q: float, lo: float, hi: float) -> float:
    if total == 0:
        return math.nan
    rank = q * total
    index = int(np.searchsorted(np.cumsum(hist), rank, side="left"))
    index = min(index, _BINS - 1)
    value = 0.0 if lo <= 0.0 and index == 0 else float(_CENTERS[index])
    return min(max(value, lo), hi)


@dataclass
class Series:
    """Count, mean, max and percentiles of a stream of non-negative values."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    hist: np.ndarray = field(default_factory=lambda: np.zeros(_BINS, dtype=np.int64))

    def add(self, x: float) -> None:
        self.count += 1
        self.total += x
        if x < self.low:
            self.low = x
        if x > self.high:
            self.high = x
        self.hist[_bin(x)] += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        return _quantile(self.hist, self.count, q, self.low, self.high)

    def summary(self) -> dict[str, float]:
        out = {"mean": self.mean}
        out.update({k: self.quantile(q) for k, q in PERCENTILES.items()})
        out["max"] = self.high if self.count else math.nan
        return out


@dataclass
class BatchedSeries(Series):
    """A Series that also keeps per-batch means and percentiles for confidence intervals."""

    batch_size: int = 1000
    _batch: Series = field(default_factory=Series)
    batches: list[dict[str, float]] = field(default_factory=list)

    def add(self, x: float) -> None:
        super().add(x)
        batch = self._batch
        batch.add(x)
        if batch.count >= self.batch_size:
            self.batches.append(batch.summary())
            self._batch = Series()

    def interval(self, key: str, level: float = 0.95) -> tuple[float, float] | None:
        """Confidence interval of `key` (mean, p50, ...) from the completed batches."""
        values = np.array([b[key] for b in self.batches])
        if len(values) < 2:
            return None
        centre = float(values.mean())
        half = float(st.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1)
                     / math.sqrt(len(values)))
        return (centre - half, centre + half)
