"""`memsim optimize --granularity bucket` end to end, and the simulator's verdict on the gain."""

from __future__ import annotations

import json

import numpy as np
import pytest

import memsim
from memsim.optimize import optimize_blocks

ZIPF = {"arrivals": {"kind": "poisson", "rate": "2/s"}, "routing": {"kind": "zipf", "s": 1.0}}


def test_bucket_beats_level_and_the_simulator_confirms(paper_profile, paper_bank):
    """Zipf s = 1 with the paper device's 16 GB of RAM: hot blocks move up a tier."""
    workload = memsim.workload_from_dict(ZIPF)
    bucket = optimize_blocks(paper_profile, paper_bank, workload, verify_estimate=False)
    level = memsim.optimize(paper_profile, paper_bank)
    runs = {}
    for name, layout in (("bucket", bucket.layout), ("level", level.layout)):
        runs[name] = memsim.simulate(paper_profile, paper_bank, layout, workload,
                                     queries=6000, seed=11)
    low_level = runs["level"].fetch_time_ci_s["mean"][0]
    high_bucket = runs["bucket"].fetch_time_ci_s["mean"][1]
    assert high_bucket < low_level  # the intervals do not even overlap
    assert runs["bucket"].mean_s < 0.75 * runs["level"].mean_s
    est = memsim.estimate(paper_profile, paper_bank, bucket.layout, workload=workload)
    assert est.mean_s <= bucket.objective_s * (1 + 1e-9)  # the model's bound holds


