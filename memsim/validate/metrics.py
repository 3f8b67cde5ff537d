"""How far a simulated response-time distribution is from a measured one (pure functions).

Quantile errors are relative: (simulated - real) / real. The demerit is DiskSim's: the root
mean square horizontal distance between the two cumulative distribution functions, i.e. over
probabilities q in (0, 1) the RMS of Q_sim(q) - Q_real(q), divided by the real mean. The
quantile functions are the empirical ones (Q(q) = the smallest x with F(x) >= q), evaluated on
a grid of q at the midpoints of `grid` equal steps, so a shift of every sample by d gives
exactly d / mean, and samples scaled by c give |c - 1| * sqrt(mean(x^2)) / mean(x) when the
grid is a multiple of the sample size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["GRID", "Comparison", "compare", "demerit", "empirical_quantiles", "percent",
           "quantile_error"]

GRID = 10_000  # probabilities on which the two quantile functions are compared


def _sample(values: np.ndarray | list[float]) -> np.ndarray:
    """A 1-D float array of finite samples; an empty or non-finite sample is a ValueError."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("an empty sample has no distribution")
    if not np.isfinite(x).all():
        raise ValueError("samples must be finite")
    return x


def empirical_quantiles(values: np.ndarray | list[float], q: np.ndarray) -> np.ndarray:
    """Q(q) = the smallest sample x with F(x) >= q (the inverse of the empirical CDF)."""
    x = np.sort(_sample(values))
    idx = np.ceil(np.asarray(q, dtype=np.float64) * x.size).astype(np.int64) - 1
    return x[np.clip(idx, 0, x.size - 1)]


def quantile_error(real: np.ndarray | list[float], sim: np.ndarray | list[float],
                   q: float) -> float:
    """(Q_sim(q) - Q_real(q)) / Q_real(q), with numpy's linear-interpolated quantiles.

    Infinite (or NaN) when the real quantile is 0 and the simulated one is not (is).
    """
    r = float(np.quantile(_sample(real), q))
    s = float(np.quantile(_sample(sim), q))
    if r == 0.0:
        return 0.0 if s == 0.0 else math.copysign(math.inf, s)
    return (s - r) / r


def demerit(real: np.ndarray | list[float], sim: np.ndarray | list[float],
            grid: int = GRID) -> float:
    """RMS horizontal distance between the real and simulated CDFs, over the real mean."""
    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}")
    r, s = _sample(real), _sample(sim)
    q = (np.arange(grid) + 0.5) / grid
    gap = empirical_quantiles(s, q) - empirical_quantiles(r, q)
    rms = float(np.sqrt(np.mean(gap * gap)))
    mean = float(r.mean())
    if mean == 0.0:
        return 0.0 if rms == 0.0 else math.inf
    return rms / mean


def percent(x: float, sign: bool = True) -> str:
    """A relative error as a percentage ("+4.2%", or "4.2%" unsigned); infinities spelled out."""
    if not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "n/a")
    return f"{x:+.1%}" if sign else f"{x:.1%}"


@dataclass(frozen=True)
class Comparison:
    """Real vs simulated response times of one tier, level or the whole fetch."""

    p50_error: float
    p99_error: float
    demerit: float
    real_p50_s: float
    sim_p50_s: float
    real_p99_s: float
    sim_p99_s: float
    samples: int  # real samples (the simulated sample may differ in size)
    sim_samples: int
    real_mean_s: float = 0.0  # the demerit's scale: its RMS distance is demerit x this

    def meets(self, median: float, demerit: float) -> bool:
        """Whether |p50 error| <= median and demerit <= demerit (the validation targets)."""
        return abs(self.p50_error) <= median and self.demerit <= demerit

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare(real: np.ndarray | list[float], sim: np.ndarray | list[float],
            grid: int = GRID) -> Comparison:
    """Median and 99th-percentile errors and the demerit of `sim` against `real`."""
    r, s = _sample(real), _sample(sim)
    rq = np.quantile(r, [0.5, 0.99])
    sq = np.quantile(s, [0.5, 0.99])
    return Comparison(
        p50_error=quantile_error(r, s, 0.5), p99_error=quantile_error(r, s, 0.99),
        demerit=demerit(r, s, grid), real_p50_s=float(rq[0]), sim_p50_s=float(sq[0]),
        real_p99_s=float(rq[1]), sim_p99_s=float(sq[1]), samples=int(r.size),
        sim_samples=int(s.size), real_mean_s=float(r.mean()),
    )
