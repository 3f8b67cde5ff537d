"""The `memsim validate` command: real reads vs the simulator on the same queries."""

from __future__ import annotations

import click

from memsim.cli.common import (
    OutputFile,
    emit_json,
    handle_errors,
    json_option,
    layout_options,
    load_trio,
    read_run_options,
)
from memsim.cli.simulate import layout_with_prefetch, prefetch_options
from memsim.errors import InputError


@click.command("validate")
@layout_options("Layout YAML of the materialized bank.", store=True)
@click.option("--workload", "workload_ref", metavar="WORKLOAD",
              help="Workload YAML or shipped name (arrivals and routing).")
@click.option("--trace", "trace_in", metavar="FILE", type=click.Path(dir_okay=False),
              help="Validate on the queries of a Parquet trace instead (e.g. from "
              "`memsim route`).")
@read_run_options("the comparison")
@click.option("--recalibrate", is_flag=True,
              help="First refit the latency and request overhead of every tier holding "
              "the bank in a local directory or S3 from reads of the bank's own blocks "
              "(one channel, utilisation 0.45): a scratch file's pages are not the "
              "bank's, and on a virtual machine their speeds differ by 20%.")
@click.option("--plot", "plot_path", metavar="FILE.png",
              type=OutputFile(),
              help="Write the real and simulated CDFs (one panel per tier and one for the "
              "fetch time) as a PNG.")
@prefetch_options
@json_option
@handle_errors
def validate_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
                 workload_ref: str | None, trace_in: str | None, queries: int, warmup: float,
                 seed: int, store: tuple[str, ...], warm: bool, recalibrate: bool,
                 plot_path: str | None, prefetch_policy: str | None,
                 prefetch_inflight: int | None, prefetch_bytes: str | None,
                 as_json: bool) -> None:
    """Replay a workload with real reads, simulate the same queries, compare.

    Reports per tier, per level and for the whole fetch the median and 99th-percentile
    errors of the simulated response times, (simulated - real) / real, and the CDF
    demerit (RMS horizontal distance between the two CDFs over the real mean), with a
    verdict against the targets: median error and demerit within 10%, and the mean fetch
    time and hit ratios (cache, prefetch) within 10% too. The reads are the client's
    (`memsim.open_bank`) with the layout's cache, resident levels and prefetch (--prefetch
    changes it), and the simulation models the same.
    """
    from memsim.simulate import progress_bar
    from memsim.stores import parse_overrides
    from memsim.trace import read_trace
    from memsim.validate import check_plot_path, validate
    from memsim.workload import load_workload

    if (workload_ref is None) == (trace_in is None):
        raise InputError("give --workload or --trace (one of them)", field="workload")
    p, b, lay = load_trio(profile_ref, bank_ref, layout_ref)
    overrides = parse_overrides(store, p)
    wl = load_workload(workload_ref) if workload_ref else None
    trace = read_trace(trace_in, b) if trace_in else None
    lay, by_options = layout_with_prefetch(lay, prefetch_policy, prefetch_inflight,
                                           prefetch_bytes)
    if plot_path is not None:
        check_plot_path(plot_path)
    update, close = progress_bar(min(queries, len(trace[0])) if trace is not None else queries)
    try:
        result = validate(p, b, lay, wl, trace=trace, queries=queries, seed=seed,
                          stores=overrides, warmup=warmup, cold=not warm,
                          recalibrate=recalibrate, progress=update)
    except InputError as exc:
        if (exc.field or "").startswith("prefetch") and (by_options or exc.file is None):
            raise InputError(f"option --prefetch: {exc.message}") from None
        raise
    finally:
        close()
    if trace_in is not None:
        result.workload = trace_in
    if lay.name == "":
        result.layout = layout_ref
    for problem in result.real.unstable:
        click.echo(f"memsim: warning: real reads: {problem}", err=True)
    for problem in result.simulated.unstable:
        click.echo(f"memsim: warning: simulation: {problem}", err=True)
    written = result.plot(plot_path) if plot_path is not None else None
    if as_json:
        out = result.to_json()
        out["plot"] = str(written) if written is not None else None
        emit_json(out)
        return
    click.echo(result.text())
    if written is not None:
        click.echo(f"plot: {written}")
