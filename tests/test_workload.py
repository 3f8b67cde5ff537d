"""Workloads: arrival processes against their theory, routing against chi-square tests,
locality against its closed form, and clear errors for every bad input."""

from __future__ import annotations

import math
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
from memsim.resources import shipped_dir, shipped_names
from memsim.units import UnitError, parse_frequency
from memsim.workload import (
    ClosedArrivals,
    PathSampler,
    Workload,
    ZipfRouting,
    load_workload,
    workload_from_dict,
)

B = 16
ALPHA = 1e-3  # chi-square tests at a fixed seed: reject only on clear disagreement


def make_bank(levels: list[int] | None = None, branching: int = B) -> memsim.Bank:
    return memsim.bank_from_dict(
        {"name": "t", "branching": branching, "levels": levels or [1, 1, 1, 1],
         "anchor": "160M"})


BANK = make_bank()


def wl(**fields: object) -> Workload:
    data: dict[str, object] = {"arrivals": {"kind": "poisson", "rate": "10/s"}}
    data.update(fields)
    return workload_from_dict(data)


def paths_of(workload: Workload, n: int, seed: int = 0, bank: memsim.Bank = BANK) -> np.ndarray:
    return PathSampler(workload, bank, np.random.default_rng(seed)).sample(n)


def assert_consistent(paths: np.ndarray, b: int = B) -> None:
    levels = paths.shape[1]
    assert paths.dtype == np.int64
    for d in range(1, levels + 1):
        assert paths[:, d - 1].min() >= 0 and paths[:, d - 1].max() < b**d
    assert np.array_equal(paths[:, 1:] // b, paths[:, :-1])


# ----------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("text", "expected"),
    [("20/s", 20.0), ("20 /s", 20.0), ("20 per s", 20.0), ("20 qps", 20.0),
     ("1200/min", 20.0), ("20 Hz", 20.0), ("3/ms", 3000.0), (20, 20.0), (2.5, 2.5),
     ("0/s", 0.0), ("1e3/s", 1000.0), ("7200/h", 2.0)],
)
def test_parse_frequency(text, expected):
    assert parse_frequency(text) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [("-5/s", "-5/s"), (-5, "-5"), ("nan", "nan"), (float("nan"), "nan"), ("inf", "inf"),
     ("20/fortnight", "/fortnight"), ("20 GB/s", "GB/s"), ("fast", "fast"), (True, "True")],
)
def test_parse_frequency_rejects(text, quoted):
    with pytest.raises(UnitError) as info:
        parse_frequency(text)
    assert quoted in str(info.value)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_parse_frequency_units_agree(x):
    assert parse_frequency(f"{x!r}/s") == pytest.approx(x, rel=1e-12)
    assert parse_frequency(f"{x * 60!r}/min") == pytest.approx(x, rel=1e-12, abs=1e-300)
    assert parse_frequency(f"{x!r} Hz") == parse_frequency(x)


# ----------------------------------------------------------------------------- arrivals


def test_poisson_counts_and_gaps():
    rate, n = 20.0, 200_000
    times = wl(arrivals={"kind": "poisson", "rate": "1200/min"}).arrivals.arrival_times(
        n, np.random.default_rng(1))
    assert times.dtype == np.float64 and times.shape == (n,)
    assert np.all(np.diff(times) >= 0) and times[0] > 0
    window = 0.9 * n / rate  # almost surely covered by n arrivals
    count = np.searchsorted(times, window)
    assert abs(count - rate * window) < 4.5 * math.sqrt(rate * window)
    gaps = np.diff(np.r_[0.0, times])
    assert abs(gaps.mean() - 1 / rate) < 4.5 * (1 / rate) / math.sqrt(n)
    cv = gaps.std() / gaps.mean()
    assert abs(cv - 1.0) < 4.5 * math.sqrt(2 / n)  # sd of a sample CV of exponentials
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > ALPHA
    per_second = np.bincount(times[times < window].astype(int))
    assert abs(per_second.var() / per_second.mean() - 1) < 0.1  # Poisson: dispersion 1


