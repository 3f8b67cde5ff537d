"""Load and queueing delay of a tier: the analytic model the load-aware optimizer uses.

A tier, as the simulator runs it (memsim/simulate/tiers.py), is `concurrency` FCFS channels
in front of one link: a request holds a channel from its grant to its last byte (overhead,
latency, then its transfer), and the transfers in flight share the aggregate bandwidth, each
capped at the per-stream bandwidth. The model splits the extra time a block sees under load,
over its idle fetch time, into two terms:

* the channel wait, M/G/c by Allen-Cunneen: Wq = E[S] (ca^2 + cs^2) / 2 * g(rho_c), with
  g(rho) = C(c, c rho) / (c (1 - rho)) (Erlang C), S a request's idle channel time and ca^2
  the variability of the request arrivals (queries' arrivals, and the batch of requests each
  query sends the tier at once);
* the link slowdown: the link is a processor-shared server with K = aggregate / per-stream
  bandwidth places (a symmetric queue: its mean is insensitive to the size distribution),
  so a transfer of idle time t takes t (1 + g_K(rho_l)) on average, t / (1 - rho_l) for one
  stream; only c transfers can share it (each holds a channel), which brings a link of few
  channels toward FCFS (`link_wait_factor`). A tier whose aggregate bandwidth covers every
  channel at the stream rate never slows a transfer (the simulator's `independent` link).

Both are convex and increasing in utilisation, which is linear in the placement, so `chords`
turns each into lines for a MILP epigraph. What is approximate: Allen-Cunneen for c > 1 and
for batches, the two terms added as if independent (a slowed transfer also holds its channel
longer), the limited sharing of a link of few channels, the batch of blocks a query sends
at once (exact on one channel), and non-Poisson arrivals summarised by one squared
coefficient of variation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from memsim.cost_model import request_parts, tier_finish_times
from memsim.errors import InputError
from memsim.profile import Tier
from memsim.workload import OnOffArrivals, Workload

__all__ = ["BlockDemand", "arrival_scv", "block_demand", "channel_wait_factor", "chords",
           "erlang_b", "erlang_c", "link_slowdown", "link_streams", "link_wait_factor",
           "mean_wait", "query_scales", "query_wait", "tier_load", "utilization",
           "wait_curves", "wait_scales"]


@dataclass(frozen=True)
class BlockDemand:
    """What fetching one block asks of a tier (idle-tier figures)."""

    requests: int  # parts the block becomes (cost_model.request_parts)
    channel_s: float  # sum over parts of mean latency + overhead + part / stream bandwidth
    channel_sq_s2: float  # sum over parts of E[S^2] of each part's channel service time
    bytes: float
    transfer_s: float  # idle transfer time of the block alone, its parts in parallel
    channel_var_s2: float = math.nan  # variance of the block's channel time (nan: derived)

    def __post_init__(self) -> None:
        if math.isnan(self.channel_var_s2):  # built by hand: parts taken as alike
            var = self.channel_sq_s2 - self.channel_s**2 / max(self.requests, 1)
            object.__setattr__(self, "channel_var_s2", max(var, 0.0))


def block_demand(tier: Tier, block_bytes: int) -> BlockDemand:
    """The channel time, its moments, bytes and idle transfer time of one block.

    A part's channel service time is S = L + overhead + part / stream bandwidth (the
    simulator holds the channel through the transfer), so E[S^2] = E[L^2] + 2 d E[L] + d^2
    with d = overhead + part / stream.
    """
    parts = request_parts(tier, block_bytes)
    stream = tier.stream_bandwidth
    mean, second = tier.latency.mean(), tier.latency.second_moment()
    channel = square = 0.0
    for part in parts:
        fixed = tier.request_overhead + part / stream
        channel += mean + fixed
        square += second + 2.0 * fixed * mean + fixed * fixed
    if len(parts) == 1:
        transfer = parts[0] / stream
    else:  # the parts share channels and the link, as the idle cost model has them
        zeros = np.zeros((1, len(parts)))
        transfer = float(tier_finish_times(tier, parts, zeros).max())
    return BlockDemand(requests=len(parts), channel_s=channel, channel_sq_s2=square,
                       bytes=float(block_bytes), transfer_s=transfer,
                       channel_var_s2=len(parts) * max(second - mean * mean, 0.0))


def _check_servers(servers: float) -> None:
    if not (1 <= servers < math.inf):  # the recursions take O(servers) steps
        raise ValueError(f"servers must be finite and at least 1, got {servers!r}")


def erlang_b(servers: float, offered: float) -> float:
    """Blocking probability of M/M/c/c with `offered` Erlangs, by the stable recursion
    B(k) = a B(k-1) / (k + a B(k-1)). A non-integer `servers` uses the continuous extension
    1/B(x, a) = integral_0^inf e^-u (1 + u/a)^x du for its fractional start."""
    _check_servers(servers)
    if offered <= 0.0:
        return 0.0
    if math.isinf(offered):
        return 1.0
    whole = math.floor(servers)
    frac = servers - whole
    b = 1.0 if frac == 0.0 else _erlang_b_fraction(frac, offered)
    start = frac
    for k in range(1, whole + 1):
        ab = offered * b
        b = ab / (start + k + ab)
    return b


@lru_cache(maxsize=1)
def _laguerre() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.laguerre.laggauss(64)


def _erlang_b_fraction(x: float, offered: float) -> float:
    """B(x, a) for 0 < x < 1 by Gauss-Laguerre quadrature of the integral above."""
    nodes, weights = _laguerre()
    # log(1 + u/a) as log(a + u) - log(a): finite even where u/a overflows (tiny loads)
    logs = np.log(weights) + x * (np.log(offered + nodes) - math.log(offered))
    top = float(logs.max())
    return math.exp(-top) / float(np.exp(logs - top).sum())


def erlang_c(servers: int, offered: float) -> float:
    """P(wait) in M/M/c with `offered` = lambda E[S] Erlangs; 1.0 if offered >= servers.

    From Erlang B, C = B / (1 - rho (1 - B)), rho = offered / servers: stable for thousands
    of servers, where a^c / c! overflows.
    """
    _check_servers(servers)
    if offered >= servers:
        return 1.0
    if offered <= 0.0:
        return 0.0
    b = erlang_b(servers, offered)
    rho = offered / servers
    return b / (1.0 - rho * (1.0 - b))


def channel_wait_factor(servers: int, rho: float) -> float:
    """g(rho) = C(c, c rho) / (c (1 - rho)): the M/M/c mean wait in units of E[S]; inf at
    rho >= 1."""
    if rho >= 1.0:
        return math.inf
    if rho <= 0.0:
        return 0.0
    return erlang_c(servers, servers * rho) / (servers * (1.0 - rho))


def link_slowdown(rho: float, streams: float = 1.0) -> float:
    """Mean extra transfer time over idle, in units of the idle transfer time, on a
    processor-shared link `rho` busy where each transfer gets at most 1/`streams` of it:
    rho / (1 - rho) for one stream, g_streams(rho) in general (exact for Poisson arrivals,
    any size distribution), 0 when the link never shares (`streams` inf); inf at rho >= 1."""
    if rho >= 1.0:
        return math.inf
    if rho <= 0.0 or math.isinf(streams):
        return 0.0
    if streams <= 1.0:
        return rho / (1.0 - rho)
    offered = streams * rho
    b = erlang_b(streams, offered)
    c = b / (1.0 - rho * (1.0 - b))
    return c / (streams * (1.0 - rho))


def link_streams(tier: Tier) -> float:
    """How many transfers the link carries at full stream speed (aggregate / stream), or
    inf when its aggregate covers every channel at the stream rate: then no transfer is
    ever slowed by another (the simulator's `independent` link)."""
    stream, total = tier.stream_bandwidth, tier.total_bandwidth
    if total >= stream * tier.concurrency:
        return math.inf
    return total / stream


def link_wait_factor(tier: Tier, rho: float) -> float:
    """The tier's link slowdown with its channel limit: link_slowdown(rho, K) (1 -
    rho^(c-K) / 2), K = `link_streams`, c = concurrency.

    At most c transfers share the link (each holds a channel), so with few channels the link
    is a limited processor sharing queue, between PS (c -> inf: link_slowdown) and FCFS over
    K streams (c = K: a block of one size waits half as long as under PS, Allen-Cunneen
    with cs^2 = 0). The weight rho^(c-K) is P(all c channels busy) / P(all K streams busy) in
    the M/M/K chain. Transfers are taken as of one size (cs^2 = 0: a level's blocks are); a
    mix of sizes waits a little longer. Convex and increasing on [0, 1).
    """
    streams = link_streams(tier)
    if rho >= 1.0:
        return math.inf
    if math.isinf(streams) or rho <= 0.0:
        return 0.0
    return link_slowdown(rho, streams) * (1.0 - rho ** (tier.concurrency - streams) / 2.0)


def utilization(tier: Tier, channel_s_per_s: float, bytes_per_s: float
                ) -> tuple[float, float]:
    """(channel rho, link rho): channel-seconds per second over the concurrency, bytes per
    second over the aggregate bandwidth."""
    return channel_s_per_s / tier.concurrency, bytes_per_s / tier.total_bandwidth


def tier_load(tier: Tier, demands: Sequence[tuple[float, BlockDemand]], rate: float
              ) -> tuple[float, float]:
    """(channel rho, link rho) of `rate` queries/s, each asking for the weighted blocks."""
    channel = sum(w * d.channel_s for w, d in demands)
    nbytes = sum(w * d.bytes for w, d in demands)
    return utilization(tier, rate * channel, rate * nbytes)


def _batch_moments(demands: Sequence[tuple[float, BlockDemand]], fetch: str
                   ) -> tuple[float, float]:
    """(E[B], Var B) of the channel work B that arrives at the tier at once.

    Parallel fetch: a query's blocks on the tier all at once, N_i blocks of kind i with
    N_i = floor(w_i) + a coin for the fraction, independently. Sequential: one block, of a
    kind drawn with probability w_i / sum w. A block's channel time has the variance of its
    parts' latencies (independent draws; the fixed overhead and transfer add none).
    """
    if fetch == "sequential":
        blocks = sum(w for w, _ in demands)
        mean = sum(w * d.channel_s for w, d in demands) / blocks
        square = sum(w * (d.channel_var_s2 + d.channel_s**2) for w, d in demands) / blocks
        return mean, max(square - mean * mean, 0.0)
    mean = var = 0.0
    for w, d in demands:
        frac = w - math.floor(w)
        mean += w * d.channel_s
        var += w * d.channel_var_s2 + frac * (1.0 - frac) * d.channel_s**2
    return mean, var


def wait_scales(tier: Tier, demands: Sequence[tuple[float, BlockDemand]],
                arrival_scv: float = 1.0, fetch: str = "parallel") -> tuple[float, float]:
    """(a, b) such that a block of this mix (weight = blocks of that kind per query) sees a
    mean extra time a g(rho_c) + b link_wait_factor(tier, rho_l) over idle.

    a is Allen-Cunneen's E[S] (ca^2 + cs^2) / 2 with the requests that arrive together (a
    query's batch, `_batch_moments`) taken as one customer of work B:
    a = (ca^2 E[B]^2 + Var B) / (2 E[B]). For one-request blocks this is E[S] (ca^2 + cs^2)
    / 2; for batches of like requests it is the same with the request stream's
    ca^2 = E[X] ca^2 + Var X / E[X]; on one channel with Poisson queries it is exact
    (M^X/G/1: every block of a batch waits the work found ahead). b = the mix's mean idle
    transfer time, or 0 when the tier's link never slows a transfer.
    """
    if not (arrival_scv >= 0.0) or math.isinf(arrival_scv):
        raise ValueError(f"arrival_scv must be finite and >= 0, got {arrival_scv!r}")
    mix = [(float(w), d) for w, d in demands if w > 0]
    if not mix:
        return 0.0, 0.0
    mean, var = _batch_moments(mix, fetch)
    a = (arrival_scv * mean * mean + var) / (2.0 * mean) if mean > 0 else 0.0
    blocks = sum(w for w, _ in mix)
    b = 0.0 if math.isinf(link_streams(tier)) else sum(w * d.transfer_s for w, d in mix) / blocks
    return a, b


def query_scales(tier: Tier, demands: Sequence[tuple[float, BlockDemand]],
                 arrival_scv: float = 1.0, fetch: str = "parallel") -> tuple[float, float]:
    """(a, b) for the extra time over idle of a query's whole time on this tier, when the
    query fetches the mix's blocks (weight = blocks per query) and waits for all of them.

    Parallel: the blocks arrive as one batch and the query waits for the last. The channel
    scale is the batch's (every block of a batch waits the same work ahead on one channel);
    the link scale is the sum of the blocks' idle transfer times: a one-stream link finishes
    the batch when all its bytes are through (exact there), and on a link of several streams
    the batch's blocks, slowed alike, end near together (measured: benchmarks/bench_delay.py).
    Sequential: the sum of each block's own scales, weighted.
    """
    mix = [(float(w), d) for w, d in demands if w > 0]
    if not mix:
        return 0.0, 0.0
    if fetch == "sequential":
        a = b = 0.0
        for w, d in mix:
            ai, bi = wait_scales(tier, [(1.0, d)], arrival_scv, fetch="sequential")
            a, b = a + w * ai, b + w * bi
        return a, b
    a, b = wait_scales(tier, mix, arrival_scv, fetch="parallel")
    if b > 0.0:
        b = sum(w * d.transfer_s for w, d in mix)
    return a, b


def query_wait(tier: Tier, rho_channel: float, rho_link: float,
               demands: Sequence[tuple[float, BlockDemand]], arrival_scv: float = 1.0,
               fetch: str = "parallel") -> float:
    """Mean extra time over idle of a query's time on this tier (`query_scales`)."""
    return _combine(tier, *query_scales(tier, demands, arrival_scv, fetch), rho_channel,
                    rho_link)


def _combine(tier: Tier, a: float, b: float, rho_channel: float, rho_link: float) -> float:
    """a g(rho_c) + b link_wait_factor(rho_l); a zero scale adds nothing even at rho >= 1."""
    channel, link = wait_curves(tier)
    out = 0.0
    if a > 0.0:
        out += a * channel(rho_channel)
    if b > 0.0:
        out += b * link(rho_link)
    return out


def wait_curves(tier: Tier) -> tuple[Callable[[float], float], Callable[[float], float]]:
    """The tier's two convex delay curves, g(rho_c) and `link_wait_factor`, for `chords`."""
    channels = tier.concurrency
    return (lambda rho: channel_wait_factor(channels, rho),
            lambda rho: link_wait_factor(tier, rho))


def mean_wait(tier: Tier, rho_channel: float, rho_link: float,
              demands: Sequence[tuple[float, BlockDemand]], arrival_scv: float = 1.0,
              fetch: str = "parallel") -> float:
    """Mean extra time over idle of a block of the mix: a g(rho_c) + b link_wait_factor."""
    return _combine(tier, *wait_scales(tier, demands, arrival_scv, fetch), rho_channel,
                    rho_link)


def chords(f: Callable[[float], float], ceiling: float, pieces: int = 8
           ) -> list[tuple[float, float]]:
    """(intercept, slope) of the chords of a convex increasing `f` on [0, ceiling].

    Breakpoints rho_k = ceiling (1 - (1 - k/pieces)^2) crowd toward the ceiling, where f
    bends most. The max over the lines is the piecewise-linear interpolation of f: exact at
    the breakpoints, never below f on [0, ceiling], so G >= intercept + slope rho for every
    chord is a conservative MILP epigraph of f.
    """
    if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1:
        raise ValueError(f"pieces must be a whole number >= 1, got {pieces!r}")
    if not (0.0 < ceiling) or math.isinf(ceiling):
        raise InputError(f"the utilisation ceiling must be positive and finite, got {ceiling!r}",
                         field="max_utilization")
    points = [ceiling * (1.0 - (1.0 - k / pieces) ** 2) for k in range(pieces + 1)]
    values = [f(x) for x in points]
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"the delay is infinite at utilisation {ceiling:g}: the ceiling must "
                         "be below 1", field="max_utilization")
    out = []
    for (x0, y0), (x1, y1) in zip(zip(points, values, strict=True),
                                  zip(points[1:], values[1:], strict=True), strict=False):
        slope = (y1 - y0) / (x1 - x0)
        out.append((y0 - slope * x0, slope))
    return out


