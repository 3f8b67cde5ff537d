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


@click.command("validate")
@layout_options("Layout YAML of the materialized bank.", store=True)
@click.option("--workload", "workload_ref", metavar="WORKLOAD", required=True,
              help="Workload YAML or shipped name (arrivals and routing).")
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
@json_option
@handle_errors
def validate_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
                 workload_ref: str, queries: int, warmup: float, seed: int,
                 store: tuple[str, ...], warm: bool, recalibrate: bool,
                 plot_path: str | None, as_json: bool) -> None:
    """Replay a workload with real reads, simulate the same queries, compare.

    Reports per tier, per level and for the whole fetch the median and 99th-percentile
    errors of the simulated response times, (simulated - real) / real, and the CDF
    demerit (RMS horizontal distance between the two CDFs over the real mean), with a
    verdict against the targets: median error and demerit within 10%.
    """
    from memsim.simulate import progress_bar
    from memsim.stores import parse_overrides
    from memsim.validate import check_plot_path, validate
    from memsim.workload import load_workload

    p, b, lay = load_trio(profile_ref, bank_ref, layout_ref)
    overrides = parse_overrides(store, p)
    wl = load_workload(workload_ref)
    if plot_path is not None:
        check_plot_path(plot_path)
    update, close = progress_bar(queries)
    try:
        result = validate(p, b, lay, wl, queries=queries, seed=seed, stores=overrides,
                          warmup=warmup, cold=not warm, recalibrate=recalibrate,
                          progress=update)
    finally:
        close()
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
