"""Which points the simulator confirms under `memsim sweep --confirm RULE`.

The sweep first runs every point without the simulator (screening); `select` then reads those
rows and names the points worth simulating: `pareto`, the points on or near the front of two
estimated metrics; `top:K`, the K best by the first metric.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from memsim.errors import InputError
from memsim.limits import MAX_SWEEP_POINTS
from memsim.sweep.report import metric_column, near_front, ok_mask, row_index

_TOP = re.compile(r"^top\s*:\s*(\S+)$")


@dataclass(frozen=True)
class ConfirmRule:
    """`pareto` (k None) or `top` with its K."""

    kind: str
    k: int | None = None

    def __str__(self) -> str:
        return "pareto" if self.kind == "pareto" else f"top:{self.k}"


def parse_confirm(text: str) -> ConfirmRule:
    """The rule in `text`: 'pareto' or 'top:K' (1 <= K <= the sweep's point bound)."""
    raw = str(text).strip()
    low = raw.lower()
    if low == "pareto":
        return ConfirmRule("pareto")
    match = _TOP.match(low)
    if match is None:
        if low == "top":
            raise InputError("'top' needs a count: top:K, e.g. top:10", field="confirm")
        raise InputError(f"unknown rule {raw[:40]!r}; expected 'pareto' or 'top:K' (e.g. "
                         "top:10)", field="confirm")
    count = match.group(1)
    if not count.isdigit() or len(count) > 9:
        raise InputError(f"top:K needs a whole number K >= 1, not {count[:20]!r}",
                         field="confirm")
    k = int(count)
    if not 1 <= k <= MAX_SWEEP_POINTS:
        raise InputError(f"top:K needs 1 <= K <= {MAX_SWEEP_POINTS:,}, not {k:,}",
                         field="confirm")
    return ConfirmRule("top", k)


def select(table: pa.Table, rule: ConfirmRule | str, metrics: Sequence[str] = ("p99", "cost"),
           tolerance: float = 0.05) -> set[str]:
    """The `point` keys to simulate: under `pareto` the ok rows near the front of the two
    `metrics` (see report.near_front, within `tolerance`); under `top:K` the K ok rows best by
    the first metric (ties by index). Rows without the metric(s) are never chosen."""
    if isinstance(rule, str):
        rule = parse_confirm(rule)
    if len(metrics) != 2:
        raise InputError(f"--confirm ranks by two metrics (X,Y), not {len(metrics)}",
                         field="confirm-metrics")
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise InputError(f"tolerance must be a number >= 0, not {tolerance!r}",
                         field="tolerance")
    if "point" not in table.column_names:
        raise InputError("the results have no 'point' column", field="confirm")
    x, y = str(metrics[0]), str(metrics[1])
    if rule.kind == "pareto":
        near = near_front(table, x, y, tolerance, field="confirm-metrics")
        return {str(k) for k in near.column("point").to_pylist()}
    values = metric_column(table, x, field="confirm-metrics")
    rows = np.flatnonzero(ok_mask(table) & np.isfinite(values))
    order = rows[np.lexsort((row_index(table)[rows], values[rows]))]
    keys = table.column("point").to_pylist()
    assert rule.k is not None
    return {str(keys[i]) for i in order[: rule.k]}


__all__ = ["ConfirmRule", "parse_confirm", "select"]
