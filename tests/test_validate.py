"""Validate: the metrics by hand, end-to-end runs on local stores and the emulated cloud, and
the command. How close the simulator comes to real reads on this machine (calibrate, then
validate at moderate load) is timing, not machinery: benchmarks/bench_validate.py prints it."""

from __future__ import annotations

import asyncio
import json
import math
import random
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

import memsim
from memsim.aio import run_sync
from memsim.blockmap import BlockMap
from memsim.cli.validate import validate_cmd
from memsim.errors import InputError
from memsim.materialize import materialize
from memsim.replay import replay
from memsim.simulate import plan_queries
from memsim.stores import forget, open_store
from memsim.validate import ValidationResult, compare_replay, tier_sources, validate
from memsim.validate.metrics import compare, demerit, empirical_quantiles, quantile_error

TINY = {"name": "tiny", "layers": 1, "d_model": 512, "d_ff": 1, "heads": 1, "head_dim": 1}
WIDE = {"name": "wide", "layers": 1, "d_model": 8192, "d_ff": 1, "heads": 1, "head_dim": 1}
KEYS = {"p50_error", "p99_error", "demerit", "real_p50_s", "sim_p50_s", "real_p99_s",
        "sim_p99_s", "samples"}


@pytest.fixture(autouse=True)
def _fresh_memory():
    forget()
    yield
    forget()


def tiny_bank() -> memsim.Bank:
    """Blocks of 12, 6 and 3 kB (branching 4): 4, 16 and 64 blocks."""
    return memsim.bank_from_dict({"name": "tiny", "branching": 4, "levels": [4, 2, 1],
                                  "anchor": TINY})


def local_profile(root: Path, disk_latency: object = "300 us") -> memsim.Profile:
    return memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "200 us",
         "concurrency": 4, "store": f"file://{root}/flash"},
        {"name": "disk", "kind": "disk", "bandwidth": "500 MB/s", "latency": disk_latency,
         "concurrency": 2, "store": f"file://{root}/disk"},
    ]})


def local_layout(**extra: object) -> memsim.Layout:
    return memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "flash", 3: "disk"},
                                    **extra})


def poisson(rate: float) -> memsim.Workload:
    return memsim.workload_from_dict({"name": f"poisson-{rate:g}",
                                      "arrivals": {"kind": "poisson", "rate": f"{rate}/s"}})


def quantile_latency(times: np.ndarray) -> dict[str, object]:
    """An empirical latency from measured times (p5..p95: a few stalls should not decide)."""
    qs = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
    return {"quantiles": {f"p{round(q * 100)}": float(v)
                          for q, v in zip(qs, np.quantile(times, qs), strict=True)}}


async def _alone(url: str, keys: list[str], nbytes: int, n: int, cold: bool = True,
                 gap: float = 0.01) -> np.ndarray:
    """Times of `n` reads one at a time, as replay times them (until the bytes are in memory),
    `gap` seconds apart, of random blocks."""
    store = open_store(url, cold=cold, threads=1)
    rng = random.Random(0)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            got = await store.read_range_timed(keys[rng.randrange(len(keys))], 0, nbytes)
            out.append(got.done - t0)
            if hasattr(store, "release"):
                store.release(got.data)
            await asyncio.sleep(gap)
    finally:
        store.close()
    return np.asarray(out)


# ----------------------------------------------------------------------------- metrics


def test_demerit_of_identical_samples_is_zero():
    x = np.random.default_rng(1).lognormal(0, 1, 777)
    assert demerit(x, x) == 0.0
    assert demerit(x, np.random.default_rng(2).permutation(x)) == 0.0


def test_demerit_of_a_shift_is_the_shift_over_the_mean():
    x = np.random.default_rng(3).exponential(2.0, 1001)
    for d in (0.5, -0.25, 3.0):
        assert demerit(x, x + d) == pytest.approx(abs(d) / x.mean(), rel=1e-9)


