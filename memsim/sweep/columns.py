"""The columns of a sweep's results: one row per point, the same names in every part file.

Axis values come first, one column per axis named by its path (`profile.tiers.flash.bandwidth`,
`workload.rate`), typed by its values (float64 when all are numbers, else string). The fixed
columns below follow; every time is in seconds, as `_s` says, with the unit in the name.
"""

from __future__ import annotations

import pyarrow as pa

# name -> (arrow type, what it holds)
FIXED: dict[str, tuple[pa.DataType, str]] = {
    "point": (pa.string(), "key: hash of the point's full inputs (resume skips keys it has)"),
    "index": (pa.int64(), "the point's position in the spec's expansion"),
    "sample": (pa.string(), "grid, random or lhs"),
    "status": (pa.string(), "ok, infeasible (no layout meets the goal) or failed"),
    "failed_stage": (pa.string(), "optimize, estimate or simulate; null when ok"),
    "error": (pa.string(), "the one-line error of a point that is not ok"),
    "rate": (pa.float64(), "queries per second the point carries; null when idle"),
    "objective": (pa.string(), "what the optimizer minimised: time:mean, time:p99, cost, ..."),
    "objective_value": (pa.float64(), "its value (seconds, dollars per month or joules)"),
    "placement": (pa.string(), "level:tier pairs ('2:flash 3:disk 4:cloud'), resident as ram*"),
    "est_source": (pa.string(), "load model (the optimizer's, at the rate) or estimator (idle)"),
    "est_mean_s": (pa.float64(), "estimated mean fetch time"),
    "est_p50_s": (pa.float64(), "estimated median fetch time"),
    "est_p99_s": (pa.float64(), "estimated 99th percentile"),
    "max_utilization": (pa.float64(), "the busiest tier's modelled utilisation at the rate"),
    "cost_usd_month": (pa.float64(), "dollars per month: storage plus requests at the rate"),
    "energy_j_per_query": (pa.float64(), "joules per query (dynamic plus idle share)"),
    "sim_queries": (pa.int64(), "queries the simulator measured; null when it did not run"),
    "sim_mean_s": (pa.float64(), "simulated mean fetch time"),
    "sim_mean_lo_s": (pa.float64(), "its confidence interval (batch means), low end"),
    "sim_mean_hi_s": (pa.float64(), "high end"),
    "sim_p50_s": (pa.float64(), "simulated median"),
    "sim_p50_lo_s": (pa.float64(), ""),
    "sim_p50_hi_s": (pa.float64(), ""),
    "sim_p99_s": (pa.float64(), "simulated 99th percentile"),
    "sim_p99_lo_s": (pa.float64(), ""),
    "sim_p99_hi_s": (pa.float64(), ""),
    "sim_stable": (pa.bool_(), "false when the run had no steady state (intervals null)"),
    "sim_max_utilization": (pa.float64(), "the busiest tier's simulated utilisation"),
    "sim_energy_j_per_query": (pa.float64(), "joules per query the simulator measured"),
    "confirmed": (pa.bool_(), "under --confirm: whether the simulator ran at this point"),
    "wall_s": (pa.float64(), "seconds the point took on its worker"),
}

# Columns that differ between runs of the same point (left out when comparing runs).
VOLATILE = ("wall_s",)


def empty_row() -> dict[str, object]:
    """A row with every fixed column null."""
    return dict.fromkeys(FIXED)
