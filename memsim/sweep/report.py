"""Reading a sweep's results back: metrics by name, non-dominated fronts, heat maps, and the
text, JSON and PNG reports of `memsim sweep report`.

Everything works on the results' `pyarrow.Table` (the fixed columns of `columns.FIXED` plus
one column per axis, named by its path). Only rows whose status is `ok` count for fronts,
effects and heat maps; the others are counted in the summary. All metrics are minimised.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from memsim.errors import InputError
from memsim.sweep.columns import FIXED
from memsim.texttable import table as text_table
from memsim.units import format_energy, format_time

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from memsim.sweep.sensitivity import Sensitivity

# metric name -> column, for the names that are not simply a column
ALIASES: dict[str, str] = {
    "cost": "cost_usd_month",
    "energy": "energy_j_per_query",
    "objective": "objective_value",
    "wall": "wall_s",
    "utilization": "max_utilization",
    "sim_energy": "sim_energy_j_per_query",
    "sim_utilization": "sim_max_utilization",
}
# simulated where the row has it, else estimated
BLENDED: tuple[str, ...] = ("mean", "p50", "p99")
KNOWN: tuple[str, ...] = (*BLENDED, "est_mean", "est_p50", "est_p99", "sim_mean", "sim_p50",
                          "sim_p99", *ALIASES)
MAX_HEAT_VALUES = 60  # values of one heat-map axis (a grid axis, not a sampled one)
MAX_FRONT_ROWS = 40  # rows of the front the text report lists


# ------------------------------------------------------------------------------------ metrics
@dataclass(frozen=True)
class Metric:
    """A metric name resolved against a table: which columns it reads, and its kind
    (time, cost, energy, utilization, objective or number: how its values print)."""

    name: str
    column: str  # the column read (the simulated one for a blended metric)
    fallback: str | None  # blended metrics: the estimated column used where `column` is null
    kind: str


def _kind(column: str) -> str:
    if column.endswith("_s"):
        return "time"
    if column == "cost_usd_month":
        return "cost"
    if column.endswith("j_per_query"):
        return "energy"
    if column.endswith("max_utilization"):
        return "utilization"
    if column == "objective_value":
        return "objective"
    return "number"


def _numeric(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
                or pa.types.is_boolean(dtype) or pa.types.is_decimal(dtype))


def resolve_metric(table: pa.Table, name: str, *, field: str = "metric") -> Metric:
    """The columns behind metric `name` (see SWEEP.md's metric names); InputError (naming
    `field`) for an unknown name or a column that is not numeric."""
    key = str(name).strip()
    if key in BLENDED:
        return Metric(key, f"sim_{key}_s", f"est_{key}_s", "time")
    column = ALIASES.get(key)
    if column is None and key + "_s" in FIXED and (key.startswith(("est_", "sim_"))):
        column = key + "_s"
    if column is None and (key in FIXED or key in table.column_names):
        column = key
    if column is None:
        raise InputError(f"unknown metric {key!r}; known: {', '.join(KNOWN)}, or a numeric "
                         "column name", field=field)
    if column in table.column_names:
        dtype = table.schema.field(column).type
    else:
        dtype = FIXED[column][0]
    if not _numeric(dtype):
        raise InputError(f"metric {key!r} is column {column!r}, which is not numeric ({dtype})",
                         field=field)
    return Metric(key, column, None, _kind(column))


def _floats(table: pa.Table, column: str) -> np.ndarray:
    """Column `column` as float64, NaN for nulls (all NaN when the table lacks it)."""
    if column not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table.column(column).cast(pa.float64()).fill_null(float("nan"))
    return np.asarray(col.to_numpy(), dtype=float)


def metric_column(table: pa.Table, name: str, *, field: str = "metric") -> np.ndarray:
    """Metric `name` per row as floats, NaN where the row has no value: `mean`, `p50`,
    `p99` read the simulated column where the row has it and the estimated one elsewhere."""
    metric = resolve_metric(table, name, field=field)
    values = _floats(table, metric.column)
    if metric.fallback is not None:
        values = np.where(np.isfinite(values), values, _floats(table, metric.fallback))
    return values


def simulated_mask(table: pa.Table, name: str) -> np.ndarray:
    """Per row: whether metric `name` came from the simulator there."""
    metric = resolve_metric(table, name)
    if metric.fallback is not None or metric.column.startswith("sim_"):
        return np.isfinite(_floats(table, metric.column))
    return np.zeros(table.num_rows, dtype=bool)


def metric_interval(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The simulator's confidence interval (low, high) of metric `name` per row, NaN where
    the value is not simulated or has no interval (an unstable run)."""
    metric = resolve_metric(table, name)
    nan = np.full(table.num_rows, np.nan)
    column = metric.column
    if not (column.startswith("sim_") and column.endswith("_s")) or "_lo_" in column \
            or "_hi_" in column:
        return nan, nan
    used = np.isfinite(_floats(table, column))
    lo = _floats(table, column[:-2] + "_lo_s")
    hi = _floats(table, column[:-2] + "_hi_s")
    return np.where(used, lo, np.nan), np.where(used, hi, np.nan)


