"""Routing: greedy descent equals a brute-force walk of the tree (ties, every metric), the
batched, grouped and chunked paths agree, centroid files round trip in every format, every
error is one line naming the file and the array, and `memsim route` writes a trace that
`read_trace` and `memsim simulate --trace` take."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memsim
from memsim import limits
from memsim.client import route as route_mod
from memsim.client.route import (
    Centroids,
    check_embeddings,
    load_centroids,
    route,
    synthetic_centroids,
    trace_paths,
    write_centroids,
)
from memsim.errors import InputError
from memsim.trace import read_trace

BF16 = ml_dtypes.bfloat16


def brute_force(levels: list[np.ndarray], b: int, x: np.ndarray, metric: str) -> np.ndarray:
    """The descent as a plain loop per query and per candidate; the first best one wins.

    l2 and ip are exact here (float64 on small integers); cosine uses the float32 formula
    x.c / |c| candidate by candidate (a zero centroid scores 0)."""
    out = np.empty((x.shape[0], len(levels)), dtype=np.int64)
    tiny = np.finfo(np.float32).tiny
    for q in range(x.shape[0]):
        node = 0
        for d, level in enumerate(levels):
            best, best_score = -1, None
            for child in range(node * b, node * b + b):
                c = level[child].astype(np.float64)
                v = x[q].astype(np.float64)
                if metric == "l2":
                    score = -float(((v - c) ** 2).sum())
                elif metric == "ip":
                    score = float((v * c).sum())
                else:
                    c32 = level[child].astype(np.float32)
                    dot = np.float32((v * c).sum())
                    norm = max(np.sqrt(np.float32((c32 * c32).sum())), np.float32(tiny))
                    score = float(dot / norm)
                if best_score is None or score > best_score:
                    best, best_score = child, score
            node = best
            out[q, d] = node
    return out


def grid_tree(seed: int, b: int, depth: int, dim: int, k: int, n: int
              ) -> tuple[list[np.ndarray], np.ndarray]:
    """Centroids and embeddings on the integer grid -k..k: float32 arithmetic is exact on it,
    and small k makes ties (duplicate centroids, equal scores) common."""
    rng = np.random.default_rng(seed)
    levels = [rng.integers(-k, k + 1, (b**d, dim)).astype(np.float32)
              for d in range(1, depth + 1)]
    x = rng.integers(-k, k + 1, (n, dim)).astype(np.float32)
    return levels, x


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(2, 4), depth=st.integers(1, 3),
       dim=st.integers(1, 8), k=st.integers(1, 3), n=st.integers(1, 24),
       metric=st.sampled_from(["l2", "ip", "cosine"]),
       dtype=st.sampled_from([np.float32, np.float16, BF16]))
def test_descent_equals_brute_force(seed, b, depth, dim, k, n, metric, dtype):
    levels, x = grid_tree(seed, b, depth, dim, k, n)
    c = Centroids(tuple(level.astype(dtype) for level in levels), b)  # small ints: exact
    want = brute_force(levels, b, x, metric)
    assert np.array_equal(route(c, x, metric=metric), want)
    assert np.array_equal(route(c, x, metric=metric, chunk=1), want)


def test_ties_go_to_the_lowest_index():
    # every child identical: each depth picks child 0, whatever the metric
    b = 3
    levels = tuple(np.ones((b**d, 2), dtype=np.float32) for d in (1, 2))
    x = np.array([[1.0, 2.0], [-1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    for metric in ("l2", "ip", "cosine"):
        assert route(Centroids(levels, b), x, metric=metric).tolist() == [[0, 0]] * 3
    # two equal best children at 1 and 2 (of 0..3): 1 wins
    one = np.array([[5.0], [1.0], [1.0], [-3.0]], dtype=np.float32)
    assert route(Centroids((one,), 4), np.array([[1.2]], np.float32)).tolist() == [[1]]


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_random_tree_batched_grouped_and_chunked_agree(metric, monkeypatch):
    bank = memsim.bank_from_dict({"branching": 16, "levels": [1, 1, 1], "anchor": "160M"})
    c = synthetic_centroids(bank, 12, seed=4)
    rng = np.random.default_rng(5)
    leaf = rng.integers(0, 16**3, 300)
    x = c.levels[2][leaf] + 0.01 * rng.standard_normal((300, 12), dtype=np.float32)
    want = brute_force(list(c.levels), 16, x, metric)
    got = route(c, x, metric=metric)
    assert np.array_equal(got, want)
    if metric == "l2":
        assert (got[:, 2] == leaf).mean() > 0.5  # the tree is meaningful: most find their leaf
    for chunk in (1, 7, 64):
        assert np.array_equal(route(c, x, metric=metric, chunk=chunk), want)
    assert np.array_equal(np.concatenate([route(c, row[None], metric=metric) for row in x]),
                          want)
    for group_dim in (1, 10**12):  # always one product per node; never
        monkeypatch.setattr(route_mod, "GROUP_DIM", group_dim)
        assert np.array_equal(route(c, x, metric=metric), want)


def test_bf16_centroids_route_as_their_float32_values():
    bank = memsim.bank_from_dict({"branching": 4, "levels": [1, 1, 1], "anchor": "160M"})
    c32 = synthetic_centroids(bank, 6, seed=1)
    c16 = Centroids(tuple(level.astype(BF16) for level in c32.levels), 4)
    assert c16.dtype == np.dtype(BF16)
    widened = Centroids(tuple(level.astype(np.float32) for level in c16.levels), 4)
    x = np.random.default_rng(2).standard_normal((50, 6)).astype(BF16)
    assert np.array_equal(route(c16, x), route(widened, x.astype(np.float32)))


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", ["c.npz", "c_dir", "c.zarr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, BF16])
def test_files_round_trip(tmp_path, name, dtype):
    bank = memsim.bank_from_dict({"branching": 3, "levels": [1, 0, 2], "anchor": "160M"})
    c = synthetic_centroids(bank, 5, seed=7, dtype=dtype)
    path = write_centroids(tmp_path / name, c)
    back = load_centroids(path, bank)
    assert back.depth == 3 and back.dim == 5 and back.dtype == np.dtype(dtype)
    for a, b in zip(c.levels, back.levels, strict=True):
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8))
    write_centroids(path, c)  # replaces what is there
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_trailing_empty_level_is_optional(tmp_path):
    bank = memsim.bank_from_dict({"branching": 2, "levels": [1, 1, 0], "anchor": "160M"})
    c = synthetic_centroids(bank, 3, seed=0, depth=2)
    back = load_centroids(write_centroids(tmp_path / "c.npz", c), bank)
    paths = route(back, np.zeros((2, 3), np.float32))
    assert paths.shape == (2, 2)
    full = trace_paths(paths, bank)
    assert full.shape == (2, 3) and np.array_equal(full[:, 2], full[:, 1] * 2)
    # with centroids for level 3 too, they are used
    c3 = synthetic_centroids(bank, 3, seed=0)
    assert load_centroids(write_centroids(tmp_path / "d.npz", c3), bank).depth == 3


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _good(b: int = 2, dim: int = 3, depth: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"L{d}": rng.standard_normal((b**d, dim)).astype(np.float32)
            for d in range(1, depth + 1)}


BANK2 = {"branching": 2, "levels": [1, 1], "anchor": "160M"}


def _bad_cases() -> list[tuple[str, dict[str, np.ndarray], str | None, list[str]]]:
    g = _good()
    nan = g["L2"].copy()
    nan[3, 1] = np.nan
    return [
        ("rows", {"L1": g["L1"], "L2": g["L2"][:3]}, "L2", ["3 rows", "expected 4"]),
        ("ndim", {"L1": g["L1"], "L2": g["L2"].ravel()}, "L2", ["shape (12,)", "2-D"]),
        ("dim", {"L1": g["L1"], "L2": g["L2"][:, :2]}, "L2", ["(4, 2)", "(4, 3)"]),
        ("missing", {"L1": g["L1"]}, None, ["missing array L2", "depth 2"]),
        ("deeper", {**g, "L3": np.zeros((8, 3), np.float32)}, "L3", ["2 levels"]),
        ("gap", {"L1": g["L1"], "L3": np.zeros((8, 3), np.float32)}, None,
         ["unexpected array 'L3'"]),
        ("none", {"centers": g["L1"]}, None, ["no array L1", "centers"]),
        ("int", {"L1": g["L1"], "L2": g["L2"].astype(np.int32)}, "L2", ["int32"]),
        ("nan", {"L1": g["L1"], "L2": nan}, "L2", ["row 3", "not finite"]),
        ("huge", {"L1": g["L1"], "L2": g["L2"] * np.float32(1e30)}, "L2", ["too large"]),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_centroids_are_one_line_naming_file_and_array(tmp_path, case):
    _, arrays, field, words = case
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError) as info:
        load_centroids(path, memsim.bank_from_dict(BANK2))
    text = str(info.value)
    assert "\n" not in text and str(path) in text, text
    assert info.value.field == field, text
    for word in words:
        assert word in text, text


def test_bad_centroid_files(tmp_path):
    bank = memsim.bank_from_dict(BANK2)
    single = tmp_path / "one.npy"
    np.save(single, np.zeros((2, 3), np.float32))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 truncated")
    cases = [(tmp_path / "absent.npz", "no such file"), (single, "holds one array"),
             (junk, "not a .npz file"), (broken, "cannot be read"),
             (tmp_path, "no array L1")]
    for path, words in cases:
        with pytest.raises(InputError) as info:
            load_centroids(path, bank)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
        assert words in str(info.value), str(info.value)
    wrong_b = _npz(tmp_path / "b3.npz", **_good(b=3))
    with pytest.raises(InputError, match="L1.*3 rows, expected 2"):
        load_centroids(wrong_b, bank)


def test_size_is_checked_before_loading(tmp_path, monkeypatch):
    path = _npz(tmp_path / "c.npz", **_good())
    monkeypatch.setattr(limits, "MAX_CENTROID_BYTES", 60)
    read = []
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: read.append(1))
    with pytest.raises(InputError, match="field 'L2'.*limit is 60"):
        load_centroids(path, memsim.bank_from_dict(BANK2))
    assert not read


def test_zarr_bf16_is_stored_as_raw_bits(tmp_path):
    import zarr

    bank = memsim.bank_from_dict(BANK2)
    c = synthetic_centroids(bank, 3, dtype=BF16)
    path = write_centroids(tmp_path / "c.zarr", c)
    array = zarr.open_group(str(path), mode="r")["L2"]
    assert array.dtype == np.uint16 and array.attrs["dtype"] == "bf16"
    assert zipfile.is_zipfile(write_centroids(tmp_path / "c.npz", c))


@pytest.mark.parametrize("bad,words", [
    (np.zeros((4, 2), np.float32), ["dimension 2", "have 3"]),
    (np.zeros(3, np.float32), ["shape (3,)"]),
    (np.array([[0, 0, 0], [0, np.nan, 0]], np.float32), ["row 1", "not finite"]),
    (np.zeros((0, 3), np.float32), ["0 rows"]),
    (np.zeros((2, 3), np.int64), ["int64"]),
])
def test_bad_embeddings(bad, words):
    with pytest.raises(InputError) as info:
        check_embeddings(bad, 3, file="e.npy")
    for word in words:
        assert word in str(info.value) and "e.npy" in str(info.value)


def test_unknown_metric():
    c = Centroids(tuple(_good().values()), 2)
    with pytest.raises(InputError, match="unknown metric"):
        route(c, np.zeros((1, 3), np.float32), metric="dot")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def paper_files(tmp_path_factory):
    """Centroids for the shipped paper-storage-example bank (4 levels of 16) and embeddings
    near 40 leaves."""
    folder = tmp_path_factory.mktemp("route")
    bank = memsim.load_bank("paper-storage-example")
    c = synthetic_centroids(bank, 4, seed=3)
    rng = np.random.default_rng(0)
    leaf = rng.integers(0, 16**4, 40)
    x = c.levels[3][leaf] + 0.01 * rng.standard_normal((40, 4), dtype=np.float32)
    np.save(folder / "emb.npy", x)
    write_centroids(folder / "c.npz", c)
    return folder, c, x


def test_cli_writes_a_trace_simulate_runs(cli, tmp_path, paper_files):
    folder, c, x = paper_files
    out = tmp_path / "t.parquet"
    result = cli("route", "--bank", "paper-storage-example", "--centroids",
                 str(folder / "c.npz"), "--embeddings", str(folder / "emb.npy"),
                 "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    bank = memsim.load_bank("paper-storage-example")
    arrival, paths = read_trace(out, bank)
    assert np.array_equal(paths, route(c, x))
    assert summary["queries"] == 40 and summary["metric"] == "l2"
    assert summary["distinct_blocks"] == {str(d): len(np.unique(paths[:, d - 1]))
                                          for d in (2, 3, 4)}
    gaps = np.diff(np.concatenate([[0.0], arrival]))
    want = np.random.default_rng(0).exponential(0.1, 40)  # 10/s, seed 0
    assert np.allclose(gaps, want)
    sim = cli("simulate", "--layout", "paper-hierarchical", "--trace", str(out),
              "--queries", "40", "--json")
    assert sim.exit_code == 0, sim.stderr
    assert json.loads(sim.stdout)["queries"] > 0


def test_cli_arrivals_parquet_embeddings_and_text(cli, tmp_path, paper_files):
    folder, c, x = paper_files
    emb = tmp_path / "emb.parquet"
    pq.write_table(pa.table({"vec": pa.array(x.tolist(), pa.list_(pa.float32()))}), emb)
    args = ["route", "--bank", "paper-storage-example", "--centroids", str(folder / "c.npz"),
            "--embeddings", str(emb), "--column", "vec"]
    even = cli(*args, "--out", str(tmp_path / "e.parquet"), "--rate", "20/s",
               "--spacing", "even", "--metric", "cosine")
    assert even.exit_code == 0, even.stderr
    assert "routed 40 queries" in even.stdout and "level 4:" in even.stdout
    arrival, paths = read_trace(tmp_path / "e.parquet", memsim.load_bank("paper-storage-example"))
    assert np.allclose(arrival, np.arange(40) / 20)
    assert np.array_equal(paths, route(c, x, metric="cosine"))
    times = np.sort(np.random.default_rng(1).random(40))
    np.save(tmp_path / "arr.npy", times)
    given = cli(*args, "--out", str(tmp_path / "g.parquet"), "--arrivals",
                str(tmp_path / "arr.npy"))
    assert given.exit_code == 0, given.stderr
    assert np.array_equal(read_trace(tmp_path / "g.parquet",
                                     memsim.load_bank("paper-storage-example"))[0], times)
    again = cli(*args, "--out", str(tmp_path / "h.parquet"), "--arrivals",
                str(tmp_path / "e.parquet"))  # another trace's arrival_s
    assert again.exit_code == 0, again.stderr
    assert np.allclose(pq.read_table(tmp_path / "h.parquet").column("arrival_s").to_numpy(),
                       np.arange(40) / 20)
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"vec": [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]]}), ragged)
    bad = cli(*args[:-4], "--embeddings", str(ragged), "--column", "vec", "--out",
              str(tmp_path / "r.parquet"))
    assert bad.exit_code == 2 and "row 1 (0-based) has 2 values" in bad.stderr, bad.stderr
    assert "ragged.parquet" in bad.stderr and "'vec'" in bad.stderr


def test_cli_errors_are_one_line(cli, tmp_path, paper_files):
    folder, _, x = paper_files
    np.save(tmp_path / "dim.npy", np.zeros((3, 5), np.float32))
    nan = x.copy()
    nan[7, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "flat.npy", np.zeros(4, np.float32))
    np.save(tmp_path / "short.npy", np.arange(3.0))
    base = ["route", "--bank", "paper-storage-example", "--centroids", str(folder / "c.npz"),
            "--out", str(tmp_path / "t.parquet")]
    emb = ["--embeddings", str(folder / "emb.npy")]
    cases = [
        (["--embeddings", str(tmp_path / "dim.npy")], ["dim.npy", "dimension 5", "have 4"]),
        (["--embeddings", str(tmp_path / "nan.npy")], ["nan.npy", "row 7", "not finite"]),
        (["--embeddings", str(tmp_path / "flat.npy")], ["flat.npy", "shape (4,)"]),
        (["--embeddings", str(tmp_path / "absent.npy")], ["absent.npy", "no such file"]),
        ([*emb, "--arrivals", str(tmp_path / "short.npy")], ["short.npy", "3 arrival times"]),
        ([*emb, "--arrivals", str(folder / "c.npz")], ["c.npz", "not a .npy or Parquet"]),
        ([*emb, "--arrivals", str(tmp_path)], ["is a directory"]),
        (["--embeddings", str(folder / "c.npz")], ["c.npz", "not a .npy or Parquet"]),
        ([*emb, "--rate", "fast"], ["rate", "fast"]),
        ([*emb, "--rate", "0/s"], ["rate", "positive"]),
        ([*emb, "--rate", "5/s", "--arrivals", str(tmp_path / "short.npy")], ["not both"]),
    ]
    for extra, words in cases:
        result = cli(*base, *extra)
        assert result.exit_code == 2, (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("memsim: error:"), result.stderr
        for word in words:
            assert word in lines[0], lines[0]
    assert not (tmp_path / "t.parquet").exists()
    eight = tmp_path / "eight.yaml"
    eight.write_text("branching: 8\nlevels: [1, 1]\nanchor: 160M\n")
    bad_bank = cli("route", "--bank", str(eight), "--centroids", str(folder / "c.npz"),
                   *emb, "--out", str(tmp_path / "t.parquet"))
    assert bad_bank.exit_code == 2, bad_bank.stderr
    assert "c.npz" in bad_bank.stderr and "'L1'" in bad_bank.stderr, bad_bank.stderr
