"""`memsim simulate` end to end: JSON keys, traces, and one clear line for bad workloads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_simulate_json_keys(cli):
    result = cli("simulate", "--layout", "paper-hierarchical", "--workload", "zipf-topic",
                 "--queries", "3000", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= {"fetch_time_s", "per_level", "per_tier", "utilization",
                         "cache_hit_ratio", "queries"}
    assert set(data["fetch_time_s"]) >= {"mean", "p50", "p95", "p99", "max"}
    assert data["queries"] == 2700  # 10% warm-up
    assert all(0 <= u < 1 for u in data["utilization"].values())
    assert data["per_level"]["2"]["tier"] == "flash"


def test_simulate_cache_budget_and_trace_out(cli, tmp_path):
    out = tmp_path / "t.parquet"
    result = cli("simulate", "--layout", "paper-flat", "--workload", "zipf-topic",
                 "--queries", "2000", "--cache-budget", "400 MB", "--trace-out", str(out),
                 "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert 0 < data["cache_hit_ratio"] < 1
    table = pq.read_table(out)
    assert table.num_rows == 2000 and "fetch_time_s" in table.column_names
    replay = cli("simulate", "--layout", "paper-flat", "--trace", str(out), "--queries", "2000",
                 "--cache-budget", "400 MB", "--json")
    assert replay.exit_code == 0, replay.stderr
    assert json.loads(replay.stdout)["fetch_time_s"] == data["fetch_time_s"]


def test_overload_warning(cli, tmp_path):
    workload = _write(tmp_path, "busy.yaml", "arrivals: {kind: poisson, rate: 40/s}\n")
    result = cli("simulate", "--layout", "paper-hierarchical", "--workload", workload,
                 "--queries", "1000")
    assert result.exit_code == 0
    assert "memsim: warning: tier 'flash' is overloaded" in result.stderr


@pytest.mark.parametrize(("text", "line", "field"), [
    ("arrivals: {kind: poisson, rate: -5/s}\n", 1, "arrivals.rate"),
    ("arrivals: {kind: poisson, rate: 5/s}\nrouting: {kind: zipf, s: 0}\n", 2, "routing.s"),
    ("arrivals: {kind: poisson, rate: 5/s}\nrouting: {kind: zipf, s: -1}\n", 2, "routing.s"),
    ("arrivals: {kind: poisson, rate: fast}\n", 1, "arrivals.rate"),
    ("arrivals: {kind: closed, clients: 0, think_time: 1 ms}\n", 1, "arrivals.clients"),
    ("arrivals: {kind: teleport}\n", 1, "arrivals"),
])
def test_bad_workload(cli, tmp_path, text, line, field):
    path = _write(tmp_path, "w.yaml", text)
    result = cli("simulate", "--layout", "paper-flat", "--workload", path, "--queries", "10")
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith(f"memsim: error: {path}:{line}: field '{field}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_empty_routing_file(cli, tmp_path):
    empty = pa.table({"level": pa.array([], pa.int64()), "block": pa.array([], pa.int64()),
                      "count": pa.array([], pa.float64())})
    pq.write_table(empty, tmp_path / "counts.parquet")
    path = _write(tmp_path, "w.yaml", "arrivals: {kind: poisson, rate: 5/s}\n"
                  "routing: {kind: empirical, file: counts.parquet}\n")
    result = cli("simulate", "--layout", "paper-flat", "--workload", path, "--queries", "10")
    assert result.exit_code == 2
    assert "counts.parquet" in result.stderr and "empty" in result.stderr.lower()


def test_trace_outside_the_bank(cli, tmp_path):
    n = 5
    table = pa.table({"query_id": np.arange(n), "arrival_s": np.arange(n, dtype=float),
                      "block_L1": np.zeros(n, dtype=np.int64),
                      "block_L2": np.zeros(n, dtype=np.int64),
                      "block_L3": np.zeros(n, dtype=np.int64),
                      "block_L4": np.array([0, 1, 2, 70000, 3], dtype=np.int64)})
    pq.write_table(table, tmp_path / "bad.parquet")
    result = cli("simulate", "--layout", "paper-flat", "--trace",
                 str(tmp_path / "bad.parquet"))
    assert result.exit_code == 2
    assert "bad.parquet" in result.stderr and "block_L4" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_workload_and_trace_are_exclusive(cli):
    result = cli("simulate", "--layout", "paper-flat")
    assert result.exit_code == 2 and "--workload or --trace" in result.stderr
