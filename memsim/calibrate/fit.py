"""Fit memsim's tier model to timed reads: bandwidth, latency, aggregate bandwidth, channels.

The model (memsim/cost_model.py): a request holds one of `concurrency` channels for its
latency plus bytes / bandwidth, transfers in flight sharing `aggregate_bandwidth`. From
the measurements:

- per-stream bandwidth (and a base latency): a weighted least-squares line through the median
  time of each request size at concurrency 1, weighted so that every size counts by its
  relative error (small requests are not drowned by large ones); coefficients kept >= 0.
- latency: an empirical distribution (quantiles from min to max) of single reads minus their
  transfer time at that bandwidth: reads of the chosen latency sizes (a bank's block size, so
  that the spread of its reads is modelled), or by default the small ones (transfer under 10%
  of their time, or the smallest size). Where the reads were also measured at random
  arrivals under load (`Measurements.loaded`), their service times are used instead.
- aggregate bandwidth: the largest throughput seen, reads in flight x size / median time.
- concurrency: the smallest c beyond which the IOPS of the smallest size (or of the largest
  latency size, when given) grow by no more than 10% (rule "iops", the default); or, with
  rule "fit", the tested concurrency whose model fits every point best. Both are recorded.
- request overhead: the mean time a channel is held but not reading (from when a read could
  start, its arrival or the previous read's end, to its start: waking a reading thread, the
  hand-over between reads), measured in the reads under load; 0 without them (it cannot be
  told apart from latency by the total time alone) and for stores that do not report it.

The fit is checked against every point: the model's median time for c streams reading
back to back (c <= channels: c requests in service at once; more: they queue, Little's law)
against the measured median (times concurrency / reads in flight where a store did not
overlap the streams' reads), as a relative RMS.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy.optimize import nnls

from memsim.calibrate.measure import Measurements
from memsim.cost_model import tier_finish_times
from memsim.latency import ConstantLatency
from memsim.profile import Tier

ConcurrencyRule = Literal["iops", "fit"]
RULES = ("iops", "fit")
SMALL_SHARE = 0.10  # a read is "small" when its transfer is under this share of its time
IOPS_GROWTH = 0.10  # concurrency stops helping when IOPS grow by no more than this
# probabilities of the fitted empirical latency (0 and 1: the smallest and largest residual)
# (finer in the tails, where a few reads decide the demerit; linear in between)
LATENCY_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98,
                0.99, 0.995, 1.0)


@dataclass(frozen=True)
class Point:
    """One (size, concurrency) point: reads, median and 99th percentile time, throughput."""

    size: int
    concurrency: int
    reads: int
    p50_s: float
    p99_s: float
    mean_s: float
    wall_s: float
    in_flight: float  # mean reads in flight while every stream was busy (<= concurrency)

    @property
    def throughput(self) -> float:
        """Bytes/s with `concurrency` streams: reads in flight x size / median time (Little's
        law; in flight = concurrency when the store really overlaps the streams' reads)."""
        return self.in_flight * self.size / self.p50_s

    @property
    def iops(self) -> float:
        """Reads per second, by the same law."""
        return self.in_flight / self.p50_s

    @property
    def effective_s(self) -> float:
        """Median time of a read including its wait for a turn: c / IOPS (Little's law).

        The median itself when the streams' reads overlap; when a store serves them one at a
        time without queueing them visibly (a memory store), c times it, as replay sees it.
        """
        return self.concurrency * self.p50_s / self.in_flight

    @property
    def wall_throughput(self) -> float:
        """Bytes/s over the point's wall time (all its reads, first issued to last done)."""
        return self.reads * self.size / self.wall_s if self.wall_s > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"size_bytes": self.size, "concurrency": self.concurrency, "reads": self.reads,
                "p50_s": self.p50_s, "p99_s": self.p99_s, "mean_s": self.mean_s,
                "in_flight": self.in_flight, "throughput_bytes_per_s": self.throughput}


