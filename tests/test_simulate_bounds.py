"""The simulator is honest on overload and never hangs: intervals never below 0 and absent
without a steady state, warnings once per problem (API and CLI), no hit ratio without a cache,
a progress bar on a wall clock, bounded work, checked traces, and no 'nan' in text."""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import memsim
from memsim import limits
from memsim.cli.tables import simulation_text
from memsim.errors import InputError, OverloadWarning
from memsim.simulate import SimulationResult, _Throttled, plan_queries, progress_bar, simulate
from memsim.simulate import engine as engine_module
from memsim.simulate.stats import BatchedSeries
from memsim.workload import workload_from_dict

BUSY = {"arrivals": {"kind": "poisson", "rate": "40/s"}}  # paper-hierarchical: load 1.5


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ 1. intervals
def test_an_interval_never_reaches_below_zero():
    series = BatchedSeries(batch_size=1)
    for value in [0.0] * 31 + [100.0]:  # spread far above the mean: centre - half < 0
        series.add(value)
    low, high = series.interval("mean")
    assert low == 0.0 and high > series.mean


def test_a_growing_run_has_a_trend_and_a_stationary_one_none():
    growing = BatchedSeries(batch_size=10)
    for i in range(320):
        growing.add(0.001 * (1 + i))
    assert growing.trend() == pytest.approx(
        np.mean(np.arange(241, 321)) / np.mean(np.arange(1, 81)), rel=0.05)
    rng = np.random.default_rng(0)
    steady = BatchedSeries(batch_size=100)
    for value in rng.exponential(0.01, 3200):
        steady.add(float(value))
    assert steady.trend() is None


def test_an_overloaded_run_has_no_intervals(paper_profile, paper_bank, cli, tmp_path):
    layout = memsim.load_layout("paper-hierarchical")
    with pytest.warns(OverloadWarning):
        result = simulate(paper_profile, paper_bank, layout, workload_from_dict(BUSY),
                          queries=2000, seed=1)
    assert result.unstable
    assert all(v is None for v in result.fetch_time_ci_s.values())
    workload = _write(tmp_path, "busy.yaml", "arrivals: {kind: poisson, rate: 40/s}\n")
    text = cli("simulate", "--layout", "paper-hierarchical", "--workload", workload,
               "--queries", "2000")
    assert text.exit_code == 0
    assert "p50" in text.stdout and "[unstable]" in text.stdout
    assert "[-" not in text.stdout and ".. " not in text.stdout
    data = json.loads(cli("simulate", "--layout", "paper-hierarchical", "--workload",
                          workload, "--queries", "2000", "--json").stdout)
    assert data["unstable"] and set(data["fetch_time_ci_s"].values()) == {None}


def test_a_stable_run_keeps_its_intervals(paper_profile, paper_bank):
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverloadWarning)
        result = simulate(paper_profile, paper_bank, memsim.load_layout("paper-hierarchical"),
                          memsim.load_workload("zipf-topic"), queries=3000, seed=1)
    assert not result.unstable
    for key in ("mean", "p50", "p99"):
        low, high = result.fetch_time_ci_s[key]
        assert 0 <= low <= result.fetch_time_s[key] <= high


# ------------------------------------------------------------------ 2. cache budget
def test_a_cache_budget_beyond_ram_is_warned_like_estimate(cli, tmp_path):
    args = ("--layout", "paper-flat", "--workload", "zipf-topic", "--queries", "500")
    result = cli("simulate", *args, "--cache-budget", "900 GB")
    assert result.exit_code == 0
    warned = [line for line in result.stderr.splitlines() if line.startswith("memsim: warning")]
    assert warned == ["memsim: warning: tier 'ram' holds 16 GB but this layout puts 900.8 GB "
                      "on it"]
    data = json.loads(cli("simulate", *args, "--cache-budget", "900 GB", "--json").stdout)
    assert data["capacity_warnings"] == [warned[0].removeprefix("memsim: warning: ")]
    # the same budget written in the layout file: the same warning, in simulate and estimate
    layout = memsim.load_layout("paper-flat").model_dump(exclude_none=True)
    layout["cache"] = {"budget": "900 GB"}
    path = tmp_path / "big-cache.yaml"
    path.write_text(json.dumps(layout))
    from_file = cli("simulate", "--layout", str(path), *args[2:])
    estimate = cli("estimate", "--layout", str(path))
    assert warned[0] in from_file.stderr.splitlines()
    assert warned[0] in estimate.stderr.splitlines()