def test_demerit_by_hand():
    # Q_sim = 2 Q_real everywhere: RMS gap = sqrt(mean(x^2)) = sqrt(30/4), mean 2.5
    assert demerit([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(math.sqrt(7.5) / 2.5, rel=1e-12)
    # Q_real = 1 on (0, .5], 2 after; Q_sim = 1, 2, 3, 4 on quarters: gaps 0, 1, 1, 2
    assert demerit([1, 2], [1, 2, 3, 4]) == pytest.approx(math.sqrt(6 / 4) / 1.5, rel=1e-12)
    # the order of the samples and their sizes do not matter, only their distributions
    assert demerit([2, 1], [4, 3, 2, 1, 4, 3, 2, 1]) == pytest.approx(math.sqrt(1.5) / 1.5)
    assert empirical_quantiles([3, 1, 2], np.array([0.1, 1 / 3, 0.34, 0.9, 1.0])).tolist() == [
        1, 1, 2, 3, 3]


def test_quantile_errors_by_hand():
    real = np.arange(1, 101, dtype=float)  # p50 = 50.5, p99 = 99.01 (linear interpolation)
    assert quantile_error(real, real * 1.1, 0.5) == pytest.approx(0.1)
    assert quantile_error(real, real + 10, 0.5) == pytest.approx(10 / 50.5)
    assert quantile_error(real, real + 10, 0.99) == pytest.approx(10 / 99.01)
    assert quantile_error(real, real - 5, 0.99) == pytest.approx(-5 / 99.01)
    c = compare(real, real + 10)
    assert (c.real_p50_s, c.sim_p50_s) == pytest.approx((50.5, 60.5))
    assert (c.real_p99_s, c.sim_p99_s) == pytest.approx((99.01, 109.01))
    assert c.demerit == pytest.approx(10 / 50.5) and c.samples == 100
    assert set(c.to_json()) >= KEYS
    assert quantile_error([0.0, 0.0], [1.0, 1.0], 0.5) == math.inf
    with pytest.raises(ValueError, match="empty"):
        compare([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        demerit([1.0, math.nan], [1.0])


def test_tier_sources_follow_block_map_residency_and_cache():
    bank = tiny_bank()
    prof = local_profile(Path("/nonexistent"))
    names = prof.tier_names
    block_map = BlockMap(tiers=names)
    block_map.set_level(3, np.array([0, 5]), np.array([names.index("flash")] * 2))
    lay = local_layout(resident=[1], cache={"budget": "7 kB", "levels": [3]}).with_block_map(
        block_map)
    # query paths (depth 1..3); level 3 blocks 0 and 5 live on flash
    paths = np.array([[0, 0, 0], [0, 1, 5], [0, 0, 0], [1, 4, 17], [0, 1, 5], [0, 0, 1]])
    src = tier_sources(prof, bank, lay, paths)
    ram, flash, disk = (names.index(t) for t in ("ram", "flash", "disk"))
    assert src[:, 0].tolist() == [-1] * 6  # resident: no tier samples
    assert src[:, 1].tolist() == [flash] * 6
    # level 3: a 3 kB block fits twice in the 7 kB LRU cache: 0 miss, 5 miss, 0 hit, 17 miss
    # (evicts 5), 5 miss (evicts 0), 1 miss
    assert src[:, 2].tolist() == [flash, flash, ram, disk, flash, disk]


# ----------------------------------------------------------------------------- end to end


def test_validate_end_to_end_on_local_stores(tmp_path):
    bank, prof = tiny_bank(), local_profile(tmp_path)
    names = prof.tier_names
    block_map = BlockMap(tiers=names)
    even = np.arange(0, 64, 2)
    block_map.set_level(3, even, np.full(even.size, names.index("flash")))
    lay = local_layout().with_block_map(block_map)
    materialize(prof, bank, lay)
    wl = poisson(300)
    result = validate(prof, bank, lay, wl, queries=240, seed=4)
    assert isinstance(result, ValidationResult)
    assert result.real.queries == result.simulated.queries == 216
    # every measured (query, level) is a sample of its level and of the tier it was read from
    paths = plan_queries(bank, wl, None, 240, 4, 0.1).paths
    on_flash = sum(int(paths(i)[2] % 2 == 0) for i in range(24, 240))
    assert {d: c.samples for d, c in result.per_level.items()} == {1: 216, 2: 216, 3: 216}
    assert {t: c.samples for t, c in result.per_tier.items()} == {
        "ram": 216, "flash": 216 + on_flash, "disk": 216 - on_flash}
    assert result.level_tiers == {1: "ram", 2: "flash", 3: "flash+disk"}
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert set(data["per_tier"]) == {"ram", "flash", "disk"}
    assert set(data["per_level"]) == {"1", "2", "3"}
    for entry in [*data["per_tier"].values(), *data["per_level"].values(), data["fetch"]]:
        assert set(entry) >= KEYS
        assert all(math.isfinite(entry[k]) for k in KEYS)
        assert entry["samples"] > 0 and entry["real_p50_s"] > 0 and entry["sim_p50_s"] > 0
    assert data["utilization"]["real"]["disk"] > 0 and data["utilization"]["simulated"]["disk"]
    assert data["real"]["replay"]["bad_blocks"] == [] and "trace_out" not in data["real"]
    assert isinstance(data["meets_targets"], bool)
    text = result.text()
    assert "real p50" in text and "demerit" in text and "verdict:" in text
    png = result.plot(tmp_path / "out" / "cdf.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["cdf.png"]


def test_closed_loop_is_simulated_at_replays_issue_times(tmp_path):
    bank, prof, lay = tiny_bank(), local_profile(tmp_path), local_layout()
    materialize(prof, bank, lay)
    wl = memsim.workload_from_dict({"name": "c", "arrivals": {
        "kind": "closed", "clients": 4, "think_time": {"distribution": "exponential",
                                                       "mean": "5 ms"}}})
    result = validate(prof, bank, lay, wl, queries=150, seed=1)
    assert result.real.queries == result.simulated.queries == 135
    assert result.per_level[3].samples == 135
    # the simulated queries arrive when replay issued them, so both runs span about as long
    assert result.simulated.simulated_s == pytest.approx(result.real.wall_s, rel=0.3)


def test_the_metric_can_fail_a_wrong_profile(tmp_path):
    """One real run, two models: the disk tier's latency hand-calibrated, or 10x too high."""
    bank = tiny_bank()
    lay = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "flash", 3: "disk"}})
    prof = local_profile(tmp_path)
    materialize(prof, bank, lay)
    keys = [f"L3/c/{b}/0" for b in range(64)]
    alone = run_sync(_alone(f"file://{tmp_path}/disk", keys, bank.level(3).block_bytes, 40))
    good = prof.with_tier("disk", latency=quantile_latency(alone), bandwidth="1 TB/s")
    wrong = prof.with_tier("disk", latency=quantile_latency(alone * 10), bandwidth="1 TB/s")
    trace = tmp_path / "real.parquet"
    real = replay(good, bank, lay, poisson(100), queries=200, seed=1, check_rate=0.0,
                  trace_out=trace)
    fine = compare_replay(good, bank, lay, real, trace, "poisson-100", seed=1)
    bad = compare_replay(wrong, bank, lay, real, trace, "poisson-100", seed=1)
    # +100% to +900%, by how much of the real time the disk's latency is (a busy machine
    # makes real reads slower than the calibration, which shrinks the 10x, hence the margin)
    assert bad.per_tier["disk"].p50_error > 1.0
    assert bad.per_tier["disk"].demerit > 1.0
    assert abs(fine.per_tier["disk"].p50_error) < bad.per_tier["disk"].p50_error / 2
    assert not bad.meets_targets
    assert any("tier disk: median error" in m for m in bad.misses())


@pytest.fixture
def local_s3():
    """The emulated cloud in this process (moto behind the delay proxy); stopped after its
    test, so that its threads never share this process with a timed run."""
    from memsim.emulate import LocalS3
    with LocalS3(delay=0.02, bandwidth=100e6) as server, pytest.MonkeyPatch.context() as env:
        for key, value in server.env().items():
            env.setenv(key, value)
        yield server


def test_validate_end_to_end_on_the_emulated_cloud(local_s3, tmp_path):
    bank = tiny_bank()
    prof = memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "300 us",
         "concurrency": 4, "store": f"file://{tmp_path}/flash"},
        {"name": "cloud", "kind": "cloud", "bandwidth": "100 MB/s", "latency": "46 ms",
         "concurrency": 8, "store": "s3://memsim/validate-e2e"},
    ]})
    lay = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "flash", 3: "cloud"},
                                   "chunking": {3: 16}})
    materialize(prof, bank, lay)
    result = validate(prof, bank, lay, poisson(40), queries=80, seed=2)
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert set(data["per_tier"]) == {"ram", "flash", "cloud"}
    cloud = data["per_tier"]["cloud"]
    assert set(cloud) >= KEYS and cloud["samples"] == 72
    assert all(math.isfinite(cloud[k]) for k in KEYS)
    assert 0.04 < cloud["real_p50_s"] < 1.0 and 0.04 < cloud["sim_p50_s"] < 0.06
    assert data["real"]["replay"]["read_mode"]["cloud"] == "s3"


