"""Running a sweep's points and keeping their rows: executors agree, a kill -9 or a killed Dask
worker loses nothing and duplicates nothing, failures are rows, resume runs only new points,
and pandas and DuckDB read the dataset back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from memsim.errors import InputError
from memsim.sweep import results
from memsim.sweep.columns import FIXED, VOLATILE, empty_row
from memsim.sweep.executors import DaskExecutor, InlineExecutor, ProcessExecutor
from memsim.sweep.point import Point
from memsim.sweep.results import ResultsWriter, read_results, rows_to_table
from memsim.sweep.runner import run_sweep

ROOT = Path(__file__).resolve().parents[1]


# ---- stand-in stages (module level: worker processes import them from this module) ----

def fake_run(points: list[Point], *, simulate: bool = True) -> list[dict[str, Any]]:
    """Rows computed from the point's `x` (deterministic); `fail` makes a failed row,
    `raise` raises, `sleep` waits, `pidfile` records the worker's pid."""
    rows = []
    for p in points:
        inp = p.inputs
        if inp.get("pidfile"):
            with open(inp["pidfile"], "a") as fh:
                fh.write(f"{os.getpid()}\n")
        if inp.get("sleep"):
            time.sleep(inp["sleep"])
        if inp.get("exit"):
            os._exit(3)  # the worker process dies
        if inp.get("raise"):
            raise RuntimeError(f"boom at {p.index}")
        row = empty_row()
        x = float(inp["x"])
        row.update(point=p.key, index=p.index, sample=p.sample, rate=inp.get("rate"),
                   wall_s=time.perf_counter() % 1)
        if inp.get("fail"):
            row.update(status="failed", failed_stage="estimate", error="no such thing")
        else:
            row.update(status="ok", est_mean_s=x * 1e-3, est_p99_s=x * 3e-3,
                       cost_usd_month=100.0 / (1 + x), placement="2:flash")
            if simulate:
                row.update(sim_queries=1000, sim_mean_s=x * 1.1e-3, sim_stable=True)
        rows.append(row)
    return rows


def fast_run(points: list[Point], *, simulate: bool = True) -> list[dict[str, Any]]:
    """fake_run without the sleeps (a rerun after a kill)."""
    return fake_run([Point(p.index, p.axes, {**p.inputs, "sleep": 0}, key=p.key)
                     for p in points], simulate=simulate)


def make_points(n: int, start: int = 0, **extra: Any) -> list[Point]:
    """Points 0..n-1 on two axes: a number `a.x` and a text `a.size`."""
    pts = []
    for i in range(start, n):
        axes = {"a.x": i, "a.size": f"{8 + i} GB"}
        pts.append(Point(i, axes, {"x": i, "size": axes["a.size"], **extra}))
    return pts


AXES = ["a.x", "a.size"]


def comparable(table: pa.Table) -> list[dict[str, Any]]:
    return table.drop_columns([c for c in VOLATILE if c in table.column_names]).to_pylist()


@pytest.fixture(scope="module")
def dask_local():
    """One two-worker LocalCluster for the module."""
    ex = DaskExecutor(None, 2)
    assert ex.workers == 2 and ex.dashboard_link
    yield ex
    ex.close()


# ---- the dataset ----

def test_rows_to_table_types_and_order():
    rows = [{"a.x": 1, "a.size": "8 GB", "point": "k1", "index": 0, "status": "ok",
             "sim_queries": 10, "junk": 1},
            {"a.x": 2.5, "a.size": 16, "point": "k2", "index": 1}]
    t = rows_to_table(rows, AXES)
    assert t.column_names == AXES + list(FIXED)
    assert t.schema.field("a.x").type == pa.float64()
    assert t.schema.field("a.size").type == pa.string()
    assert t.column("a.size").to_pylist() == ["8 GB", "16"]
    for name, (typ, _) in FIXED.items():
        assert t.schema.field(name).type == typ
    assert rows_to_table([{"a.x": True}], ["a.x"]).schema.field("a.x").type == pa.string()


def test_refuses_an_out_that_is_not_a_dataset(tmp_path):
    f = tmp_path / "results.parquet"
    f.write_text("not a dataset")
    with pytest.raises(InputError, match="not a results dataset"):
        run_sweep(make_points(2), f, axes=AXES, run=fake_run)
    d = tmp_path / "home"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not a results dataset \(it holds notes.txt\)"):
        ResultsWriter(d, AXES)
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]  # nothing written there
    with pytest.raises(InputError) as info:
        read_results(f)
    assert "\n" not in str(info.value)