def _mmpp2_scv(spec: OnOffArrivals) -> float:
    """Exact SCV of the stationary interarrival time of the two-state MMPP.

    States on/off switch at rates 1/mean_on, 1/mean_off; the state seen at an arrival has
    distribution p = pi Lambda / lambda-bar, and the interarrival time is phase-type with
    sub-generator D0 = Q - Lambda: E[T^k] = k! p (-D0)^-k 1.
    """
    alpha, beta = 1.0 / spec.mean_on, 1.0 / spec.mean_off
    rates = np.array([spec.rate_on, spec.rate_off])
    q = np.array([[-alpha, alpha], [beta, -beta]])
    pi = np.array([beta, alpha]) / (alpha + beta)
    p = pi * rates / float(pi @ rates)
    m = np.linalg.inv(np.diag(rates) - q)  # (-D0)^-1
    one = np.ones(2)
    first = float(p @ m @ one)
    second = 2.0 * float(p @ m @ m @ one)
    return max(second / (first * first) - 1.0, 0.0)


def arrival_scv(workload: Workload | None) -> float:
    """Squared coefficient of variation of the interarrival times the wait formula uses.

    Poisson (and no workload): 1. On/off: the exact interarrival SCV of the two-state MMPP;
    it leaves out the correlation between successive gaps (bursts), so under long bursts
    the real wait is higher still. Schedule: 1, Poisson within each step (the formula is
    then right at the rate it is given, so give it the peak step's rate for the worst case).
    Closed loop: 1, a Poisson stand-in for a finite source: a client waiting in the queue
    sends nothing, which makes arrivals smoother than Poisson exactly when queues form, so
    the open-loop formula at the loop's throughput errs high (as M/M/c does against the
    finite-source M/M/c//N).
    """
    if workload is None:
        return 1.0
    arrivals = workload.arrivals
    if isinstance(arrivals, OnOffArrivals):
        return _mmpp2_scv(arrivals)
    return 1.0
