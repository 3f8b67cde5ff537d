"""Reading sweep results back: metrics by name, fronts against brute force, confirm rules,
main effects and Sobol indices against known answers, heat maps, and the reports."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memsim.errors import InputError
from memsim.sweep.columns import FIXED
from memsim.sweep.confirm import ConfirmRule, parse_confirm, select
from memsim.sweep.report import (
    front,
    heatmap,
    metric_column,
    near_front,
    plot_report,
    report_json,
    report_text,
    summary,
)
from memsim.sweep.sensitivity import sensitivity

PNG = b"\x89PNG\r\n\x1a\n"


def make_table(rows: list[dict[str, Any]], axes: dict[str, pa.DataType]) -> pa.Table:
    """A results table as the runner writes it: the axis columns, then every fixed column
    (null unless a row gives it); index, point, status and sample filled in by default."""
    data: dict[str, pa.Array] = {}
    for axis, kind in axes.items():
        data[axis] = pa.array([r.get(axis) for r in rows], type=kind)
    defaults = {"status": "ok", "sample": "grid"}
    for name, (kind, _) in FIXED.items():
        values = []
        for i, r in enumerate(rows):
            if name == "index":
                values.append(r.get("index", i))
            elif name == "point":
                values.append(r.get("point", f"k{r.get('index', i)}"))
            else:
                values.append(r.get(name, defaults.get(name)))
        data[name] = pa.array(values, type=kind)
    return pa.table(data)


def brute_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of points no other point dominates (<= both, < one)."""
    return {i for i, (x, y) in enumerate(points)
            if not any(a <= x and b <= y and (a < x or b < y) for a, b in points)}


def brute_near(points: list[tuple[float, float]], tol: float) -> set[int]:
    """Indices whose point divided by (1 + tol) no original point dominates."""
    out = set()
    for i, (x, y) in enumerate(points):
        px, py = x / (1 + tol), y / (1 + tol)
        if not any(a <= px and b <= py and (a < px or b < py) for a, b in points):
            out.add(i)
    return out


values = st.sampled_from([0.0, 1.0, 2.0, 2.5, 3.0, 5.0, 8.0, math.nan])
statuses = st.sampled_from(["ok", "ok", "ok", "failed", "infeasible"])
rows_strategy = st.lists(st.tuples(values, values, statuses), min_size=0, max_size=25)


def _cost_energy_table(rows: list[tuple[float, float, str]]) -> pa.Table:
    """Only the columns the front reads (a table need not have them all); a null cost."""
    return pa.table({
        "point": pa.array([f"k{i}" for i in range(len(rows))], pa.string()),
        "index": pa.array(range(len(rows)), pa.int64()),
        "status": pa.array([s for _, _, s in rows], pa.string()),
        "cost_usd_month": pa.array([None if math.isnan(c) else c for c, _, _ in rows],
                                   pa.float64()),
        "energy_j_per_query": pa.array([e for _, e, _ in rows], pa.float64()),
    })


@settings(max_examples=50, deadline=None)
@given(rows_strategy)
def test_front_matches_brute_force(rows: list[tuple[float, float, str]]) -> None:
    table = _cost_energy_table(rows)
    got = front(table, "cost", "energy")
    valid = [i for i, (c, e, s) in enumerate(rows)
             if s == "ok" and math.isfinite(c) and math.isfinite(e)]
    expect = {valid[j] for j in brute_front([rows[i][:2] for i in valid])}
    assert set(got.column("index").to_pylist()) == expect  # equal points: all kept
    xs, ys = got.column("cost").to_pylist(), got.column("energy").to_pylist()
    assert list(zip(xs, ys, strict=True)) == sorted(zip(xs, ys, strict=True))
    assert got.column_names == ["point", "index", "cost", "energy"]


