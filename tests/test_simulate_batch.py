"""Batches in the simulator: batch=1 is the unbatched run exactly (and so is the batch code
path with batches of one), a batch's reads, requests, hits and deduplication savings equal a
brute-force count over its distinct (level, block)s with the cache driven in the client's
order, and equal the client's own `ServedBank.stats` for the same batches of the same trace;
a closed loop's clients each take the next batch of the sequence and wait for all of it."""

from __future__ import annotations

import copy
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from realio_helpers import fresh_memory  # noqa: F401 (an autouse fixture)
from tiny_bank import BANK, BANK_DICT

import memsim
from memsim.client.bank import open_bank
from memsim.cost_model import request_parts
from memsim.errors import InputError
from memsim.materialize import materialize
from memsim.simulate import simulate
from memsim.simulate.cache import BlockCache
from memsim.simulate.engine import Engine
from memsim.trace import write_trace
from memsim.workload import workload_from_dict

# blocks: level 1 12 KiB (4 of them), level 2 6 KiB (16), level 3 3 KiB (64), bf16
# every tier a memory store: the client's bank is materialized in milliseconds
PROFILE_DICT = {"name": "pb", "tiers": [
    {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"},
    {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
     "concurrency": 4, "max_request_size": "4 KiB", "store": "memory://pb-flash"},
    {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms",
     "concurrency": 2, "store": "memory://pb-disk"},
]}
PROFILE = memsim.profile_from_dict(PROFILE_DICT)
BASE = {"name": "l", "placement": {1: "ram", 2: "flash", 3: "disk"}, "chunking": {3: 16}}
CASES = {  # layout overrides: no cache; LRU + residency; LFU + a blocked subtree; pinned
    "plain": {},
    "lru-resident": {"cache": {"budget": "20 KiB", "policy": "lru"}, "resident": [1]},
    "lfu-blocked": {"cache": {"budget": "15 KiB", "policy": "lfu"},
                    "blocked": [{"level": 2, "block": 5}]},
    "pinned": {"cache": {"budget": "12 KiB", "policy": "pinned", "levels": [2]},
               "resident": [3]},
}


def layout_for(case: str, **extra: object) -> memsim.Layout:
    return memsim.layout_from_dict({**BASE, **CASES[case], **extra})


def leaf_trace(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n queries 10 ms apart (no tier overloaded) whose leaves come mostly from a few
    neighbourhoods (shared upper blocks within a batch, and cache hits across batches)."""
    rng = np.random.default_rng(seed)
    leaves = np.where(rng.random(n) < 0.7, rng.integers(0, 10, n), rng.integers(0, 64, n))
    paths = np.stack([leaves // 16, leaves // 4, leaves], axis=1).astype(np.int64)
    return np.arange(n) * 1e-2, paths


def run(layout: memsim.Layout, trace: tuple[np.ndarray, np.ndarray], batch: int,
        **kwargs: object) -> memsim.SimulationResult:
    return simulate(PROFILE, BANK, layout, trace=trace, queries=len(trace[0]), warmup=0.0,
                    seed=2, batch=batch, **kwargs)


def comparable(result: memsim.SimulationResult) -> dict:
    out = result.to_json()
    out.pop("trace_out")
    return out


@pytest.mark.parametrize("fetch", ["parallel", "sequential"])
@pytest.mark.parametrize("case", ["plain", "lru-resident", "lfu-blocked"])
def test_batch_1_and_batches_of_one_are_the_unbatched_run(case, fetch, monkeypatch):
    layout = layout_for(case, fetch=fetch)
    workload = workload_from_dict({"arrivals": {"kind": "poisson", "rate": "400/s"},
                                   "locality": {"p": 0.6}})
    kwargs = {"queries": 400, "seed": 7, "warmup": 0.2}
    today = simulate(PROFILE, BANK, layout, workload, **kwargs)
    assert comparable(simulate(PROFILE, BANK, layout, workload, batch=1, **kwargs)) == \
        comparable(today)
    assert today.batch == 1 and today.dedup_requests_saved == today.dedup_blocks_saved == 0
    assert today.served.fetches == today.queries  # counted over the measured queries

    # every query through the batch code path, alone in its batch: the same numbers
    def alone(self, index, path, on_done=None):
        self.start_batch([(index, path, self.env.now, on_done)])

    monkeypatch.setattr(Engine, "start_query", alone)
    assert comparable(simulate(PROFILE, BANK, layout, workload, **kwargs)) == comparable(today)


def brute_force(layout: memsim.Layout, paths: np.ndarray, batch: int,
                batches: list[range] | None = None, counted_from: int = 0) -> dict:
    """The client's counters from their definitions: per batch (consecutive chunks of
    `batch`, or `batches`), the set of (level, block) (blocked ones refused per query),
    looked up level by level in increasing id in one BlockCache; a miss is read from its
    tier in its request parts, a hit costs no request; a block shared by c queries saves
    c - 1 reads of the requests it came in. Batches starting before `counted_from` drive
    the cache but are not counted."""
    cache = None
    if layout.cache is not None or layout.resident:
        config = layout.cache
        cache = BlockCache(budget=config.budget if config else 0,
                           policy=config.policy if config else "lru",
                           levels=config.levels if config else [], resident=layout.resident)
    blocked = {(t.level, t.block) for t in layout.blocked}
    tiers = {t.name: t for t in PROFILE.tiers}
    totals = {"fetches": len(paths) - counted_from, "blocks": 0, "reads": 0, "requests": {},
              "bytes": {}, "dedup_blocks_saved": 0, "dedup_requests_saved": 0, "blocked": {},
              "cache_hits": 0, "cache_misses": 0, "resident_hits": 0, "resident_misses": 0}
    ignored = copy.deepcopy(totals)

    def refused(depth: int, block: int) -> bool:
        return any((d, block // 4 ** (depth - d)) in blocked for d in range(1, depth + 1))

    if batches is None:
        batches = [range(lo, min(lo + batch, len(paths))) for lo in range(0, len(paths), batch)]
    for chunk in batches:
        out = totals if chunk.start >= counted_from else ignored
        users: dict[tuple[int, int], int] = {}
        for path in paths[chunk.start:chunk.stop].tolist():
            for depth, block in enumerate(path, start=1):
                if refused(depth, block):
                    out["blocked"][str(depth)] = out["blocked"].get(str(depth), 0) + 1
                else:
                    users[(depth, block)] = users.get((depth, block), 0) + 1
        for depth, block in sorted(users):  # level by level, increasing id
            nbytes = BANK.level(depth).block_bytes
            tier = layout.placement[depth]
            hit = cache is not None and cache.lookup(depth, block)
            if cache is not None and cache.covers(depth):
                kind = "resident" if depth in cache.resident else "cache"
                out[f"{kind}_{'hits' if hit else 'misses'}"] += 1
            if not hit:
                if cache is not None:
                    cache.insert(depth, block, nbytes)
                parts = len(request_parts(tiers[tier], nbytes))
                out["reads"] += 1
                out["requests"][tier] = out["requests"].get(tier, 0) + parts
                out["bytes"][tier] = out["bytes"].get(tier, 0) + nbytes
            else:
                parts = len(request_parts(tiers["ram"], nbytes))
            count = users[(depth, block)]
            out["blocks"] += count
            out["dedup_blocks_saved"] += count - 1
            out["dedup_requests_saved"] += (count - 1) * parts
    out = totals
    lookups = out["cache_hits"] + out["cache_misses"]
    out["cache_hit_ratio"] = out["cache_hits"] / lookups if lookups else None
    return out


@pytest.mark.parametrize("batch", [1, 3, 8, 50])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_batch_counts_its_distinct_blocks_as_a_brute_force_count(case, batch):
    layout = layout_for(case)
    trace = leaf_trace(120, seed=batch)
    result = run(layout, trace, batch)
    expected = brute_force(layout, trace[1], batch)
    assert result.served.to_json() == expected
    if batch > 1:  # shared upper blocks: the batches did save reads (the test can fail)
        assert result.dedup_blocks_saved > 0 and result.dedup_requests_saved > 0
    assert result.queries == 120 and result.batch == batch and not result.unstable


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_simulator_counts_what_the_client_counts_for_the_same_batches(case):
    layout = layout_for(case)
    materialize(PROFILE, BANK, layout_for("plain"))
    trace = leaf_trace(96, seed=11)
    batch = 8
    result = run(layout, trace, batch)
    with open_bank(layout, profile=PROFILE, bank=BANK) as served:
        for start in range(0, len(trace[1]), batch):
            served.fetch_many(trace[1][start:start + batch])
        client = served.stats.to_json()
    simulated = result.served.to_json()
    for key, value in simulated.items():
        assert client[key] == value, key
    assert simulated["dedup_requests_saved"] > 0


def test_a_query_waits_for_its_batch_to_fill():
    """Queries 1 s apart in batches of 4 with nothing to read (every level resident and its
    block the same): the i-th query of a batch waits 3 - i seconds."""
    layout = memsim.layout_from_dict({**BASE, "resident": [1, 2, 3]})
    paths = np.zeros((8, 3), dtype=np.int64)
    result = simulate(PROFILE, BANK, layout, trace=(np.arange(8.0), paths), queries=8,
                      warmup=0.0, batch=4, trace_out=None)
    # the first batch reads each level's block once (a resident miss), the second none
    assert result.served.reads == 3 and result.served.resident_hits == 3
    assert result.fetch_time_s["max"] >= 3.0
    assert result.fetch_time_s["mean"] == pytest.approx(
        np.mean([3.0, 2.0, 1.0, 0.0, 3.0, 2.0, 1.0, 0.0]), abs=0.05)


def test_batches_in_the_trace_out(tmp_path):
    trace = leaf_trace(24, seed=3)
    out = tmp_path / "t.parquet"
    run(layout_for("plain"), trace, 6, trace_out=out)
    fetch = pq.read_table(out).column("fetch_time_s").to_numpy()
    assert np.isfinite(fetch).all()
    # a batch's first query waits 50 ms for its last to arrive, before any block is read
    assert (fetch[::6] >= 50e-3 - 1e-12).all()
    assert (fetch[5::6] < 50e-3).all()  # the last one's clock starts at the release


def test_bad_batches_are_refused():
    trace = leaf_trace(4, seed=0)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InputError) as info:
            run(layout_for("plain"), trace, bad)
        assert info.value.field == "batch"
    # a closed loop takes batches bigger than its clients (each client issues a whole batch)
    closed = workload_from_dict({"arrivals": {"kind": "closed", "clients": 2,
                                              "think_time": "1 ms"}})
    result = simulate(PROFILE, BANK, layout_for("plain"), closed, queries=10, batch=3,
                      warmup=0.0)
    assert result.served.fetches == 10 and result.queries == 10


def closed_batches(n: int, warm: int, batch: int) -> list[range]:
    """The batches a closed loop's clients take: the next `batch` queries of the sequence,
    the warm-up's and the measured ones apart (each set's last may be short)."""
    return [range(lo, min(lo + batch, hi)) for start, hi in ((0, warm), (warm, n))
            for lo in range(start, hi, batch)]


@pytest.mark.parametrize(("clients", "batch", "warmup"), [(1, 4, 0.0), (3, 5, 0.25),
                                                          (2, 12, 0.1), (4, 1, 0.2)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_closed_loops_batches_count_as_a_brute_force_count(case, clients, batch, warmup,
                                                             tmp_path):
    """Each client takes the next batch of the sequence: the batches start in sequence
    order, so the served counters are the brute-force count over those batches with one
    cache driven through all of them (the warm-up's uncounted)."""
    layout = layout_for(case)
    workload = workload_from_dict({"arrivals": {"kind": "closed", "clients": clients,
                                                "think_time": "2 ms"},
                                   "routing": {"kind": "zipf", "s": 1.1, "seed": 3},
                                   "locality": {"p": 0.5}})
    n = 90
    out = tmp_path / "t.parquet"
    result = simulate(PROFILE, BANK, layout, workload, queries=n, seed=4, warmup=warmup,
                      batch=batch, trace_out=out)
    issued, paths = memsim.read_trace(out, BANK)
    warm = int(n * warmup)
    batches = closed_batches(n, warm, batch)
    expected = brute_force(layout, paths, batch, batches=batches, counted_from=warm)
    assert result.served.to_json() == expected
    assert result.queries == n - warm
    if batch > 1:
        assert result.dedup_blocks_saved > 0  # the batches did share blocks
    for b in batches:  # a batch's queries are issued together
        assert (issued[b.start:b.stop] == issued[b.start]).all()


@pytest.mark.parametrize("fetch", ["parallel", "sequential"])
def test_a_closed_loop_client_waits_for_its_whole_batch_then_thinks(fetch, tmp_path):
    """One client, think time 3 ms: each batch is issued 3 ms after the last answer of the
    one before (its slowest query), and the last batch is short."""
    layout = layout_for("plain", fetch=fetch)
    workload = workload_from_dict({"arrivals": {"kind": "closed", "clients": 1,
                                                "think_time": "3 ms"}})
    out = tmp_path / "t.parquet"
    simulate(PROFILE, BANK, layout, workload, queries=23, seed=1, warmup=0.0, batch=5,
             trace_out=out)
    table = pq.read_table(out)
    issued = table.column("arrival_s").to_numpy()
    done = issued + table.column("fetch_time_s").to_numpy()
    batches = closed_batches(23, 0, 5)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert issued[0] == pytest.approx(3e-3)
    for prev, b in zip(batches, batches[1:], strict=False):
        assert (issued[b.start:b.stop] == issued[b.start]).all()
        assert issued[b.start] == pytest.approx(done[prev.start:prev.stop].max() + 3e-3,
                                                rel=1e-9)
    assert len(set(issued.tolist())) == len(batches)


def test_cli_shows_the_savings_when_batching(cli, tmp_path):
    trace_file = tmp_path / "q.parquet"
    write_trace(trace_file, *leaf_trace(40, seed=5))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(PROFILE_DICT))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(BANK_DICT))
    (tmp_path / "l.yaml").write_text(layout_for("plain").to_yaml())
    args = ["simulate", "--profile", str(tmp_path / "p.yaml"), "--bank",
            str(tmp_path / "b.yaml"), "--layout", str(tmp_path / "l.yaml"), "--trace",
            str(trace_file), "--warmup", "0"]
    plain = cli(*args)
    assert plain.exit_code == 0, plain.stderr
    assert "deduplication" not in plain.stdout
    batched = cli(*args, "--batch", "8")
    assert batched.exit_code == 0, batched.stderr
    assert "batches of 8:" in batched.stdout and "deduplication saved" in batched.stdout
    data = json.loads(cli(*args, "--batch", "8", "--json").stdout)
    assert data["batch"] == 8 and data["served"]["dedup_blocks_saved"] > 0
    refused = cli(*args, "--batch", "0")
    assert refused.exit_code != 0 and "--batch" in refused.stderr