def test_cli_bucket_out_estimate_and_verify(cli, tmp_path):
    out = tmp_path / "hot.yaml"
    result = cli("optimize", "--granularity", "bucket", "--workload", "zipf-topic", "--out",
                 str(out), "--verify", "--verify-queries", "2000", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["granularity"] == "bucket" and data["status"] == "optimal"
    assert data["objective_s"] < data["level_objective_s"]
    assert data["baseline_s"] >= data["objective_s"]
    assert set(data["verify"]) >= {"estimate_fetch_time_s", "simulate_fetch_time_s"}
    assert (tmp_path / "hot.blocks.parquet").exists()
    est = cli("estimate", "--layout", str(out), "--workload", "zipf-topic", "--json")
    assert est.exit_code == 0, est.stderr
    assert json.loads(est.stdout)["fetch_time_s"]["mean"] == pytest.approx(
        data["fetch_time_s"]["mean"], rel=1e-9)


def test_private_subtrees_stay_off_the_cloud(paper_bank):
    profile = memsim.load_profile("laptop")
    workload = memsim.workload_from_dict(ZIPF)
    from memsim.blockmap import Subtree
    from memsim.optimize import Policy

    # small local tiers push most blocks to the cloud; the private subtree must stay local
    tiny_fast = profile.with_tier("nvme", capacity="100 GB").with_tier("hdd", capacity="50 GB")
    policy = Policy(private=[Subtree(2, 7)], private_tiers=["ram", "nvme", "hdd"])
    result = optimize_blocks(tiny_fast, paper_bank, workload, policy=policy,
                             verify_estimate=False)
    names = tiny_fast.tier_names
    block_map = result.layout.block_map(tiny_fast)
    public: set[str] = set()
    for lv in paper_bank.active_levels:
        ids = np.arange(lv.blocks)
        default = names.index(result.layout.placement[lv.depth])
        tiers = block_map.lookup(lv.depth, ids, default) if block_map else np.full(
            lv.blocks, default)
        inside = Subtree(2, 7).contains(lv.depth, ids, paper_bank.branching)
        assert "cloud" not in {names[t] for t in tiers[inside]}
        public |= {names[t] for t in tiers[~inside]}
    assert "cloud" in public  # the constraint binds: without it the subtree could go there


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--budget", "10", "--private-tiers", "ram"], 2, "--private-tiers needs --granularity bucket"),
    (["--granularity", "bucket", "--private", "1:3"], 2, "--private-tiers"),
    (["--granularity", "bucket", "--private", "9:1", "--private-tiers", "ram"], 2,
     "not in bank"),
    (["--granularity", "bucket", "--volatile", "tape"], 2, "unknown tier 'tape'"),
    (["--granularity", "bucket", "--blocked", "one"], 2, "LEVEL:BLOCK"),
    (["--granularity", "bucket", "--profile", "{cloudy}", "--budget", "1"], 3,
     "the budget of $1.00/month is short by $17.5"),
])
def test_bucket_cli_errors(cli, tmp_path, args, code, words):
    cloudy = tmp_path / "cloudy.yaml"
    cloudy.write_text("name: cloudy\ntiers:\n"
                      "  - {name: ram, kind: ram, capacity: 8 GB, bandwidth: 20 GB/s}\n"
                      "  - {name: cloud, kind: cloud, bandwidth: 100 MB/s, cost: "
                      "{storage_usd_per_gb_month: 0.023}}\n")
    result = cli("optimize", *[a.format(cloudy=cloudy) for a in args])
    assert result.exit_code == code, result.stdout
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_shards_keep_tiers_under_their_object_limit(paper_bank):
    profile = memsim.load_profile("paper-hypothetical").with_tier("disk", max_objects=5000)
    result = optimize_blocks(profile, paper_bank, memsim.workload_from_dict(ZIPF),
                             verify_estimate=False)
    chunking = result.layout.chunking
    objects = sum(-(-counts.get("disk", 0) // chunking.get(depth, 1))
                  for depth, counts in result.tier_blocks.items())
    assert objects <= 5000
    unsharded = sum(counts.get("disk", 0) for counts in result.tier_blocks.values())
    assert unsharded > 5000 and chunking  # sharding was needed, and used
    impossible = profile.with_tier("disk", max_objects=1).with_tier("cloud", max_objects=1)
    with pytest.raises(memsim.InfeasibleError, match="objects"):
        optimize_blocks(impossible, paper_bank, memsim.workload_from_dict(ZIPF),
                        verify_estimate=False)


@pytest.mark.parametrize(("s", "ram"), [(0.5, "2 GB"), (1.0, "16 GB")])
def test_kept_layout_is_the_estimators_fastest(paper_profile, paper_bank, s, ram):
    """With little RAM and mild skew the bound's optimum shares tiers between levels; the
    estimator's verdict keeps whichever of bucket, greedy and level fetches fastest."""
    profile = paper_profile.with_tier("ram", capacity=ram)
    workload = memsim.workload_from_dict({**ZIPF, "routing": {"kind": "zipf", "s": s}})
    result = optimize_blocks(profile, paper_bank, workload, buckets=32, samples=20_000)
    assert set(result.candidates_s) == {"bucket", "greedy", "level"}
    assert result.estimate.mean_s == min(result.candidates_s.values())
    level = memsim.estimate(profile, paper_bank, memsim.optimize(profile, paper_bank).layout)
    assert result.estimate.mean_s <= level.mean_s * (1 + 1e-9)


def test_popularity_from_a_trace(cli, tmp_path, paper_profile, paper_bank):
    """Bucket placement from a recorded trace: its routing reproduces the trace's
    frequencies, and the resulting layout matches the one from the generating workload."""
    from memsim.popularity import block_popularity, popularity_from_trace
    from memsim.workload import workload_from_trace

    workload = memsim.workload_from_dict(ZIPF)
    trace = tmp_path / "t.parquet"
    memsim.simulate(paper_profile, paper_bank, memsim.load_layout("paper-hierarchical"),
                    workload, queries=3000, seed=2, trace_out=trace)
    replayed = workload_from_trace(trace, paper_bank)
    for depth in (2, 3, 4):
        assert np.allclose(block_popularity(paper_bank, replayed.routing, depth),
                           popularity_from_trace(trace, paper_bank, depth))
    assert replayed.arrivals.rate == pytest.approx(2.0, rel=0.1)
    result = cli("optimize", "--granularity", "bucket", "--trace", str(trace), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["objective_s"] < data["level_objective_s"]
    assert cli("optimize", "--trace", str(trace)).exit_code == 2  # needs bucket granularity


def test_bucket_json_reports_the_solvers_bound(cli):
    data = json.loads(cli("optimize", "--granularity", "bucket", "--workload", "zipf-topic",
                          "--idle", "--json").stdout)
    assert data["status"] == "optimal" and data["gap"] == pytest.approx(0.0, abs=1e-9)
    assert data["bound_s"] == pytest.approx(data["model_objective_s"], rel=1e-6)
    # under load the solve stops at a relative gap of 1e-3, and says so
    loaded = json.loads(cli("optimize", "--granularity", "bucket", "--workload", "zipf-topic",
                            "--solver", "highs", "--json").stdout)
    assert loaded["gap"] is not None and loaded["gap"] <= 1e-3 + 1e-9
    assert loaded["bound_s"] <= loaded["model_objective_s"] * (1 + 1e-9)
    assert max(loaded["utilization"].values()) <= 0.8 * (1 + 0.05)


def test_bucket_json_is_the_whole_stdout_in_a_fresh_process():
    """HiGHS prints a banner from C on the first instance of a process: never on stdout."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from memsim.cli import main; main()",
                          "optimize", "--granularity", "bucket", "--buckets", "4",
                          "--workload", "zipf-topic", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout)["granularity"] == "bucket"