@settings(max_examples=30, deadline=None)
@given(rows_strategy, st.floats(0, 1), st.floats(0, 1))
def test_near_front_is_its_definition_and_grows_with_tolerance(
        rows: list[tuple[float, float, str]], t1: float, t2: float) -> None:
    table = _cost_energy_table(rows)
    lo, hi = sorted((t1, t2))
    valid = [i for i, (c, e, s) in enumerate(rows)
             if s == "ok" and math.isfinite(c) and math.isfinite(e)]
    points = [rows[i][:2] for i in valid]
    sets = {}
    for tol in (0.0, lo, hi):
        near = near_front(table, "cost", "energy", tol)
        sets[tol] = set(near.column("index").to_pylist())
        assert sets[tol] == {valid[j] for j in brute_near(points, tol)}
        on = {i for i, f in zip(near.column("index").to_pylist(),
                                near.column("on_front").to_pylist(), strict=True) if f}
        assert on == set(front(table, "cost", "energy").column("index").to_pylist())
    assert sets[0.0] == set(front(table, "cost", "energy").column("index").to_pylist())
    assert sets[0.0] <= sets[lo] <= sets[hi]


def test_near_front_widens_on_a_known_case() -> None:
    pts = [(1.0, 10.0), (10.0, 1.0), (5.0, 5.0), (5.4, 5.4), (6.0, 6.0)]
    table = _cost_energy_table([(c, e, "ok") for c, e in pts])
    assert set(near_front(table, "cost", "energy", 0.0).column("index").to_pylist()) \
        == {0, 1, 2}
    assert set(near_front(table, "cost", "energy", 0.1).column("index").to_pylist()) \
        == {0, 1, 2, 3}  # 5.4/1.1 < 5; 6/1.1 > 5
    with pytest.raises(InputError, match="tolerance"):
        near_front(table, "cost", "energy", -0.1)


def test_metric_resolution_prefers_simulated() -> None:
    table = make_table([
        {"est_p99_s": 0.010, "sim_p99_s": 0.012, "cost_usd_month": 3.0, "wall_s": 1.0},
        {"est_p99_s": 0.020, "cost_usd_month": 1.0, "wall_s": 2.0},
        {"sim_p99_s": 0.5, "cost_usd_month": None},
    ], {})
    assert metric_column(table, "p99").tolist() == [0.012, 0.020, 0.5]
    assert metric_column(table, "est_p99")[:2].tolist() == [0.010, 0.020]
    assert np.isnan(metric_column(table, "sim_p99")[1])
    assert np.isnan(metric_column(table, "cost")[2])
    assert metric_column(table, "wall").tolist() == [1.0, 2.0, pytest.approx(math.nan,
                                                                             nan_ok=True)]
    assert metric_column(table, "cost_usd_month")[0] == 3.0  # a column name works too
    assert np.isnan(metric_column(table, "sim_mean_lo")).all()


def test_unknown_and_non_numeric_metrics_are_one_line_errors() -> None:
    table = make_table([{"cost_usd_month": 1.0}], {"bank": pa.string()})
    with pytest.raises(InputError) as err:
        metric_column(table, "latency")
    text = str(err.value)
    assert "unknown metric 'latency'" in text and "p99" in text and "cost" in text
    assert "\n" not in text and err.value.field == "metric"
    with pytest.raises(InputError, match="not numeric"):
        metric_column(table, "bank")
    with pytest.raises(InputError) as err:
        front(table, "cost", "speed")
    assert err.value.field == "pareto"


def test_failed_rows_are_excluded_and_counted() -> None:
    table = make_table([
        {"index": 0, "cost_usd_month": 2.0, "est_p99_s": 0.02},
        {"index": 1, "cost_usd_month": 0.5, "est_p99_s": 0.001, "status": "failed",
         "failed_stage": "simulate", "error": "boom"},
        {"index": 2, "cost_usd_month": 1.0, "est_p99_s": 0.03},
        {"index": 3, "status": "infeasible", "failed_stage": "optimize", "error": "no layout"},
    ], {})
    assert set(front(table, "cost", "p99").column("index").to_pylist()) == {0, 2}
    s = summary(table)
    assert s["status"] == {"ok": 2, "infeasible": 1, "failed": 1}
    assert s["first_problem"]["index"] == 1 and s["first_problem"]["error"] == "boom"
    text = report_text(table, pareto=("cost", "p99"))
    assert "4 points (2 ok, 1 infeasible, 1 failed)" in text
    assert "first not ok: point 1 (failed, simulate): boom" in text