@pytest.mark.parametrize("batch", [None, 7])
def test_onoff_long_run_rate_and_burstiness(batch, monkeypatch):
    if batch:  # periods drawn a few at a time: on and off must keep alternating
        monkeypatch.setattr(memsim.workload, "MAX_SEGMENTS", batch)
    arrivals = wl(arrivals={"kind": "onoff", "rate_on": "100/s", "rate_off": "5/s",
                            "mean_on": "2 s", "mean_off": "8 s"}).arrivals
    expected = (100 * 2 + 5 * 8) / (2 + 8)
    assert arrivals.mean_rate() == pytest.approx(expected)
    n = 400_000
    times = arrivals.arrival_times(n, np.random.default_rng(2))
    assert np.all(np.diff(times) >= 0) and times.shape == (n,)
    window = 0.9 * n / expected
    count = np.searchsorted(times, window)
    # Var N(t)/t of a 2-state MMPP: mean rate + 2 pi_on pi_off (rate_on - rate_off)^2 / (r1+r2)
    pi_on, pi_off, switch = 0.2, 0.8, 1 / 2 + 1 / 8
    var_rate = expected + 2 * pi_on * pi_off * 95**2 / switch
    assert abs(count - expected * window) < 4.5 * math.sqrt(var_rate * window)
    per_second = np.bincount(times[times < window].astype(int))
    assert per_second.var() / per_second.mean() > 10  # far burstier than Poisson


def test_onoff_is_stationary_from_time_zero():
    # a burst is under way at time 0 with its long-run probability, mean_on / (mean_on + off)
    arrivals = wl(arrivals={"kind": "onoff", "rate_on": "1e6/s", "mean_on": "1 s",
                            "mean_off": "4 s"}).arrivals
    rng = np.random.default_rng(6)
    runs = 2000
    on_at_zero = np.mean([arrivals.arrival_times(1, rng)[0] < 1e-3 for _ in range(runs)])
    assert abs(on_at_zero - 0.2) < 4.5 * math.sqrt(0.2 * 0.8 / runs)


def test_onoff_silent_off_periods():
    arrivals = wl(arrivals={"kind": "onoff", "rate_on": 50, "rate_off": 0,
                            "mean_on": 1, "mean_off": 1}).arrivals
    assert arrivals.mean_rate() == pytest.approx(25)
    times = arrivals.arrival_times(50_000, np.random.default_rng(3))
    gaps = np.diff(times)
    # off periods (mean 1 s) show up as gaps far longer than the on-rate's 20 ms
    assert (gaps > 0.5).sum() > 100