def ok_mask(table: pa.Table) -> np.ndarray:
    """Per row: whether its status is ok (every row, when the table has no status)."""
    if "status" not in table.column_names:
        return np.ones(table.num_rows, dtype=bool)
    return np.array([s == "ok" for s in table.column("status").to_pylist()], dtype=bool)


def status_counts(table: pa.Table) -> dict[str, int]:
    """Rows by status: ok, infeasible, failed first, then any other."""
    statuses = (table.column("status").to_pylist() if "status" in table.column_names
                else ["ok"] * table.num_rows)
    counts = {s: statuses.count(s) for s in ("ok", "infeasible", "failed")}
    for s in statuses:
        if s not in counts:
            counts[str(s)] = statuses.count(s)
    return counts


def axis_columns(table: pa.Table) -> list[str]:
    """The axis columns: every column that is not a fixed one, in table order."""
    return [c for c in table.column_names if c not in FIXED]


def row_index(table: pa.Table) -> np.ndarray:
    """Each row's point index (its position in the table where there is no index)."""
    if "index" not in table.column_names:
        return np.arange(table.num_rows)
    idx = _floats(table, "index")
    return np.where(np.isfinite(idx), idx, np.arange(table.num_rows) + 1e18)


def spec_order(table: pa.Table) -> np.ndarray:
    """Row positions sorted by point index (stable): the spec's order."""
    return np.argsort(row_index(table), kind="stable")


def axis_values(table: pa.Table, axis: str) -> list[Any]:
    """The distinct values of `axis` in spec order (first appearance by index, every row)."""
    values = table.column(axis).to_pylist()
    seen: dict[Any, None] = {}
    for i in spec_order(table):
        v = values[i]
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            seen.setdefault(v, None)
    return list(seen)


def _check_axis(table: pa.Table, axis: str, field: str) -> None:
    axes = axis_columns(table)
    if axis not in axes:
        raise InputError(f"unknown axis {axis!r}; the axes are: {', '.join(axes) or 'none'}",
                         field=field)