# ------------------------------------------------------------------ 3. warnings
def test_the_api_warns_once_per_problem_and_the_cli_prints_one_line_each(
        paper_profile, paper_bank, cli, tmp_path):
    layout = memsim.load_layout("paper-hierarchical")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = memsim.simulate(paper_profile, paper_bank, layout, workload_from_dict(BUSY),
                                 queries=1000, seed=2)
    overload = [w for w in caught if issubclass(w.category, OverloadWarning)]
    assert issubclass(OverloadWarning, UserWarning)
    assert [str(w.message) for w in overload] == result.unstable and len(overload) == 3
    assert overload[0].filename == __file__  # points at the caller
    workload = _write(tmp_path, "busy.yaml", "arrivals: {kind: poisson, rate: 40/s}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = cli("simulate", "--layout", "paper-hierarchical", "--workload", workload,
                  "--queries", "1000")
    assert not [w for w in caught if issubclass(w.category, OverloadWarning)]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("memsim: warning: tier '") for line in lines)


# ------------------------------------------------------------------ 4. hit ratio
def test_no_cache_no_cache_hit_ratio(paper_profile, paper_bank, cli):
    layout = memsim.load_layout("paper-flat-resident-upper")  # resident level 2, no cache
    result = simulate(paper_profile, paper_bank, layout, memsim.load_workload("zipf-topic"),
                      queries=1000, seed=3)
    assert result.cache_hit_ratio is None
    assert 0 < result.per_level[2]["resident_hit_ratio"] <= 1
    assert "cache_hit_ratio" not in result.per_level[2]
    args = ("simulate", "--layout", "paper-flat-resident-upper", "--workload", "zipf-topic",
            "--queries", "1000")
    assert "cache hit ratio" not in cli(*args).stdout
    assert json.loads(cli(*args, "--json").stdout)["cache_hit_ratio"] is None
    with_cache = cli(*args, "--cache-budget", "400 MB", "--json")
    assert 0 < json.loads(with_cache.stdout)["cache_hit_ratio"] < 1


# ------------------------------------------------------------------ 5. progress bar
class _Bar:
    def __init__(self) -> None:
        self.updates: list[int] = []
        self.closed = False

    def update(self, n: int) -> None:
        self.updates.append(n)

    def close(self) -> None:
        self.closed = True