def test_schedule_repeats_with_counts_per_step():
    arrivals = wl(arrivals={"kind": "schedule", "repeat": True, "steps": [
        {"duration": "10 s", "rate": "10/s"}, {"duration": "5 s", "rate": "80/s"},
        {"duration": "3 s", "rate": 0}]}).arrivals
    assert arrivals.mean_rate() == pytest.approx((10 * 10 + 5 * 80) / 18)
    times = arrivals.arrival_times(50_000, np.random.default_rng(4))
    cycles = int(times[-1] // 18) - 1
    done = times[times < cycles * 18]
    phase = done % 18
    observed = [(phase < 10).sum(), ((phase >= 10) & (phase < 15)).sum(), (phase >= 15).sum()]
    expected = [cycles * 100, cycles * 400, 0]
    for o, e in zip(observed, expected, strict=True):
        assert abs(o - e) <= 4.5 * math.sqrt(e)


def test_schedule_without_repeat_holds_last_rate():
    arrivals = wl(arrivals={"kind": "schedule", "steps": [
        {"duration": "100 s", "rate": "10/s"}, {"duration": "50 s", "rate": "80/s"}]}).arrivals
    assert arrivals.mean_rate() == 80
    times = arrivals.arrival_times(30_000, np.random.default_rng(5))
    for lo, hi, rate in [(0, 100, 10), (100, 150, 80), (150, 350, 80)]:
        count = ((times >= lo) & (times < hi)).sum()
        assert abs(count - rate * (hi - lo)) < 4.5 * math.sqrt(rate * (hi - lo))
    assert times.shape == (30_000,) and np.all(np.diff(times) >= 0)
    tail = np.diff(times[times >= 150])
    assert stats.kstest(tail, "expon", args=(0, 1 / 80)).pvalue > ALPHA


def test_schedule_few_arrivals_stop_inside_the_schedule():
    arrivals = wl(arrivals={"kind": "schedule", "steps": [
        {"duration": "1000 s", "rate": "1/s"}, {"duration": "1 s", "rate": "5/s"}]}).arrivals
    times = arrivals.arrival_times(10, np.random.default_rng(0))
    assert times.shape == (10,) and times[-1] < 100


def test_same_seed_same_arrivals():
    for name in ("poisson-uniform", "bursty-zipf"):
        arrivals = load_workload(name).arrivals
        a = arrivals.arrival_times(1000, np.random.default_rng(9))
        b = arrivals.arrival_times(1000, np.random.default_rng(9))
        c = arrivals.arrival_times(1000, np.random.default_rng(10))
        assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert arrivals.arrival_times(0, np.random.default_rng(0)).shape == (0,)


def test_closed_loop_think_times():
    w = load_workload("closed-8")
    assert isinstance(w.arrivals, ClosedArrivals) and not w.open_loop
    assert w.arrivals.clients == 8
    assert not hasattr(w.arrivals, "arrival_times")
    think = w.arrivals.think(np.random.default_rng(0), 100_000)
    assert abs(think.mean() - 5e-3) < 4.5 * 5e-3 / math.sqrt(100_000)
    assert stats.kstest(think, "expon", args=(0, 5e-3)).pvalue > ALPHA
    constant = wl(arrivals={"kind": "closed", "clients": 2, "think_time": "5 ms"}).arrivals
    assert np.all(constant.think(np.random.default_rng(0), 3) == 5e-3)
    idle = wl(arrivals={"kind": "closed", "clients": 1}).arrivals
    assert np.all(idle.think(np.random.default_rng(0), 3) == 0)


# ----------------------------------------------------------------------------- routing


def test_uniform_routing_chi_square():
    paths = paths_of(wl(), 64_000, seed=11)
    assert paths.shape == (64_000, 4)
    assert_consistent(paths)
    level1 = np.bincount(paths[:, 0], minlength=B)
    assert stats.chisquare(level1).pvalue > ALPHA
    level2 = np.bincount(paths[:, 1], minlength=B**2)
    assert stats.chisquare(level2).pvalue > ALPHA
    assert np.allclose(level1 / level1.sum(), 1 / B, atol=4.5 * math.sqrt(1 / B / 64_000))


def test_routing_shorthand_and_default():
    assert wl().routing.kind == "uniform"
    assert wl(routing="zipf").routing.kind == "zipf"


@pytest.mark.parametrize("s", [1.0, 1.7])
def test_zipf_rank_frequencies(s):
    routing = ZipfRouting(s=s, seed=3)
    paths = paths_of(wl(routing={"kind": "zipf", "s": s, "seed": 3}), 60_000, seed=12)
    assert_consistent(paths)
    expected = np.arange(1, B + 1, dtype=float) ** -s
    expected /= expected.sum()
    # level 1: one parent (the root); the most popular child is the rank-1 child
    counts = np.bincount(paths[:, 0], minlength=B)
    offset = int(routing.rank_offset(np.array([0]), 1, B)[0])
    assert int(np.argmax(counts)) == offset
    by_rank = counts[(offset + np.arange(B)) % B]
    assert stats.chisquare(by_rank, expected * by_rank.sum()).pvalue > ALPHA
    # sorted frequencies alone (no knowledge of the hash) follow 1/k^s too
    assert np.all(np.abs(np.sort(counts)[::-1] / counts.sum() - expected) < 0.01)
    # level 2, conditional on the parent: the same Zipf for every parent, with its own ranks
    parents, children = paths[:, 0], paths[:, 1] % B
    offsets = routing.rank_offset(parents, 2, B)
    ranks = (children - offsets) % B
    assert stats.chisquare(np.bincount(ranks, minlength=B), expected * len(ranks)).pvalue > ALPHA
    top = parents == offset
    one_parent = np.bincount(ranks[top], minlength=B)
    assert stats.chisquare(one_parent, expected * top.sum()).pvalue > ALPHA


def test_zipf_ranks_differ_between_parents_and_seeds():
    parents = np.arange(B, dtype=np.int64)
    first = ZipfRouting(seed=0).rank_offset(parents, 2, B)
    assert len(set(first.tolist())) >= 4  # a hash, not one fixed ordering
    other = ZipfRouting(seed=1).rank_offset(parents, 2, B)
    assert not np.array_equal(first, other)
    again = ZipfRouting(seed=0).rank_offset(parents, 2, B)
    assert np.array_equal(first, again)
    # the most popular child at depth 2 differs between parents, seen in sampled paths
    paths = paths_of(wl(routing="zipf"), 40_000, seed=13)
    favourites = {int(np.argmax(np.bincount(paths[paths[:, 0] == p, 1] % B, minlength=B)))
                  for p in range(4)}
    assert len(favourites) >= 2


def write_counts(path: Path, rows: list[tuple[int, int, float]]) -> Path:
    level, block, count = zip(*rows, strict=True)
    pq.write_table(pa.table({"level": pa.array(level, pa.int64()),
                             "block": pa.array(block, pa.int64()),
                             "count": pa.array(count, pa.float64())}), path)
    return path


def test_empirical_routing_reproduces_counts(tmp_path):
    rows = [(1, 0, 1), (1, 1, 2), (1, 2, 3), (1, 3, 4), (1, 5, 0)]
    level2 = [5, 0, 1, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]  # children of block 3
    rows += [(2, 3 * B + i, c) for i, c in enumerate(level2)]
    rows += [(2, 3 * B + 15, 0.5)]  # duplicate rows add up
    rows += [(2, 2 * B + i, 0) for i in range(B)]  # all zero: parent 2 routes uniformly
    write_counts(tmp_path / "counts.parquet", rows)
    yaml_path = tmp_path / "w.yaml"
    yaml_path.write_text("arrivals: {kind: poisson, rate: 1/s}\n"
                         "routing: {kind: empirical, file: counts.parquet}\n")
    w = load_workload(yaml_path)
    paths = paths_of(w, 80_000, seed=14)
    assert_consistent(paths)
    level1 = np.bincount(paths[:, 0], minlength=B)
    assert level1[4:].sum() == 0
    assert stats.chisquare(level1[:4], np.array([1, 2, 3, 4]) / 10 * len(paths)).pvalue > ALPHA
    under3 = paths[paths[:, 0] == 3, 1] - 3 * B
    got = np.bincount(under3, minlength=B)
    want = np.array(level2, dtype=float)
    want[15] += 0.5
    assert np.all(got[want == 0] == 0)
    assert stats.chisquare(got[want > 0], want[want > 0] / want.sum() * len(under3)).pvalue > ALPHA
    for parent in (0, 2):  # no counts, or only zeros: uniform
        under = np.bincount(paths[paths[:, 0] == parent, 1] - parent * B, minlength=B)
        assert stats.chisquare(under).pvalue > ALPHA
    level3 = np.bincount(paths[:, 2] % B, minlength=B)  # no level-3 counts at all: uniform
    assert stats.chisquare(level3).pvalue > ALPHA


# ----------------------------------------------------------------------------- locality


@pytest.mark.parametrize("routing", ["uniform", "zipf"])
def test_locality_shares_prefix(routing):
    p, depth, n = 0.9, 2, 100_000
    paths = paths_of(wl(routing=routing, locality={"p": p, "depth": depth}), n, seed=15)
    assert_consistent(paths)
    same = paths[1:, depth - 1] == paths[:-1, depth - 1]
    if routing == "uniform":
        chance = 1 / B**depth
    else:  # same child at each level by chance: sum of squared Zipf probabilities, per level
        probs = ZipfRouting().rank_probabilities(B)
        chance = float(np.sum(probs**2)) ** depth
    expected = p + (1 - p) * chance
    assert abs(same.mean() - expected) < 4.5 * math.sqrt(expected * (1 - expected) / n)
    # below the shared depth, routing goes on as usual
    below = paths[:, depth] % B
    if routing == "uniform":
        assert stats.chisquare(np.bincount(below, minlength=B)).pvalue > ALPHA


def test_locality_default_depth_and_carry_over():
    bank = make_bank([0, 4, 2, 1])
    sampler = PathSampler(wl(locality={"p": 1.0}), bank, np.random.default_rng(16))
    first, second = sampler.sample(50), sampler.sample(50)
    both = np.vstack([first, second])
    assert np.all(both[:, 1] == both[0, 1])  # default depth 2, the shallowest non-empty level
    assert len(np.unique(both[:, 2])) > 1
    none = PathSampler(wl(locality={"p": 0.0}), bank, np.random.default_rng(16)).sample(5000)
    assert np.mean(none[1:, 1] == none[:-1, 1]) < 0.02


def test_locality_full_depth():
    paths = paths_of(wl(locality={"p": 1.0, "depth": 4}), 100)
    assert np.all(paths == paths[0])


def test_same_seed_same_paths():
    for name in shipped_names("workloads"):
        w = load_workload(name)
        a, b = paths_of(w, 2000, seed=17), paths_of(w, 2000, seed=17)
        assert np.array_equal(a, b)
        assert not np.array_equal(a, paths_of(w, 2000, seed=18))


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(2, 64),
    levels=st.integers(1, 6),
    routing=st.sampled_from(["uniform", "zipf"]),
    s=st.floats(0.1, 3.0),
    p=st.floats(0.0, 1.0),
    depth=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    n=st.integers(0, 300),
)
def test_paths_always_consistent(b, levels, routing, s, p, depth, seed, n):
    bank = make_bank([1] * levels, branching=b)
    route: dict[str, object] = {"kind": routing, "seed": seed} if routing == "zipf" else {
        "kind": "uniform"}
    if routing == "zipf":
        route["s"] = s
    w = wl(routing=route, locality={"p": p, "depth": min(depth, levels)})
    sampler = PathSampler(w, bank, np.random.default_rng(seed))
    paths = np.vstack([sampler.sample(n), sampler.sample(3)])
    assert paths.shape == (n + 3, levels)
    assert_consistent(paths, b)


