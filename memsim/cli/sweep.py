"""`memsim sweep`: run many points from a spec, and `memsim sweep report` on the results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from memsim.cli.common import OutputFile, emit_json, handle_errors, json_option, warn
from memsim.errors import InputError


class SweepGroup(click.Group):
    """`memsim sweep SPEC ...` runs a sweep (the `run` command); `memsim sweep report ...`
    reads one back. Anything that is not a subcommand's name is the run command's."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("sweep", cls=SweepGroup)
def sweep() -> None:
    """Run many configurations from one spec, in parallel and resumable; report on them.

    `memsim sweep SPEC --out results.parquet` runs every point of SPEC (a YAML file: a base
    configuration and axes over any of its fields; `memsim schema sweep`) and streams one row
    per point into a Parquet dataset. Rerun the same command after an interruption: points
    already there are skipped. `memsim sweep report results.parquet` shows fronts,
    sensitivities and heat maps.
    """


def _pair(value: str | None, name: str) -> tuple[str, str] | None:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(f"--{name} takes two metrics separated by a comma, e.g. 'cost,p99'; "
                         f"got {value!r}", field=name)
    return parts[0], parts[1]


@sweep.command("run")
@click.argument("spec_ref", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--out", type=OutputFile(dir_okay=True), metavar="PATH",
              help="Results dataset (a directory of Parquet files) to stream rows into and "
              "resume from. [default: SPEC's name + '.parquet' in the current directory]")
@click.option("--workers", type=click.IntRange(0, 1024), metavar="N",
              help="Worker processes (0: run in this process). With --dask-local, the "
              "cluster's workers. [default: one per core]")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run on a running dask.distributed cluster, e.g. tcp://host:8786.")
@click.option("--dask-local", is_flag=True,
              help="Start a local Dask cluster of --workers processes and run on it (prints "
              "its dashboard link).")
@click.option("--confirm", "confirm", metavar="RULE",
              help="Screen every point without simulating, then simulate only these: "
              "'pareto' (on or near the front of --confirm-metrics) or 'top:K' (the K best "
              "by the first metric).")
@click.option("--confirm-metrics", default="p99,cost", show_default=True, metavar="X,Y",
              help="The two metrics --confirm ranks by (mean, p50, p99, cost, energy, ...).")
@click.option("--tolerance", type=click.FloatRange(0, 10), default=0.05, show_default=True,
              help="How near the front (relative) a point may be and still be confirmed.")
@click.option("--dry-run", is_flag=True,
              help="List the points (axis values and keys) without running them.")
@json_option
@handle_errors
def sweep_run(spec_ref: str, out: str | None, workers: int | None, scheduler: str | None,
              dask_local: bool, confirm: str | None, confirm_metrics: str, tolerance: float,
              dry_run: bool, as_json: bool) -> None:
    """Run every point of SPEC and stream one row per point into --out.

    Each point runs the spec's stages (optimize, estimate, and simulate if asked). A point
    that fails is a row with its error; the sweep goes on. Interrupted (Ctrl-C, a crash, a
    killed machine), the same command resumes where it stopped.
    """
    from memsim.sweep import make_executor
    from memsim.sweep.spec import load_spec

    spec = load_spec(spec_ref)
    points = spec.points()
    if dry_run:
        _dry_run(spec, points, as_json)
        return
    target = out or f"{spec.name}.parquet"
    metrics = _pair(confirm_metrics, "confirm-metrics")
    assert metrics is not None
    chooser = None
    if confirm is not None:
        from memsim.sweep.confirm import parse_confirm, select

        rule = parse_confirm(confirm)

        def chooser(table: Any) -> set[str]:
            return select(table, rule, metrics=metrics, tolerance=tolerance)

    from memsim.sweep.results import check_dataset, read_keys

    # every option is checked before anything is written: a refused run leaves no dataset
    executor = make_executor(workers=workers, scheduler=scheduler, dask_local=dask_local)
    try:
        have = read_keys(check_dataset(target)) if Path(target).exists() else set()
    except BaseException:
        executor.close()
        raise
    todo = sum(1 for p in points if p.key not in have)
    link = getattr(executor, "dashboard_link", None)
    if link:  # asked for with --dask-local: a log line, but one a user needs to see
        click.echo(f"dask dashboard: {link}", err=True)
    terminal = sys.stderr.isatty() and not as_json
    if terminal:  # logs go to stderr only on a terminal (the result line is on stdout)
        click.echo(f"sweep {spec.name}: {len(points):,} points, {len(points) - todo:,} already "
                   f"in {target}, {todo:,} to run {executor.describe()}", err=True)
    from memsim.sweep.runner import run_sweep

    bar = _progress_bar(todo) if todo and terminal else None
    try:
        table = run_sweep(points, target, axes=list(spec.axes), executor=executor,
                          confirm=chooser, progress=bar.update_to if bar else None,
                          name=spec.name)
    except KeyboardInterrupt:
        if bar:
            bar.close()
        executor.close()
        warn(f"interrupted: the points finished so far are in {target}; run the same command "
             "to resume")
        sys.exit(130)
    finally:
        if bar:
            bar.close()
    executor.close()
    statuses = table.column("status").to_pylist() if table.num_rows else []
    counts = {s: statuses.count(s) for s in ("ok", "infeasible", "failed")}
    if as_json:
        emit_json({"spec": spec.name, "out": target, "points": len(points), "ran": todo,
                   "status": counts})
        return
    click.echo(f"{len(points):,} points in {target}: " + ", ".join(
        f"{n:,} {s}" for s, n in counts.items() if n or s == "ok")
        + (f" ({todo:,} run {executor.describe()}, {len(points) - todo:,} already there)"
           if todo else " (all already there: nothing to run)"))
    if counts["failed"]:
        first = next(e for s, e in zip(statuses, table.column("error").to_pylist(),
                                       strict=True) if s == "failed")
        click.echo(f"first failure: {first}")
    click.echo(f"report: memsim sweep report {target}")


