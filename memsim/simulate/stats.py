"""Streaming statistics: bounded memory whatever the run length.

Means are exact (running sums). Percentiles come from a log-spaced histogram (0.46% wide
bins, clamped to the exact min and max, so a constant series reports its exact value).
Confidence intervals use batch means: the run is cut into a fixed number of batches whose
means (and percentiles) are treated as independent samples. Values are buffered and binned
with numpy a few thousand at a time, so adding one costs a list append. Intervals of these
non-negative quantities never reach below 0, and `trend` says when the batches grow through
the run (no steady state: then no interval means anything).
"""

from __future__ import annotations

import math

import numpy as np

_LOW, _HIGH, _PER_DECADE = -9.0, 6.0, 500  # 1 ns .. 11.6 days
_BINS = int((_HIGH - _LOW) * _PER_DECADE)
_EDGES = 10.0 ** (_LOW + np.arange(_BINS + 1) / _PER_DECADE)
_CENTERS = np.sqrt(_EDGES[:-1] * _EDGES[1:])
_FLUSH = 8192
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
TREND_MIN_BATCHES = 8  # fewer batches say nothing about a trend
TREND_T = 4.0  # slope in standard errors (p < 1e-3 even for a handful of batches)
TREND_RATIO = 1.5  # last quarter of the batches over the first


def _bins(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        b = np.floor((np.log10(values) - _LOW) * _PER_DECADE)
    return np.clip(np.nan_to_num(b, nan=0.0, neginf=0.0), 0, _BINS - 1).astype(np.int64)


class Series:
    """Count, mean, max and percentiles of a stream of non-negative values."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.hist = np.zeros(_BINS, dtype=np.int64)
        self._buf: list[float] = []

    def add(self, x: float) -> None:
        self._buf.append(x)
        if len(self._buf) >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            values = np.asarray(self._buf)
            self._buf.clear()
            self.absorb(values)

    def absorb(self, values: np.ndarray) -> None:
        self.count += len(values)
        self.total += float(values.sum())
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        self.hist += np.bincount(_bins(values), minlength=_BINS)

    @property
    def mean(self) -> float:
        self.flush()
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        self.flush()
        if self.count == 0:
            return math.nan
        index = int(np.searchsorted(np.cumsum(self.hist), q * self.count, side="left"))
        value = float(_CENTERS[min(index, _BINS - 1)])
        return min(max(value, self.low), self.high)

    def summary(self) -> dict[str, float]:
        out = {"mean": self.mean}
        out.update({k: self.quantile(q) for k, q in PERCENTILES.items()})
        out["max"] = self.high if self.count else math.nan
        return out


class BatchedSeries(Series):
    """A Series that also keeps per-batch means and percentiles for confidence intervals."""

    def __init__(self, batch_size: int = 1000) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.batches: list[dict[str, float]] = []
        self._batch = Series()
        self._in_batch = 0

    def add(self, x: float) -> None:
        self._buf.append(x)
        self._in_batch += 1
        if self._in_batch >= self.batch_size:
            self.flush()
            self.batches.append(self._batch.summary())
            self._batch = Series()
            self._in_batch = 0
        elif len(self._buf) >= _FLUSH:
            self.flush()

    def absorb(self, values: np.ndarray) -> None:
        super().absorb(values)
        self._batch.absorb(values)

    def interval(self, key: str, level: float = 0.95) -> tuple[float, float] | None:
        """Confidence interval of `key` (mean, p50, ...): the whole run's value, plus or minus
        the t-quantile times the spread of the batches' values over the root of their number."""
        values = np.array([b[key] for b in self.batches])
        if len(values) < 2:
            return None
        from scipy.special import stdtrit  # the t quantile, without scipy.stats's import

        whole = self.summary()
        centre = whole[key]
        half = float(stdtrit(len(values) - 1, 0.5 + level / 2) * values.std(ddof=1)
                     / math.sqrt(len(values)))
        if not (math.isfinite(centre) and math.isfinite(half)):
            return None
        return (max(centre - half, 0.0), centre + half)  # fetch times are never negative

    def trend(self) -> float | None:
        """How many times the last batches' mean exceeds the first batches' when the batch
        means grow steadily through the run (a queue that never drains), else None.

        Steady means a least-squares slope over the batches at least TREND_T standard errors
        above zero and a last quarter at least TREND_RATIO times the first: batch means of a
        stable run wander, but they do not climb by half across the whole run.
        """
        means = np.array([b["mean"] for b in self.batches])
        n = len(means)
        if n < TREND_MIN_BATCHES or not np.isfinite(means).all():
            return None
        quarter = n // 4
        first, last = float(means[:quarter].mean()), float(means[-quarter:].mean())
        if not last > TREND_RATIO * first:
            return None
        x = np.arange(n, dtype=float) - (n - 1) / 2
        slope = float(x @ means / (x @ x))
        residual = means - means.mean() - slope * x
        spread = float(residual @ residual) / (n - 2)
        error = math.sqrt(spread / float(x @ x))
        if error > 0 and slope / error < TREND_T:
            return None
        return last / first if first > 0 else math.inf