def test_validate_drives_the_client_and_predicts_its_prefetch(local_s3, tmp_path,
                                                              monkeypatch):
    """validate's reads are the client's (ServedBank.afetch, once per query), and with
    prefetch the simulator, driving the same policy, counts the same cache and prefetch hits.
    A closed loop of one client whose think time outlasts every read makes those counts
    independent of timing: each query's prefetches are issued before the next query starts,
    and the budget (16 reads) never binds."""
    from memsim.client.bank import ServedBank
    from memsim.client.prefetch import PrefetchConfig

    bank = tiny_bank()
    prof = memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "cloud", "kind": "cloud", "bandwidth": "100 MB/s", "latency": "46 ms",
         "concurrency": 8, "store": "s3://memsim/validate-prefetch"},
    ]})
    lay = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "cloud",
                                                              3: "cloud"},
                                   "cache": {"budget": "150 kB"}})
    materialize(prof, bank, lay)
    wl = memsim.workload_from_dict({"name": "topics", "arrivals": {
        "kind": "closed", "clients": 1, "think_time": "120 ms"},
        "routing": {"kind": "zipf", "s": 1.0}, "locality": {"p": 0.9, "depth": 2}})
    calls = [0]
    afetch = ServedBank.afetch

    async def counted(self, *args, **kwargs):
        calls[0] += 1
        return await afetch(self, *args, **kwargs)

    monkeypatch.setattr(ServedBank, "afetch", counted)
    config = PrefetchConfig("children", max_inflight=16, max_bytes=1 << 20, workload=wl)
    runs = {}
    for name, prefetch in (("none", None), ("children", config)):
        calls[0] = 0
        runs[name] = validate(prof, bank, lay, wl, queries=24, seed=5, warmup=0.0,
                              prefetch=prefetch)
        assert calls[0] == 24
    plain, ahead = runs["none"], runs["children"]
    assert ahead.real.prefetch_config is config and plain.real.prefetch_config is None
    assert "prefetch hit ratio" not in plain.ratios
    real, sim = ahead.real.served, ahead.simulated.served
    assert real.prefetch_issued > 0 and real.prefetch_hits > 0
    counted_fields = ("prefetch_issued", "prefetch_hits", "prefetch_wasted", "cache_hits",
                      "cache_misses", "reads")
    assert {f: getattr(real, f) for f in counted_fields} == \
        {f: getattr(sim, f) for f in counted_fields}
    assert ahead.ratios["prefetch hit ratio"].error == 0
    assert ahead.ratios["cache hit ratio"].error == 0
    assert ahead.real.cache_hit_ratio > plain.real.cache_hit_ratio
    # every cloud request the client made is one the simulator made (demand and prefetch)
    assert real.requests == sim.requests
    data = json.loads(json.dumps(ahead.to_json(), allow_nan=False))
    assert set(data["ratios"]) == {"mean_fetch_time", "cache_hit_ratio", "prefetch_hit_ratio"}
    assert "prefetch hit ratio" in ahead.text()


