"""Block popularity: how often a query's path passes through each block of a level.

`block_popularity` computes the exact marginal of a routing model level by level, with the same
conditional probabilities PathSampler draws from, so a placement sized on it matches what the
simulator will see. `popularity_from_counts` and `popularity_from_trace` measure it from observed
paths instead. `make_buckets` groups a level's blocks into a few popularity classes (hot blocks
in small buckets, the cold tail in big ones) so an optimizer can decide per bucket rather than
per block; `mass_prefix` gives the mass of a bucket's hottest n blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memsim.bank import Bank
from memsim.errors import InputError
from memsim.trace import block_column, check_id_range, read_trace
from memsim.workload import Counts, EmpiricalRouting, UniformRouting, Workload, ZipfRouting

MAX_BLOCKS = 1 << 28  # per-block arrays beyond this (2 GiB of float64 each) are refused


def _check_depth(bank: Bank, depth: int) -> int:
    """The number of blocks at `depth`, after checking the depth is one of the bank's levels."""
    levels = len(bank.levels)
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) \
            or not 1 <= depth <= levels:
        raise InputError(f"depth {depth!r} is not in bank '{bank.name}' (it has levels "
                         f"1..{levels})", field="depth")
    check_id_range(bank)
    blocks = bank.branching ** int(depth)
    if blocks > MAX_BLOCKS:
        raise InputError(
            f"depth {depth} of bank '{bank.name}' has {bank.branching}**{depth} = {blocks:,} "
            f"blocks, more than the {MAX_BLOCKS:,} a per-block popularity array may hold; "
            "use a shallower depth", field="depth",
        )
    return blocks


def _zipf_table(routing: ZipfRouting, b: int) -> np.ndarray:
    """Row `o` is P(child index | parent) for a parent whose rank-1 child has index `o`.

    PathSampler draws rank r when cdf[r-1] <= u < cdf[r], with cdf the cumulative rank
    probabilities and its last entry forced to 1, so these are the differences of that cdf.
    """
    cdf = np.cumsum(routing.rank_probabilities(b))
    cdf[-1] = 1.0
    by_rank = np.diff(cdf, prepend=0.0)
    index = np.arange(b)
    return by_rank[(index[None, :] - index[:, None]) % b]  # child j has rank (j - o) mod b