# ----------------------------------------------------------------------------- files and errors


def test_presets_load_with_header_comments():
    assert shipped_names("workloads") == ["bursty-zipf", "closed-8", "poisson-uniform",
                                          "zipf-topic"]
    for name in shipped_names("workloads"):
        assert (shipped_dir("workloads") / f"{name}.yaml").read_text().startswith("# ")
        assert load_workload(name).name == name
    topic = load_workload("zipf-topic")
    assert topic.routing.kind == "zipf" and topic.locality is not None
    assert topic.locality.p == 0.9
    assert load_workload("bursty-zipf").arrivals.mean_rate() == pytest.approx(24)
    assert Workload.model_json_schema()["title"] == "Workload"


def load_text(tmp_path: Path, text: str) -> Workload:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    return load_workload(path)


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("arrivals:\n  kind: poisson\n  rate: 0/s\n", 3, "arrivals.rate", ["positive"]),
        ("arrivals:\n  kind: poisson\n  rate: -3/s\n", 3, "arrivals.rate", ["negative"]),
        ("arrivals:\n  kind: poisson\n  rate: .nan\n", 3, "arrivals.rate", ["finite"]),
        ("arrivals:\n  kind: poisson\n  rate: 20 GB/s\n", 3, "arrivals.rate", ["'GB/s'"]),
        ("arrivals:\n  kind: poison\n", 2, "arrivals.kind", ["unknown kind 'poison'"]),
        ("arrivals:\n  rate: 2/s\n", 1, "arrivals", ["'kind' is missing"]),
        ("arrivals:\n  kind: poisson\n  rate: 2/s\n  burst: 3\n", 4, "arrivals.burst",
         ["unknown field"]),
        ("name: x\ncolour: red\narrivals: {kind: poisson, rate: 1}\n", 2, "colour",
         ["unknown field"]),
        ("arrivals:\n  kind: onoff\n  rate_on: 10/s\n  rate_off: -1/s\n  mean_on: 1 s\n"
         "  mean_off: 1 s\n", 4, "arrivals.rate_off", ["negative"]),
        ("arrivals:\n  kind: onoff\n  rate_on: 0/s\n  mean_on: 1 s\n  mean_off: 1 s\n", 3,
         "arrivals.rate_on", ["positive"]),
        ("arrivals:\n  kind: onoff\n  rate_on: 1/s\n  mean_on: 0 s\n  mean_off: 1 s\n", 4,
         "arrivals.mean_on", ["positive"]),
        ("arrivals:\n  kind: schedule\n  repeat: true\n  steps:\n    - {duration: 1 s, rate: 0}\n",
         4, "arrivals.steps", ["positive rate"]),
        ("arrivals:\n  kind: schedule\n  steps:\n    - {duration: 1 s, rate: 2/s}\n"
         "    - {duration: 1 s, rate: 0/s}\n", 3, "arrivals.steps", ["steps[1].rate", "repeat"]),
        ("arrivals:\n  kind: schedule\n  steps:\n    - {duration: 0 s, rate: 2/s}\n", 4,
         "arrivals.steps[0].duration", ["positive"]),
        ("arrivals:\n  kind: closed\n  clients: 0\n", 3, "arrivals.clients", ["1"]),
        ("arrivals:\n  kind: closed\n  clients: 2\n  think_time: {distribution: exponential, "
         "mean: -1 ms}\n", 4, "arrivals.think_time.mean", ["negative"]),
        ("arrivals: {kind: poisson, rate: 1}\nrouting:\n  kind: zipf\n  s: 0\n", 4,
         "routing.s", ["greater than 0"]),
        ("arrivals: {kind: poisson, rate: 1}\nrouting:\n  kind: zipf\n  s: .nan\n", 4,
         "routing.s", ["finite"]),
        ("arrivals: {kind: poisson, rate: 1}\nrouting:\n  kind: pareto\n", 3, "routing.kind",
         ["unknown kind 'pareto'", "zipf"]),
        ("arrivals: {kind: poisson, rate: 1}\nlocality:\n  p: 1.5\n", 3, "locality.p", ["1"]),
        ("arrivals: {kind: poisson, rate: 1}\nlocality:\n  p: -0.1\n", 3, "locality.p", ["0"]),
        ("arrivals: {kind: poisson, rate: 1}\nlocality:\n  p: 0.5\n  depth: 0\n", 4,
         "locality.depth", ["1"]),
        ("name: x\n", 1, "arrivals", ["required"]),
    ],
)
def test_bad_workloads_name_file_line_field(tmp_path, text, line, field, words):
    with pytest.raises(InputError) as info:
        load_text(tmp_path, text)
    err = info.value
    assert err.file == str(tmp_path / "w.yaml")
    assert (err.line, err.field) == (line, field), str(err)
    for word in words:
        assert word in str(err), (word, str(err))


