"""Traces: a bit-exact Parquet round trip, atomic writes, and clear errors for bad traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memsim
from memsim.errors import InputError
from memsim.trace import block_column, read_trace, write_trace

B = 16


@pytest.fixture(scope="module")
def bank() -> memsim.Bank:
    return memsim.bank_from_dict(
        {"name": "t4", "branching": B, "levels": [1, 1, 1, 1], "anchor": "160M"})


def random_paths(rng: np.random.Generator, n: int, levels: int = 4, b: int = B) -> np.ndarray:
    """Consistent paths built independently of memsim's samplers."""
    out = np.empty((n, levels), dtype=np.int64)
    parent = np.zeros(n, dtype=np.int64)
    for d in range(levels):
        parent = parent * b + rng.integers(0, b, n)
        out[:, d] = parent
    return out


def good_columns(n: int = 5) -> dict[str, list]:
    rng = np.random.default_rng(3)
    paths = random_paths(rng, n)
    data: dict[str, list] = {"arrival_s": list(np.sort(rng.random(n)))}
    for d in range(4):
        data[block_column(d + 1)] = list(paths[:, d])
    return data


def write_raw(path: Path, data: dict[str, object]) -> Path:
    pq.write_table(pa.table(data), path)
    return path


def test_round_trip_bit_exact(tmp_path, bank):
    rng = np.random.default_rng(0)
    n = 1000
    arrival = np.cumsum(rng.exponential(0.1, n))
    paths = random_paths(rng, n)
    fetch = rng.random(n) * 1e-3
    tiers = rng.integers(0, 3, n).astype(np.int32)
    out = write_trace(tmp_path / "t.parquet", arrival, paths,
                      columns={"fetch_time_s": fetch, "tier": tiers})
    assert out == tmp_path / "t.parquet"
    got_arrival, got_paths = read_trace(out, bank)
    assert got_arrival.dtype == np.float64 and got_paths.dtype == np.int64
    assert np.array_equal(got_arrival.view(np.int64), arrival.view(np.int64))
    assert np.array_equal(got_paths, paths)
    table = pq.read_table(out)
    assert table.column_names == ["query_id", "arrival_s", "block_L1", "block_L2", "block_L3",
                                  "block_L4", "fetch_time_s", "tier"]
    assert table.schema.field("query_id").type == pa.int64()
    assert table.schema.field("block_L3").type == pa.int64()
    assert np.array_equal(table.column("query_id").to_numpy(), np.arange(n))
    assert np.array_equal(table.column("fetch_time_s").to_numpy(), fetch)
    assert np.array_equal(table.column("tier").to_numpy(), tiers)
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temporary left


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    gaps=st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1,
                  max_size=50),
    levels=st.integers(1, 5),
    b=st.integers(2, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_property(tmp_path, gaps, levels, b, seed):
    bank = memsim.bank_from_dict({"branching": b, "levels": [1] * levels, "anchor": "160M"})
    arrival = np.cumsum(np.array(gaps))
    paths = random_paths(np.random.default_rng(seed), len(gaps), levels, b)
    path = write_trace(tmp_path / "p.parquet", arrival, paths)
    got_arrival, got_paths = read_trace(path, bank)
    assert np.array_equal(got_arrival.view(np.int64), arrival.view(np.int64))
    assert np.array_equal(got_paths, paths)


def test_deeper_trace_reads_for_shallower_bank(tmp_path):
    rng = np.random.default_rng(1)
    paths = random_paths(rng, 10, levels=4)
    path = write_trace(tmp_path / "t.parquet", np.arange(10.0), paths)
    bank3 = memsim.bank_from_dict({"branching": B, "levels": [1, 1, 1], "anchor": "160M"})
    _, got = read_trace(path, bank3)
    assert np.array_equal(got, paths[:, :3])


def test_write_creates_folders_and_replaces(tmp_path, bank):
    target = tmp_path / "a" / "b" / "t.parquet"
    write_trace(target, np.array([0.0, 1.0]), random_paths(np.random.default_rng(0), 2))
    write_trace(target, np.array([5.0]), random_paths(np.random.default_rng(1), 1))
    arrival, _ = read_trace(target, bank)
    assert arrival.tolist() == [5.0]
    assert sorted(p.name for p in target.parent.iterdir()) == ["t.parquet"]


def test_unwritable_path_names_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError) as info:
        write_trace(blocker / "t.parquet", np.array([0.0]), np.zeros((1, 1), dtype=np.int64))
    assert info.value.file == str(blocker / "t.parquet")
    folder = tmp_path / "dir.parquet"
    folder.mkdir()
    with pytest.raises(InputError) as info:
        write_trace(folder, np.array([0.0]), np.zeros((1, 1), dtype=np.int64))
    assert info.value.file == str(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.parquet", "file"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, bank, monkeypatch):
    target = tmp_path / "t.parquet"
    write_trace(target, np.array([1.0]), random_paths(np.random.default_rng(0), 1))
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(RuntimeError):
        write_trace(target, np.array([2.0]), random_paths(np.random.default_rng(0), 1))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


@pytest.mark.parametrize(
    ("arrival", "paths", "extra"),
    [
        (np.zeros((2, 1)), np.zeros((2, 1), dtype=np.int64), None),
        (np.zeros(2), np.zeros((3, 1), dtype=np.int64), None),
        (np.zeros(2), np.zeros((2, 1)), None),  # float paths
        (np.zeros(2), np.zeros((2, 1), dtype=np.int64), {"x": np.zeros(3)}),
        (np.zeros(2), np.zeros((2, 1), dtype=np.int64), {"arrival_s": np.zeros(2)}),
        (np.zeros(2), np.zeros((2, 1), dtype=np.int64), {"x": np.array(["a", "b"])}),
    ],
)
def test_write_rejects_malformed_arrays(tmp_path, arrival, paths, extra):
    with pytest.raises(ValueError):
        write_trace(tmp_path / "t.parquet", arrival, paths, columns=extra)
    assert list(tmp_path.iterdir()) == []


def check_error(path: Path, bank: memsim.Bank, *, field: str | None, words: list[str]) -> None:
    with pytest.raises(InputError) as info:
        read_trace(path, bank)
    err = info.value
    assert err.file == str(path)
    assert err.field == field
    for word in words:
        assert word in str(err), (word, str(err))


def test_missing_file(tmp_path, bank):
    check_error(tmp_path / "nope.parquet", bank, field=None, words=["no such file"])


def test_not_parquet(tmp_path, bank):
    path = tmp_path / "t.parquet"
    path.write_text("query_id,arrival_s\n0,0.1\n")
    check_error(path, bank, field=None, words=["Parquet"])


def test_missing_columns(tmp_path, bank):
    data = good_columns()
    del data["arrival_s"]
    check_error(write_raw(tmp_path / "t.parquet", data), bank, field=None,
                words=["missing column", "arrival_s"])


def test_fewer_block_columns_than_levels(tmp_path, bank):
    data = good_columns()
    del data["block_L4"]
    check_error(write_raw(tmp_path / "t.parquet", data), bank, field=None,
                words=["4 levels", "block_L4"])


def test_zero_rows(tmp_path, bank):
    data = {name: pa.array([], type=pa.float64() if name == "arrival_s" else pa.int64())
            for name in good_columns()}
    check_error(write_raw(tmp_path / "t.parquet", data), bank, field=None, words=["no rows"])


@pytest.mark.parametrize(
    ("value", "row", "words"),
    [(float("nan"), 2, ["not a finite"]), (float("inf"), 2, ["not a finite"]),
     (-1.0, 0, ["negative"]), (0.0, 3, ["earlier than the previous", "sorted"])],
)
def test_bad_arrival_times(tmp_path, bank, value, row, words):
    data = good_columns()
    data["arrival_s"][row] = value
    check_error(write_raw(tmp_path / "t.parquet", data), bank, field="arrival_s",
                words=[f"row {row} ", *words])


def test_string_column_is_rejected(tmp_path, bank):
    data = good_columns()
    data["arrival_s"] = [str(x) for x in data["arrival_s"]]
    check_error(write_raw(tmp_path / "t.parquet", data), bank, field="arrival_s",
                words=["expected numbers"])


def test_empty_cell(tmp_path, bank):
    data = good_columns()
    data["block_L2"][1] = None
    check_error(write_raw(tmp_path / "t.parquet", data), bank, field="block_L2",
                words=["row 1 ", "empty"])


@pytest.mark.parametrize(("depth", "value"), [(1, -1), (1, 16), (3, 16**3), (2, -5)])
def test_block_out_of_range(tmp_path, bank, depth, value):
    data = good_columns()
    data[block_column(depth)][4] = value
    # the row and column named are the first problem in depth order
    check_error(write_raw(tmp_path / "t.parquet", data), bank, field=block_column(depth),
                words=["row 4 ", str(value), f"0..{B**depth - 1}"])


def test_inconsistent_path(tmp_path, bank):
    data = good_columns()
    parent = data["block_L2"][3]
    data["block_L3"][3] = ((parent + 1) % B**2) * B  # a child of another level-2 block
    check_error(write_raw(tmp_path / "t.parquet", data), bank, field="block_L3",
                words=["row 3 ", "not a child", "inconsistent"])