def test_the_progress_bar_moves_on_wall_time_not_on_query_counts():
    now = [0.0]
    bar = _Bar()
    throttled = _Throttled(bar, clock=lambda: now[0], interval=0.2)
    for _ in range(5):  # a slow replay: one query per 0.25 s, each shown at once
        now[0] += 0.25
        throttled.update(1)
    assert bar.updates == [1, 1, 1, 1, 1]
    for _ in range(10_000):  # a fast simulation: 10,000 queries in 0.5 s, ~every 0.2 s
        now[0] += 0.00005
        throttled.update(1)
    throttled.close()
    assert len(bar.updates) == 5 + 3 and sum(bar.updates) == 10_005 and bar.closed
    assert all(isinstance(n, int) for n in bar.updates)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_shows_whole_queries_on_a_terminal_only():
    now = [0.0]
    out = _Terminal()
    update, close = progress_bar(10, file=out, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 0.3
        update(1)
    close()
    counts = re.findall(r"\| *([^ |]+)/10 ", out.getvalue())  # "| 3/10 [00:00<...]"
    assert counts[-1] == "10" and "3" in counts
    assert all(count.isdigit() for count in counts), counts
    assert progress_bar(10, file=io.StringIO())[0] is None  # not a terminal: no bar


# ------------------------------------------------------------------ 6. bounds and traces
@pytest.mark.parametrize(("trace", "needle"), [
    ((np.arange(5.0), np.zeros(5, dtype=np.int64)), "one column per level"),
    ((np.arange(5.0), np.zeros((4, 4), dtype=np.int64)), "one row per arrival"),
    ((np.array([3.0, 1.0, 2.0]), np.zeros((3, 4), dtype=np.int64)), "sorted"),
    ((np.array([0.0, np.nan, 2.0]), np.zeros((3, 4), dtype=np.int64)), "finite"),
    ((np.array([0.0, 1.0, np.inf]), np.zeros((3, 4), dtype=np.int64)), "finite"),
    ((np.array([-1.0, 1.0, 2.0]), np.zeros((3, 4), dtype=np.int64)), "non-negative"),
    ((np.zeros(0), np.zeros((0, 4), dtype=np.int64)), "non-empty"),
    ((np.arange(3.0), np.full((3, 4), 10**9, dtype=np.int64)), "outside"),
    ((np.arange(3.0), np.full((3, 4), 0.5)), "whole block numbers"),
    ("not a trace", "arrival times, paths"),
])
def test_plan_queries_refuses_bad_traces(paper_bank, trace, needle):
    with pytest.raises(InputError, match=needle) as caught:
        plan_queries(paper_bank, None, trace, 10, 0, 0.1)
    assert caught.value.field == "trace"


@pytest.mark.parametrize(("queries", "warmup", "seed", "field"), [
    (0, 0.1, 0, "queries"), (limits.MAX_QUERIES + 1, 0.1, 0, "queries"),
    (2.5, 0.1, 0, "queries"), (10, 1.0, 0, "warmup"), (10, -0.1, 0, "warmup"),
    (10, math.nan, 0, "warmup"), (10, 0.1, -1, "seed"),
])
def test_plan_queries_refuses_bad_arguments(paper_bank, queries, warmup, seed, field):
    with pytest.raises(InputError) as caught:
        plan_queries(paper_bank, memsim.load_workload("zipf-topic"), None, queries, seed,
                     warmup)
    assert caught.value.field == field


def test_huge_runs_are_refused_up_front_naming_the_limit_and_the_option(cli, monkeypatch,
                                                                        tmp_path):
    result = cli("simulate", "--layout", "paper-flat", "--workload", "zipf-topic",
                 "--queries", str(limits.MAX_QUERIES + 1))
    assert result.exit_code == 2 and "--queries" in result.stderr
    # within the query limit, but three requests a query is over the work limit
    queries = limits.MAX_SIM_REQUESTS // 3 + 1
    result = cli("simulate", "--layout", "paper-flat", "--workload", "zipf-topic",
                 "--queries", str(queries))
    assert result.exit_code == 2
    assert result.stderr.startswith("memsim: error: option --queries: the block requests of")
    assert f"limit is {limits.MAX_SIM_REQUESTS:,}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    monkeypatch.setattr(limits, "MAX_TRACE_CELLS", 100)
    with pytest.raises(InputError, match="the trace of 100 queries"):
        simulate(memsim.load_profile("paper-hypothetical"), memsim.load_bank(
            "paper-storage-example"), memsim.load_layout("paper-flat"),
            memsim.load_workload("zipf-topic"), queries=100, trace_out=tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()


def _tiny() -> tuple[memsim.Profile, memsim.Bank]:
    bank = memsim.bank_from_dict({"name": "b", "levels": [1], "branching": 2, "dtype": "int8",
                                  "anchor": {"layers": 1, "d_model": 1, "d_ff": 1, "heads": 1,
                                             "head_dim": 1, "params": 1}})
    profile = memsim.profile_from_dict({"name": "c", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "1 GB/s", "capacity": "1 GB"},
        {"name": "dev", "kind": "other", "bandwidth": "1 GB/s", "latency": "1 ms"}]})
    return profile, bank


def test_a_closed_loop_stuck_at_one_instant_ends_with_an_error(monkeypatch):
    monkeypatch.setattr(engine_module, "MAX_STALLED_QUERIES", 1000)
    profile, bank = _tiny()
    blocked = memsim.layout_from_dict({"placement": {1: "dev"}, "blocked": [
        {"level": 1, "block": 0}, {"level": 1, "block": 1}]})  # nothing is ever fetched
    workload = workload_from_dict({"arrivals": {"kind": "closed", "clients": 2,
                                                "think_time": 0}})
    with pytest.raises(InputError, match="no progress in simulated time") as caught:
        simulate(profile, bank, blocked, workload, queries=100_000, seed=0)
    assert caught.value.field == "arrivals.think_time"
    assert "1,000" in str(caught.value)
    # with a think time the same loop ends, and every fetch took no time
    thinking = workload_from_dict({"arrivals": {"kind": "closed", "clients": 2,
                                                "think_time": "1 ms"}})
    result = simulate(profile, bank, blocked, thinking, queries=5000, seed=0)
    assert result.fetch_time_s["max"] == 0.0