# ------------------------------------------------------------------------------------ fronts
def nondominated(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per point (finite x, y, both minimised): whether no other point is at least as good in
    both and better in one. Equal points do not dominate each other, so all copies of a
    non-dominated point are kept."""
    n = len(x)
    keep = np.zeros(n, dtype=bool)
    order = np.lexsort((y, x))
    best = math.inf  # least y among points of strictly smaller x
    i = 0
    while i < n:
        j = i
        while j < n and x[order[j]] == x[order[i]]:
            j += 1
        group = order[i:j]
        low = y[group].min()  # sorted by y within x: y[order[i]]
        if low < best:
            keep[group[y[group] == low]] = True
            best = low
        i = j
    return keep


def _near(x: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray:
    """Per point: whether, moved toward zero by `tolerance` (divided by 1 + tolerance; a
    negative value multiplied), it is dominated by none of the original points."""
    keep = nondominated(x, y)
    fx, fy = x[keep], y[keep]
    order = np.lexsort((fy, fx))
    fx, fy = fx[order], fy[order]

    def shrink(v: np.ndarray) -> np.ndarray:
        return np.where(v >= 0, v / (1.0 + tolerance), v * (1.0 + tolerance))

    px, py = shrink(x), shrink(y)
    # the front's y falls as x grows: among front points with fx <= px, the last has least y
    k = np.searchsorted(fx, px, side="right") - 1
    has = k >= 0
    kk = np.where(has, k, 0)
    gx, gy = fx[kk], fy[kk]
    dominated = has & ((gy < py) | ((gy == py) & (gx < px)))
    return ~dominated


def _valid(table: pa.Table, x: str, y: str, field: str
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xv = metric_column(table, x, field=field)
    yv = metric_column(table, y, field=field)
    rows = np.flatnonzero(ok_mask(table) & np.isfinite(xv) & np.isfinite(yv))
    return rows, xv, yv


def _front_table(table: pa.Table, rows: np.ndarray, x: str, y: str, xv: np.ndarray,
                 yv: np.ndarray, extra: dict[str, Any] | None = None) -> pa.Table:
    """Rows `rows` (sorted by x, y, index) as axis columns, point, index, placement, x, y."""
    idx = row_index(table)
    order = np.lexsort((idx[rows], yv[rows], xv[rows]))
    rows = rows[order]
    taken = table.take(pa.array(rows, type=pa.int64()))
    data: dict[str, Any] = {}
    for name in [*axis_columns(table), "point", "index", "placement"]:
        if name in table.column_names:
            data[name] = taken.column(name)
    data[x] = pa.array(xv[rows], type=pa.float64())
    if y != x:
        data[y] = pa.array(yv[rows], type=pa.float64())
    for name, values in (extra or {}).items():
        data[name] = pa.array(np.asarray(values)[order])
    return pa.table(data)


def front(table: pa.Table, x: str, y: str, *, field: str = "pareto") -> pa.Table:
    """The non-dominated ok rows of metrics `x` and `y` (both minimised), sorted by x (then
    y, index): axis columns, point, index, placement, and the two metrics. Rows without
    both metrics are left out; equal points are all kept."""
    rows, xv, yv = _valid(table, x, y, field)
    keep = nondominated(xv[rows], yv[rows])
    return _front_table(table, rows[keep], x, y, xv, yv)


def near_front(table: pa.Table, x: str, y: str, tolerance: float = 0.05, *,
               field: str = "pareto") -> pa.Table:
    """The ok rows within `tolerance` (relative) of the front of `x` and `y`: a row is near
    when its two metrics divided by (1 + tolerance) are dominated by no row. The front's own
    rows are near at any tolerance; column `on_front` tells them apart."""
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise InputError(f"tolerance must be a number >= 0, not {tolerance!r}",
                         field="tolerance")
    rows, xv, yv = _valid(table, x, y, field)
    near = _near(xv[rows], yv[rows], float(tolerance))
    on = nondominated(xv[rows], yv[rows])
    return _front_table(table, rows[near], x, y, xv, yv, {"on_front": on[near]})


# ---------------------------------------------------------------------------------- heat map
def heatmap(table: pa.Table, metric: str, x_axis: str, y_axis: str
            ) -> tuple[list[Any], list[Any], np.ndarray]:
    """Metric over two axes: (x values, y values, grid) with grid[i, j] the mean of the ok
    rows at y value i and x value j (other axes averaged), NaN where there is none. Values
    are in spec order (first appearance by index)."""
    for axis in (x_axis, y_axis):
        _check_axis(table, axis, "axes")
    if x_axis == y_axis:
        raise InputError(f"a heat map needs two different axes, not {x_axis!r} twice",
                         field="axes")
    values = metric_column(table, metric, field="heatmap")
    xs, ys = axis_values(table, x_axis), axis_values(table, y_axis)
    for axis, vals in ((x_axis, xs), (y_axis, ys)):
        if len(vals) > MAX_HEAT_VALUES:
            raise InputError(f"axis {axis!r} has {len(vals):,} values; a heat map needs grid "
                             f"axes (at most {MAX_HEAT_VALUES} values)", field="axes")
    xpos = {v: j for j, v in enumerate(xs)}
    ypos = {v: i for i, v in enumerate(ys)}
    total = np.zeros((len(ys), len(xs)))
    count = np.zeros((len(ys), len(xs)))
    use = ok_mask(table) & np.isfinite(values)
    for xv, yv, val, u in zip(table.column(x_axis).to_pylist(),
                              table.column(y_axis).to_pylist(), values, use, strict=True):
        if u and xv in xpos and yv in ypos:
            total[ypos[yv], xpos[xv]] += val
            count[ypos[yv], xpos[xv]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return xs, ys, grid


_heatmap = heatmap  # the reports' `heatmap` argument shadows the function


# -------------------------------------------------------------------------------- formatting
def _money(v: float) -> str:
    if abs(v) >= 1000:
        return f"${v:,.0f}"
    if v == 0:
        return "$0"
    return "$" + np.format_float_positional(v, precision=4, unique=False, fractional=False,
                                            trim="-")


def format_value(value: float | None, kind: str, objective: str | None = None) -> str:
    """A metric value as people read it: times with their unit, costs in dollars, energies
    in joules; '-' for none. An objective's unit follows what the optimizer minimised."""
    if value is None or not math.isfinite(value):
        return "-"
    if kind == "objective":
        obj = (objective or "").lower()
        kind = ("time" if obj.startswith("time") else "cost" if obj.startswith("cost")
                else "energy" if obj.startswith("energy") else "number")
    if kind == "time":
        return format_time(value)
    if kind == "cost":
        return _money(value)
    if kind == "energy":
        return format_energy(value)
    if kind == "utilization":
        return f"{value:.3f}"
    return f"{value:.4g}"


def format_axis_value(value: Any) -> str:
    """An axis value as the spec gives it (numbers to 4 significant digits)."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _kind_of(table: pa.Table, name: str) -> str:
    return resolve_metric(table, name).kind


def _objectives(table: pa.Table) -> list[str | None]:
    if "objective" in table.column_names:
        return table.column("objective").to_pylist()
    return [None] * table.num_rows


# ----------------------------------------------------------------------------------- summary
def summary(table: pa.Table) -> dict[str, Any]:
    """Points by status, the axes (with their number of values), the sampling method, how
    many points the simulator ran at, and the first failure."""
    samples = (sorted({str(s) for s in table.column("sample").to_pylist() if s is not None})
               if "sample" in table.column_names else [])
    axes = {a: len(axis_values(table, a)) for a in axis_columns(table)}
    simulated = int((np.isfinite(_floats(table, "sim_queries"))
                     | np.isfinite(_floats(table, "sim_mean_s"))
                     | np.isfinite(_floats(table, "sim_p99_s"))).sum())
    first = None
    if "status" in table.column_names:
        statuses = table.column("status").to_pylist()
        errors = (table.column("error").to_pylist() if "error" in table.column_names
                  else [None] * table.num_rows)
        stages = (table.column("failed_stage").to_pylist()
                  if "failed_stage" in table.column_names else [None] * table.num_rows)
        idx = row_index(table)
        for i in spec_order(table):
            if statuses[i] != "ok":
                first = {"index": int(idx[i]), "status": statuses[i], "stage": stages[i],
                         "error": errors[i]}
                break
    return {"points": table.num_rows, "status": status_counts(table),
            "sample": "/".join(samples) or "unknown", "axes": axes, "simulated": simulated,
            "first_problem": first}


def _summary_text(table: pa.Table) -> str:
    s = summary(table)
    counts = ", ".join(f"{n:,} {k}" for k, n in s["status"].items() if n or k == "ok")
    simulated = (f"{s['simulated']:,} simulated" if s["simulated"] else
                 "none simulated: mean, p50 and p99 are the estimator's")
    lines = [f"sweep: {s['points']:,} points ({counts}), sample {s['sample']}, {simulated}"]
    if s["axes"]:
        rows = []
        for axis, n in s["axes"].items():
            vals = axis_values(table, axis)
            from memsim.sweep.sensitivity import numeric_values

            numbers = numeric_values(vals) if n > 6 else None
            if vals and all(isinstance(v, float) for v in vals) and n > 6:
                shown = f"{min(vals):.4g} .. {max(vals):.4g}"
            elif numbers is not None:  # a sampled range with a unit: its ends, as written
                shown = (f"{format_axis_value(vals[int(numbers.argmin())])} .. "
                         f"{format_axis_value(vals[int(numbers.argmax())])}")
            else:
                shown = ", ".join(format_axis_value(v) for v in vals[:6]) + (
                    ", ..." if n > 6 else "")
            rows.append([axis, n, shown])
        lines += ["", text_table(["axis", "count", "values (spec order)"], rows)]
    first = s["first_problem"]
    if first is not None:
        stage = f", {first['stage']}" if first["stage"] else ""
        lines += ["", f"first not ok: point {first['index']} ({first['status']}{stage}): "
                  f"{first['error'] or '-'}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- text report
def _front_text(table: pa.Table, x: str, y: str) -> str:
    rows, _, _ = _valid(table, x, y, "pareto")
    ok = int(ok_mask(table).sum())
    ft = front(table, x, y)
    head = (f"front of {x} against {y} (both minimised): {ft.num_rows:,} of {rows.size:,} ok "
            f"points with both" + (f" ({ok - rows.size:,} ok points lack one)"
                                   if ok > rows.size else ""))
    if ft.num_rows == 0:
        return head
    kx, ky = _kind_of(table, x), _kind_of(table, y)
    blended = x in BLENDED or y in BLENDED
    pos = {k: i for i, k in enumerate(row_index(table))}
    objectives = _objectives(table)
    sim = {m: simulated_mask(table, m) for m in (x, y)}
    axes = [a for a in axis_columns(table) if a in ft.column_names]
    headers = ["#", *axes, "placement", x] + ([y] if y != x else [])
    if blended:
        headers.append("from")
    out = []
    cols = {name: ft.column(name).to_pylist() for name in ft.column_names}
    for r in range(min(ft.num_rows, MAX_FRONT_ROWS)):
        i = pos.get(cols["index"][r], r) if "index" in cols else r
        obj = objectives[i]
        row: list[object] = [cols["index"][r] if "index" in cols else r]
        row += [format_axis_value(cols[a][r]) for a in axes]
        row.append(cols["placement"][r] if "placement" in cols and cols["placement"][r]
                   else "-")
        row.append(format_value(cols[x][r], kx, obj))
        if y != x:
            row.append(format_value(cols[y][r], ky, obj))
        if blended:
            row.append("sim" if any(sim[m][i] for m in (x, y) if m in BLENDED) else "est")
        out.append(row)
    lines = [head, text_table(headers, out)]
    if ft.num_rows > MAX_FRONT_ROWS:
        lines.append(f"... {ft.num_rows - MAX_FRONT_ROWS:,} more (--json lists all)")
    return "\n".join(lines)


def _heat_text(table: pa.Table, metric: str, axes: Sequence[str] | None) -> str:
    x_axis, y_axis = _heat_axes(table, axes)
    xs, ys, grid = _heatmap(table, metric, x_axis, y_axis)
    kind = _kind_of(table, metric)
    objs = [o for o in _objectives(table) if o]
    obj = objs[0] if objs and len(set(objs)) == 1 else None
    rows = [[format_axis_value(yv)] + [format_value(float(c), kind, obj) for c in grid[i]]
            for i, yv in enumerate(ys)]
    head = (f"heat map of {metric}: {y_axis} (rows) by {x_axis} (columns), mean over the "
            "other axes of the ok points")
    return head + "\n" + text_table([f"{y_axis} \\ {x_axis}",
                                     *[format_axis_value(v) for v in xs]], rows)


def _heat_axes(table: pa.Table, axes: Sequence[str] | None) -> tuple[str, str]:
    if axes:
        if len(axes) != 2:
            raise InputError(f"a heat map needs two axes, not {len(axes)}", field="axes")
        return str(axes[0]), str(axes[1])
    names = axis_columns(table)
    if len(names) < 2:
        raise InputError(f"a heat map needs two axes; the sweep has {len(names)}",
                         field="heatmap")
    return names[0], names[1]


def _unpack_heat(heat: Any) -> tuple[str, Sequence[str] | None] | None:
    """`heatmap=` as the CLI gives it: None, a metric name, or (metric, (x axis, y axis) |
    None)."""
    if heat is None:
        return None
    if isinstance(heat, str):
        return heat, None
    metric, axes = heat
    return str(metric), axes


def report_text(table: pa.Table, *, pareto: Sequence[str] | None = None,
                sensitivity: str | None = None, heatmap: Any = None) -> str:
    """The text report: the summary, then each requested view (the front of `pareto`'s two
    metrics, each axis's effect on metric `sensitivity`, the heat map of `heatmap` =
    (metric, (x axis, y axis) or None for the first two axes))."""
    parts = [_summary_text(table)]
    if pareto is not None:
        x, y = _pair(pareto)
        parts.append(_front_text(table, x, y))
    if sensitivity is not None:
        from memsim.sweep.sensitivity import sensitivity as analyse
        from memsim.sweep.sensitivity import sensitivity_text

        parts.append(sensitivity_text(analyse(table, sensitivity), table))
    heat = _unpack_heat(heatmap)
    if heat is not None:
        parts.append(_heat_text(table, heat[0], heat[1]))
    return "\n\n".join(parts)


def _pair(pareto: Sequence[str]) -> tuple[str, str]:
    if isinstance(pareto, str):
        pareto = [p.strip() for p in pareto.split(",")]
    if len(pareto) != 2:
        raise InputError(f"a front needs two metrics (X,Y), not {len(pareto)}", field="pareto")
    return str(pareto[0]), str(pareto[1])


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def report_json(table: pa.Table, *, pareto: Sequence[str] | None = None,
                sensitivity: str | None = None, heatmap: Any = None) -> dict[str, Any]:
    """The report as plain data for `--json` (NaN as null): summary, front (every row),
    sensitivity and heat map, each present when requested."""
    out: dict[str, Any] = {"summary": summary(table)}
    if pareto is not None:
        x, y = _pair(pareto)
        ft = front(table, x, y)
        out["pareto"] = {"x": x, "y": y, "points": [
            {k: _json_value(v) for k, v in row.items()} for row in ft.to_pylist()]}
    if sensitivity is not None:
        from memsim.sweep.sensitivity import sensitivity as analyse

        out["sensitivity"] = analyse(table, sensitivity).to_json()
    heat = _unpack_heat(heatmap)
    if heat is not None:
        x_axis, y_axis = _heat_axes(table, heat[1])
        xs, ys, grid = _heatmap(table, heat[0], x_axis, y_axis)
        out["heatmap"] = {"metric": heat[0], "x_axis": x_axis, "y_axis": y_axis,
                          "x_values": xs, "y_values": ys,
                          "grid": [[_json_value(float(c)) for c in r] for r in grid]}
    return out


# ------------------------------------------------------------------------------------- plots
def _scale(kind: str, values: np.ndarray) -> tuple[float, str]:
    """A factor and unit label so a panel's numbers read well."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    if kind == "time":
        for factor, unit in ((1.0, "s"), (1e3, "ms"), (1e6, "us")):
            if top * factor >= 1 or unit == "us":
                return factor, unit
    if kind == "energy":
        return (1e3, "mJ") if top < 1 else (1.0, "J")
    if kind == "cost":
        return 1.0, "$/month"
    return 1.0, ""


def _label(name: str, unit: str) -> str:
    return f"{name} ({unit})" if unit else name


def _plot_front(ax: Axes, table: pa.Table, x: str, y: str) -> None:
    rows, xv, yv = _valid(table, x, y, "pareto")
    keep = rows[nondominated(xv[rows], yv[rows])]
    keep = keep[np.lexsort((yv[keep], xv[keep]))]
    fx, ux = _scale(_kind_of(table, x), xv[rows])
    fy, uy = _scale(_kind_of(table, y), yv[rows])
    ax.scatter(xv[rows] * fx, yv[rows] * fy, s=10, color="0.7", label="ok points")
    ax.plot(xv[keep] * fx, yv[keep] * fy, "o-", color="C0", label="front")
    xlo, xhi = metric_interval(table, x)
    ylo, yhi = metric_interval(table, y)
    have = keep[np.isfinite(xlo[keep]) | np.isfinite(ylo[keep])]
    if have.size:
        def err(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, f: float) -> np.ndarray:
            low = np.where(np.isfinite(lo[have]), v[have] - lo[have], 0.0)
            high = np.where(np.isfinite(hi[have]), hi[have] - v[have], 0.0)
            return np.maximum(np.vstack([low, high]), 0.0) * f

        ax.errorbar(xv[have] * fx, yv[have] * fy, xerr=err(xv, xlo, xhi, fx),
                    yerr=err(yv, ylo, yhi, fy), fmt="none", ecolor="C1", capsize=3,
                    label="simulated (95% interval)")
    ax.set_xlabel(_label(x, ux))
    ax.set_ylabel(_label(y, uy))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    _title(ax, f"front: {x} against {y} ({keep.size} of {rows.size})")


def axis_label(axis: str) -> str:
    """A short label for a plot: `profile.tiers.flash.bandwidth + profile.tiers.flash.
    aggregate_bandwidth` -> `flash.bandwidth (+aggregate_bandwidth)`."""
    first, *linked = [part.strip() for part in axis.split(" + ")]
    first = first.removeprefix("profile.tiers.")
    if linked:
        first += " (+" + ", ".join(p.rsplit(".", 1)[-1] for p in linked) + ")"
    return first


def _title(ax: Axes, text: str) -> None:
    import textwrap

    ax.set_title(textwrap.fill(text, 48), fontsize="medium")


def _plot_effects(ax: Axes, result: Sensitivity) -> None:
    effects = sorted(result.effects, key=lambda e: (e.share if math.isfinite(e.share)
                                                    else -1.0))
    names = [axis_label(e.axis) for e in effects]
    shares = [e.share if math.isfinite(e.share) else 0.0 for e in effects]
    bars = ax.barh(range(len(names)), shares, color="C0")
    ax.bar_label(bars, [f"{v:.2f}" for v in shares], padding=3, fontsize="small")
    ax.set_yticks(range(len(names)), names, fontsize="small")
    ax.set_xlim(0, max(1.0, max(shares, default=0.0)))
    what = "main-effect share" if result.method == "main effects" else "first-order Sobol S1"
    ax.set_xlabel(what)
    _title(ax, f"sensitivity of {result.metric} ({result.method}, {result.points} points)")
    ax.grid(alpha=0.3, axis="x")


def _plot_heat(fig: Figure, ax: Axes, table: pa.Table, metric: str,
               axes: Sequence[str] | None) -> None:
    x_axis, y_axis = _heat_axes(table, axes)
    xs, ys, grid = _heatmap(table, metric, x_axis, y_axis)
    factor, unit = _scale(_kind_of(table, metric), grid)
    image = ax.imshow(grid * factor, origin="lower", aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label=_label(metric, unit))
    ax.set_xticks(range(len(xs)), [format_axis_value(v) for v in xs], fontsize="small",
                  rotation=30 if len(xs) > 4 else 0)
    ax.set_yticks(range(len(ys)), [format_axis_value(v) for v in ys], fontsize="small")
    ax.set_xlabel(axis_label(x_axis))
    ax.set_ylabel(axis_label(y_axis))
    if len(xs) * len(ys) <= 100:
        low, high = image.norm.vmin, image.norm.vmax
        for i in range(len(ys)):
            for j in range(len(xs)):
                if math.isfinite(grid[i, j]):
                    v = grid[i, j] * factor
                    light = high > low and (v - low) / (high - low) > 0.6  # yellow end
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize="x-small",
                            color="k" if light else "w")
    _title(ax, f"{metric} by {axis_label(x_axis)} and {axis_label(y_axis)}")


