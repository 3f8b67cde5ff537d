"""The client's fetch core: exact bytes from local, memory and S3 stores, one request per
distinct block in a batch, blocked blocks never requested, async twins, one-line errors."""

from __future__ import annotations

import asyncio

import ml_dtypes
import numpy as np
import pytest
from realio_helpers import fresh_memory  # noqa: F401 (an autouse fixture)
from tiny_bank import ANCHOR, BANK

import memsim
from memsim.aio import run_sync
from memsim.blockmap import Subtree
from memsim.client import bank as client_bank
from memsim.client.bank import ServedBank, TimedFetch, open_bank
from memsim.errors import DataError, InputError
from memsim.materialize import SyntheticContent, materialize
from memsim.replay.reader import BankReader
from memsim.stores import tier_stores

# blocks: level 1 12 KiB (4 of them), level 2 6 KiB (16), level 3 3 KiB (64), bf16
LAYOUT = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "flash", 3: "disk"},
                                  "chunking": {3: 16}})


def local_profile(root, **flash):
    return memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
         "concurrency": 4, "store": f"file://{root}/flash", **flash},
        {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms",
         "concurrency": 2, "store": f"file://{root}/disk"},
    ]})


def s3_profile(root, prefix):
    return memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "concurrency": 4,
         "store": f"file://{root}/flash"},
        {"name": "cloud", "kind": "cloud", "bandwidth": "100 MB/s", "latency": "20 ms",
         "concurrency": 8, "store": f"s3://memsim/{prefix}?timeout=10s"},
    ]})


S3_LAYOUT = memsim.layout_from_dict({"name": "l",
                                     "placement": {1: "ram", 2: "flash", 3: "cloud"},
                                     "chunking": {3: 16}})


def want(depth: int, block: int) -> np.ndarray:
    """The block as materialized (synthetic content, seed 0), as bf16 values."""
    return SyntheticContent(BANK).blocks(depth, np.array([block]))[0].view(ml_dtypes.bfloat16)