def test_dict_errors_name_the_given_file():
    with pytest.raises(InputError) as info:
        workload_from_dict({"arrivals": {"kind": "closed", "clients": 0}}, file="mine")
    assert info.value.file == "mine" and info.value.field == "arrivals.clients"


def test_locality_deeper_than_bank(tmp_path):
    w = load_text(tmp_path, "arrivals: {kind: poisson, rate: 1}\nlocality:\n  p: 0.5\n"
                            "  depth: 5\n")
    with pytest.raises(InputError) as info:
        PathSampler(w, BANK, np.random.default_rng(0))
    assert (info.value.line, info.value.field) == (4, "locality.depth")


def empirical_yaml(tmp_path: Path, name: str = "counts.parquet") -> Path:
    path = tmp_path / "w.yaml"
    path.write_text(f"arrivals: {{kind: poisson, rate: 1}}\nrouting:\n  kind: empirical\n"
                    f"  file: {name}\n")
    return path


def test_empirical_missing_file_points_at_the_yaml(tmp_path):
    with pytest.raises(InputError) as info:
        load_workload(empirical_yaml(tmp_path))
    err = info.value
    assert (err.file, err.line, err.field) == (str(tmp_path / "w.yaml"), 4, "routing.file")
    assert "counts.parquet" in str(err)


