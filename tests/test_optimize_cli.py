"""`memsim optimize` tells the truth: the recorded command reproduces the layout, time limits
end with the best layout found or one plain line, no half-written --out, honest words."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

import memsim
import memsim.optimize.level as opt
from memsim.errors import InputError, SolverError
from memsim.optimize.solver import SolveOutcome


def _recorded(path: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Chosen by: ")
    args = shlex.split(first.removeprefix("# Chosen by: "))
    assert args[:2] == ["memsim", "optimize"]
    return args[2:]


def _body(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("extra", [
    ["--profile", "phone", "--resident", "2", "--resident-budget", "500 MB",
     "--workload", "zipf-topic", "--scenarios", "8", "--seed", "2"],
    ["--fetch", "sequential", "--resident", "2,3"],
    ["--granularity", "bucket", "--buckets", "5", "--workload", "zipf-topic",
     "--profile", "phone"],
])
def test_recorded_command_reproduces_the_layout(cli, tmp_path, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)
    first = cli("optimize", *extra, "--out", "a.yaml")
    assert first.exit_code == 0, first.output
    args = _recorded(tmp_path / "a.yaml")
    for option in extra:
        assert option in args  # nothing dropped
    assert args[args.index("--out") + 1] == "a.yaml"
    args[args.index("--out") + 1] = "b.yaml"
    again = cli("optimize", *args)
    assert again.exit_code == 0, again.output
    a, b = _body(tmp_path / "a.yaml"), _body(tmp_path / "b.yaml")
    a.pop("name"), b.pop("name")
    a.pop("blocks", None), b.pop("blocks", None)
    assert a == b
    if "bucket" in extra:
        assert (tmp_path / "a.blocks.parquet").read_bytes() == \
            (tmp_path / "b.blocks.parquet").read_bytes()


def test_failed_verify_leaves_no_output(cli, tmp_path, monkeypatch):
    import memsim.cli.optimize as cmd

    def broken(*_a, **_k):
        raise InputError("the simulation failed", field="queries")

    monkeypatch.setattr(cmd, "simulate", broken)
    for extra in ([], ["--granularity", "bucket", "--buckets", "4"]):
        out = tmp_path / "x.yaml"
        result = cli("optimize", *extra, "--verify", "--out", str(out))
        assert result.exit_code == 2
        assert "the simulation failed" in result.stderr
        assert list(tmp_path.iterdir()) == []  # neither the layout nor its block map


def _no_solution(model, name="auto", time_limit=None, gap=0.0, relax=False):
    """What HiGHS says when a tiny time limit stops it before any incumbent."""
    return SolveOutcome(solver="highs", status="time_limit", objective=0.0, bound=None,
                        gap=None, seconds=time_limit or 0.0)


def test_time_limit_without_incumbent_keeps_the_greedy_layout(monkeypatch, paper_bank):
    monkeypatch.setattr(opt, "solve", _no_solution)
    profile = memsim.load_profile("phone")
    result = opt.optimize(profile, paper_bank, time_limit=0.01, samples=100)
    assert result.status == "time_limit" and result.chosen == "greedy"
    assert result.layout.placement == result.baseline.placement
    assert result.objective_s == pytest.approx(result.baseline_s)


def test_time_limit_with_nothing_found_says_so(monkeypatch, cli, paper_bank):
    monkeypatch.setattr(opt, "solve", _no_solution)
    monkeypatch.setattr(opt, "greedy_placement", lambda *a, **k: None)
    with pytest.raises(SolverError, match="--time-limit 0.01 s"):
        opt.optimize(memsim.load_profile("phone"), paper_bank, time_limit=0.01)
    result = cli("optimize", "--time-limit", "0.01")
    assert result.exit_code == 4
    assert result.stderr.count("\n") == 1 and "--time-limit" in result.stderr


def test_real_tiny_time_limit_never_fails_for_want_of_a_level(cli):
    result = cli("optimize", "--profile", "phone", "--resident", "2,3", "--time-limit",
                 "0.0001", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] in ("optimal", "time_limit")
    assert set(data["placement"]) == {"2", "3", "4"}


def test_greedy_words_when_the_optimum_is_free(cli, tmp_path):
    """All levels resident and always kept: 0 s, and no 'infx'."""
    wl = tmp_path / "same.yaml"
    wl.write_text("name: same\narrivals: {kind: poisson, rate: 1}\nlocality: {p: 1.0, depth: 4}\n")
    result = cli("optimize", "--resident", "2,3,4", "--workload", str(wl))
    assert result.exit_code == 0, result.output
    assert "expected fetch time at 1 queries/s: mean 0 s, p99 0 s" in result.stdout
    assert "inf" not in result.stdout
    assert "greedy baseline:" in result.stdout


def test_tiny_resident_budget_warns(cli):
    result = cli("optimize", "--resident", "2", "--resident-budget", "1 MB")
    assert result.exit_code == 0
    assert "memsim: warning: --resident-budget 1 MB is smaller than the smallest resident " \
        "block (151 MB)" in result.stderr
    quiet = cli("optimize", "--resident", "2", "--resident-budget", "500 MB")
    assert "warning" not in quiet.stderr


@pytest.mark.parametrize("args,option", [
    (["--scenarios", "100000000"], "--scenarios"),
    (["--buckets", "1000000000", "--granularity", "bucket"], "--buckets"),
    (["--time-limit", "0"], "--time-limit"),
    (["--time-limit", "nan"], "--time-limit"),
    (["--gap", "inf"], "--gap"),
    (["--buckets", "4096", "--granularity", "bucket"], "--buckets"),  # took a minute
])
def test_absurd_options_are_refused_in_one_line(cli, args, option):
    result = cli("optimize", *args)
    assert result.exit_code == 2
    assert option.lstrip("-") in result.stderr and result.stderr.count("\n") == 1


def test_every_level_that_fits_nowhere_is_named(paper_bank):
    profile = memsim.profile_from_dict({"name": "tiny", "tiers": [
        {"name": "ram", "kind": "ram", "capacity": "2 GB", "bandwidth": "10 GB/s"},
        {"name": "disk", "kind": "disk", "capacity": "100 GB", "bandwidth": "1 GB/s"},
    ]})
    with pytest.raises(memsim.InfeasibleError) as info:
        memsim.optimize(profile, paper_bank)
    message = str(info.value)
    assert "level 3" in message and "level 4" in message and "level 2" not in message


def test_results_share_one_vocabulary(paper_profile, paper_bank):
    level = memsim.optimize(paper_profile, paper_bank, resident_levels=[2], samples=100)
    est = memsim.estimate(paper_profile, paper_bank, level.layout, samples=100)
    for result in (level, est):
        assert set(result.fetch_time_s) >= {"mean", "p50", "p95", "p99"}
        assert result.mean_s == result.fetch_time_s["mean"]
    # no workload: the optimizer's figure is the all-switching one it optimised
    assert level.fetch_time_s == est.switch_fetch_time_s
    wl = memsim.workload_from_dict({"name": "u", "arrivals": {"kind": "poisson", "rate": 1}})
    blocks = memsim.optimize.optimize_blocks(paper_profile, paper_bank, wl, buckets=2, samples=100)
    assert blocks.mean_s == blocks.fetch_time_s["mean"] == blocks.estimate.mean_s
    assert level.to_json()["fetch_time_s"] == level.fetch_time_s