def test_top_k_and_pareto_selection() -> None:
    table = make_table([
        {"index": 0, "point": "a", "est_p99_s": 0.03, "cost_usd_month": 1.0},
        {"index": 1, "point": "b", "est_p99_s": 0.01, "cost_usd_month": 9.0},
        {"index": 2, "point": "c", "est_p99_s": 0.02, "cost_usd_month": 2.0},
        {"index": 3, "point": "d", "est_p99_s": 0.02, "cost_usd_month": 3.0},
        {"index": 4, "point": "e", "est_p99_s": 0.001, "status": "failed"},
        {"index": 5, "point": "f", "cost_usd_month": 0.1},  # no p99: never chosen by p99
    ], {})
    assert select(table, parse_confirm("top:1")) == {"b"}
    assert select(table, "top:2") == {"b", "c"}  # c and d tie at 0.02: lower index wins
    assert select(table, "top:3") == {"b", "c", "d"}
    assert select(table, "top:50") == {"a", "b", "c", "d"}
    assert select(table, "pareto", metrics=("p99", "cost"), tolerance=0.0) == {"a", "b", "c"}
    assert select(table, "pareto", metrics=("p99", "cost"), tolerance=0.6) \
        == {"a", "b", "c", "d"}
    assert select(table, "top:1", metrics=("cost", "p99")) == {"f"}
    with pytest.raises(InputError) as err:
        select(table, "top:1", metrics=("speed", "cost"))
    assert err.value.field == "confirm-metrics" and "unknown metric 'speed'" in str(err.value)


@pytest.mark.parametrize("text", ["", "best", "top", "top:0", "top:-1", "top:x", "top:2.5",
                                  "top:100001", "pareto:3"])
