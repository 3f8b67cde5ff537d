"""Sweeps: many configurations (points) from one spec, run in parallel, resumable, and read
back as fronts, sensitivities and heat maps.

The flow reads as the modules: `spec` expands a spec file into `point.Point`s; `stages` runs
optimize, estimate and simulate at one point and returns its row (`columns`); `executors`
run batches of points in this process, in worker processes or on a Dask cluster; `runner`
streams the rows into a `results` dataset (Parquet) and skips what it already holds;
`confirm` picks the points the simulator checks; `report` and `sensitivity` read the rows.

`memsim.sweep(spec, out)` runs a whole sweep and returns its rows as a pyarrow Table
(`.to_pandas()` for a DataFrame); `memsim.sweep.read_results(out)` reads a dataset back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from memsim.sweep.executors import Executor
    from memsim.sweep.spec import SweepSpec

__all__ = ["sweep", "make_executor", "read_results", "load_spec"]


def make_executor(*, workers: int | None = None, scheduler: str | None = None,
                  dask_local: bool = False) -> Executor:
    """Where points run: `scheduler` (a dask.distributed address), a local Dask cluster of
    `workers` processes, `workers` local processes (default: one per core), or this process
    (`workers=0`)."""
    from memsim.sweep import executors

    if scheduler is not None and dask_local:
        from memsim.errors import InputError

        raise InputError("give --scheduler or --dask-local, not both", field="scheduler")
    count = default_workers() if workers is None else workers
    if scheduler is not None:
        return executors.DaskExecutor(scheduler, max(count, 1))
    if dask_local:
        return executors.DaskExecutor(None, max(count, 1))
    if count == 0:
        return executors.InlineExecutor()
    return executors.ProcessExecutor(count)


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def sweep(spec: str | Path | dict[str, Any] | SweepSpec, out: str | Path | None = None, *,
          workers: int | None = None, scheduler: str | None = None, dask_local: bool = False,
          confirm: str | None = None, confirm_metrics: tuple[str, str] = ("p99", "cost"),
          tolerance: float = 0.05,
          progress: Callable[[int, int], None] | None = None) -> pa.Table:
    """Run every point of `spec` and return one row per point (see `columns`).

    With `out`, rows stream into that Parquet dataset as points finish, and points already
    there are not run again. `confirm` ("pareto" or "top:K") simulates only the points the
    estimator puts on or near the front of `confirm_metrics` (or the K best by the first).
    In a script, call it under `if __name__ == "__main__":`, as any process pool needs: the
    worker processes import the script's module.
    """
    from memsim.sweep.runner import run_sweep
    from memsim.sweep.spec import SweepSpec, load_spec

    parsed = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    chooser = None
    if confirm is not None:
        from memsim.sweep.confirm import parse_confirm, select

        rule = parse_confirm(confirm)

        def chooser(table: pa.Table) -> set[str]:
            return select(table, rule, metrics=confirm_metrics, tolerance=tolerance)

    executor = make_executor(workers=workers, scheduler=scheduler, dask_local=dask_local)
    try:
        return run_sweep(parsed.points(), out, axes=list(parsed.axes), executor=executor,
                         confirm=chooser, progress=progress, name=parsed.name)
    finally:
        executor.close()


def read_results(path: str | Path) -> pa.Table:
    """The rows of a sweep's results dataset."""
    from memsim.sweep.results import read_results as read

    return read(path)


def load_spec(ref: str | Path | dict[str, Any]) -> SweepSpec:
    """A sweep spec from a YAML file or a mapping."""
    from memsim.sweep.spec import load_spec as load

    return load(ref)


# `memsim.sweep(...)` runs a sweep; the package stays a package (`memsim.sweep.report`)
from memsim import make_callable  # noqa: E402

make_callable(__name__, "sweep")
