"""Block popularity against the sampler it must agree with (chi-square on sampled paths, with
and without locality), against closed forms (uniform 1/b^d, Zipf values as rank products), and
buckets against their invariants (a partition, hottest first, masses from the cumulative sum)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import memsim
from memsim.errors import InputError
from memsim.popularity import (
    MAX_BLOCKS,
    Buckets,
    block_popularity,
    make_buckets,
    mass_prefix,
    popularity_from_counts,
    popularity_from_trace,
)
from memsim.trace import write_trace
from memsim.workload import (
    Counts,
    EmpiricalRouting,
    PathSampler,
    UniformRouting,
    Workload,
    ZipfRouting,
    load_workload,
    workload_from_dict,
)

ALPHA = 1e-3  # chi-square at a fixed seed: reject only on clear disagreement
Z_MAX = 5.0  # largest per-block deviation, in (inflated) standard errors, that still agrees


def make_bank(branching: int = 4, levels: int = 3) -> memsim.Bank:
    return memsim.bank_from_dict(
        {"name": "t", "branching": branching, "levels": [1] * levels, "anchor": "160M"})


def wl(routing: object, locality: dict[str, object] | None = None) -> Workload:
    data: dict[str, object] = {"arrivals": {"kind": "poisson", "rate": "10/s"},
                               "routing": routing}
    if locality is not None:
        data["locality"] = locality
    return workload_from_dict(data)


def sample(workload: Workload, bank: memsim.Bank, n: int, seed: int) -> np.ndarray:
    return PathSampler(workload, bank, np.random.default_rng(seed)).sample(n)


def chi2_pvalue(observed_ids: np.ndarray, p: np.ndarray) -> float:
    """Goodness of fit of observed block ids to `p`; blocks with p == 0 must never occur."""
    counts = np.bincount(observed_ids, minlength=p.shape[0])
    assert np.all(counts[p == 0] == 0)
    live = p > 0
    expected = p[live] / p[live].sum() * counts.sum()
    return float(stats.chisquare(counts[live], expected).pvalue)


def max_z(observed_ids: np.ndarray, p: np.ndarray, inflation: float = 1.0) -> float:
    """Largest |frequency - p| over blocks, in standard errors inflated for correlated draws."""
    n = observed_ids.shape[0]
    freq = np.bincount(observed_ids, minlength=p.shape[0]) / n
    se = np.sqrt(np.maximum(p * (1 - p), 1e-12) * inflation / n)
    return float(np.max(np.abs(freq - p) / se))


def write_counts(path: Path, rows: list[tuple[int, int, float]]) -> Path:
    level, block, count = zip(*rows, strict=True)
    pq.write_table(pa.table({"level": pa.array(level, pa.int64()),
                             "block": pa.array(block, pa.int64()),
                             "count": pa.array(count, pa.float64())}), path)
    return path


def random_counts(rng: np.random.Generator, b: int, levels: int) -> EmpiricalRouting:
    """Empirical routing with random counts: some parents listed, some all-zero, some absent."""
    level, block, count = [], [], []
    for d in range(1, levels + 1):
        k = int(rng.integers(0, b**d + 1))
        ids = rng.choice(b**d, size=k, replace=False)
        level += [d] * k
        block += ids.tolist()
        count += np.where(rng.random(k) < 0.3, 0.0, rng.integers(1, 50, k)).tolist()
    routing = EmpiricalRouting(file="counts.parquet")
    routing._counts = Counts(Path("counts.parquet"), np.array(level, dtype=np.int64),
                             np.array(block, dtype=np.int64), np.array(count, dtype=float))
    return routing


# ----------------------------------------------------------------------------- marginals


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(2, 9),
    levels=st.integers(1, 4),
    kind=st.sampled_from(["uniform", "zipf", "empirical"]),
    s=st.floats(0.1, 4.0),
    seed=st.integers(0, 2**40),
)
def test_sums_to_one_and_children_sum_to_parent(b, levels, kind, s, seed):
    bank = make_bank(b, levels)
    routing: UniformRouting | ZipfRouting | EmpiricalRouting
    if kind == "uniform":
        routing = UniformRouting()
    elif kind == "zipf":
        routing = ZipfRouting(s=s, seed=seed)
    else:
        routing = random_counts(np.random.default_rng(seed), b, levels)
    parent = np.ones(1)
    for d in range(1, levels + 1):
        p = block_popularity(bank, routing, d)
        assert p.dtype == np.float64 and p.shape == (b**d,)
        assert np.all(p >= 0)
        assert abs(p.sum() - 1) < 1e-12
        np.testing.assert_allclose(p.reshape(-1, b).sum(axis=1), parent, rtol=1e-12, atol=1e-15)
        parent = p


@pytest.mark.parametrize("b,depth", [(2, 1), (3, 4), (16, 3)])
def test_uniform_is_flat(b, depth):
    p = block_popularity(make_bank(b, 4), UniformRouting(), depth)
    assert np.all(p == p[0])
    np.testing.assert_allclose(p, 1 / b**depth, rtol=1e-12)


@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 7])
def test_zipf_values_are_products_of_rank_probabilities(s, seed):
    # whichever child holds which rank, the multiset of block popularities at depth d is the
    # products of the d per-level rank probabilities, one per rank tuple
    b, depth = 4, 3
    q = np.arange(1, b + 1, dtype=float) ** -s
    q /= q.sum()
    products = [np.prod(r) for r in itertools.product(q, repeat=depth)]
    p = block_popularity(make_bank(b, depth), ZipfRouting(s=s, seed=seed), depth)
    np.testing.assert_allclose(np.sort(p), np.sort(products), rtol=1e-12)


@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
def test_zipf_matches_the_sampler(s):
    bank = make_bank(4, 3)
    paths = sample(wl({"kind": "zipf", "s": s, "seed": 3}), bank, 400_000, seed=21)
    for d in (1, 2, 3):
        p = block_popularity(bank, ZipfRouting(s=s, seed=3), d)
        assert chi2_pvalue(paths[:, d - 1], p) > ALPHA
    # the same test rejects another assignment of ranks to children (it has power)
    wrong = block_popularity(bank, ZipfRouting(s=s, seed=4), 3)
    assert chi2_pvalue(paths[:, 2], wrong) < 1e-12


@pytest.mark.parametrize("depth", [1, 2])
def test_locality_keeps_the_marginals(depth):
    p_keep, n = 0.9, 400_000
    bank = make_bank(4, 3)
    routing = {"kind": "zipf", "s": 1.0, "seed": 5}
    paths = sample(wl(routing, {"p": p_keep, "depth": depth}), bank, n, seed=22)
    kept = np.mean(np.all(paths[1:, :depth] == paths[:-1, :depth], axis=1))
    assert kept > p_keep - 0.01  # locality is really on: sessions share their prefix
    # a session of geometric length inflates the variance of a frequency by (1 + p) / (1 - p)
    inflation = (1 + p_keep) / (1 - p_keep)
    for d in (1, 2, 3):
        p = block_popularity(bank, ZipfRouting(s=1.0, seed=5), d)
        assert max_z(paths[:, d - 1], p, inflation) < Z_MAX
    wrong = block_popularity(bank, ZipfRouting(s=1.0, seed=6), 3)
    assert max_z(paths[:, 2], wrong, inflation) > 2 * Z_MAX


def test_empirical_matches_the_sampler(tmp_path):
    b = 4
    rows = [(1, 0, 3), (1, 1, 1), (1, 2, 0), (1, 3, 6)]  # block 2 never taken
    rows += [(2, 0 * b + 1, 2), (2, 0 * b + 3, 5), (2, 0 * b + 3, 1)]  # duplicate rows add up
    rows += [(2, 3 * b + i, 0) for i in range(b)]  # all zero: parent 3 routes uniformly
    rows += [(3, 3 * b + 2, 4), (3, 3 * b + 0, 1)]  # children of depth-2 block 3
    rows += [(3, 13 * b + 1, 9)]  # a single child: always taken
    write_counts(tmp_path / "counts.parquet", rows)
    (tmp_path / "w.yaml").write_text("arrivals: {kind: poisson, rate: 1/s}\n"
                                     "routing: {kind: empirical, file: counts.parquet}\n")
    workload = load_workload(tmp_path / "w.yaml")
    bank = make_bank(b, 3)
    p1 = block_popularity(bank, workload.routing, 1)
    np.testing.assert_allclose(p1, [0.3, 0.1, 0.0, 0.6], rtol=1e-15)
    p2 = block_popularity(bank, workload.routing, 2)
    np.testing.assert_allclose(p2[:b], 0.3 * np.array([0, 2, 0, 6]) / 8, rtol=1e-15)
    np.testing.assert_allclose(p2[1 * b:2 * b], 0.1 / b)  # parent 1 unlisted: uniform
    np.testing.assert_allclose(p2[3 * b:], 0.6 / b)  # parent 3 only zeros: uniform
    p3 = block_popularity(bank, workload.routing, 3)
    assert p3[13 * b + 1] == pytest.approx(p2[13])
    paths = sample(workload, bank, 400_000, seed=23)
    for d, p in ((1, p1), (2, p2), (3, p3)):
        assert chi2_pvalue(paths[:, d - 1], p) > ALPHA


def test_empirical_counts_outside_the_bank_name_the_file(tmp_path):
    counts = write_counts(tmp_path / "counts.parquet", [(1, 0, 1), (4, 0, 1)])
    workload = wl({"kind": "empirical", "file": str(counts)})
    with pytest.raises(InputError) as err:
        block_popularity(make_bank(4, 3), workload.routing, 1)
    assert err.value.file == str(counts) and err.value.field == "level"
    with pytest.raises(ValueError, match="load it through a workload"):
        block_popularity(make_bank(4, 3), EmpiricalRouting(file=str(counts)), 1)


def test_observed_popularity_converges_and_reads_traces(tmp_path):
    bank = make_bank(4, 3)
    routing = ZipfRouting(s=1.0, seed=8)
    n = 200_000
    paths = sample(wl({"kind": "zipf", "s": 1.0, "seed": 8}), bank, n, seed=24)
    for d in (1, 2, 3):
        observed = popularity_from_counts(bank, d, paths[:, d - 1])
        exact = block_popularity(bank, routing, d)
        assert observed.shape == exact.shape and observed.sum() == pytest.approx(1)
        se = np.sqrt(exact * (1 - exact) / n)
        assert np.max(np.abs(observed - exact) / se) < Z_MAX
    small = popularity_from_counts(bank, 2, np.array([5, 5, 7, 0]))
    assert small[5] == 0.5 and small[7] == 0.25 and small[0] == 0.25 and small.sum() == 1
    trace = write_trace(tmp_path / "t.parquet", np.arange(n, dtype=float), paths)
    for d in (1, 3):
        np.testing.assert_array_equal(popularity_from_trace(trace, bank, d),
                                      popularity_from_counts(bank, d, paths[:, d - 1]))


def test_bad_depths_and_ids_are_input_errors(tmp_path):
    bank = make_bank(4, 3)
    for depth in (0, 4, -1, True):
        with pytest.raises(InputError, match="not in bank") as err:
            block_popularity(bank, UniformRouting(), depth)
        assert err.value.field == "depth"
    huge = memsim.bank_from_dict({"name": "h", "branching": 4096, "levels": [1, 1, 1],
                                  "anchor": "160M"})
    assert 4096**3 > MAX_BLOCKS
    with pytest.raises(InputError, match="shallower depth"):
        block_popularity(huge, UniformRouting(), 3)
    with pytest.raises(InputError, match="outside 0..15") as err:
        popularity_from_counts(bank, 2, np.array([3, 16]))
    assert err.value.field == "block_L2"
    with pytest.raises(InputError, match="no block ids"):
        popularity_from_counts(bank, 2, np.array([], dtype=np.int64))
    with pytest.raises(InputError, match="no such file"):
        popularity_from_trace(tmp_path / "missing.parquet", bank, 1)


# ----------------------------------------------------------------------------- buckets


def check_buckets(buckets: Buckets, p: np.ndarray, eligible: np.ndarray, count: int) -> None:
    """Every invariant a Buckets must satisfy, from the popularity it was made from."""
    order, bounds = buckets.order, buckets.bounds
    n = int(eligible.sum())
    assert order.dtype == np.int64 and bounds.dtype == np.int64
    # a partition of the eligible blocks: each exactly once, nothing else
    np.testing.assert_array_equal(np.sort(order), np.flatnonzero(eligible))
    assert bounds[0] == 0 and bounds[-1] == n and buckets.count == bounds.shape[0] - 1
    assert np.all(np.diff(bounds) > 0)
    assert buckets.count <= max(count, 1) if n else buckets.count == 0
    assert sum(buckets.blocks(k).shape[0] for k in range(buckets.count)) == n
    # hottest first, ties by id ascending; so every bucket is at least as hot as the next
    ranked = p[order]
    assert np.all(np.diff(ranked) <= 0)
    tie = np.diff(ranked) == 0
    assert np.all(np.diff(order)[tie] > 0)
    for k in range(buckets.count - 1):
        assert p[buckets.blocks(k)].min() >= p[buckets.blocks(k + 1)].max()
    # sizes, masses and the cumulative sum agree with the blocks
    np.testing.assert_array_equal(buckets.size, [buckets.blocks(k).shape[0]
                                                 for k in range(buckets.count)])
    np.testing.assert_allclose(buckets.cumulative, np.cumsum(ranked), rtol=1e-12, atol=1e-15)
    masses = [p[buckets.blocks(k)].sum() for k in range(buckets.count)]
    np.testing.assert_allclose(buckets.mass, masses, rtol=1e-9, atol=1e-12)
    assert buckets.mass.sum() == pytest.approx(p[eligible].sum(), abs=1e-12)


popularities = st.integers(1, 60).flatmap(lambda n: st.one_of(
    st.lists(st.floats(0, 1), min_size=n, max_size=n),
    st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5]), min_size=n, max_size=n),  # many ties
))


@settings(max_examples=200, deadline=None)
@given(values=popularities, count=st.integers(1, 70), data=st.data())
def test_bucket_invariants(values, count, data):
    p = np.array(values)
    eligible = np.array(data.draw(st.lists(st.booleans(), min_size=p.shape[0],
                                           max_size=p.shape[0])))
    for mask in (None, eligible):
        buckets = make_buckets(p, 2, count, eligible=mask)
        check_buckets(buckets, p, np.ones_like(eligible) if mask is None else mask, count)
        n = buckets.order.shape[0]
        if count >= n:
            np.testing.assert_array_equal(buckets.bounds, np.arange(n + 1))
        elif count >= 2:  # log-spaced ends; one dropped only between flat buckets of one value
            ranks = np.rint(n ** (np.arange(count) / (count - 1))).astype(int)
            raw = np.union1d(0, ranks)
            assert np.all(np.isin(buckets.bounds, raw))
            ranked = p[buckets.order]
            for k in range(buckets.count):
                lo, hi = buckets.bounds[k], buckets.bounds[k + 1]
                if np.sum((raw > lo) & (raw < hi)):
                    assert ranked[lo] == ranked[hi - 1]
        elif count >= 2 and p[buckets.order[0]] > p[buckets.order[1]]:
            assert buckets.size[0] == 1  # the single hottest block
        for k in range(buckets.count):
            blocks = buckets.blocks(k)
            for m in sorted({0, 1, blocks.shape[0] // 2, blocks.shape[0]}):
                assert mass_prefix(buckets, k, m) == pytest.approx(p[blocks[:m]].sum(),
                                                                   abs=1e-12)


def test_buckets_are_log_spaced():
    n, count = 10_000, 9
    p = np.random.default_rng(30).permutation(1.0 / np.arange(1, n + 1))  # distinct values
    buckets = make_buckets(p, 3, count)
    check_buckets(buckets, p, np.ones(n, dtype=bool), count)
    np.testing.assert_array_equal(buckets.bounds, [0, 1, 3, 10, 32, 100, 316, 1000, 3162, n])
    np.testing.assert_array_equal(buckets.order[:4], np.argsort(-p)[:4])
    assert buckets.mass[0] == p.max()


def test_uniform_collapses_to_one_bucket_unless_exact():
    bank = make_bank(4, 3)
    p = block_popularity(bank, UniformRouting(), 3)
    one = make_buckets(p, 3, 8)
    assert one.count == 1 and one.size[0] == 64 and one.mass[0] == pytest.approx(1)
    np.testing.assert_array_equal(one.order, np.arange(64))  # ties by id
    exact = make_buckets(p, 3, 64)
    assert exact.count == 64 and np.all(exact.size == 1)
    # equal-popularity runs merge only where whole buckets are flat: a hot head stays apart
    q = np.r_[0.5, np.full(99, 0.5 / 99)]
    head = make_buckets(q, 1, 10)
    np.testing.assert_array_equal(head.bounds, [0, 1, 100])
    # a bucket that ends inside a run of ties is not flat, so it stays apart from the next
    split = make_buckets(np.r_[0.5, 0.3, np.full(8, 0.025)], 1, 3)
    np.testing.assert_array_equal(split.bounds, [0, 1, 3, 10])  # round(sqrt(10)) = 3


def test_zipf_buckets_and_blocked_subtrees():
    b, depth = 4, 3
    bank = make_bank(b, depth)
    p = block_popularity(bank, ZipfRouting(s=1.0, seed=2), depth)
    blocked = int(np.argmax(block_popularity(bank, ZipfRouting(s=1.0, seed=2), 1)))
    eligible = np.arange(b**depth) // b ** (depth - 1) != blocked  # the hottest subtree out
    buckets = make_buckets(p, depth, 6, eligible=eligible)
    check_buckets(buckets, p, eligible, 6)
    assert not np.any(buckets.order // b ** (depth - 1) == blocked)
    assert buckets.order.shape[0] == 48 and buckets.depth == depth
    assert buckets.mass.sum() == pytest.approx(1 - p.reshape(b, -1)[blocked].sum())
    none = make_buckets(p, depth, 6, eligible=np.zeros(b**depth, dtype=bool))
    assert none.count == 0 and none.order.shape == (0,) and none.bounds.tolist() == [0]


def test_mass_prefix_and_bucket_errors():
    p = np.array([0.1, 0.4, 0.2, 0.3])
    buckets = make_buckets(p, 1, 4)
    assert [mass_prefix(buckets, k, 1) for k in range(4)] == pytest.approx([0.4, 0.3, 0.2, 0.1])
    two = make_buckets(p, 1, 2)
    np.testing.assert_array_equal(two.bounds, [0, 1, 4])  # round(4 ** (1/1)) = 4
    assert mass_prefix(two, 1, 2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="has 3 blocks"):
        mass_prefix(two, 1, 4)
    with pytest.raises(IndexError):
        mass_prefix(two, 2, 0)
    with pytest.raises(InputError, match="buckets"):
        make_buckets(p, 1, 0)
    with pytest.raises(ValueError, match="non-negative"):
        make_buckets(np.array([0.5, -0.1]), 1, 2)
    with pytest.raises(ValueError, match="bool array"):
        make_buckets(p, 1, 2, eligible=np.ones(3, dtype=bool))
