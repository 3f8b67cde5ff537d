"""Real-I/O backend on local directories and memory: materialize, verify, replay, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import memsim
from memsim.cli import main
from memsim.errors import DataError, InputError, StoreError
from memsim.materialize import SyntheticContent, WeightsContent, materialize
from memsim.materialize.verify import verify
from memsim.replay import replay
from memsim.replay.reader import BankReader
from memsim.stores import forget, tier_stores

ANCHOR = {"name": "tiny", "layers": 1, "d_model": 512, "d_ff": 1, "heads": 1, "head_dim": 1}


def tiny_bank(**extra):
    return memsim.bank_from_dict({"name": "tiny", "branching": 4, "levels": [4, 2, 1],
                                  "anchor": ANCHOR, **extra})


def profile_for(root: Path, **ram):
    return memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB", **ram},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
         "concurrency": 4, "store": f"file://{root}/flash", "max_request_size": "4 KiB"},
        {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms",
         "concurrency": 2, "store": f"file://{root}/disk"},
    ]})


def layout(**extra):
    return memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "flash", 3: "disk"},
                                    "chunking": {3: 16}, **extra})


WORKLOAD = {"name": "w", "arrivals": {"kind": "poisson", "rate": "500/s"}}


@pytest.fixture(autouse=True)
def _fresh_memory():
    forget()
    yield
    forget()


def expected(bank, depth, ids):
    return SyntheticContent(bank, 0).blocks(depth, np.asarray(ids))


def test_synthetic_content_is_deterministic_and_plausible_bf16():
    bank = tiny_bank()
    a = expected(bank, 2, [3, 7])
    b = SyntheticContent(bank, 0).blocks(2, np.array([7]))
    assert np.array_equal(a[1], b[0])  # a block's content does not depend on its neighbours
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a, SyntheticContent(bank, 1).blocks(2, np.array([3, 7])))
    values = a.view(ml_dtypes.bfloat16).astype(np.float32)
    assert np.isfinite(values).all() and 0.005 < values.std() < 0.05


def test_round_trip_local_and_memory_bit_for_bit(tmp_path):
    """Every block read back (by memsim's reader and by zarr-python) equals what was written."""
    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    result = materialize(prof, bank, lay)
    assert result.bytes_written == sum(lv.bytes for lv in bank.active_levels)
    stores = tier_stores(prof, ["ram", "flash", "disk"])
    reader = BankReader(prof, bank, lay, stores, check_rate=1.0).open()

    async def read_all():
        return {(lv.depth, blk): await reader.read_block(lv.depth, blk)
                for lv in bank.active_levels for blk in range(lv.blocks)}

    from memsim.aio import run_sync

    got = run_sync(read_all())
    for lv in bank.active_levels:
        want = expected(bank, lv.depth, np.arange(lv.blocks))
        for blk in range(lv.blocks):
            assert got[(lv.depth, blk)] == want[blk].tobytes()
    # zarr-python reads the same arrays (sharded on disk, plain on flash, memory for RAM)
    for tier, depth in (("disk", 3), ("flash", 2), ("ram", 1)):
        arr = zarr.open_array(stores[tier].zarr_store(), path=f"L{depth}", mode="r",
                              zarr_format=3)
        assert np.array_equal(arr[:], expected(bank, depth, np.arange(bank.level(depth).blocks)))
        assert arr.attrs["dtype"] == "bf16"
    assert reader.checked == sum(lv.blocks for lv in bank.active_levels) and not reader.bad
    reader.close()


def test_shard_index_is_read_once_and_blocks_split_at_max_request(tmp_path):
    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    materialize(prof, bank, lay)
    stores = tier_stores(prof, ["ram", "flash", "disk"])
    reader = BankReader(prof, bank, lay, stores).open()
    calls = []
    disk = stores["disk"]
    original = disk.read_suffix

    async def counting(key, length):
        calls.append(key)
        return await original(key, length)

    disk.read_suffix = counting
    from memsim.aio import run_sync

    async def go():
        locs = [await reader.locate(3, b) for b in range(16)]  # all in shard 0
        return locs, await reader.locate(2, 5)

    locs, flash = run_sync(go())
    assert calls == ["L3/c/0/0"]
    assert [loc.ranges[0][0] for loc in locs] == [i * 3072 for i in range(16)]
    assert flash.ranges == ((0, 4096), (4096, 2048))  # 6 KiB block, 4 KiB max request
    reader.close()


def test_verify_names_corrupt_and_missing_blocks(tmp_path):
    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    materialize(prof, bank, lay)
    assert verify(prof, bank, lay).ok
    shard = tmp_path / "disk" / "L3" / "c" / "1" / "0"  # blocks 16..31 of level 3
    raw = bytearray(shard.read_bytes())
    raw[3072 * 5 + 100] ^= 0xFF  # inside block 21
    shard.write_bytes(bytes(raw))
    (tmp_path / "flash" / "L2" / "c" / "9" / "0").unlink()  # block 9 of level 2
    result = verify(prof, bank, lay)
    found = {(b.depth, b.block, b.tier) for b in result.bad}
    assert found == {(3, 21, "disk"), (2, 9, "flash")}
    assert all(str(tmp_path) in b.store for b in result.bad)
    runner = CliRunner()
    lay.save(tmp_path / "l.yaml")
    (tmp_path / "b.yaml").write_text(json.dumps(bank.model_dump(mode="json")))
    prof_file = tmp_path / "p.yaml"
    prof_file.write_text(json.dumps(prof.model_dump(mode="json", exclude_none=True)))
    out = runner.invoke(main, ["verify", "--layout", str(tmp_path / "l.yaml"), "--profile",
                               str(prof_file), "--bank", str(tmp_path / "b.yaml")])
    assert out.exit_code == 6, out.output
    assert "level 3 block 21 on tier 'disk'" in out.output
    assert "level 2 block 9 on tier 'flash'" in out.output
    assert "Traceback" not in out.output


def test_replay_reports_bad_blocks_it_meets(tmp_path):
    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    materialize(prof, bank, lay)
    for i in range(16):
        (tmp_path / "flash" / "L2" / "c" / str(i) / "0").write_bytes(b"\0" * 6144)
    wl = memsim.workload_from_dict(WORKLOAD)
    result = replay(prof, bank, lay, wl, queries=50, check_rate=1.0)
    assert result.bad_blocks and {b.depth for b in result.bad_blocks} == {2}
    assert result.queries == 45


def test_replay_statistics_and_trace(tmp_path):
    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    materialize(prof, bank, lay)
    wl = memsim.workload_from_dict(WORKLOAD)
    out = tmp_path / "t.parquet"
    result = replay(prof, bank, lay, wl, queries=200, seed=3, check_rate=1.0, trace_out=out)
    sim = memsim.simulate(prof, bank, lay, wl, queries=200, seed=3, trace_out=tmp_path / "s.pq")
    assert set(result.to_json()) >= set(sim.to_json())  # the same keys, plus `replay`
    assert result.queries == 180 and not result.bad_blocks
    assert result.checked_blocks == 600 and result.read_mode["disk"] in ("o_direct", "fadvise")
    assert result.per_tier["disk"]["requests"] == 200
    assert result.per_tier["flash"]["requests"] == 400  # 6 KiB blocks in 4 KiB requests
    table = memsim.read_trace(out, bank)
    simulated = memsim.read_trace(tmp_path / "s.pq", bank)
    assert np.array_equal(table[1], simulated[1])  # same paths as the simulator, same seed
    # and the same arrivals, as replay really issued them: a timer fires up to a millisecond
    # or two late (more on a busy machine), never early
    lateness = table[0] - simulated[0]
    assert (lateness >= -1e-6).all() and np.median(lateness) < 0.005
    assert result.arrival_lag_s["p50"] == pytest.approx(np.median(lateness), abs=1e-6)
    assert result.arrival_lag_s["max"] == pytest.approx(lateness.max(), abs=1e-6)
    import pyarrow.parquet as pq

    fetch = pq.read_table(out).column("fetch_time_s").to_numpy()
    assert (fetch > 0).all() and np.isclose(np.mean(fetch[20:]), result.mean_s)


def test_policy_blocks_reads_in_the_reader(tmp_path):
    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    materialize(prof, bank, lay)
    stores = tier_stores(prof, ["ram", "flash", "disk"])
    asked = []
    for store in stores.values():
        original = store.read_range

        async def logged(key, start, length, original=original):
            asked.append((key, start, length))
            return await original(key, start, length)

        store.read_range = logged
    blocked = [memsim.blockmap.Subtree(depth=2, block=1)]  # level 2 block 1, level 3 4..7
    reader = BankReader(prof, bank, lay, stores, blocked=blocked).open()
    from memsim.aio import run_sync

    async def go():
        got = [await reader.read_block(3, b) for b in range(16)]
        got.append(await reader.read_block(2, 1))
        return got

    got = run_sync(go())
    assert [g is None for g in got] == [4 <= b < 8 for b in range(16)] + [True]
    assert reader.blocked_reads == {3: 4, 2: 1}
    index = reader.levels[("disk", 3)].indexes[0]
    blocked_ranges = {(int(index[b, 0]), int(index[b, 1])) for b in range(4, 8)}
    assert asked and not any((s, n) in blocked_ranges for _k, s, n in asked)
    assert not any(k.startswith("L2/c/1/") for k, _s, _n in asked)
    reader.close()


def test_policy_file_and_replay_count_blocked(tmp_path):
    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    materialize(prof, bank, lay)
    wl = memsim.workload_from_dict(WORKLOAD)
    from memsim.cli.realio import load_policy

    policy = tmp_path / "policy.yaml"
    policy.write_text("blocked:\n  - {level: 1, block: 0}\n")
    result = replay(prof, bank, lay, wl, queries=400, blocked=load_policy(str(policy), bank))
    frac = result.per_level[2]["blocked_fraction"]
    assert 0.15 < frac < 0.35  # a quarter of uniform queries route under block 0 of level 1
    assert result.per_level[3]["blocked_fraction"] == frac
    policy.write_text("blocked:\n  - {level: 1, block: 9}\n")
    with pytest.raises(InputError) as err:
        load_policy(str(policy), bank)
    assert "policy.yaml:2" in str(err.value)


def test_resume_skips_finished_units_and_rewrites_unfinished(tmp_path):
    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    materialize(prof, bank, lay)
    # pretend the run died after writing data but before the manifest of level 2, unit 0
    (tmp_path / "flash" / "L2.crc32c" / "c" / "0").unlink()
    (tmp_path / "flash" / "L2" / "c" / "3" / "0").write_bytes(b"garbage")
    leftover = tmp_path / "disk" / "L3" / "c" / "0" / "0.abc.partial"
    leftover.write_bytes(b"half")
    disk_shard = tmp_path / "disk" / "L3" / "c" / "2" / "0"
    before = disk_shard.stat().st_mtime_ns
    time.sleep(0.01)
    again = materialize(prof, bank, lay)
    assert again.tiers["flash"].bytes_written == bank.level(2).bytes
    assert again.tiers["disk"].bytes_written == 0 and again.tiers["disk"].units_skipped == 1
    assert disk_shard.stat().st_mtime_ns == before
    assert not leftover.exists() and again.tiers["disk"].partial_removed == 1
    assert verify(prof, bank, lay).ok


def mid_bank_setup(root):
    """A 44 MB bank over two local tiers: big enough that a kill lands mid-write."""
    bank = memsim.bank_from_dict({"name": "mid", "branching": 8, "levels": [16, 4, 1],
                                  "anchor": {"name": "m", "layers": 1, "d_model": 8192,
                                             "d_ff": 1, "heads": 1, "head_dim": 1}})
    prof = memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s",
         "store": f"file://{root}/flash"},
        {"name": "disk", "kind": "disk", "bandwidth": "1 GB/s", "store": f"file://{root}/disk"}]})
    lay = memsim.layout_from_dict({"name": "l", "placement": {1: "flash", 2: "flash", 3: "disk"},
                                   "chunking": {3: 8}})
    return bank, prof, lay


KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from test_realio import mid_bank_setup
    from memsim.materialize import materialize
    print("start", flush=True)
    bank, prof, lay = mid_bank_setup(sys.argv[1])
    materialize(prof, bank, lay)
    print("done", flush=True)
""")


def test_kill_9_during_materialize_then_rerun_passes_verify(tmp_path):
    script = tmp_path / "m.py"
    script.write_text(KILL_SCRIPT)
    root = tmp_path / "bank"
    here = str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, str(script), str(root), here],
                            stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    shards = root / "disk" / "L3" / "c"
    while time.monotonic() < deadline:  # kill once level 3 is partly written
        if shards.is_dir() and len(list(shards.iterdir())) >= 3:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = {p: p.stat().st_mtime_ns for p in (root / "disk" / "L3.crc32c" / "c").iterdir()
                   } if (root / "disk" / "L3.crc32c" / "c").is_dir() else {}
    total = 512
    assert len(done_before) < total // 8  # it really was interrupted
    rerun = subprocess.run([sys.executable, str(script), str(root), here],
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0 and "done" in rerun.stdout, rerun.stderr
    bank, prof, lay = mid_bank_setup(root)
    result = verify(prof, bank, lay)
    assert result.ok, [str(b) for b in result.bad[:5]]
    assert sum(result.checked.values()) == 8 + 64 + 512
    for path, mtime in done_before.items():  # finished units were not rewritten
        assert path.stat().st_mtime_ns == mtime


def test_weights_npy_and_safetensors(tmp_path):
    bank = tiny_bank()
    prof, lay = profile_for(tmp_path / "a"), layout()
    total = sum(lv.blocks * lv.block_params for lv in bank.active_levels)
    rng = np.random.default_rng(1)
    flat = rng.normal(0, 0.02, total).astype(np.float32)
    np.save(tmp_path / "w.npy", flat)
    materialize(prof, bank, lay, content=WeightsContent(bank, tmp_path / "w.npy"))
    stores = tier_stores(prof, ["disk"])
    arr = zarr.open_array(stores["disk"].zarr_store(), path="L3", mode="r", zarr_format=3)
    offset = sum(lv.blocks * lv.block_params for lv in bank.active_levels if lv.depth < 3)
    want = flat[offset:].astype(ml_dtypes.bfloat16).view(np.uint16).reshape(64, -1)
    assert np.array_equal(arr[:], want)
    from safetensors.numpy import save_file

    tensors = {f"L{lv.depth}": rng.normal(0, 1, (lv.blocks, lv.block_params)).astype(
        ml_dtypes.bfloat16) for lv in bank.active_levels}
    save_file(tensors, tmp_path / "w.safetensors")
    prof_b = profile_for(tmp_path / "b")
    materialize(prof_b, bank, lay, content=WeightsContent(bank, tmp_path / "w.safetensors"))
    arr = zarr.open_array(tier_stores(prof_b, ["flash"])["flash"].zarr_store(), path="L2",
                          mode="r", zarr_format=3)
    assert np.array_equal(arr[:], tensors["L2"].view(np.uint16))
    assert verify(prof_b, bank, lay).ok
    np.save(tmp_path / "short.npy", flat[:-1])
    with pytest.raises(InputError, match="holds"):
        WeightsContent(bank, tmp_path / "short.npy")
    save_file({"L1": tensors["L1"]}, tmp_path / "partial.safetensors")
    with pytest.raises(InputError, match="no tensor 'L2'"):
        WeightsContent(bank, tmp_path / "partial.safetensors")


def test_store_errors_are_clear(tmp_path, monkeypatch):
    bank, lay = tiny_bank(), layout()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root writes anywhere: /sys refuses even root
            ro = Path("/sys/memsim-test-store")
        with pytest.raises(StoreError, match="permission denied|not permitted"):
            materialize(profile_for(ro), bank, lay)
    finally:
        (tmp_path / "ro").chmod(0o700)
    prof = profile_for(tmp_path / "full")
    from memsim.stores.local import LocalByteStore

    async def tiny_disk(self):
        return 1000

    monkeypatch.setattr(LocalByteStore, "free_bytes", tiny_disk)
    with pytest.raises(StoreError, match="needs .* more but has"):
        materialize(prof, bank, lay)


def test_disk_full_mid_write_is_a_store_error(tmp_path, monkeypatch):
    import errno

    import zarr.storage._local as zlocal

    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zlocal, "_put", full)
    with pytest.raises(StoreError, match="no space left"):
        materialize(prof, bank, lay)


def test_refuses_foreign_or_different_data(tmp_path):
    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    (tmp_path / "disk").mkdir()
    (tmp_path / "disk" / "precious.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not empty"):
        materialize(prof, bank, lay)
    assert (tmp_path / "disk" / "precious.txt").read_text() == "keep me"
    (tmp_path / "disk" / "precious.txt").unlink()
    materialize(prof, bank, lay)
    with pytest.raises(StoreError, match="different bank"):
        materialize(prof, bank, lay, content=SyntheticContent(bank, 7))
    materialize(prof, bank, lay, content=SyntheticContent(bank, 7), overwrite=True)
    assert verify(prof, bank, lay).ok


def test_missing_store_and_unmaterialized_bank(tmp_path):
    bank, lay = tiny_bank(), layout()
    prof = memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s"},
        {"name": "disk", "kind": "disk", "bandwidth": "1 GB/s"}]})
    with pytest.raises(InputError, match="tier 'flash' has no store"):
        materialize(prof, bank, lay)
    with pytest.raises(DataError, match="run `memsim materialize` first"):
        replay(prof, bank, lay, memsim.workload_from_dict(WORKLOAD), queries=5,
               stores={"flash": f"file://{tmp_path}/f", "disk": f"file://{tmp_path}/d"})
    with pytest.raises(InputError, match="share the store"):
        materialize(prof, bank, lay, stores={"flash": f"file://{tmp_path}/x",
                                             "disk": f"file://{tmp_path}/x"})


def test_cli_materialize_replay_and_bad_input(tmp_path):
    bank, prof, lay = tiny_bank(), profile_for(tmp_path / "s"), layout()
    (tmp_path / "p.yaml").write_text(json.dumps(prof.model_dump(mode="json", exclude_none=True)))
    (tmp_path / "b.yaml").write_text(json.dumps(bank.model_dump(mode="json")))
    lay.save(tmp_path / "l.yaml")
    (tmp_path / "w.yaml").write_text(json.dumps(WORKLOAD))
    base = ["--layout", str(tmp_path / "l.yaml"), "--profile", str(tmp_path / "p.yaml"),
            "--bank", str(tmp_path / "b.yaml")]
    runner = CliRunner()
    out = runner.invoke(main, ["materialize", *base, "--store", f"disk=file://{tmp_path}/d2"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "d2" / "L3" / "zarr.json").exists()
    out = runner.invoke(main, ["replay", *base, "--store", f"disk=file://{tmp_path}/d2",
                               "--workload", str(tmp_path / "w.yaml"), "--queries", "50",
                               "--json", "--check-rate", "1"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["queries"] == 45 and data["replay"]["checked_blocks"] == 150
    assert data["fetch_time_s"]["mean"] > 0
    for args, message in [
        (["--store", "nope=file:///x"], "unknown tier 'nope'"),
        (["--store", "disk"], "expected TIER=URL"),
        (["--store", "disk=ftp://x"], "not supported"),
        (["--store", "disk=s3://key:secret@bucket/x"], "must not contain credentials"),
    ]:
        out = runner.invoke(main, ["materialize", *base, *args])
        assert out.exit_code == 2 and message in out.output, out.output
        assert "Traceback" not in out.output and "secret" not in out.output.replace(
            "must not contain credentials", "")


def test_closed_loop_replay(tmp_path):
    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    materialize(prof, bank, lay)
    wl = memsim.load_workload("closed-8")
    result = replay(prof, bank, lay, wl, queries=120, warmup=0.0, check_rate=1.0,
                    trace_out=tmp_path / "c.parquet")
    assert result.queries == 120 and result.checked_blocks == 360 and not result.unstable
    arrivals, _paths = memsim.read_trace(tmp_path / "c.parquet", bank)
    assert np.all(np.diff(np.sort(arrivals)) >= 0) and arrivals.max() <= result.wall_s


def test_a_local_tier_serves_at_most_concurrency_requests(tmp_path, monkeypatch):
    """The client's channels are the tier's: the disk tier (concurrency 2) never has more
    than 2 reads in flight, and queued reads show up as waiting time."""
    import threading

    import memsim.client.bank as client_bank

    bank, prof, lay = tiny_bank(), profile_for(tmp_path), layout()
    materialize(prof, bank, lay)
    lock, inflight, peak = threading.Lock(), {}, {}
    original = client_bank._pread_into

    def slow(store, *args):
        with lock:
            inflight[store.url] = inflight.get(store.url, 0) + 1
            peak[store.url] = max(peak.get(store.url, 0), inflight[store.url])
        time.sleep(0.01)
        try:
            return original(store, *args)
        finally:
            with lock:
                inflight[store.url] -= 1

    monkeypatch.setattr(client_bank, "_pread_into", slow)
    wl = memsim.workload_from_dict({"name": "w", "arrivals": {"kind": "poisson",
                                                              "rate": "1000/s"}})
    result = replay(prof, bank, lay, wl, queries=60, check_rate=0.0)
    assert peak == {f"file://{tmp_path}/flash": 4, f"file://{tmp_path}/disk": 2}
    assert result.per_tier["disk"]["wait_s"] > 0.01
    assert result.per_tier["disk"]["time_s"] >= 0.01
