"""How much each axis of a sweep moves a metric.

Grids (sample "grid"): each axis's main effect, the metric's mean at each of its values
(averaged over the other axes), their range, and the first-order variance share
sum_k n_k (m_k - m)^2 / sum (y - m)^2, which for a full grid is exactly the ANOVA main-effect
share; also the one-at-a-time range along the axis with the other axes at their first value.

Sampled sweeps (random, lhs): first-order Sobol indices Var(E[Y|X_i]) / Var(Y) estimated
from the given points alone, E[Y|X_i] taken as the mean over equal-count bins of X_i (about
sqrt(N) bins, capped); a string axis is grouped by value unless its values are numbers with
units ("8 GB", "2 GB/s"), which are parsed so they order numerically. The estimate is biased
up by about (bins - 1) / (N - 1) (the noise the bin means keep), which the notes say.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from memsim.errors import InputError
from memsim.sweep.report import (
    axis_columns,
    axis_values,
    format_axis_value,
    format_value,
    metric_column,
    ok_mask,
    resolve_metric,
    status_counts,
)
from memsim.texttable import table as text_table
from memsim.units import (
    parse_energy,
    parse_frequency,
    parse_power,
    parse_rate,
    parse_size,
    parse_time,
)

MAX_BINS = 50  # bins of one sampled axis (sqrt(N) up to this)
SMALL_BIAS = 0.02  # a bias note above this expected upward bias of an index
_PARSERS: tuple[Callable[[object], float], ...] = (parse_size, parse_rate, parse_time,
                                                   parse_frequency, parse_energy, parse_power)


@dataclass(frozen=True)
class AxisEffect:
    """One axis's effect on the metric.

    `share`: main-effect variance share (grid) or first-order Sobol index S1 (sampled);
    `levels`, `means`, `counts`: the groups (an axis value, or a bin 'low .. high') with the
    metric's mean and the number of points in each; `range`: max - min of those means;
    `oat_range`: grid only, the metric's range along this axis with every other axis at its
    first value (None when those points are not all there); `grouped`: "value" or "bins".
    """

    axis: str
    share: float
    range: float
    levels: list[Any]
    means: list[float]
    counts: list[int]
    oat_range: float | None = None
    grouped: str = "value"


@dataclass(frozen=True)
class Sensitivity:
    """Every axis's effect on `metric`, by `method` ("main effects" or "sobol"), from
    `points` ok rows with the metric (`excluded`: rows left out, by reason)."""

    metric: str
    method: str
    sample: str
    points: int
    variance: float
    effects: list[AxisEffect]
    excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def effect(self, axis: str) -> AxisEffect:
        """The effect of `axis`."""
        return next(e for e in self.effects if e.axis == axis)

    def to_json(self) -> dict[str, Any]:
        """Plain data (NaN as null)."""
        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return v if math.isfinite(v) else None
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        return clean(asdict(self))


def numeric_values(values: list[Any]) -> np.ndarray | None:
    """An axis's values as numbers, so they order: floats as they are, strings through the
    first of memsim's unit parsers (size, rate, time, frequency, energy, power) that reads
    every one; None when some value is not a number (a categorical axis)."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=float)
    if not all(isinstance(v, str) for v in values):
        return None
    for parse in _PARSERS:
        try:
            return np.asarray([float(parse(v)) for v in values], dtype=float)
        except Exception:  # noqa: BLE001 - any parse failure: try the next unit kind
            continue
    return None


def _missing(value: Any) -> bool:
    return value is None or isinstance(value, float) and math.isnan(value)