def points(m: Measurements) -> list[Point]:
    """The measured points, by concurrency then size."""
    out = []
    for c in sorted(set(m.concurrency.tolist())):
        for size in sorted(set(m.sizes[m.concurrency == c].tolist())):
            t = m.at(size, c)
            out.append(Point(size=int(size), concurrency=int(c), reads=int(t.size),
                             p50_s=float(np.median(t)), p99_s=float(np.percentile(t, 99)),
                             mean_s=float(np.mean(t)), wall_s=m.wall.get((size, c), 0.0),
                             in_flight=m.in_flight(size, c)))
    return out


@dataclass
class TierFit:
    """memsim's tier parameters fitted to one store's reads, with how well they fit."""

    bandwidth: float  # B/s of one stream
    intercept_s: float  # base latency of the straight line at concurrency 1
    latency_p50_s: float
    latency_p99_s: float
    latency_reads: int  # the single reads behind the latency distribution
    latency_sizes: list[int]
    aggregate_bandwidth: float
    aggregate_at: tuple[int, int]  # (size, concurrency) of the largest throughput
    aggregate_measured: float  # that largest throughput
    concurrency: int
    concurrency_at_limit: bool  # IOPS still grew at the largest concurrency tested
    iops: dict[int, float]  # concurrency -> reads/s of the smallest size
    c1_reads: int
    c1_sizes: list[int]
    rule: str = "iops"  # how `concurrency` was chosen
    concurrency_iops: int = 1  # by the IOPS rule
    concurrency_fit: int = 1  # the tested concurrency whose model fits every point best
    residual_c1: float = float("nan")  # relative RMS, model vs measured medians, c = 1
    residual_all: float = float("nan")  # ... over every point
    residual_by_concurrency: dict[int, float] = field(default_factory=dict)  # all points
    notes: list[str] = field(default_factory=list)
    latency_quantiles: dict[float, float] = field(default_factory=dict)  # probability -> s
    concurrency_size: int = 0  # the request size whose IOPS the rule "iops" looked at
    request_overhead_s: float = 0.0  # mean time a channel is held but not reading
    overhead_reads: int = 0

    def tier(self, name: str = "fit") -> Tier:
        """A memsim Tier with these parameters (latency at its median, for predictions)."""
        return Tier(name=name, kind="other", bandwidth=self.bandwidth,
                    aggregate_bandwidth=self.aggregate_bandwidth,
                    concurrency=self.concurrency,
                    latency=ConstantLatency(value=self.latency_p50_s))

    def predict(self, size: float, concurrency: int, *, latency_s: float | None = None
                ) -> float:
        """The model's time of one read with `concurrency` streams reading back to back."""
        lat = self.latency_p50_s if latency_s is None else latency_s
        tier = self.tier()
        k = min(concurrency, self.concurrency)
        service = float(np.mean(tier_finish_times(tier, [float(size)] * k,
                                                   np.full((1, k), lat))))
        return service * max(1.0, concurrency / self.concurrency)

    def to_json(self) -> dict[str, Any]:
        return {
            "bandwidth_bytes_per_s": self.bandwidth, "intercept_s": self.intercept_s,
            "latency_p50_s": self.latency_p50_s, "latency_p99_s": self.latency_p99_s,
            "latency_reads": self.latency_reads, "latency_sizes_bytes": self.latency_sizes,
            "latency_quantiles_s": {str(q): v for q, v in self.latency_quantiles.items()},
            "request_overhead_s": self.request_overhead_s,
            "aggregate_bandwidth_bytes_per_s": self.aggregate_bandwidth,
            "aggregate_measured_bytes_per_s": self.aggregate_measured,
            "aggregate_at": {"size_bytes": self.aggregate_at[0],
                             "concurrency": self.aggregate_at[1]},
            "concurrency": self.concurrency, "concurrency_at_limit": self.concurrency_at_limit,
            "concurrency_rule": self.rule, "concurrency_iops": self.concurrency_iops,
            "concurrency_fit": self.concurrency_fit,
            "residual_by_concurrency": {str(c): v
                                        for c, v in self.residual_by_concurrency.items()},
            "iops": {str(c): v for c, v in self.iops.items()},
            "residual_c1": self.residual_c1, "residual_all": self.residual_all,
            "notes": list(self.notes),
        }