def table(**columns: object) -> pa.Table:
    return pa.table(columns)


@pytest.mark.parametrize(
    ("content", "field", "words"),
    [
        ("not parquet", None, ["Parquet"]),
        (table(level=[1], block=[0]), None, ["missing column", "'count'"]),
        (table(level=pa.array([], pa.int64()), block=pa.array([], pa.int64()),
               count=pa.array([], pa.float64())), None, ["no rows"]),
        (table(level=[1, 1], block=[0, 1], count=[1.0, -2.0]), "count", ["row 1 ", "negative"]),
        (table(level=[1, 1], block=[0, 1], count=[float("nan"), 1.0]), "count",
         ["row 0 ", "finite"]),
        (table(level=[1.0], block=[0], count=[1.0]), "level", ["integers"]),
        (table(level=[1, None], block=[0, 1], count=[1.0, 1.0]), "level", ["row 1 ", "empty"]),
    ],
)
def test_bad_counts_files_name_the_parquet_file(tmp_path, content, field, words):
    counts = tmp_path / "counts.parquet"
    if isinstance(content, str):
        counts.write_text(content)
    else:
        pq.write_table(content, counts)
    with pytest.raises(InputError) as info:
        load_workload(empirical_yaml(tmp_path))
    err = info.value
    assert err.file == str(counts) and err.field == field, str(err)
    for word in words:
        assert word in str(err), (word, str(err))