def leaf_path(leaf: int) -> list[int]:
    return [leaf // 16, leaf // 4, leaf]


def assert_exact(got: dict[int, np.ndarray], path: list[int]) -> None:
    assert sorted(got) == [1, 2, 3]
    for depth, block in zip((1, 2, 3), path, strict=True):
        arr = got[depth]
        assert arr.dtype == ml_dtypes.bfloat16
        assert arr.shape == (BANK.level(depth).block_params,)
        assert not arr.flags.writeable
        assert arr.tobytes() == want(depth, block).tobytes()


@pytest.fixture
def local_bank(tmp_path):
    """A bank materialized on RAM (memory), flash (4 KiB requests: a level-2 block is two)
    and disk (sharded), and the profile."""
    prof = local_profile(tmp_path, max_request_size="4 KiB")
    materialize(prof, BANK, LAYOUT)
    return prof


def test_every_block_is_exact_from_memory_and_local_stores(local_bank):
    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        assert isinstance(served, ServedBank)
        for leaf in range(64):
            assert_exact(served.fetch(leaf_path(leaf)), leaf_path(leaf))
        stats = served.stats
        assert stats.fetches == 64 and stats.blocks == 192 and stats.checked == 192
        assert stats.requests == {"ram": 64, "flash": 128, "disk": 64}
        assert stats.bytes["disk"] == 64 * 3072
        # bf16 values, not only bits: plausible weights
        values = served.fetch([0, 0, 0])[3].astype(np.float32)
        assert np.isfinite(values).all() and 0.005 < values.std() < 0.05
        # the same bytes as the replay reader reads
        reader = BankReader(local_bank, BANK, LAYOUT, tier_stores(local_bank, ["disk"])).open(
            {"disk": {3: None}})
        direct = run_sync(reader.read_block(3, 37))
        reader.close()
        assert served.fetch(leaf_path(37))[3].tobytes() == direct
    assert served.closed


def test_a_batch_reads_each_distinct_block_once(local_bank, monkeypatch):
    calls: list[tuple[str, str, int, int]] = []
    original = client_bank._pread_into

    def counting(store, key, buf, base, start, length):
        calls.append((store.url, key, start, length))
        return original(store, key, buf, base, start, length)

    monkeypatch.setattr(client_bank, "_pread_into", counting)
    leaves = [0, 1, 2, 3, 5, 5, 17, 63]  # level 1: blocks 0, 1, 3; level 2: 0, 1, 4, 15
    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        ram = served.stores["ram"]
        ram_calls = []
        ram_read = ram.read_range

        async def ram_counting(key, start, length):
            ram_calls.append(key)
            return await ram_read(key, start, length)

        ram.read_range = ram_counting
        got = served.fetch_many([leaf_path(x) for x in leaves])
        assert len(got) == len(leaves)
        for leaf, blocks in zip(leaves, got, strict=True):
            assert_exact(blocks, leaf_path(leaf))
        assert got[0][1] is got[3][1]  # shared, not copied
        assert got[4][3] is got[5][3]
        disk = [c for c in calls if "/disk" in c[0]]
        flash = [c for c in calls if "/flash" in c[0]]
        assert len(disk) == 7 and len(set(disk)) == 7  # leaves 0,1,2,3,5,17,63
        assert len(flash) == 2 * 4 and len(set(flash)) == 8  # 4 blocks, 2 requests each
        assert sorted(ram_calls) == ["L1/c/0/0", "L1/c/1/0", "L1/c/3/0"]
        stats = served.stats
        assert stats.reads == 3 + 4 + 7 and stats.blocks == 24
        assert stats.dedup_blocks_saved == 24 - 14
        # requests saved: level 1 5 (ram, 1 each), level 2 4 x 2 (flash), level 3 1
        assert stats.dedup_requests_saved == 5 + 8 + 1
        assert stats.requests == {"ram": 3, "flash": 8, "disk": 7}


def test_blocked_blocks_are_absent_counted_and_never_read(local_bank, monkeypatch):
    calls: list[tuple[str, int]] = []
    original = client_bank._pread_into

    def counting(store, key, buf, base, start, length):
        calls.append((key, start))
        return original(store, key, buf, base, start, length)

    monkeypatch.setattr(client_bank, "_pread_into", counting)
    blocked = [Subtree(depth=2, block=1)]  # level 2 block 1, level 3 blocks 4..7
    with open_bank(LAYOUT, profile=local_bank, bank=BANK, blocked=blocked) as served:
        index = served.reader.levels[("disk", 3)].indexes[0]
        forbidden = {int(index[r, 0]) for r in range(4, 8)}
        got = served.fetch_many([leaf_path(x) for x in (4, 5, 8, 7)])
        assert [sorted(g) for g in got] == [[1], [1], [1, 2, 3], [1]]
        assert_exact(got[2], leaf_path(8))
        assert served.stats.blocked == {2: 3, 3: 3}
        assert served.reader.blocked_reads == {2: 3, 3: 3}
    assert not any(k.startswith("L2/c/1/") for k, _s in calls)
    assert not any(k == "L3/c/0/0" and s in forbidden for k, s in calls)
    assert ("L3/c/0/0", int(index[8, 0])) in calls


def test_callers_on_several_threads_get_exact_blocks_and_counts(local_bank):
    from concurrent.futures import ThreadPoolExecutor

    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        def work(k):
            for leaf in range(k, 64, 4):
                assert_exact(served.fetch(leaf_path(leaf)), leaf_path(leaf))
            return k

        with ThreadPoolExecutor(4) as pool:
            assert sorted(pool.map(work, range(4))) == [0, 1, 2, 3]
        assert served.stats.fetches == 64 and served.stats.checked == 192
        assert served.stats.requests == {"ram": 64, "flash": 128, "disk": 64}


def test_async_twins_and_timings(local_bank):
    paths = [leaf_path(x) for x in (0, 9, 9, 40)]

    async def go():
        async with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
            one = await served.afetch(paths[1])
            many = await served.afetch_many(paths)
            timed = await served.afetch(paths[3], timed=True)
        return one, many, timed

    one, many, timed = asyncio.run(go())
    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        sync = served.fetch_many(paths)
        batch = served.fetch_many(paths, timed=True)
    for a, b in zip(many, sync, strict=True):
        assert all(np.array_equal(a[d].view(np.uint16), b[d].view(np.uint16)) for d in a)
    assert one[3].tobytes() == sync[1][3].tobytes()
    assert isinstance(timed, TimedFetch)
    assert_exact(timed.blocks, paths[3])
    assert set(timed.timings.levels) == {1, 2, 3} and timed.timings.tiers[3] == "disk"
    assert 0 < timed.timings.fetch_time_s == max(timed.timings.levels.values())
    assert len(batch.timings) == 4
    assert batch.timings[1].levels == batch.timings[2].levels  # one read, one stamp


def test_blocks_are_exact_from_s3_one_request_per_distinct_block(s3, clean_s3, tmp_path):
    prof = s3_profile(tmp_path, "client")
    materialize(prof, BANK, S3_LAYOUT)
    blocked = [Subtree(depth=2, block=5)]  # level 3 blocks 20..23 (shard 1, rows 4..7)
    leaves = [16, 17, 17, 18, 20, 21, 33, 33, 33, 60]
    with open_bank(S3_LAYOUT, profile=prof, bank=BANK, blocked=blocked) as served:
        index = served.reader.levels[("cloud", 3)].indexes[1]
        forbidden = {(int(index[r, 0]), int(index[r, 0] + index[r, 1] - 1))
                     for r in range(4, 8)}
        s3.proxy.clear_log()
        got = served.fetch_many([leaf_path(x) for x in leaves])
        assert served.stats.requests["cloud"] == 5
        # level 1: 10 for blocks 1, 2, 3; level 2: 8 for 4, 8, 15; level 3: 8 for 5 blocks
        assert served.stats.dedup_requests_saved == 7 + 5 + 3
        requested = list(s3.proxy.requests)
        again = asyncio.run(served.afetch_many([leaf_path(x) for x in leaves[:4]]))
        assert [a[3].tobytes() for a in again] == [g[3].tobytes() for g in got[:4]]
    for leaf, blocks in zip(leaves, got, strict=True):
        if 20 <= leaf < 24:
            assert sorted(blocks) == [1]
        else:
            assert_exact(blocks, leaf_path(leaf))
    ranges = []
    for r in requested:
        assert r.method == "GET" and r.range and r.range.startswith("bytes=")
        a, _, b = r.range[6:].partition("-")
        ranges.append((r.path.rsplit("/L3/", 1)[-1], int(a), int(b)))
    assert len(ranges) == 5 and len(set(ranges)) == 5  # leaves 16, 17, 18, 33, 60
    assert not any(path == "c/1/0" and (a, b) in forbidden for path, a, b in ranges)


def test_errors_are_one_line(local_bank, tmp_path):
    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        for path, message in [([0, 0], "has 3 ids"),
                              ([0, 0, 64], "block 64 is outside 0..63"),
                              ([0, 1, 0], "not under block 1"),
                              ([0.5, 0, 0], "whole cluster ids")]:
            with pytest.raises(InputError, match=message) as err:
                served.fetch(path)
            assert "\n" not in str(err.value)
        with pytest.raises(InputError, match="one sequence"):
            served.fetch([[0, 0, 0]])
        with pytest.raises(InputError, match="equal length|2-D"):
            served.fetch_many([[0, 0, 0], [0, 0]])
        assert served.fetch_many([]) == []
        try:
            import torch  # noqa: F401
        except ImportError:
            with pytest.raises(InputError, match="pip install torch"):
                served.fetch([0, 0, 0], as_="torch")
    with pytest.raises(InputError, match="closed"):
        served.fetch([0, 0, 0])
    empty = local_profile(tmp_path / "nothing")
    materialize(local_profile(tmp_path / "other"), BANK, LAYOUT)  # fills RAM, not these dirs
    with pytest.raises(DataError, match="run `memsim materialize` first") as err:
        open_bank(LAYOUT, profile=empty, bank=BANK)
    assert "\n" not in str(err.value)


def test_a_corrupt_block_is_a_data_error(local_bank, tmp_path):
    shard = tmp_path / "disk" / "L3" / "c" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[3072 * 2 + 10] ^= 0xFF  # inside block 2
    shard.write_bytes(bytes(raw))
    with open_bank(LAYOUT, profile=local_bank, bank=BANK) as served:
        assert_exact(served.fetch(leaf_path(1)), leaf_path(1))
        with pytest.raises(DataError, match="level 3 block 2 on tier 'disk'"):
            served.fetch(leaf_path(2))
    with open_bank(LAYOUT, profile=local_bank, bank=BANK, check=False) as served:
        assert served.fetch(leaf_path(2))[3].tobytes() != want(3, 2).tobytes()
        assert served.stats.checked == 0


def test_paths_per_non_empty_level_and_layout_refs(tmp_path):
    bank = memsim.bank_from_dict({"name": "gap", "branching": 4, "levels": [2, 0, 1],
                                  "anchor": ANCHOR})
    prof = local_profile(tmp_path)
    lay = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 3: "disk"}})
    materialize(prof, bank, lay)
    lay.save(tmp_path / "l.yaml")
    import json

    (tmp_path / "b.yaml").write_text(json.dumps(bank.model_dump(mode="json")))
    (tmp_path / "p.yaml").write_text(json.dumps(prof.model_dump(mode="json",
                                                                exclude_none=True)))
    with open_bank(tmp_path / "l.yaml", profile=tmp_path / "p.yaml",
                   bank=tmp_path / "b.yaml") as served:
        short = served.fetch([2, 41])  # one id per non-empty level (depths 1 and 3)
        full = served.fetch([2, 10, 41])  # one per depth, as a trace row has them
        assert sorted(short) == sorted(full) == [1, 3]
        assert short[3].tobytes() == full[3].tobytes() == SyntheticContent(bank).blocks(
            3, np.array([41]))[0].tobytes()
        with pytest.raises(InputError, match="not under block 3"):
            served.fetch([3, 41])
