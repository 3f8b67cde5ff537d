"""serve-bench: the client in a closed loop of callers. The counters add up, deduplication saves
exactly what a brute-force count over the same seeded batches says, batching saves requests on
a workload with locality, and the command's JSON and one-line errors. With --simulate, the
simulator's closed loop over the same paths and batches predicts exactly the measured requests
per tier and deduplication (no cache; local and memory stores), and with prefetch both sides
report the same policy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from realio_helpers import fresh_memory  # noqa: F401 (an autouse fixture)
from tiny_bank import BANK

import memsim
from memsim.cli import main
from memsim.client.servebench import ServeBenchResult, serve_bench
from memsim.errors import InputError
from memsim.layout import CacheConfig
from memsim.materialize import materialize
from memsim.trace import read_trace, write_trace
from memsim.workload import load_workload

# blocks: level 1 12 KiB (4 of them), level 2 6 KiB (16), level 3 3 KiB (64), bf16
# level 1 in a memory store, levels 2 and 3 in local directories
LAYOUT = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "flash", 3: "disk"},
                                  "chunking": {3: 16}})
TIERS = {1: "ram", 2: "flash", 3: "disk"}


def local_profile(root) -> memsim.Profile:
    """Flash requests of 4 KiB: a level-2 block (6 KiB) is two requests."""
    return memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
         "concurrency": 4, "store": f"file://{root}/flash", "max_request_size": "4 KiB"},
        {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms",
         "concurrency": 2, "store": f"file://{root}/disk"},
    ]})


REQUESTS_PER_BLOCK = {1: 1, 2: 2, 3: 1}


@pytest.fixture
def prof(tmp_path):
    p = local_profile(tmp_path)
    materialize(p, BANK, LAYOUT)
    return p


def simulated_paths(prof, workload: str, queries: int, seed: int, tmp_path) -> np.ndarray:
    """The paths `memsim simulate` draws for the seed (through its trace)."""
    out = tmp_path / f"sim-{workload}-{seed}.parquet"
    memsim.simulate(prof, BANK, LAYOUT, load_workload(workload), queries=queries, seed=seed,
                    warmup=0.0, trace_out=str(out))
    return read_trace(out, BANK)[1]


def brute_force(paths: np.ndarray, warm: int, batch: int) -> tuple[dict[str, int], int]:
    """Requests per tier and requests saved, batch by batch, over the measured queries."""
    requests: dict[str, int] = {}
    saved = 0
    for lo in range(warm, len(paths), batch):  # the warm-up's batches ran first, uncounted
        chunk = paths[lo:lo + batch]
        for depth, tier in TIERS.items():
            distinct = len(set(chunk[:, depth - 1].tolist()))
            requests[tier] = requests.get(tier, 0) + distinct * REQUESTS_PER_BLOCK[depth]
            saved += (len(chunk) - distinct) * REQUESTS_PER_BLOCK[depth]
    return requests, saved


def test_the_numbers_add_up_and_dedup_is_the_brute_force_count(prof, tmp_path):
    queries, batch, seed = 103, 4, 3
    paths = simulated_paths(prof, "zipf-topic", queries, seed, tmp_path)
    requests, saved = brute_force(paths, 10, batch)
    # the batches are the same chunks whoever takes them, tasks or threads
    for callers, mode in [(1, "async"), (3, "async"), (3, "threads")]:
        done: list[int] = []
        r = serve_bench(LAYOUT, profile=prof, bank=BANK, workload="zipf-topic",
                        callers=callers, batch=batch, queries=queries, warmup=0.1, seed=seed,
                        cache=None, mode=mode, progress=done.append)
        assert isinstance(r, ServeBenchResult) and r.mode == mode
        assert sum(done) == queries and max(done) <= batch
        assert (r.queries, r.warmup) == (93, 10)
        assert r.fetch_times.shape == (93,) and np.all(r.fetch_times > 0)
        ft = r.fetch_time_s
        assert ft["p50"] <= ft["p95"] <= ft["p99"] <= ft["max"] and ft["mean"] <= ft["max"]
        assert math.isclose(ft["mean"], float(r.fetch_times.mean()))
        assert r.hit_ratio is None and r.prefetch_hit_ratio is None
        assert r.client["fetches"] == 93 and r.blocks == 93 * 3
        assert r.reads + r.dedup_blocks_saved == r.blocks
        assert r.requests == requests
        assert r.dedup_requests_saved == saved > 0
        assert r.bytes == {TIERS[d]: n * BANK.level(d).block_bytes // REQUESTS_PER_BLOCK[d]
                           for d, n in zip(TIERS, requests.values(), strict=True)}
        assert r.wall_s > 0 and r.throughput_qps == pytest.approx(93 / r.wall_s)


def test_batching_issues_fewer_requests_on_a_workload_with_locality(prof):
    one = serve_bench(LAYOUT, profile=prof, bank=BANK, workload="zipf-topic", batch=1,
                      queries=80, cache=None)
    eight = serve_bench(LAYOUT, profile=prof, bank=BANK, workload="zipf-topic", batch=8,
                        callers=2, queries=80, cache=None)
    assert one.dedup_requests_saved == 0
    assert one.requests_total == 72 * sum(REQUESTS_PER_BLOCK.values())
    assert eight.requests_total < one.requests_total
    assert eight.requests_total + eight.dedup_requests_saved == one.requests_total
    assert eight.blocks == one.blocks == 72 * 3


def test_a_cache_reports_its_hit_ratio(prof):
    r = serve_bench(LAYOUT, profile=prof, bank=BANK, workload="zipf-topic", batch=2,
                    queries=60, cache=CacheConfig(budget="1 MB", policy="lru"))
    assert r.hit_ratio is not None and 0 < r.hit_ratio <= 1
    assert r.client["cache_hits"] > 0 and r.reads < r.blocks


def test_bad_arguments_are_input_errors(prof):
    for kwargs, message in [({"callers": 0}, "callers must be in 1"),
                            ({"batch": 0}, "batch must be in 1"),
                            ({"callers": True}, "callers must be a whole number"),
                            ({"queries": 0}, "queries must be at least 1"),
                            ({"mode": "fork"}, "mode must be one of async, threads"),
                            ({"workload": "zipf-topic", "trace": "t.parquet"},
                             "a workload or a trace")]:
        with pytest.raises(InputError, match=message):
            serve_bench(LAYOUT, profile=prof, bank=BANK, **kwargs)


@pytest.fixture
def files(prof, tmp_path):
    (tmp_path / "p.yaml").write_text(json.dumps(prof.model_dump(mode="json",
                                                                exclude_none=True)))
    (tmp_path / "b.yaml").write_text(json.dumps(BANK.model_dump(mode="json")))
    LAYOUT.save(tmp_path / "l.yaml")
    return ["--layout", str(tmp_path / "l.yaml"), "--profile", str(tmp_path / "p.yaml"),
            "--bank", str(tmp_path / "b.yaml")]


def test_cli_json_text_and_one_line_errors(files, tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["serve-bench", *files, "--workload", "zipf-topic",
                               "--callers", "2", "--batch", "4", "--queries", "50", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert set(data) >= {"callers", "batch", "queries", "warmup", "seed", "wall_s",
                         "throughput_qps", "fetch_time_s", "hit_ratio", "prefetch_hit_ratio",
                         "requests", "bytes", "dedup_requests_saved", "client"}
    assert set(data["fetch_time_s"]) == {"mean", "p50", "p95", "p99", "max"}
    assert (data["queries"], data["warmup"], data["callers"], data["batch"]) == (45, 5, 2, 4)
    assert data["hit_ratio"] is None and data["prefetch_hit_ratio"] is None
    out = runner.invoke(main, ["serve-bench", *files, "--queries", "20", "--mode", "threads",
                               "--store", f"disk=file://{tmp_path}/disk"])
    assert out.exit_code == 0, out.output
    assert "p99" in out.output and "prefetch-hit ratio: -" in out.output
    assert "workload uniform: 1 threads caller" in out.output
    assert "18 queries measured (+2 warm-up)" in out.output
    assert "deduplication saved 0 requests" in out.output
    # a trace's paths, in its order: 8 queries at most, whatever --queries says
    paths = np.array([[0, 0, 0]] * 4 + [[1, 5, 21]] * 4)
    write_trace(tmp_path / "t.parquet", np.arange(8) * 0.1, paths)
    out = runner.invoke(main, ["serve-bench", *files, "--trace", str(tmp_path / "t.parquet"),
                               "--batch", "4", "--warmup", "0", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["queries"] == 8 and data["reads"] == 6 and data["dedup_blocks_saved"] == 18
    assert data["workload"].endswith("t.parquet")
    for args, message in [(["--store", "nope=file:///x"], "unknown tier 'nope'"),
                          (["--callers", "0"], "option '--callers'"),
                          (["--batch", "0"], "option '--batch'"),
                          (["--workload", "zipf-topic", "--trace", "x.parquet"],
                           "--workload or --trace")]:
        out = runner.invoke(main, ["serve-bench", *files, *args])
        assert out.exit_code == 2, out.output
        lines = out.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("memsim: error:"), out.output
        assert message in lines[0]


# ----------------------------------------------------------------------------- --simulate

def memory_profile(name: str) -> memsim.Profile:
    """Every tier a memory store (the bank is written in milliseconds)."""
    return memsim.profile_from_dict({"name": name, "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
         "concurrency": 4, "store": f"memory://{name}-flash", "max_request_size": "4 KiB"},
        {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms",
         "concurrency": 2, "store": f"memory://{name}-disk"},
    ]})


@pytest.mark.parametrize("store", ["local", "memory"])
def test_without_a_cache_predicted_requests_and_dedup_equal_the_measured(store, tmp_path):
    """Requests per tier and deduplication depend only on the batches: the simulator's
    closed loop takes the same batches of the same paths, so they are equal, whatever the
    callers, batch (above the callers too), warm-up and mode; and equal the brute force."""
    if store == "local":
        prof = local_profile(tmp_path)
    else:
        prof = memory_profile("sbm")
    materialize(prof, BANK, LAYOUT)
    paths = simulated_paths(prof, "zipf-topic", 97, 5, tmp_path)
    for callers, batch, warmup, mode in [(1, 1, 0.0, "async"), (3, 4, 0.1, "async"),
                                         (2, 7, 0.2, "threads"), (4, 2, 0.1, "async")]:
        r = serve_bench(LAYOUT, profile=prof, bank=BANK, workload="zipf-topic",
                        callers=callers, batch=batch, queries=97, warmup=warmup, seed=5,
                        cache=None, mode=mode, simulate=True)
        pred = r.predicted
        assert pred is not None and r.simulated is not None
        assert (pred["queries"], pred["warmup"]) == (r.queries, r.warmup)
        assert pred["requests"] == r.requests and pred["bytes"] == r.bytes
        assert pred["dedup_requests_saved"] == r.dedup_requests_saved
        assert pred["dedup_blocks_saved"] == r.dedup_blocks_saved
        assert (pred["blocks"], pred["reads"]) == (r.blocks, r.reads)
        assert (r.requests, r.dedup_requests_saved) == brute_force(paths, r.warmup, batch)
        if batch > 1:
            assert r.dedup_requests_saved > 0  # the test can fail
        assert pred["hit_ratio"] is None and pred["prefetch_hit_ratio"] is None
        assert pred["prefetch"] is None and r.prefetch is None
        ft = pred["fetch_time_s"]
        assert 0 < ft["p50"] <= ft["p99"] <= ft["max"]
        assert r.to_json()["predicted"]["requests"] == r.requests


def test_the_simulator_serves_the_very_paths_given(prof, tmp_path):
    """simulate(paths=...) runs its closed loop over those paths in order (its trace says
    so), the ones serve-bench serves for the seed (what `memsim simulate` draws)."""
    paths = simulated_paths(prof, "zipf-topic", 40, 8, tmp_path)
    loop = memsim.workload_from_dict({"arrivals": {"kind": "closed", "clients": 3,
                                                   "think_time": 0}})
    out = tmp_path / "given.parquet"
    memsim.simulate(prof, BANK, LAYOUT, loop, paths=paths, queries=100, warmup=0.0,
                    batch=4, trace_out=str(out))
    assert np.array_equal(read_trace(out, BANK)[1], paths)
    with pytest.raises(InputError) as info:
        memsim.simulate(prof, BANK, LAYOUT, loop, paths=paths[:, :2], queries=10)
    assert info.value.field == "paths"


@pytest.mark.parametrize("policy", ["children", "trace"])
def test_with_prefetch_both_sides_report_the_same_policy(policy):
    """The layout's prefetch section is the client's and the simulator's, with the same
    parameters (the trace policy following the served sequence on both sides)."""
    prof = memory_profile(f"sbp{policy}")
    lay = memsim.layout_from_dict({**LAYOUT.model_dump(exclude_none=True),
                                   "cache": {"budget": "30 KiB", "policy": "lru"},
                                   "prefetch": {"policy": policy, "max_inflight": 2,
                                                "max_bytes": "12 KiB", "lookahead": 2}})
    materialize(prof, BANK, lay)
    r = serve_bench(lay, profile=prof, bank=BANK, workload="zipf-topic", callers=2, batch=3,
                    queries=60, seed=2, simulate=True)
    expected = {"policy": policy, "max_inflight": 2, "max_bytes": 12 * 1024, "lookahead": 2}
    assert r.prefetch == expected and r.predicted["prefetch"] == expected
    assert r.client["prefetch_issued"] > 0 and r.predicted["served"]["prefetch_issued"] > 0
    assert r.hit_ratio is not None and r.predicted["hit_ratio"] is not None
    assert r.predicted["prefetch_hit_ratio"] is not None
    # an explicit None: neither side prefetches
    off = serve_bench(lay, profile=prof, bank=BANK, workload="zipf-topic", callers=2,
                      batch=3, queries=30, seed=2, simulate=True, prefetch=None)
    assert off.prefetch is None and off.predicted["prefetch"] is None
    assert off.client["prefetch_issued"] == 0


def test_cli_simulate_shows_predicted_beside_measured(files, tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["serve-bench", *files, "--workload", "zipf-topic",
                               "--callers", "2", "--batch", "5", "--queries", "40",
                               "--simulate", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["predicted"]["requests"] == data["requests"]
    assert data["predicted"]["dedup_requests_saved"] == data["dedup_requests_saved"] > 0
    assert set(data["predicted"]["fetch_time_s"]) == {"mean", "p50", "p95", "p99", "max"}
    out = runner.invoke(main, ["serve-bench", *files, "--queries", "20", "--simulate"])
    assert out.exit_code == 0, out.output
    assert "predicted by the simulator: a closed loop of 1 client" in out.stdout
    for row in ("fetch time mean", "fetch time p99", "hit ratio", "prefetch-hit ratio",
                "requests flash", "dedup requests saved"):
        assert row in out.stdout, row
    plain = runner.invoke(main, ["serve-bench", *files, "--queries", "20", "--json"])
    assert "predicted" not in json.loads(plain.stdout)


def test_cli_prefetch_options_and_no_cache(prof, tmp_path):
    lay = memsim.layout_from_dict({**LAYOUT.model_dump(exclude_none=True),
                                   "cache": {"budget": "30 KiB"},
                                   "prefetch": {"policy": "children", "max_inflight": 3}})
    lay.save(tmp_path / "pre.yaml")
    (tmp_path / "p.yaml").write_text(json.dumps(prof.model_dump(mode="json",
                                                                exclude_none=True)))
    (tmp_path / "b.yaml").write_text(json.dumps(BANK.model_dump(mode="json")))
    args = ["serve-bench", "--layout", str(tmp_path / "pre.yaml"), "--profile",
            str(tmp_path / "p.yaml"), "--bank", str(tmp_path / "b.yaml"), "--queries", "30",
            "--workload", "zipf-topic", "--simulate", "--json"]
    runner = CliRunner()

    def data(*extra: str) -> dict:
        out = runner.invoke(main, [*args, *extra])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)

    section = data()
    assert section["prefetch"] == section["predicted"]["prefetch"] == {
        "policy": "children", "max_inflight": 3, "max_bytes": 64 << 20, "lookahead": 1}
    changed = data("--prefetch", "trace", "--prefetch-bytes", "20 KiB")
    assert changed["prefetch"] == changed["predicted"]["prefetch"] == {
        "policy": "trace", "max_inflight": 3, "max_bytes": 20480, "lookahead": 1}
    for extra in (["--prefetch", "none"], ["--no-cache"]):
        off = data(*extra)
        assert off["prefetch"] is None and off["predicted"]["prefetch"] is None
    out = runner.invoke(main, [*args, "--no-cache", "--prefetch", "children"])
    assert out.exit_code == 2 and out.output.startswith("memsim: error: option --prefetch: ")
    assert len(out.output.strip().splitlines()) == 1
