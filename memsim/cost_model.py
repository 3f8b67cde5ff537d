"""The fetch-time model of one query, shared by the estimator and the optimizer.

A tier serves up to `concurrency` requests at once and queues the rest first come, first
served (in level order). A request first waits its overhead plus a latency drawn from the
tier's distribution, then transfers its bytes at the per-stream bandwidth, all transfers in
flight on the tier sharing its aggregate bandwidth fairly (processor sharing). A block larger
than the tier's maximum request size is fetched as several requests at once. Levels on
different tiers are fetched in parallel (the query waits for the slowest tier) or in sequence
(one level after another, each alone on its tier). A resident level costs nothing while its
current block is the one a query needs; when the query switches to another block, that block
is fetched from the level's tier like any other (`resident_patterns` weighs the two cases).

Everything is vectorized over queries: arrays have one row per query.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from memsim.bank import Bank
from memsim.errors import InputError
from memsim.layout import FetchMode, Layout
from memsim.limits import MAX_BLOCK_BYTES, MAX_FLUID_CELLS, MAX_FLUID_WORK, check_at_most
from memsim.profile import Profile, Tier
from memsim.units import format_size


def draw_latencies(tier: Tier, rng: np.random.Generator, queries: int, requests: int) -> np.ndarray:
    """Per-request waiting time before the first byte (overhead + latency), shape (queries, k)."""
    lat = tier.latency.sample(rng, (queries, requests))
    if tier.request_overhead:
        lat = lat + tier.request_overhead
    return lat


def tier_finish_times(tier: Tier, sizes: Sequence[float], latencies: np.ndarray) -> np.ndarray:
    """Finish time of each of k requests issued together at time 0 to an idle tier.

    `latencies` has shape (queries, k); the result too. Requests beyond the tier's concurrency
    wait, in the given order, for a channel to free. Transfers in flight share the aggregate
    bandwidth equally, each capped at the per-stream bandwidth; shares are recomputed whenever
    a transfer starts or ends (an exact fluid model, no time stepping).
    """
    latencies = np.asarray(latencies, dtype=float)
    q, k = latencies.shape
    if k != len(sizes):
        raise ValueError("one latency column per request")
    if k == 0:
        return np.zeros((q, 0))
    size = np.asarray(sizes, dtype=float)
    if k == 1:
        return latencies + size[0] / tier.stream_bandwidth
    stream, total = tier.stream_bandwidth, tier.total_bandwidth
    channels = tier.concurrency
    now = np.zeros(q)
    started = np.zeros((q, k), dtype=bool)
    started[:, : min(k, channels)] = True
    lat_end = np.where(started, latencies, np.inf)
    remaining = np.broadcast_to(size, (q, k)).copy()
    done = np.zeros((q, k), dtype=bool)
    finish = np.full((q, k), np.inf)
    for _ in range(4 * k + 4):
        live = started & ~done
        if not live.any():
            break
        transferring = live & (lat_end <= now[:, None])
        n = transferring.sum(axis=1)
        rate = np.minimum(stream, total / np.maximum(n, 1))
        finish_at = np.where(transferring, now[:, None] + remaining / rate[:, None], np.inf)
        t_latency = np.where(live & ~transferring, lat_end, np.inf).min(axis=1)
        t_next = np.minimum(finish_at.min(axis=1), t_latency)
        active = np.isfinite(t_next)
        dt = np.where(active, t_next - now, 0.0)
        remaining -= np.where(transferring, rate[:, None] * dt[:, None], 0.0)
        now = np.where(active, t_next, now)
        # Decide completion by time, not by leftover bytes, so rounding cannot stall a transfer.
        slack = 1e-12 * np.maximum(np.abs(t_next), 1e-9)
        finished = transferring & (finish_at <= (t_next + slack)[:, None])
        if finished.any():
            remaining[finished] = 0.0
            done |= finished
            finish[finished] = np.broadcast_to(now[:, None], (q, k))[finished]
            freed = finished.sum(axis=1)
            waiting = ~started
            rank = np.cumsum(waiting, axis=1)
            begin = waiting & (rank <= freed[:, None])
            if begin.any():
                started |= begin
                lat_end = np.where(begin, now[:, None] + latencies, lat_end)
    else:  # pragma: no cover - each pass ends a latency or a transfer, so 2k passes suffice
        raise RuntimeError("tier model did not converge")
    return finish


MAX_PARTS = 4096


def request_parts(tier: Tier, nbytes: int) -> list[float]:
    """Sizes of the requests one block becomes on `tier` (split at its max request size)."""
    check_at_most(nbytes, MAX_BLOCK_BYTES, "a block's size in bytes", field="levels")
    limit = tier.max_request_size
    if limit is None or nbytes <= limit:
        return [float(nbytes)]
    limit = max(int(limit), 1)
    count = -(-int(nbytes) // limit)
    if count > MAX_PARTS:
        raise InputError(
            f"tier '{tier.name}': a {format_size(nbytes)} block would split into {count:,} "
            f"requests of at most {format_size(limit)} (more than {MAX_PARTS:,}); raise "
            "max_request_size", field="max_request_size")
    return [float(limit)] * (count - 1) + [float(nbytes - limit * (count - 1))]


def block_finish_times(tier: Tier, sizes: Sequence[int], latencies: np.ndarray) -> np.ndarray:
    """Finish time of each block issued together to an idle tier, each split into its parts.

    `latencies` has one column per part (in block order); the result one column per block.
    """
    parts = [request_parts(tier, b) for b in sizes]
    flat = [p for block in parts for p in block]
    if len(flat) == len(sizes):
        return tier_finish_times(tier, flat, latencies)
    finish = tier_finish_times(tier, flat, latencies)
    out = np.empty((finish.shape[0], len(sizes)))
    start = 0
    for i, block in enumerate(parts):
        out[:, i] = finish[:, start:start + len(block)].max(axis=1)
        start += len(block)
    return out


def part_count(tier: Tier, sizes: Sequence[int]) -> int:
    """How many requests `sizes` become on `tier`."""
    return sum(len(request_parts(tier, b)) for b in sizes)


@dataclass(frozen=True)
class Request:
    """One block fetch of a query: its level, tier and size."""

    depth: int
    tier: str
    bytes: int


def fetch_requests(bank: Bank, layout: Layout, kept: Collection[int] | None = None
                   ) -> list[Request]:
    """The blocks a query fetches under `layout`, in level order.

    `kept` are the resident levels whose current block the query finds in RAM (default: all
    of them, the paper's assumption); the other resident levels are fetched from their tier.
    """
    resident = set(layout.resident) if kept is None else set(layout.resident) & set(kept)
    return [
        Request(depth=lv.depth, tier=layout.placement[lv.depth], bytes=lv.block_bytes)
        for lv in bank.active_levels
        if lv.depth not in resident
    ]


@dataclass
class FetchSamples:
    """Sampled fetch times of many queries: total, per level and per tier (seconds)."""

    total: np.ndarray
    per_level: dict[int, np.ndarray]
    per_tier: dict[str, np.ndarray]


def sample_fetch(
    profile: Profile,
    requests: Sequence[Request],
    fetch: FetchMode,
    queries: int,
    rng: np.random.Generator,
) -> FetchSamples:
    """Fetch times of `queries` independent queries on an idle hierarchy."""
    per_level: dict[int, np.ndarray] = {}
    per_tier: dict[str, np.ndarray] = {}
    total = np.zeros(queries)
    for tier in profile.tiers:
        mine = [r for r in requests if r.tier == tier.name]
        if not mine:
            continue
        sizes = [r.bytes for r in mine]
        lat = draw_latencies(tier, rng, queries, part_count(tier, sizes))
        if fetch == "parallel":
            finish = block_finish_times(tier, sizes, lat)
            tier_time = finish.max(axis=1)
            np.maximum(total, tier_time, out=total)
        else:
            columns, start = [], 0
            for size in sizes:
                k = len(request_parts(tier, size))
                columns.append(block_finish_times(tier, [size], lat[:, start:start + k])[:, 0])
                start += k
            finish = np.column_stack(columns)
            tier_time = finish.sum(axis=1)
            total += tier_time
        for i, r in enumerate(mine):
            per_level[r.depth] = finish[:, i]
        per_tier[tier.name] = tier_time
    return FetchSamples(total=total, per_level=dict(sorted(per_level.items())), per_tier=per_tier)


def tier_parts(profile: Profile, requests: Sequence[Request]) -> int:
    """The most request parts one query issues to a single tier."""
    worst = 0
    for tier in profile.tiers:
        worst = max(worst, part_count(tier, [r.bytes for r in requests if r.tier == tier.name]))
    return worst


def queries_per_pass(parts: int, wanted: int) -> int:
    """How many queries one pass of the tier model may take so that its (queries, parts)
    arrays stay within MAX_FLUID_CELLS."""
    return max(1, min(wanted, MAX_FLUID_CELLS // max(parts, 1)))


def check_work(queries: int, parts: int, what: str, field: str) -> None:
    """Refuse tier-model work that would run for minutes: each of `queries` queries (`what`)
    with `parts` request parts on one tier costs about parts x (2 parts + 2) array cells."""
    check_at_most(queries * parts * (2 * parts + 2), MAX_FLUID_WORK,
                  f"the tier model's work ({what} x request parts on one tier x "
                  "(2 parts + 2))", field=field)


def is_deterministic(profile: Profile, requests: Sequence[Request]) -> bool:
    """True when every tier a query touches has a constant latency."""
    used = {r.tier for r in requests}
    return all(profile.tier(name).latency.is_constant for name in used)


def resident_patterns(switch: Mapping[int, float]) -> list[tuple[float, frozenset[int]]]:
    """The (probability, kept levels) of each pattern of resident switches.

    `switch[d]` is P(the query's block at resident level d differs from the current one).
    Sharing a block at depth d means sharing its whole path above it, so the levels kept form
    a prefix of the resident levels by depth: k levels give k + 1 patterns, not 2^k. Pattern j
    keeps the j shallowest; its probability is P(same at d_j) - P(same at d_{j+1}). Every
    pattern is listed, including those of probability 0, shallowest-kept-first ending with
    all kept.
    """
    depths = sorted(switch)
    keep = [1.0]
    for d in depths:
        s = float(switch[d])
        if not 0.0 <= s <= 1.0:
            raise InputError(f"switch probability of level {d} must be in [0, 1], got {s}",
                             field="switch")
        keep.append(min(keep[-1], 1.0 - s))  # nested: deeper levels are kept less often
    keep.append(0.0)
    return [(max(keep[j] - keep[j + 1], 0.0), frozenset(depths[:j]))
            for j in range(len(depths) + 1)]