def _line(sizes: np.ndarray, medians: np.ndarray) -> tuple[float, float]:
    """(intercept s, s per byte) minimising the relative error of each median, both >= 0."""
    design = np.column_stack([1.0 / medians, sizes / medians])
    scale = np.abs(design).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(design / scale, np.ones_like(medians))
    coef = coef / scale
    return float(coef[0]), float(coef[1])


def _concurrency(iops: dict[int, float]) -> tuple[int, bool]:
    """Smallest c whose IOPS no later concurrency beats by more than IOPS_GROWTH."""
    cs = sorted(iops)
    for i, c in enumerate(cs):
        later = [iops[d] for d in cs[i + 1:]]
        if not later or max(later) <= (1 + IOPS_GROWTH) * iops[c]:
            return c, i == len(cs) - 1 and len(cs) > 1 and iops[c] > (
                1 + IOPS_GROWTH) * iops[cs[i - 1]]
    return cs[-1], True  # pragma: no cover - the last c always returns above


def rel_rms(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Root mean square of (predicted - measured) / measured."""
    if measured.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean(((predicted - measured) / measured) ** 2)))


def _residuals(f: TierFit, pts: list[Point]) -> tuple[float, float]:
    """(concurrency 1, all points) relative RMS of `f` against the measured medians."""
    predicted = np.array([f.predict(p.size, p.concurrency) for p in pts])
    measured = np.array([p.effective_s for p in pts])
    c1 = np.array([p.concurrency == 1 for p in pts])
    return rel_rms(predicted[c1], measured[c1]), rel_rms(predicted, measured)


def fit(m: Measurements, rule: ConcurrencyRule = "iops",
        latency_sizes: list[int] | tuple[int, ...] = ()) -> TierFit:
    """Fit memsim's tier model to one store's measurements (`rule`: how to pick the
    concurrency, "iops" or "fit"; `latency_sizes`: single reads the latency distribution is
    fitted from, by default the latency-bound ones)."""
    if rule not in RULES:
        raise ValueError(f"unknown concurrency rule {rule!r}")
    pts = points(m)
    notes: list[str] = []
    single = [p for p in pts if p.concurrency == 1]
    sizes = np.array([p.size for p in single], dtype=float)
    medians = np.array([p.p50_s for p in single])
    intercept, per_byte = _line(sizes, medians)
    if per_byte > 0:
        bandwidth = 1.0 / per_byte
    else:
        bandwidth = float(np.max(sizes / medians))
        notes.append("read time did not grow with size at concurrency 1: bandwidth set to the "
                     "largest size / median time measured, a lower bound")
    # latency: single reads (of the chosen sizes, or small ones) minus their transfer time
    overhead, spent = 0.0, np.zeros(0)
    measured = {p.size for p in single}
    small = [s for s in latency_sizes if s in measured]
    if latency_sizes and not small:
        raise ValueError("none of the latency sizes was measured at concurrency 1")
    if not small:
        small = [p.size for p in single if p.size / bandwidth <= SMALL_SHARE * p.p50_s]
    if not small:
        small = [single[0].size]
        notes.append(f"no read was latency-bound (transfer under {SMALL_SHARE:.0%} of its "
                     "time); latency taken from the smallest size")
    under_load = [s for s in small if s in m.loaded]
    if under_load:  # measured at random arrivals under load: what a workload meets
        small = under_load
        # reads under load may be faster than the line through single reads from idle says:
        # the stream is then at least as fast as the fastest of them (p1), so that the model
        # (latency + transfer) reproduces their distribution instead of clipping it at 0
        floor = max(s / float(np.quantile(m.loaded[s], 0.01)) for s in small)
        if floor > bandwidth:
            notes.append(f"reads of {', '.join(str(s) for s in small)} bytes under load were "
                         f"faster than single reads from idle: per-stream bandwidth raised "
                         f"from {bandwidth:.4g} to {floor:.4g} B/s (their fastest 1%)")
            bandwidth = floor
        lat = np.concatenate([m.loaded[s] - s / bandwidth for s in small])
        spent = np.concatenate([m.loaded_overhead[s] for s in small
                                if s in m.loaded_overhead] or [np.zeros(0)])
        overhead = float(spent.mean()) if spent.size else 0.0
    else:
        lat = np.concatenate([m.at(s, 1) - s / bandwidth for s in small])
    tiny = 1e-9
    values = np.maximum(np.quantile(lat, LATENCY_GRID), tiny)
    quantiles = {q: float(v) for q, v in zip(LATENCY_GRID, np.maximum.accumulate(values),
                                             strict=True)}
    p50 = quantiles[0.5]
    p99 = max(float(np.percentile(lat, 99)), p50)
    # aggregate bandwidth: the best throughput seen
    best = max(pts, key=lambda p: p.throughput)
    aggregate = best.throughput
    if aggregate < bandwidth:
        notes.append(f"no concurrency tested beat one stream's bandwidth (best {aggregate:.4g} "
                     f"B/s); aggregate bandwidth set to the per-stream bandwidth")
        aggregate = bandwidth
    # channels: where small-request IOPS stop growing
    # (at the largest latency size when given: the reads that matter; else the smallest)
    smallest = max(latency_sizes) if latency_sizes else min(p.size for p in pts)
    iops = {p.concurrency: p.iops for p in pts if p.size == smallest}
    channels, at_limit = _concurrency(iops)
    overlap = max(p.in_flight for p in pts if p.size == smallest)
    if len(iops) > 1 and overlap < 1.5:
        channels, at_limit = 1, False
        notes.append(f"the store never had two reads in flight at once (at most {overlap:.2f} "
                     "on average): one channel")
    elif at_limit:
        notes.append(f"small-read IOPS still grew at the largest concurrency tested ({channels}):"
                     " the device may serve more at once")
    out = TierFit(bandwidth=bandwidth, intercept_s=intercept, latency_p50_s=p50,
                  latency_p99_s=p99, latency_reads=int(lat.size), latency_sizes=small,
                  aggregate_bandwidth=aggregate, aggregate_at=(best.size, best.concurrency),
                  aggregate_measured=best.throughput, concurrency=channels,
                  concurrency_at_limit=at_limit, iops=iops,
                  c1_reads=sum(p.reads for p in single), c1_sizes=[p.size for p in single],
                  rule=rule, concurrency_iops=channels, notes=notes,
                  latency_quantiles=quantiles, concurrency_size=smallest,
                  request_overhead_s=overhead, overhead_reads=int(spent.size))
    # the same model with each tested concurrency as its channel count, over every point
    by_c = {c: _residuals(replace(out, concurrency=c), pts)[1] for c in sorted(iops)}
    out.residual_by_concurrency = by_c
    out.concurrency_fit = min(by_c, key=lambda c: (by_c[c], c))
    if rule == "fit":
        out.concurrency = out.concurrency_fit
        out.concurrency_at_limit = False
    elif by_c[out.concurrency_fit] < 0.75 * by_c[channels]:
        notes.append(f"concurrency {out.concurrency_fit} fits every point better than the "
                     f"IOPS rule's {channels} (relative RMS {by_c[out.concurrency_fit]:.0%} "
                     f"vs {by_c[channels]:.0%}): rule 'fit' (--concurrency-rule fit) picks it")
    out.residual_c1, out.residual_all = _residuals(out, pts)
    return out