def report_figure(table: pa.Table, *, pareto: Sequence[str] | None = None,
                  sensitivity: str | None = None, heatmap: Any = None) -> Figure:
    """A matplotlib Figure (Agg canvas, no pyplot state) with one panel per requested view,
    side by side: front, sensitivity bars, heat map (with its colour bar)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    heat = _unpack_heat(heatmap)
    views = [v for v, on in (("pareto", pareto is not None),
                             ("sensitivity", sensitivity is not None),
                             ("heatmap", heat is not None)) if on]
    if not views:
        raise InputError("nothing to plot: ask for --pareto, --sensitivity or --heatmap",
                         field="plot")
    fig = Figure(figsize=(5.6 * len(views), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    panels = fig.subplots(1, len(views), squeeze=False)[0]
    for ax, view in zip(panels, views, strict=True):
        if view == "pareto":
            assert pareto is not None
            _plot_front(ax, table, *_pair(pareto))
        elif view == "sensitivity":
            from memsim.sweep.sensitivity import sensitivity as analyse

            assert sensitivity is not None
            _plot_effects(ax, analyse(table, sensitivity))
        else:
            assert heat is not None
            _plot_heat(fig, ax, table, heat[0], heat[1])
    return fig


def plot_report(table: pa.Table, path: str | Path, *, pareto: Sequence[str] | None = None,
                sensitivity: str | None = None, heatmap: Any = None) -> Figure:
    """Draw the requested views (see `report_figure`) to `path` as one PNG, written
    atomically; returns the figure."""
    from memsim.layout import write_atomic

    fig = report_figure(table, pareto=pareto, sensitivity=sensitivity, heatmap=heatmap)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_atomic(path, buffer.getvalue())
    return fig


__all__ = ["metric_column", "resolve_metric", "front", "near_front", "nondominated",
           "heatmap", "summary", "report_text", "report_json", "report_figure", "plot_report",
           "KNOWN"]