def test_writer_is_atomic_resumable_and_read_by_pandas_and_duckdb(tmp_path):
    import duckdb  # imported here: Dask workers import this module for its stand-ins
    import pandas as pd

    out = tmp_path / "r.parquet"
    (out).mkdir()
    (out / ".part-000007-dead.tmp").write_bytes(b"half a part")  # a killed run's leftover
    with ResultsWriter(out, AXES, name="demo") as w:
        assert not (out / ".part-000007-dead.tmp").exists()
        w.write(fake_run(make_points(3)))
        w.flush()
        w.write(fake_run(make_points(5, 3)))
        w.write(fake_run(make_points(2)))  # already present: not written twice
        assert len(w.keys()) == 5
    assert sorted(p.name for p in out.iterdir()) == [
        "_lock", "_sweep.json", "part-000001.parquet", "part-000002.parquet"]
    table = read_results(out)
    assert table.num_rows == 5 and table.column("index").to_pylist() == list(range(5))
    frame = pd.read_parquet(out)
    assert len(frame) == 5 and sorted(frame["point"]) == sorted(table.column("point").to_pylist())
    glob = str(out / "*.parquet")
    assert duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchall() == [(5,)]
    keys = duckdb.sql(f"select point from read_parquet('{glob}') order by index").fetchall()
    assert [k for (k,) in keys] == table.column("point").to_pylist()
    with ResultsWriter(out, AXES) as w:
        assert w.keys() == set(table.column("point").to_pylist())


def test_a_second_writer_is_refused(tmp_path):
    with ResultsWriter(tmp_path / "r", AXES), pytest.raises(InputError, match="another sweep"):
        ResultsWriter(tmp_path / "r", AXES)


# ---- running ----