def _group_stats(y: np.ndarray, groups: np.ndarray, count: int
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """Per group 0..count-1: mean and size; and the between-group share of y's variance."""
    sizes = np.bincount(groups, minlength=count).astype(float)
    sums = np.bincount(groups, weights=y, minlength=count)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(sizes > 0, sums / np.maximum(sizes, 1), np.nan)
    total = float(((y - y.mean()) ** 2).sum())
    used = sizes > 0
    between = float((sizes[used] * (means[used] - y.mean()) ** 2).sum())
    share = between / total if total > 0 else 0.0
    return means, sizes.astype(int), min(max(share, 0.0), 1.0)


def _spread(means: np.ndarray) -> float:
    finite = means[np.isfinite(means)]
    return float(finite.max() - finite.min()) if finite.size else math.nan


def _method(table: pa.Table, method: str) -> tuple[str, str]:
    samples = ({s for s in table.column("sample").to_pylist() if s is not None}
               if "sample" in table.column_names else {"grid"})
    sample = "/".join(sorted(samples)) or "grid"
    if method not in ("auto", "main effects", "sobol"):
        raise InputError(f"unknown method {method!r}; expected auto, main effects or sobol",
                         field="sensitivity")
    if method == "auto":
        method = "main effects" if samples <= {"grid"} else "sobol"
    return method, sample


def sensitivity(table: pa.Table, metric: str, *, method: str = "auto",
                bins: int | None = None) -> Sensitivity:
    """Each axis's effect on `metric` over the ok rows that have it: main effects for a grid,
    first-order Sobol indices for a sampled sweep (`method` "auto" decides by the sample
    column); `bins` overrides the sampled estimator's bins per axis."""
    resolve_metric(table, metric, field="sensitivity")
    y_all = metric_column(table, metric, field="sensitivity")
    method, sample = _method(table, method)
    axes = axis_columns(table)
    if not axes:
        raise InputError("the results have no axis columns to rank", field="sensitivity")
    ok = ok_mask(table)
    excluded = {k: n for k, n in status_counts(table).items() if k != "ok" and n}
    if int((ok & ~np.isfinite(y_all)).sum()):
        excluded["missing metric"] = int((ok & ~np.isfinite(y_all)).sum())
    full = {a: table.column(a).to_pylist() for a in axes}
    has_axes = np.array([all(not _missing(full[a][i]) for a in axes)
                         for i in range(table.num_rows)], dtype=bool)
    if int((ok & np.isfinite(y_all) & ~has_axes).sum()):
        excluded["missing axis value"] = int((ok & np.isfinite(y_all) & ~has_axes).sum())
    rows = np.flatnonzero(ok & np.isfinite(y_all) & has_axes)
    y = y_all[rows]
    n = int(rows.size)
    if n < 2:
        raise InputError(f"{n} ok point(s) with metric {metric!r}: too few for sensitivity",
                         field="sensitivity")
    columns = {a: [full[a][i] for i in rows] for a in axes}
    variance = float(y.var())
    notes: list[str] = []
    if variance == 0:
        notes.append(f"{metric} is the same at every point: every share is 0")
    if method == "main effects":
        effects = _main_effects(table, axes, columns, y, notes)
    else:
        effects = _sobol(axes, columns, y, bins, notes)
    return Sensitivity(metric, method, sample, n, variance, effects, excluded, notes)


def _main_effects(table: pa.Table, axes: list[str], columns: dict[str, list[Any]],
                  y: np.ndarray, notes: list[str]) -> list[AxisEffect]:
    levels = {a: axis_values(table, a) for a in axes}
    codes: dict[str, np.ndarray] = {}
    for a in axes:
        code_of = {v: k for k, v in enumerate(levels[a])}
        codes[a] = np.array([code_of[v] for v in columns[a]], dtype=int)
    n = len(y)
    cells = math.prod(len(levels[a]) for a in axes)
    combos = {tuple(int(codes[a][i]) for a in axes) for i in range(n)}
    if not (len(combos) == cells == n):
        notes.append(f"grid incomplete ({n:,} of {cells:,} points used): shares are "
                     "correlation ratios, not exact ANOVA main effects")
    base = {a: 0 for a in axes}  # the first value of each axis
    effects = []
    for a in axes:
        means, sizes, share = _group_stats(y, codes[a], len(levels[a]))
        at_base = np.ones(n, dtype=bool)
        for b in axes:
            if b != a:
                at_base &= codes[b] == base[b]
        oat: float | None = None
        if at_base.any():
            om, osz, _ = _group_stats(y[at_base], codes[a][at_base], len(levels[a]))
            if (osz > 0).all() and len(levels[a]) > 1:
                oat = _spread(om)
        effects.append(AxisEffect(a, share, _spread(means), list(levels[a]),
                                  [float(m) for m in means], [int(s) for s in sizes], oat))
    return effects


def _sobol(axes: list[str], columns: dict[str, list[Any]], y: np.ndarray, bins: int | None,
           notes: list[str]) -> list[AxisEffect]:
    n = len(y)
    count = bins if bins is not None else min(MAX_BINS, max(2, round(math.sqrt(n))))
    if count < 1:
        raise InputError(f"bins must be >= 1, not {count}", field="sensitivity")
    effects = []
    biggest = 1
    for a in axes:
        values = columns[a]
        numbers = numeric_values(values)
        distinct = list(dict.fromkeys(values))
        if numbers is None or len(distinct) <= count:
            if numbers is not None:  # few numeric values: group by value, in numeric order
                first = dict(zip(values, numbers, strict=True))
                distinct.sort(key=lambda v: first[v])
            code_of = {v: k for k, v in enumerate(distinct)}
            groups = np.array([code_of[v] for v in values], dtype=int)
            levels: list[Any] = distinct
            grouped = "value"
            k = len(distinct)
        else:
            order = np.argsort(numbers, kind="stable")
            groups = np.empty(n, dtype=int)
            groups[order] = (np.arange(n) * count) // n
            k = count
            levels = []
            for g in range(k):
                members = order[groups[order] == g]
                lo, hi = members[0], members[-1]
                levels.append(f"{format_axis_value(values[lo])} .. "
                              f"{format_axis_value(values[hi])}")
            grouped = "bins"
        biggest = max(biggest, k)
        means, sizes, share = _group_stats(y, groups, k)
        effects.append(AxisEffect(a, share, _spread(means), levels, [float(m) for m in means],
                                  [int(s) for s in sizes], None, grouped))
    bias = (biggest - 1) / max(n - 1, 1)
    notes.append(f"first-order indices estimated from the {n:,} given points (equal-count "
                 f"bins, up to {count} per axis)")
    if bias > SMALL_BIAS:
        notes.append(f"small sample: each index is biased up by about {bias:.2f} "
                     "((groups - 1) / (N - 1)); treat values below that as noise")
    return effects


def sensitivity_text(result: Sensitivity, table: pa.Table | None = None) -> str:
    """The sensitivity as text: one row per axis (largest share first), then the mean of
    the metric at each value (grids) and the notes."""
    kind = resolve_metric(table, result.metric).kind if table is not None else "number"
    name = "main-effect share" if result.method == "main effects" else "S1 (first order)"
    excl = ", ".join(f"{n:,} {k}" for k, n in result.excluded.items())
    head = (f"sensitivity of {result.metric} ({result.method}, sample {result.sample}, "
            f"{result.points:,} points" + (f"; left out: {excl}" if excl else "") + ")")
    effects = sorted(result.effects, key=lambda e: -e.share)
    headers = ["axis", name, "range of means"]
    if result.method == "main effects":
        headers.append("one at a time")
    rows = []
    for e in effects:
        row: list[object] = [e.axis, f"{e.share:.3f}", format_value(e.range, kind)]
        if result.method == "main effects":
            row.append(format_value(e.oat_range, kind) if e.oat_range is not None else "-")
        rows.append(row)
    lines = [head, text_table(headers, rows)]
    if result.method == "main effects":
        lines.append("")
        lines.append("mean at each value:")
        for e in result.effects:
            lines.append(f"  {e.axis}: " + ", ".join(
                f"{format_axis_value(v)} {format_value(m, kind)}"
                for v, m in zip(e.levels, e.means, strict=True)))
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


__all__ = ["AxisEffect", "Sensitivity", "sensitivity", "sensitivity_text", "numeric_values"]
