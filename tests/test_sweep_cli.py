"""`memsim sweep` and `memsim sweep report` from the command line: runs, resumes, dry runs, and
one-line errors for every bad input (never a traceback)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memsim
from memsim.sweep.columns import VOLATILE

SPEC = {
    "name": "tiny",
    "base": {"profile": "phone", "bank": "A2", "workload": "zipf-topic",
             "optimize": {"scenarios": 4}},
    "axes": {"profile.tiers.ram.capacity": ["4 GB", "12 GB"], "workload.rate": [1, 4]},
    "stages": {"estimate": {"samples": 200}},
}


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def _one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("memsim: error: "), result.stderr
    return lines[0]


def test_run_resume_and_report(cli, spec, tmp_path):
    out = tmp_path / "r.parquet"
    first = cli("sweep", str(spec), "--workers", "0", "--out", str(out))
    assert first.exit_code == 0, first.output
    assert not first.stderr  # not a terminal: no log lines
    assert f"4 points in {out}: 4 ok (4 run in this process, 0 already there)" in first.stdout
    rows = memsim.sweep.read_results(out)
    assert rows.num_rows == 4 and set(rows.column("status").to_pylist()) == {"ok"}
    # the RAM axis really changed the profile the optimizer saw: 4 GB cannot hold level 3
    placements = dict(zip(rows.column("profile.tiers.ram.capacity").to_pylist(),
                          rows.column("placement").to_pylist(), strict=False))
    assert "3:ram" in placements["12 GB"] and "3:ram" not in placements["4 GB"]
    again = cli("sweep", str(spec), "--workers", "0", "--out", str(out), "--json")
    assert again.exit_code == 0
    data = json.loads(again.stdout)
    assert data["ran"] == 0 and data["points"] == 4 and data["status"]["ok"] == 4
    same = memsim.sweep.read_results(out)
    assert same.drop_columns(list(VOLATILE)).equals(rows.drop_columns(list(VOLATILE)))
    report = cli("sweep", "report", str(out), "--sensitivity", "p99", "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["summary"]["points"] == 4
    # every part file is plain Parquet
    assert sum(pq.read_table(p).num_rows for p in out.glob("*.parquet")) == 4


def test_dry_run_lists_points_without_running(cli, spec, tmp_path):
    result = cli("sweep", str(spec), "--dry-run", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [p["axes"]["workload.rate"] for p in data["points"]] == [1, 4, 1, 4]
    assert len({p["point"] for p in data["points"]}) == 4
    assert not list(tmp_path.glob("*.parquet"))


def test_bad_inputs_are_one_line(cli, spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a default --out would go
    bad = tmp_path / "bad.yaml"
    bad.write_text("axes:\n  profile.tiers.flsh.bandwidth: ['1 GB/s']\n")
    assert "unknown tier 'flsh'" in _one_line_error(cli("sweep", str(bad), "--dry-run"))
    a_file = tmp_path / "taken.txt"
    a_file.write_text("mine")
    _one_line_error(cli("sweep", str(spec), "--out", str(a_file), "--workers", "0"))
    assert a_file.read_text() == "mine"
    _one_line_error(cli("sweep", str(spec), "--scheduler", "tcp://127.0.0.1:1", "--dask-local"))
    _one_line_error(cli("sweep", str(spec), "--confirm", "best", "--workers", "0",
                        "--out", str(tmp_path / "c.parquet")))
    _one_line_error(cli("sweep", "report", str(tmp_path / "missing.parquet")))
    assert not list(tmp_path.glob("*.parquet")), "a refused run wrote a dataset"
    out = tmp_path / "r.parquet"
    assert cli("sweep", str(spec), "--workers", "0", "--out", str(out)).exit_code == 0
    assert "--plot" in _one_line_error(cli("sweep", "report", str(out), "--plot",
                                           str(tmp_path / "p.png")))
    assert not (tmp_path / "p.png").exists()
    _one_line_error(cli("sweep", "report", str(out), "--pareto", "p99"))
    _one_line_error(cli("sweep", "report", str(out), "--sensitivity", "speed"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    memsim.sweep(SPEC, out=folder / "r.parquet", workers=0)
    return folder / "r.parquet"


TEXT = st.text(st.sampled_from("p99,:meancostenergytop0123 ._-x"), max_size=20)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # cli keeps no state
@given(pareto=TEXT, sensitivity=TEXT, heatmap=TEXT)
def test_report_options_never_crash(cli, dataset, pareto, sensitivity, heatmap):
    args = ["sweep", "report", str(dataset)]
    for flag, value in (("--pareto", pareto), ("--sensitivity", sensitivity),
                        ("--heatmap", heatmap)):
        if value:
            args += [flag, value]
    result = cli(*args)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        _one_line_error(result)


@settings(max_examples=30, deadline=None)
@given(rule=TEXT, metrics=TEXT)
def test_confirm_options_never_crash(dataset, rule, metrics):
    from memsim.errors import InputError
    from memsim.sweep.confirm import parse_confirm, select

    table = memsim.sweep.read_results(dataset)
    pair = (metrics.split(",") + ["p99"])[:2]
    try:
        chosen = select(table, parse_confirm(rule), metrics=(pair[0], pair[1]))
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert chosen <= set(table.column("point").to_pylist())


def test_kill_9_of_the_command_then_rerun_gives_every_point_once(tmp_path):
    """The real command, its worker processes and all, killed mid-run: the rerun finishes the
    sweep, and every point is in the dataset exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = dict(SPEC, axes={"profile.tiers.ram.capacity": ["4 GB", "12 GB"],
                            "workload.rate": {"from": 1, "to": 8, "steps": 24}},
                stages={"estimate": {"samples": 200}, "simulate": {"queries": 1500}})
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "r.parquet"
    command = [sys.executable, "-m", "memsim", "sweep", str(path), "--workers", "2",
               "--out", str(out)]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not (out.is_dir() and list(out.glob("part-*.parquet"))):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no part file within 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its workers
        proc.wait()
        proc.stderr.close()
    before = memsim.sweep.read_results(out).num_rows
    assert 0 < before < 48
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({48 - before} run on 2 local processes, {before} already there)" in rerun.stdout
    keys = memsim.sweep.read_results(out).column("point").to_pylist()
    assert len(keys) == 48 == len(set(keys))
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