def test_failing_points_are_rows_and_the_sweep_goes_on(tmp_path):
    pts = make_points(6)
    pts[2] = Point(2, pts[2].axes, {**pts[2].inputs, "fail": True})
    pts[4] = Point(4, pts[4].axes, {**pts[4].inputs, "raise": True})
    table = run_sweep(pts, tmp_path / "r", axes=AXES, run=fake_run, target_batch_s=10.0)
    status = table.column("status").to_pylist()
    assert status == ["ok", "ok", "failed", "ok", "failed", "ok"]
    errors = table.column("error").to_pylist()
    assert errors[2] == "no such thing" and errors[4] == "RuntimeError: boom at 4"
    assert table.column("a.x").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_resume_with_a_widened_sweep_runs_only_the_new_points(tmp_path):
    out = tmp_path / "r"
    seen: list[tuple[int, int]] = []
    first = run_sweep(make_points(4), out, axes=AXES, run=fake_run)
    assert first.num_rows == 4
    again = run_sweep(make_points(4), out, axes=AXES, run=fake_run,
                      progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 0)] and comparable(again) == comparable(first)
    seen.clear()
    wide = [Point(p.index, {**p.axes, "b": "x"}, {**p.inputs, "b": "x"})
            if p.index >= 4 else p for p in make_points(7)]
    table = run_sweep(wide, out, axes=AXES + ["b"], run=fake_run,
                      progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    assert table.num_rows == 7 and len(set(table.column("point").to_pylist())) == 7
    assert table.column("b").to_pylist() == [None] * 4 + ["x"] * 3
    assert read_results(out).num_rows == 7


def test_out_none_keeps_rows_in_memory(tmp_path):
    table = run_sweep(make_points(5), None, axes=AXES, run=fake_run)
    assert table.num_rows == 5 and table.column_names[:2] == AXES


def test_confirm_screens_then_simulates_the_chosen_points(tmp_path):
    out = tmp_path / "r"
    pts = make_points(8)
    calls: list[pa.Table] = []

    def top2(screen: pa.Table) -> set[str]:
        calls.append(screen)
        assert screen.column("sim_mean_s").null_count == screen.num_rows  # not simulated
        best = sorted(screen.to_pylist(), key=lambda r: r["cost_usd_month"])[:2]
        return {r["point"] for r in best}

    table = run_sweep(pts, out, axes=AXES, run=fake_run, confirm=top2)
    assert table.num_rows == 8 and len(calls) == 1 and calls[0].num_rows == 8
    confirmed = dict(zip(table.column("index").to_pylist(),
                         table.column("confirmed").to_pylist(), strict=True))
    assert confirmed == {i: i >= 6 for i in range(8)}  # the cheapest two: the largest x
    sims = table.column("sim_mean_s").to_pylist()
    assert [s is not None for s in sims] == [i >= 6 for i in range(8)]
    import pandas as pd

    assert len(pd.read_parquet(out)) == 8  # the screening rows stay in _screen/
    assert read_results(out / "_screen").num_rows == 8
    again = run_sweep(pts, out, axes=AXES, run=fake_run, confirm=top2)
    assert len(calls) == 1 and comparable(again) == comparable(table)


REAL_SPEC = {
    "name": "runner-test",
    "base": {"profile": "phone", "bank": "C2", "workload": "zipf-topic", "rate": "2/s",
             "layout": {"fetch": "parallel", "placement": {1: "ram", 2: "flash", 3: "ssd-ext"},
                        "resident": []}},
    "axes": {"profile.tiers.flash.bandwidth": ["1 GB/s", "2 GB/s", "4 GB/s"],
             "workload.rate": [1, 20]},
    "stages": {"optimize": False, "estimate": {"samples": 500, "seed": 0},
               "simulate": {"queries": 1000, "seed": 0}},
}


def two_best(screen: pa.Table) -> set[str]:
    """Confirm the two points of least estimated p99 (ties by key)."""
    rows = sorted(screen.to_pylist(), key=lambda r: (r["est_p99_s"], r["point"]))
    return {r["point"] for r in rows[:2]}


def test_real_points_give_the_same_rows_inline_in_processes_and_on_dask(tmp_path, dask_local):
    from memsim.sweep.spec import load_spec

    spec = load_spec(REAL_SPEC)
    points, axes = spec.points(), list(spec.axes)
    assert len(points) == 6
    inline = run_sweep(points, tmp_path / "inline", axes=axes, executor=InlineExecutor(),
                       confirm=two_best)
    assert inline.column("status").to_pylist() == ["ok"] * 6, inline.column("error")
    assert inline.column("confirmed").to_pylist().count(True) == 2
    sims = inline.column("sim_queries").to_pylist()
    assert [q is not None for q in sims] == inline.column("confirmed").to_pylist()
    assert inline.column(axes[0]).to_pylist()[:2] == ["1 GB/s", "1 GB/s"]
    assert inline.schema.field(axes[1]).type == pa.float64()
    with ProcessExecutor(2) as ex:
        pooled = run_sweep(points, tmp_path / "pool", axes=axes, executor=ex, confirm=two_best)
    dask = run_sweep(points, tmp_path / "dask", axes=axes, executor=dask_local,
                     confirm=two_best)
    assert comparable(pooled) == comparable(inline)
    assert comparable(dask) == comparable(inline)
    assert comparable(read_results(tmp_path / "dask")) == comparable(inline)


def test_a_point_that_kills_its_worker_is_a_failed_row_and_the_sweep_goes_on(tmp_path):
    """A point whose stages kill the worker process (a crash, the out-of-memory killer) breaks
    the whole pool: the pool is restarted, the points lost with it are rerun one at a time,
    and only the culprit becomes a failed row."""
    pts = make_points(12)
    pts[5] = Point(5, pts[5].axes, {**pts[5].inputs, "exit": True})
    with ProcessExecutor(2) as ex:
        table = run_sweep(pts, tmp_path / "r", axes=AXES, executor=ex, run=fake_run)
    rows = {r["point"]: r for r in table.to_pylist()}
    assert len(rows) == 12 and set(rows) == {p.key for p in pts}
    assert rows[pts[5].key]["status"] == "failed"
    assert "worker process died" in rows[pts[5].key]["error"]
    assert all(r["status"] == "ok" for k, r in rows.items() if k != pts[5].key)
    assert read_results(tmp_path / "r").num_rows == 12


# The killed run: its own stand-in (no pickling inline) on the same points as make_points
# (equal inputs, equal keys), each point 50 ms, a part flushed after every batch.
CHILD = textwrap.dedent("""
    import time
    from memsim.sweep import results
    from memsim.sweep.columns import empty_row
    from memsim.sweep.point import Point
    from memsim.sweep.runner import run_sweep

    def slow(points, *, simulate=True):
        rows = []
        for p in points:
            time.sleep(p.inputs["sleep"])
            rows.append({**empty_row(), "point": p.key, "index": p.index, "status": "ok"})
        return rows

    points = [Point(i, {"a.x": i, "a.size": f"{8 + i} GB"},
                    {"x": i, "size": f"{8 + i} GB", "sleep": 0.05}) for i in range(40)]
    results.FLUSH_SECONDS = 0.05
    run_sweep(points, OUT, axes=["a.x", "a.size"], run=slow)
    """)


def test_kill_9_mid_run_then_rerun_keeps_every_point_once(tmp_path):
    out = tmp_path / "r.parquet"
    code = CHILD.replace("OUT", repr(str(out)))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while not (out.is_dir() and list(out.glob("part-*.parquet"))):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no part file within 60 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    before = read_results(out).num_rows
    assert 0 < before < 40
    pts = make_points(40, sleep=0.05)
    assert set(read_results(out).column("point").to_pylist()) <= {p.key for p in pts}
    ran: list[int] = []
    table = run_sweep(pts, out, axes=AXES, run=fast_run,
                      progress=lambda d, t: ran.append(t))
    assert ran[-1] == 40 - before
    keys = table.column("point").to_pylist()
    assert len(keys) == 40 == len(set(keys))
    assert read_results(out).num_rows == 40
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_killed_dask_worker_task_reruns_elsewhere(tmp_path, dask_local):
    pidfile = tmp_path / "pids"
    pidfile.touch()
    pts = make_points(4, sleep=0.3, pidfile=str(pidfile))
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = pidfile.read_text().split()
            if lines:
                pid = int(lines[0])
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    table = run_sweep(pts, tmp_path / "r", axes=AXES, executor=dask_local, run=fake_run)
    thread.join()
    assert killed, "no task started"
    keys = table.column("point").to_pylist()
    assert sorted(keys) == sorted(p.key for p in pts)
    assert table.column("status").to_pylist() == ["ok"] * 4
    pids = [int(x) for x in pidfile.read_text().split()]
    assert len(pids) > 4  # the killed worker's point ran twice
    assert {p for p in pids if p != killed[0]}  # ... and again on a live worker


def test_unreachable_scheduler_and_missing_distributed(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match="no Dask scheduler answered within 0.3 s"):
        DaskExecutor(f"tcp://127.0.0.1:{port}", timeout=0.3)
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(InputError, match=r"pip install 'memsim\[dask\]'"):
        DaskExecutor(None, 1)


def test_flush_is_time_or_count_based(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "FLUSH_ROWS", 3)
    monkeypatch.setattr(results, "FLUSH_SECONDS", 3600)
    with ResultsWriter(tmp_path / "r", AXES) as w:
        w.write(fake_run(make_points(2)))
        assert not results.part_files(w.path)
        w.write(fake_run(make_points(3, 2)))
        assert len(results.part_files(w.path)) == 1
        w.write(fake_run(make_points(4, 3)))
        assert len(results.part_files(w.path)) == 1
    assert len(results.part_files(tmp_path / "r")) == 2


def test_many_parts_are_merged_at_close_and_a_killed_merge_heals(tmp_path, monkeypatch):
    import duckdb
    import pyarrow.parquet as pq

    monkeypatch.setattr(results, "FLUSH_ROWS", 1)
    monkeypatch.setattr(results, "COMPACT_PARTS", 4)
    out = tmp_path / "r"
    with ResultsWriter(out, AXES) as w:
        for p in make_points(6):
            w.write(fake_run([p]))
        assert len(results.part_files(out)) == 6
    assert [p.name for p in results.part_files(out)] == ["part-000001-000006.parquet"]
    with ResultsWriter(out, AXES) as w:  # two more parts: under the bound, kept
        for p in make_points(8, 6):
            w.write(fake_run([p]))
    names = sorted(p.name for p in results.part_files(out))
    assert names == ["part-000001-000006.parquet", "part-000007.parquet", "part-000008.parquet"]
    # a merge killed after its rename, before its deletes: the merged part and its sources
    merged = pa.concat_tables([pq.read_table(out / n) for n in names])
    pq.write_table(merged, out / "part-000001-000008.parquet")
    table = read_results(out)
    assert table.num_rows == 8 and len(set(table.column("point").to_pylist())) == 8
    with ResultsWriter(out, AXES) as w:
        assert len(w.keys()) == 8
    assert [p.name for p in out.glob("part-*")] == ["part-000001-000008.parquet"]
    glob = str(out / "*.parquet")
    assert duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchall() == [(8,)]