def _empirical_conditional(counts: Counts, b: int, depth: int) -> np.ndarray:
    """P(block | its parent) for every block at `depth`, as the empirical sampler draws.

    A parent with at least one positive count picks among its listed children in proportion
    to their (summed) counts, never an unlisted child; any other parent picks uniformly.
    """
    blocks, weights = counts.at(depth)
    conditional = np.full(b**depth, 1.0 / b)
    if blocks.shape[0]:
        parents, group = np.unique(blocks // b, return_inverse=True)
        totals = np.bincount(group, weights=weights)
        conditional.reshape(-1, b)[parents] = 0.0
        conditional[blocks] = weights / totals[group]
    return conditional


def block_popularity(
    bank: Bank,
    routing: UniformRouting | ZipfRouting | EmpiricalRouting,
    depth: int,
) -> np.ndarray:
    """P(a query's path passes through block i at `depth`), for every block id i (float64).

    Level by level, p_d = repeat(p_{d-1}, b) * P(child | parent), with PathSampler's own
    conditionals: Zipf ranks placed by `rank_offset(parent, child depth, b)`, empirical counts
    normalised per parent with the uniform fallback. Locality leaves these marginals unchanged:
    a query that keeps the previous query's prefix gets a prefix drawn from the same
    distribution, and routes on from it as usual, so only the correlation between consecutive
    queries differs. Memory: about two float64 arrays of the level's size.
    """
    n_blocks = _check_depth(bank, depth)
    b = bank.branching
    counts = None
    if isinstance(routing, EmpiricalRouting):
        counts = routing._counts
        if counts is None:
            raise ValueError("empirical routing without its counts: load it through a workload "
                             "(load_workload or workload_from_dict) so the file is read")
        counts.check(bank)
    elif not isinstance(routing, UniformRouting | ZipfRouting):
        raise TypeError(f"unknown routing {type(routing).__name__}")
    table = _zipf_table(routing, b) if isinstance(routing, ZipfRouting) else None
    popularity = np.ones(1)
    for d in range(1, int(depth) + 1):
        parents = b ** (d - 1)
        if isinstance(routing, UniformRouting):
            level = np.full((parents, b), 1.0 / b)
        elif table is not None:
            offsets = routing.rank_offset(np.arange(parents, dtype=np.int64), d, b)
            level = table[offsets]
        else:
            assert counts is not None
            level = _empirical_conditional(counts, b, d).reshape(parents, b)
        level *= popularity[:, None]
        popularity = level.reshape(-1)
    assert popularity.shape[0] == n_blocks
    return popularity


def popularity_from_counts(bank: Bank, depth: int, block_ids: np.ndarray) -> np.ndarray:
    """Observed popularity at `depth`: how often each block id occurs in `block_ids`, over n.

    `block_ids` are the blocks queries visited at that depth, e.g. a trace's block_L{depth}.
    """
    n_blocks = _check_depth(bank, depth)
    ids = np.asarray(block_ids)
    if ids.ndim != 1 or (ids.dtype.kind not in "iu" and ids.shape[0]):
        raise ValueError(f"block_ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    column = block_column(int(depth))
    if ids.shape[0] == 0:
        raise InputError("no block ids to count", field=column)
    bad = (ids < 0) | (ids >= n_blocks)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"entry {i} (0-based): block {ids[i]} is outside 0..{n_blocks - 1}, "
                         f"the blocks at depth {depth} of bank '{bank.name}'", field=column)
    return np.bincount(ids.astype(np.int64, copy=False), minlength=n_blocks) / ids.shape[0]


def popularity_from_trace(path: str | Path, bank: Bank, depth: int) -> np.ndarray:
    """Observed popularity at `depth` over the queries of a trace (checked by read_trace)."""
    _check_depth(bank, depth)
    _, paths = read_trace(path, bank)
    return popularity_from_counts(bank, depth, paths[:, int(depth) - 1])


# ----------------------------------------------------------------------------- switches


def _square_sums(bank: Bank, routing: UniformRouting | ZipfRouting | EmpiricalRouting,
                 depth: int, keep_depth: int) -> tuple[float, float]:
    """(sum_x pop(x)^2, sum_x pop(x)^2 / pop(ancestor of x at keep_depth)) at `depth`.

    The first is P(two independent paths share their block at `depth`); the second the same
    for two paths that share their prefix down to `keep_depth` and route on independently.
    Uniform and Zipf routing give every parent the same multiset of child probabilities q, so
    both are powers of sum q^2 and need no per-block array.
    """
    b = bank.branching
    if isinstance(routing, UniformRouting | ZipfRouting):
        q = (np.full(b, 1.0 / b) if isinstance(routing, UniformRouting)
             else np.diff(np.concatenate([[0.0], _cdf(routing, b)])))
        c = float(np.sum(q * q))
        return c ** depth, c ** max(depth - keep_depth, 0)
    pop = block_popularity(bank, routing, depth)
    same = float(np.sum(pop * pop))
    if keep_depth >= depth:
        return same, 1.0
    anc = block_popularity(bank, routing, keep_depth)
    parent = np.repeat(anc, b ** (depth - keep_depth))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(parent > 0, pop * pop / parent, 0.0)
    return same, float(ratio.sum())


def _cdf(routing: ZipfRouting, b: int) -> np.ndarray:
    cdf = np.cumsum(routing.rank_probabilities(b))
    cdf[-1] = 1.0
    return cdf


def switch_probabilities(bank: Bank, workload: Workload, depths: list[int] | tuple[int, ...]
                         ) -> dict[int, float]:
    """P(the next query's block at depth d differs from the current query's), per depth.

    Exact for PathSampler's process: with probability p (locality) a query keeps the previous
    query's path down to the locality depth K and routes on fresh below it; otherwise it routes
    from the root. Every query's path is marginally distributed as the routing, so
    P(same at d) = (1 - p) * sum pop_d^2 + p * (1 if d <= K else
    sum_x pop_d(x)^2 / pop_K(ancestor of x)). This is the rate at which a resident level's
    current block is replaced (fetched from its tier) in the simulator.
    """
    workload.check(bank)
    locality = workload.locality
    p = locality.p if locality is not None else 0.0
    keep = 0
    if locality is not None:
        keep = locality.depth or bank.active_levels[0].depth
    out = {}
    for d in depths:
        _check_depth_number(bank, d)
        same_fresh, same_kept = _square_sums(bank, workload.routing, d, keep)
        if keep and d <= keep:
            same_kept = 1.0
        same = (1.0 - p) * same_fresh + p * (same_kept if keep else same_fresh)
        out[int(d)] = float(min(max(1.0 - same, 0.0), 1.0))
    return out


def _check_depth_number(bank: Bank, depth: int) -> None:
    if not 1 <= int(depth) <= len(bank.levels):
        raise InputError(f"depth {depth!r} is not in bank '{bank.name}' (it has levels "
                         f"1..{len(bank.levels)})", field="depth")


# ----------------------------------------------------------------------------- buckets


@dataclass
class Buckets:
    """A level's eligible blocks, hottest first, cut into buckets of similar popularity.

    Bucket k holds `order[bounds[k]:bounds[k+1]]`; `cumulative[i]` is the popularity of
    `order[:i + 1]`, so the mass of any run of a bucket's hottest blocks is a difference.
    """

    depth: int
    order: np.ndarray  # int64 block ids, popularity descending, ties by id ascending
    bounds: np.ndarray  # int64, count + 1 offsets into order: 0, ..., len(order)
    mass: np.ndarray  # float64 total popularity per bucket
    size: np.ndarray  # int64 blocks per bucket
    cumulative: np.ndarray = field(repr=False)  # float64 cumsum of popularity along order

    @property
    def count(self) -> int:
        """Number of buckets."""
        return int(self.bounds.shape[0]) - 1

    def blocks(self, k: int) -> np.ndarray:
        """Block ids of bucket k, hottest first."""
        return self.order[self.bounds[k]:self.bounds[k + 1]]


def _bounds(n: int, count: int) -> np.ndarray:
    """Log-spaced bucket ends: rank 1, then round(n ** (k / (count - 1))) up to n."""
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    if count >= n:
        return np.arange(n + 1, dtype=np.int64)
    if count == 1:
        return np.array([0, n], dtype=np.int64)
    ends = np.rint(float(n) ** (np.arange(count) / (count - 1))).astype(np.int64)
    ends = np.unique(np.clip(ends, 1, n))
    ends[-1] = n
    return np.concatenate([np.zeros(1, dtype=np.int64), ends])


SMALL_SORT = 1 << 16  # below this many values a plain stable argsort is as fast
CHUNK = 1 << 20  # elements per step of the chunked passes (their temporaries stay small)


def hottest_first(values: np.ndarray) -> np.ndarray:
    """Positions of non-negative `values` by value descending, ties by position ascending
    (exactly what a stable argsort of -values gives), as int64 (see `_hottest_first`)."""
    return _hottest_first(values)[0]


def _hottest_first(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions of non-negative `values` by value descending, ties by position ascending
    (exactly what a stable argsort of -values gives), as int64.

    A stable argsort of 12M float64 takes seconds; two sorts of uint64 keys take a fraction.
    A non-negative float's bit pattern orders as an integer, and its 63 bits below the sign
    split into a high and a low part that each fit beside a position: sort by (low part
    descending, position), then by (high part descending, place in the first order), a
    two-digit radix sort. Two arrays of n words in all: on a VM the page faults of every
    fresh 100 MB array cost as much as a sort, so the passes run in place, in chunks, and
    the spent first array is handed back (or None) for the caller to reuse.
    """
    v = np.asarray(values, dtype=np.float64)
    n = int(v.shape[0])
    pos_bits = max((n - 1).bit_length(), 1)
    if n < SMALL_SORT or 2 * pos_bits - 1 > 64:
        return np.argsort(-v, kind="stable").astype(np.int64, copy=False), None
    lo_bits = pos_bits - 1  # and 63 - lo_bits high bits
    u64 = np.uint64
    lo_mask, hi_mask, pos_mask = (u64((1 << lo_bits) - 1), u64((1 << (63 - lo_bits)) - 1),
                                  u64((1 << pos_bits) - 1))
    bits = v.view(np.uint64)  # -0.0 has the sign bit, which both parts leave out
    first = np.empty(n, dtype=np.uint64)
    for c in range(0, n, CHUNK):
        part = first[c:c + CHUNK]
        np.bitwise_and(bits[c:c + CHUNK], lo_mask, out=part)
        np.subtract(lo_mask, part, out=part)
        part <<= u64(pos_bits)
        part |= np.arange(c, c + part.shape[0], dtype=np.uint64)
    first.sort()
    first &= pos_mask  # positions by low part descending, then position
    second = np.empty(n, dtype=np.uint64)
    for c in range(0, n, CHUNK):  # second[p] = where p stands in the first order
        second[first[c:c + CHUNK]] = np.arange(c, min(c + CHUNK, n), dtype=np.uint64)
    for c in range(0, n, CHUNK):
        part = second[c:c + CHUNK]
        high = bits[c:c + CHUNK] >> u64(lo_bits)
        high &= hi_mask
        np.subtract(hi_mask, high, out=high)
        high <<= u64(pos_bits)
        part |= high
    second.sort()
    order = second.view(np.int64)
    index = first.view(np.int64)
    for c in range(0, n, CHUNK):
        part = order[c:c + CHUNK]
        part &= np.int64((1 << pos_bits) - 1)
        part[:] = index[part]
    return order, first


def make_buckets(
    popularity: np.ndarray,
    depth: int,
    count: int,
    *,
    eligible: np.ndarray | None = None,
) -> Buckets:
    """Sort a level's eligible blocks by popularity and cut them into at most `count` buckets.

    Bucket ends are at the log-spaced ranks round(N ** (k / (count - 1))), k = 0..count-1 (N
    eligible blocks, duplicates dropped): the first bucket is the single hottest block and the
    buckets grow geometrically into the cold tail. Neighbouring buckets whose blocks all have
    exactly the same popularity are merged (uniform routing gives one bucket). With count >= N
    every block is its own bucket, unmerged. Blocks with `eligible` False are left out.
    """
    p = np.asarray(popularity, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"popularity must be 1-D, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or (p.shape[0] and p.min() < 0):
        raise ValueError("popularity must be finite and non-negative")
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise InputError(f"the number of buckets must be a whole number >= 1, got {count!r}",
                         field="buckets")
    spare = None
    if eligible is None:
        order, spare = _hottest_first(p)
    else:
        mask = np.asarray(eligible)
        if mask.dtype != np.bool_ or mask.shape != p.shape:
            raise ValueError(f"eligible must be a bool array of shape {p.shape}, got "
                             f"{mask.dtype} {mask.shape}")
        ids = np.flatnonzero(mask)
        order = ids[hottest_first(p[ids])]  # ids ascending: ties stay by id
    order = order.astype(np.int64, copy=False)
    if spare is not None:  # a buffer already faulted in
        cumulative = np.take(p, order, out=spare.view(np.float64))
        del spare
    else:
        cumulative = p[order]
    n = order.shape[0]
    bounds = _bounds(n, int(count))
    if int(count) < n:  # merge neighbouring buckets of one popularity value
        hi, lo = cumulative[bounds[:-1]], cumulative[bounds[1:] - 1]
        flat = hi == lo
        merge = flat[:-1] & flat[1:] & (lo[:-1] == hi[1:])
        bounds = np.concatenate([bounds[:1], bounds[1:-1][~merge], bounds[-1:]])
    np.cumsum(cumulative, out=cumulative)  # in place: one array fewer to fault in
    ends = np.where(bounds > 0, cumulative[np.maximum(bounds - 1, 0)], 0.0) if n else (
        np.zeros(bounds.shape[0]))
    return Buckets(depth=int(depth), order=order, bounds=bounds, mass=np.diff(ends),
                   size=np.diff(bounds), cumulative=cumulative)


def mass_prefix(buckets: Buckets, k: int, n: int) -> float:
    """Popularity mass of the hottest `n` blocks of bucket k (0 <= n <= its size)."""
    if not 0 <= k < buckets.count:
        raise IndexError(f"bucket {k} is not in 0..{buckets.count - 1}")
    start = int(buckets.bounds[k])
    if not 0 <= n <= int(buckets.size[k]):
        raise ValueError(f"bucket {k} has {int(buckets.size[k])} blocks, asked for {n}")
    if n == 0:
        return 0.0
    before = buckets.cumulative[start - 1] if start else 0.0
    return float(buckets.cumulative[start + n - 1] - before)


__all__ = [
    "MAX_BLOCKS", "Buckets", "block_popularity", "make_buckets", "mass_prefix",
    "popularity_from_counts", "popularity_from_trace", "switch_probabilities",
]