def _dry_run(spec: Any, points: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json({"spec": spec.name, "sample": spec.sample, "axes": list(spec.axes),
                   "points": [{"index": p.index, "point": p.key, "axes": p.axes}
                              for p in points]})
        return
    from memsim.cli.tables import table

    rows = [[p.index, p.key, *(_cell(p.axes.get(a)) for a in spec.axes)] for p in points]
    click.echo(f"sweep {spec.name}: {len(points):,} points ({spec.sample})")
    click.echo(table(["index", "point", *spec.axes], rows))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


class _Bar:
    """A tqdm bar on stderr that the runner moves to (done, total)."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="point", file=sys.stderr, mininterval=0.5,
                         dynamic_ncols=True)

    def update_to(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _progress_bar(total: int) -> _Bar:
    return _Bar(total)


@sweep.command("report")
@click.argument("results", metavar="RESULTS", type=click.Path(file_okay=False))
@click.option("--pareto", metavar="X,Y",
              help="The front of two metrics (minimised), e.g. 'cost,p99': a table, and a "
              "panel of --plot.")
@click.option("--sensitivity", metavar="METRIC",
              help="Each axis's effect on METRIC: main effects for grids, first-order Sobol "
              "indices for sampled sweeps.")
@click.option("--heatmap", metavar="METRIC",
              help="METRIC over two axes of a grid (--axes), other axes averaged.")
@click.option("--axes", "heat_axes", metavar="A,B",
              help="The two axes of --heatmap. [default: the first two]")
@click.option("--plot", type=OutputFile(), metavar="FILE",
              help="Draw the requested views to a PNG.")
@json_option
@handle_errors
def sweep_report(results: str, pareto: str | None, sensitivity: str | None,
                 heatmap: str | None, heat_axes: str | None, plot: str | None,
                 as_json: bool) -> None:
    """Summarise a sweep's results: points by status, fronts, sensitivities, heat maps.

    RESULTS is the dataset `memsim sweep` wrote (plain Parquet: pandas, DuckDB and pyarrow
    read it too). Metrics: mean, p50, p99 (simulated where a point has it, else estimated),
    est_p99, sim_p99, cost, energy, objective, utilization, wall, or a column name.
    """
    from memsim.sweep import report
    from memsim.sweep.results import read_results

    if not Path(results).is_dir():
        raise InputError("no such results dataset (a directory of Parquet files)",
                         file=results)
    table = read_results(results)
    front = _pair(pareto, "pareto")
    pair = _pair(heat_axes, "axes")
    heat = (heatmap, pair) if heatmap else None
    if pair and not heatmap:
        raise InputError("--axes needs --heatmap", field="axes")
    if plot and not (front or sensitivity or heat):
        raise InputError("--plot draws --pareto, --sensitivity or --heatmap: give at least one",
                         field="plot")
    if as_json:
        emit_json(report.report_json(table, pareto=front, sensitivity=sensitivity,
                                     heatmap=heat))
    else:
        click.echo(report.report_text(table, pareto=front, sensitivity=sensitivity,
                                      heatmap=heat))
    if plot:
        report.plot_report(table, plot, pareto=front, sensitivity=sensitivity, heatmap=heat)
        if not as_json:
            click.echo(f"plot written to {plot}")
