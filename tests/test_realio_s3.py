"""Real-I/O backend on S3: moto behind memsim's delay/fault proxy, started by the fixtures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from realio_helpers import fresh_memory  # noqa: F401 (an autouse fixture)

import memsim
from memsim.aio import run_sync
from memsim.blockmap import Subtree
from memsim.cli import main
from memsim.emulate import Faults
from memsim.errors import StoreError
from memsim.materialize import SyntheticContent, materialize
from memsim.materialize.verify import verify
from memsim.replay import replay
from memsim.replay.reader import BankReader
from memsim.stores import tier_stores

ANCHOR = {"name": "tiny", "layers": 1, "d_model": 512, "d_ff": 1, "heads": 1, "head_dim": 1}
BANK = memsim.bank_from_dict({"name": "tiny", "branching": 4, "levels": [4, 2, 1],
                              "anchor": ANCHOR})
WORKLOAD = memsim.workload_from_dict({"name": "w", "arrivals": {"kind": "poisson",
                                                                "rate": "300/s"}})


@pytest.fixture(autouse=True)
def _clean(clean_s3):
    """Every test here starts on an emulated cloud without faults or logged requests."""


def setup(tmp_path, prefix, timeout="10 s"):
    prof = memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "concurrency": 4,
         "store": f"file://{tmp_path}/flash"},
        {"name": "cloud", "kind": "cloud", "bandwidth": "100 MB/s", "latency": "20 ms",
         "concurrency": 8, "store": f"s3://memsim/{prefix}?timeout={timeout.replace(' ', '')}"},
    ]})
    lay = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "flash", 3: "cloud"},
                                   "chunking": {3: 16}})
    return prof, lay


def test_round_trip_on_s3_bit_for_bit(s3, tmp_path):
    prof, lay = setup(tmp_path, "roundtrip")
    materialize(prof, BANK, lay)
    assert verify(prof, BANK, lay).ok
    stores = tier_stores(prof, ["cloud"])
    reader = BankReader(prof, BANK, lay, stores, check_rate=1.0).open()

    async def read_all():
        return [await reader.read_block(3, b) for b in range(64)]

    got = run_sync(read_all())
    want = SyntheticContent(BANK).blocks(3, np.arange(64))
    assert [g == w.tobytes() for g, w in zip(got, want, strict=True)] == [True] * 64
    arr = zarr.open_array(stores["cloud"].zarr_store(), path="L3", mode="r", zarr_format=3)
    assert np.array_equal(arr[:], want)  # zarr-python agrees
    reader.close()


def test_replay_survives_five_percent_faults(s3, tmp_path):
    prof, lay = setup(tmp_path, "faults")
    materialize(prof, BANK, lay)
    s3.proxy.configure(faults=Faults(rate=0.05, kinds=("503", "reset"), seed=2))
    result = replay(prof, BANK, lay, WORKLOAD, queries=300, check_rate=1.0)
    counts = s3.proxy.counts
    assert counts.get("503", 0) > 0 and counts.get("reset", 0) > 0
    assert result.retries.get("cloud", 0) >= counts["503"] + counts["reset"] - 2
    assert not result.bad_blocks and result.checked_blocks == 900  # no wrong byte
    assert result.queries == 270
    assert set(result.request_errors["cloud"]) <= {"http_503", "http_5xx", "connection",
                                                   "timeout", "short_read", "other"}


def test_stalled_requests_time_out_and_are_retried(s3, tmp_path):
    prof, lay = setup(tmp_path, "stall", timeout="0.5 s")
    materialize(prof, BANK, lay)
    s3.proxy.configure(faults=Faults(rate=0.1, kinds=("stall",), stall_s=3.0, seed=5))
    result = replay(prof, BANK, lay, WORKLOAD, queries=40, check_rate=1.0)
    assert s3.proxy.counts.get("stall", 0) > 0
    assert result.retries["cloud"] >= s3.proxy.counts["stall"] - 1
    assert result.request_errors["cloud"].get("timeout", 0) > 0
    assert not result.bad_blocks


def test_giving_up_after_retries_is_one_clear_error(s3, tmp_path):
    prof, lay = setup(tmp_path, "giveup")
    materialize(prof, BANK, lay)
    s3.proxy.configure(faults=Faults(rate=1.0, kinds=("503",)))
    prof = prof.with_tier("cloud", store="s3://memsim/giveup?retries=2")
    with pytest.raises(StoreError, match="failed after 3 attempts") as err:
        replay(prof, BANK, lay, WORKLOAD, queries=5, preload_index=False)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str(err.value)


def _ranges(records):
    out = []
    for r in records:
        if r.method == "GET" and r.range and r.range.startswith("bytes="):
            a, _, b = r.range[6:].partition("-")
            if a and b:
                out.append((r.path, int(a), int(b)))
    return out


def test_blocked_blocks_never_reach_the_store(s3, tmp_path):
    prof, lay = setup(tmp_path, "acl")
    materialize(prof, BANK, lay)
    blocked = [Subtree(depth=2, block=5)]  # level 3 blocks 20..23: shard 1, rows 4..7
    stores = tier_stores(prof, ["ram", "flash", "cloud"])
    reader = BankReader(prof, BANK, lay, stores).open()
    run_sync(reader.preload_indexes())
    index = reader.levels[("cloud", 3)].indexes[1]
    forbidden = [(int(index[r, 0]), int(index[r, 0] + index[r, 1] - 1)) for r in range(4, 8)]
    reader.close()
    s3.proxy.clear_log()
    result = replay(prof, BANK, lay, WORKLOAD, queries=400, blocked=blocked, check_rate=1.0)
    assert result.blocked_reads[3] > 0 and result.per_level[3]["blocked_fraction"] > 0
    requested = _ranges(s3.proxy.requests)
    assert len(requested) >= 300
    shard1 = [(a, b) for path, a, b in requested if "/L3/c/1/0" in path]
    assert shard1  # other blocks of the same shard were read
    for a, b in shard1:
        assert not any(a <= hi and lo <= b for lo, hi in forbidden), (a, b)


def test_unreachable_endpoint_and_missing_bucket(s3, tmp_path):
    prof, lay = setup(tmp_path, "x")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bad = prof.with_tier("cloud", store=f"s3://memsim/x?endpoint=http://127.0.0.1:{port}")
    with pytest.raises(StoreError, match="cannot reach"):
        materialize(bad, BANK, lay)
    missing = prof.with_tier("cloud", store="s3://no-such-bucket/x")
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist"):
        materialize(missing, BANK, lay)


@pytest.fixture(scope="module")
def strict_s3():
    """A moto server that checks credentials (and knows none), in its own process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_bad_credentials_are_named_but_never_shown(strict_s3, tmp_path, monkeypatch):
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRET"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAMEMSIMBADKEY0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    prof, lay = setup(tmp_path, "auth")
    prof = prof.with_tier("cloud", store=f"s3://memsim/auth?endpoint={strict_s3}")
    with pytest.raises(StoreError, match="denied: check the credentials") as err:
        materialize(prof, BANK, lay)
    assert secret not in str(err.value) and "AKIAMEMSIMBADKEY0001" not in str(err.value)
    (tmp_path / "p.yaml").write_text(json.dumps(prof.model_dump(mode="json", exclude_none=True)))
    (tmp_path / "b.yaml").write_text(json.dumps(BANK.model_dump(mode="json")))
    lay.save(tmp_path / "l.yaml")
    out = CliRunner().invoke(main, ["materialize", "--layout", str(tmp_path / "l.yaml"),
                                    "--profile", str(tmp_path / "p.yaml"),
                                    "--bank", str(tmp_path / "b.yaml")])
    assert out.exit_code == 5, out.output
    assert "denied" in out.output and secret not in out.output
    assert "AKIAMEMSIMBADKEY0001" not in out.output and "Traceback" not in out.output


def test_aws_shared_files_supply_credentials(s3, tmp_path, monkeypatch):
    env = s3.env()
    creds = tmp_path / "credentials"
    creds.write_text(f"[bank]\naws_access_key_id = {env['AWS_ACCESS_KEY_ID']}\n"
                     f"aws_secret_access_key = {env['AWS_SECRET_ACCESS_KEY']}\n")
    config = tmp_path / "config"
    config.write_text(f"[profile bank]\nregion = us-east-1\nendpoint_url = {s3.endpoint}\n")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "bank")
    prof, lay = setup(tmp_path, "shared-files")
    materialize(prof, BANK, lay)
    assert verify(prof, BANK, lay).ok