@pytest.mark.parametrize(
    ("rows", "field", "words"),
    [
        ([(1, 0, 1.0), (5, 0, 1.0)], "level", ["row 1 ", "level 5", "1..4"]),
        ([(0, 0, 1.0)], "level", ["row 0 ", "level 0"]),
        ([(1, 0, 1.0), (2, 256, 1.0)], "block", ["row 1 ", "block 256", "0..255"]),
        ([(3, -1, 1.0)], "block", ["row 0 ", "block -1"]),
    ],
)
def test_counts_out_of_range_for_the_bank(tmp_path, rows, field, words):
    counts = write_counts(tmp_path / "counts.parquet", rows)
    w = load_workload(empirical_yaml(tmp_path))  # fine on its own: ranges need a bank
    with pytest.raises(InputError) as info:
        PathSampler(w, BANK, np.random.default_rng(0))
    err = info.value
    assert err.file == str(counts) and err.field == field, str(err)
    for word in words:
        assert word in str(err), (word, str(err))


def test_bank_too_deep_for_int64_ids():
    # 16**16 = 2**64 clusters at depth 16: the bank itself is refused (memsim's limit on
    # blocks per level, 2**40, keeps every id well inside int64), naming the level
    with pytest.raises(InputError, match=r"levels\[15\].*blocks per level"):
        make_bank([1] * 16, branching=16)
    fits = make_bank([1] * 10, branching=16)  # 2**40 blocks at depth 10: the limit
    assert_consistent(PathSampler(wl(), fits, np.random.default_rng(0)).sample(100))