def test_the_cli_names_the_workload_of_a_stuck_closed_loop(monkeypatch, cli, tmp_path):
    monkeypatch.setattr(engine_module, "MAX_STALLED_QUERIES", 1000)
    layout = _write(tmp_path, "blocked.yaml", json.dumps({
        "profile": "paper-hypothetical", "bank": "paper-storage-example",
        "placement": {2: "disk", 3: "disk", 4: "disk"},
        "blocked": [{"level": 1, "block": b} for b in range(16)]}))
    workload = _write(tmp_path, "stuck.yaml",
                      "arrivals: {kind: closed, clients: 4, think_time: 0 s}\n")
    result = cli("simulate", "--layout", layout, "--workload", workload, "--queries", "5000")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"memsim: error: {workload}: field 'arrivals.think_time': "
                                    "the closed loop makes no progress in simulated time")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_trace_past_the_clock_limit_names_the_file(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    zeros = np.zeros(2, dtype=np.int64)
    pq.write_table(pa.table({"query_id": np.arange(2), "arrival_s": [0.0, 2e9],
                             **{f"block_L{d}": zeros for d in range(1, 5)}}),
                   tmp_path / "long.parquet")
    path = str(tmp_path / "long.parquet")
    result = cli("simulate", "--layout", "paper-flat", "--trace", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"memsim: error: {path}: field 'arrival_s': the arrivals")
    assert len(result.stderr.strip().splitlines()) == 1


def test_runs_a_float_clock_cannot_time_and_crowds_of_clients_are_refused(paper_profile,
                                                                          paper_bank):
    layout = memsim.load_layout("paper-hierarchical")
    slow = workload_from_dict({"arrivals": {"kind": "poisson", "rate": 1e-12}})
    with pytest.raises(InputError, match="limit is 1e[+]09 s") as caught:
        simulate(paper_profile, paper_bank, layout, slow, queries=100)
    assert caught.value.field == "arrivals"
    dreamy = workload_from_dict({"arrivals": {"kind": "closed", "clients": 1,
                                              "think_time": 1e12}})
    with pytest.raises(InputError, match="the run lasted"):
        simulate(paper_profile, paper_bank, layout, dreamy, queries=10)
    crowd = workload_from_dict({"arrivals": {"kind": "closed", "clients": limits.MAX_CLIENTS + 1,
                                             "think_time": "1 ms"}})
    with pytest.raises(InputError, match="closed-loop clients") as caught:
        simulate(paper_profile, paper_bank, layout, crowd, queries=10)
    assert caught.value.field == "arrivals.clients"


def test_cli_option_ranges_match_the_limits(cli):
    from memsim.cli.simulate import simulate_cmd

    queries = next(p for p in simulate_cmd.params if p.name == "queries")
    assert (queries.type.min, queries.type.max) == (1, limits.MAX_QUERIES)
    result = cli("simulate", "--layout", "paper-flat", "--workload", "zipf-topic", "--seed",
                 "-1")
    assert result.exit_code == 2 and "--seed" in result.stderr


# ------------------------------------------------------------------ 7. non-finite text
def test_text_never_prints_nan():
    nan = math.nan
    result = SimulationResult(
        queries=0, warmup=0, seed=0, fetch="parallel", simulated_s=0.0,
        fetch_time_s={"mean": nan, "p50": nan, "p95": nan, "p99": nan, "max": nan},
        fetch_time_ci_s={"mean": None, "p50": [nan, nan], "p95": None, "p99": None},
        per_level={1: {"tier": "dev", "bytes": 3, "resident": False, "time_s": nan,
                       "p99_s": nan}},
        per_tier={}, utilization={}, offered_load={}, cache_hit_ratio=None)
    text = simulation_text(result)
    assert "nan" not in text.lower() and "inf" not in text.lower()
    assert "  max  -" in text