# ----------------------------------------------------------------------------- command


def _group() -> click.Group:
    group = click.Group()
    group.add_command(validate_cmd)
    return group


def _files(tmp_path: Path, prof: memsim.Profile, bank: memsim.Bank, lay: memsim.Layout
           ) -> list[str]:
    lay.save(tmp_path / "l.yaml")
    (tmp_path / "b.yaml").write_text(json.dumps(bank.model_dump(mode="json")))
    (tmp_path / "p.yaml").write_text(json.dumps(prof.model_dump(mode="json",
                                                                exclude_none=True)))
    (tmp_path / "w.yaml").write_text(json.dumps({"name": "w", "arrivals": {
        "kind": "poisson", "rate": "300/s"}}))
    return ["validate", "--layout", str(tmp_path / "l.yaml"), "--profile",
            str(tmp_path / "p.yaml"), "--bank", str(tmp_path / "b.yaml"), "--workload",
            str(tmp_path / "w.yaml")]


def test_command_text_json_plot_and_errors(tmp_path, monkeypatch):
    bank, prof, lay = tiny_bank(), local_profile(tmp_path / "data"), local_layout()
    materialize(prof, bank, lay)
    args = _files(tmp_path, prof, bank, lay)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    runner = CliRunner()
    out = runner.invoke(_group(), [*args, "--queries", "150", "--plot",
                                   str(tmp_path / "cdf.png")])
    assert out.exit_code == 0, out.output
    assert "tier " in out.output and "level" in out.output and "verdict:" in out.output
    assert (tmp_path / "cdf.png").read_bytes()[:4] == b"\x89PNG"
    out = runner.invoke(_group(), [*args, "--queries", "150", "--json", "--seed", "3"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)  # stdout only: a warning of a loaded machine goes to stderr
    assert {"per_tier", "per_level", "fetch", "utilization", "real", "simulated"} <= set(data)
    assert data["queries"] == 135 and data["seed"] == 3 and data["plot"] is None
    assert data["recalibrated"] == {} and isinstance(data["diagnostics"], list)
    out = runner.invoke(_group(), [*args, "--queries", "60", "--recalibrate", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)  # stdout only: a warning of a loaded machine goes to stderr
    assert set(data["recalibrated"]) == {"flash", "disk"}
    assert all(v["reads"] > 0 and v["service_p50_s"] > 0 for v in data["recalibrated"].values())
    assert list(scratch.iterdir()) == []  # the temporary traces are gone
    # bad input: exit 2 and one line, before any real read
    bad = runner.invoke(_group(), [*args, "--store", "tape=file:///x"])
    assert bad.exit_code == 2 and "unknown tier 'tape'" in bad.output
    bad = runner.invoke(_group(), [*args, "--plot", str(tmp_path / "no" / "such" / "x.png")])
    assert bad.exit_code == 2 and "no such directory" in bad.output
    bad = runner.invoke(_group(), [*args[:-1], str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    # a store that holds nothing: a store or data error (5 or 6), and no temporary files left
    bad = runner.invoke(_group(), [*args, "--store", f"disk=file://{tmp_path}/empty"])
    assert bad.exit_code in (5, 6) and "Traceback" not in bad.output
    assert list(scratch.iterdir()) == []


def test_validate_rejects_bad_arguments(tmp_path):
    bank, prof, lay = tiny_bank(), local_profile(tmp_path), local_layout()
    with pytest.raises(InputError, match="warmup"):
        validate(prof, bank, lay, poisson(10), queries=10, warmup=1.5)
    with pytest.raises(InputError):
        validate(prof, bank, memsim.layout_from_dict({"placement": {1: "tape"}}), poisson(10))


def test_command_prefetch_and_trace(tmp_path):
    """--prefetch runs the client's prefetch in the reads and the simulation alike; --trace
    validates a trace's queries; a prefetch budget without a policy is one line."""
    from memsim.cli.realio import replay_cmd

    bank, prof = tiny_bank(), local_profile(tmp_path / "data")
    lay = local_layout().model_copy(update={"cache": memsim.layout.CacheConfig(
        budget=60_000)})
    materialize(prof, bank, lay)
    args = _files(tmp_path, prof, bank, lay)
    runner = CliRunner()
    out = runner.invoke(_group(), [*args, "--queries", "60", "--json", "--prefetch",
                                   "children", "--prefetch-inflight", "2"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    expected = {"policy": "children", "max_inflight": 2, "max_bytes": 64 << 20,
                "lookahead": 1}
    assert data["real"]["prefetch"] == expected == data["simulated"]["prefetch"]
    assert set(data["ratios"]) == {"mean_fetch_time", "cache_hit_ratio",
                                   "prefetch_hit_ratio"}
    assert data["real"]["served"]["prefetch_issued"] > 0
    # the trace replay writes, validated as such
    group = click.Group()
    group.add_command(replay_cmd)
    trace = tmp_path / "t.parquet"
    replayed = runner.invoke(group, ["replay", *args[1:], "--queries", "30", "--prefetch",
                                     "children", "--trace-out", str(trace)])
    assert replayed.exit_code == 0, replayed.output
    assert "prefetch (children, 4 in flight, 67.11 MB unused at most): " in replayed.output
    traced = [*args[:-2], "--trace", str(trace)]
    out = runner.invoke(_group(), [*traced, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["workload"] == str(trace) and data["queries"] == 27  # 30, 3 warm-up
    assert "prefetch" not in data["real"]  # the layout has no prefetch: section
    bad = runner.invoke(_group(), [*traced, "--prefetch-bytes", "1 MB"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and "prefetch" in bad.output
    bad = runner.invoke(_group(), [*traced, "--workload", str(tmp_path / "w.yaml")])
    assert bad.exit_code == 2 and "one of them" in bad.output


def test_differences_under_the_absolute_tolerance_are_not_misses():
    """A cache hit costs the client tens of microseconds of CPU that the model leaves out:
    huge relative errors on tiny times are not misses, the same relative errors on
    milliseconds are."""
    from memsim.validate import ABSOLUTE_TOLERANCE_S, RatioComparison

    def comparison(real: float, sim: float, demerit: float) -> object:
        return compare([real] * 10, [sim] * 10).__class__(
            p50_error=(sim - real) / real, p99_error=(sim - real) / real, demerit=demerit,
            real_p50_s=real, sim_p50_s=sim, real_p99_s=real, sim_p99_s=sim, samples=10,
            sim_samples=10, real_mean_s=real)

    tiny = 0.5 * ABSOLUTE_TOLERANCE_S
    result = ValidationResult(
        profile="p", bank="b", layout="l", workload="w", level_tiers={}, real=None,
        simulated=None,
        per_tier={"ram": comparison(tiny, tiny / 5, 0.8)},
        per_level={}, fetch=comparison(0.010, 0.0095, 0.05),
        ratios={"mean fetch time": RatioComparison(tiny, tiny / 5)})
    assert result.misses() == [] and result.meets_targets
    result.per_tier["disk"] = comparison(0.010, 0.002, 0.8)
    result.ratios["cache hit ratio"] = RatioComparison(0.5, 0.4)
    assert [m.split(":")[0] for m in result.misses()] == [
        "tier disk", "tier disk", "cache hit ratio"]