def test_bad_confirm_text_is_a_one_line_error(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_confirm(text)
    assert err.value.field == "confirm" and "\n" not in str(err.value)


def test_confirm_text_parses() -> None:
    assert parse_confirm(" Pareto ") == ConfirmRule("pareto")
    assert parse_confirm("TOP: 5") == ConfirmRule("top", 5)
    assert str(parse_confirm("top:7")) == "top:7"


def _additive_grid() -> tuple[pa.Table, dict[str, float]]:
    """y = f(a) + g(b) + h(c) on a full 3 x 2 x 4 grid: shares are Var(f) / total etc."""
    fa = {1.0: 0.0, 2.0: 3.0, 4.0: 6.0}
    gb = {"x": 0.0, "y": 2.0}
    hc = {"8 GB": 1.0, "12 GB": 0.0, "16 GB": -1.0, "24 GB": 0.0}
    rows = []
    for i, (a, b, c) in enumerate(itertools.product(fa, gb, hc)):
        rows.append({"index": i, "p.a": a, "p.b": b, "p.c": c,
                     "objective_value": fa[a] + gb[b] + hc[c], "objective": "cost"})
    var = {"p.a": float(np.var(list(fa.values()))), "p.b": float(np.var(list(gb.values()))),
           "p.c": float(np.var(list(hc.values())))}
    total = sum(var.values())
    table = make_table(rows, {"p.a": pa.float64(), "p.b": pa.string(), "p.c": pa.string()})
    return table, {k: v / total for k, v in var.items()}


def test_main_effect_shares_are_exact_on_an_additive_grid() -> None:
    table, shares = _additive_grid()
    result = sensitivity(table, "objective")
    assert result.method == "main effects" and result.points == 24 and not result.notes
    for axis, share in shares.items():
        assert result.effect(axis).share == pytest.approx(share, abs=1e-12)
    assert sum(e.share for e in result.effects) == pytest.approx(1.0, abs=1e-12)
    a = result.effect("p.a")
    assert a.levels == [1.0, 2.0, 4.0] and a.counts == [8, 8, 8]
    mean_rest = 1.0 + 0.0  # mean of g (1) plus mean of h (0)
    assert a.means == pytest.approx([0.0 + mean_rest, 3.0 + mean_rest, 6.0 + mean_rest])
    assert a.range == pytest.approx(6.0) and a.oat_range == pytest.approx(6.0)
    c = result.effect("p.c")
    assert c.levels == ["8 GB", "12 GB", "16 GB", "24 GB"]  # spec order
    assert c.oat_range == pytest.approx(2.0)


def test_an_incomplete_grid_says_so() -> None:
    table, _ = _additive_grid()
    status = ["ok"] * table.num_rows
    status[0] = "failed"
    table = table.set_column(table.column_names.index("status"), "status",
                             pa.array(status))
    result = sensitivity(table, "objective")
    assert result.points == 23 and result.excluded == {"failed": 1}
    assert any("incomplete" in n for n in result.notes)
    assert result.effect("p.a").oat_range is None  # the base point failed


def _lhs(n: int, d: int, seed: int) -> np.ndarray:
    from scipy.stats import qmc

    return qmc.LatinHypercube(d=d, seed=seed).random(n)


def test_sobol_first_order_on_ishigami() -> None:
    u = _lhs(4000, 3, seed=11)
    x = -math.pi + 2 * math.pi * u
    y = np.sin(x[:, 0]) + 7 * np.sin(x[:, 1]) ** 2 + 0.1 * x[:, 2] ** 4 * np.sin(x[:, 0])
    rows = [{"x1": a, "x2": b, "x3": c, "est_mean_s": v, "sample": "lhs"}
            for a, b, c, v in zip(x[:, 0], x[:, 1], x[:, 2], y, strict=True)]
    table = make_table(rows, {"x1": pa.float64(), "x2": pa.float64(), "x3": pa.float64()})
    result = sensitivity(table, "est_mean")
    assert result.method == "sobol"
    for axis, exact in (("x1", 0.3139), ("x2", 0.4424), ("x3", 0.0)):
        assert result.effect(axis).share == pytest.approx(exact, abs=0.05), axis
        assert result.effect(axis).grouped == "bins"


def test_sobol_on_a_linear_model_with_unit_strings_and_categories() -> None:
    u = _lhs(2000, 3, seed=3)
    rng = np.random.default_rng(5)
    kinds = rng.choice(["A", "B"], size=2000)
    y = 1 * u[:, 0] + 2 * u[:, 1] + 3 * u[:, 2] + np.where(kinds == "B", 1.0, 0.0)
    # variances: 1/12, 4/12, 9/12 and 1/4 (a fair coin of size 1) -> shares over 17/12
    rows = [{"a": float(a), "bw": f"{1 + 3 * b:.6f} GB/s", "c": float(c), "kind": str(k),
             "wall_s": float(v), "sample": "random"}
            for a, b, c, k, v in zip(u[:, 0], u[:, 1], u[:, 2], kinds, y, strict=True)]
    table = make_table(rows, {"a": pa.float64(), "bw": pa.string(), "c": pa.float64(),
                              "kind": pa.string()})
    result = sensitivity(table, "wall")
    for axis, exact in (("a", 1 / 17), ("bw", 4 / 17), ("c", 9 / 17), ("kind", 3 / 17)):
        assert result.effect(axis).share == pytest.approx(exact, abs=0.05), axis
    assert result.effect("bw").grouped == "bins"  # parsed as rates, not 2,000 categories
    assert result.effect("kind").levels == ["A", "B"] or result.effect("kind").levels == [
        "B", "A"]


def test_sobol_notes_bias_for_a_small_sample_and_skips_missing_values() -> None:
    u = _lhs(40, 1, seed=1)
    rows = [{"a": float(v), "wall_s": float(v), "sample": "lhs"} for v in u[:, 0]]
    rows[3]["a"] = None
    rows[4]["wall_s"] = None
    result = sensitivity(make_table(rows, {"a": pa.float64()}), "wall")
    assert any("small sample" in n for n in result.notes)
    assert result.points == 38
    assert result.excluded == {"missing metric": 1, "missing axis value": 1}
    assert result.effect("a").share > 0.9  # y = a


def _heat_table() -> pa.Table:
    rows = []
    # rows out of index order: values still come in order of first appearance by index
    grid = list(itertools.product(["16 GB", "8 GB"], [1.0, 4.0, 2.0], ["s1", "s2"]))
    for i, (ram, bw, seed) in reversed(list(enumerate(grid))):
        rows.append({"index": i, "ram": ram, "bw": bw, "seed": seed,
                     "est_mean_s": (i + 1) * 1e-3,
                     "status": "failed" if i in (2, 6, 7) else "ok"})
    return make_table(rows, {"ram": pa.string(), "bw": pa.float64(), "seed": pa.string()})


def test_heatmap_cells_are_hand_computed_means() -> None:
    xs, ys, grid = heatmap(_heat_table(), "mean", "bw", "ram")
    assert xs == [1.0, 4.0, 2.0] and ys == ["16 GB", "8 GB"]
    # index = 6*ram + 2*bw + seed; value (index + 1) ms; 2, 6, 7 failed
    expect = np.array([[(1 + 2) / 2, 4, (5 + 6) / 2],
                       [math.nan, (9 + 10) / 2, (11 + 12) / 2]]) * 1e-3
    np.testing.assert_allclose(grid, expect)
    with pytest.raises(InputError, match="unknown axis 'size'"):
        heatmap(_heat_table(), "mean", "size", "ram")


def test_text_and_json_reports() -> None:
    table, _ = _additive_grid()
    heat = ("objective", ("p.a", "p.b"))
    text = report_text(table, pareto=("objective", "p.a"), sensitivity="objective",
                       heatmap=heat)
    assert text.startswith("sweep: 24 points (24 ok), sample grid, none simulated")
    assert "front of objective against p.a" in text
    assert "sensitivity of objective (main effects" in text
    assert "heat map of objective: p.b (rows) by p.a (columns)" in text
    assert "$" in text  # the objective is a cost
    data = report_json(table, pareto=("objective", "cost"), sensitivity="objective",
                       heatmap=heat)
    json.dumps(data, allow_nan=False)
    assert data["heatmap"]["x_values"] == [1.0, 2.0, 4.0]
    assert data["sensitivity"]["method"] == "main effects"


def test_plot_report_writes_one_png_with_a_panel_per_view(tmp_path: Path) -> None:
    rows = [{"index": i, "p.a": float(i % 3), "p.b": "xy"[i // 3],
             "est_p99_s": 0.01 * (1 + i), "cost_usd_month": 6.0 - i,
             "sim_p99_s": 0.011 * (1 + i) if i % 2 else None,
             "sim_p99_lo_s": 0.010 * (1 + i) if i % 2 else None,
             "sim_p99_hi_s": 0.012 * (1 + i) if i % 2 else None} for i in range(6)]
    table = make_table(rows, {"p.a": pa.float64(), "p.b": pa.string()})
    out = tmp_path / "report.png"
    fig = plot_report(table, out, pareto=("cost", "p99"), sensitivity="p99",
                      heatmap=("p99", None))
    assert out.read_bytes()[:8] == PNG
    assert len(fig.axes) == 4  # front, effects, heat map and its colour bar
    one = plot_report(table, tmp_path / "front.png", pareto=("cost", "p99"))
    assert len(one.axes) == 1 and (tmp_path / "front.png").read_bytes()[:8] == PNG
    with pytest.raises(InputError, match="nothing to plot"):
        plot_report(table, tmp_path / "none.png")


def test_summary_shows_a_sampled_unit_range_by_its_ends() -> None:
    values = ["3.5 GB/s", "1.25 GB/s", "800 MB/s", "2 GB/s", "7.75 GB/s", "4 GB/s", "5 GB/s"]
    table = make_table([{"bw": v, "sample": "lhs", "est_p99_s": 0.01 * i}
                        for i, v in enumerate(values)], {"bw": pa.string()})
    text = report_text(table)
    assert "800 MB/s .. 7.75 GB/s" in text  # ordered by value, not by text or by row
