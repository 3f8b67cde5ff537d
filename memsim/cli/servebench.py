"""memsim serve-bench: the client (`open_bank`) in a closed loop of concurrent callers."""

from __future__ import annotations

import click

from memsim.cli.common import (
    emit_json,
    handle_errors,
    json_option,
    layout_options,
    load_trio,
    read_run_options,
)
from memsim.client.servebench import MODES, ServeBenchResult
from memsim.errors import InputError
from memsim.units import format_size, format_time


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def serve_bench_text(r: ServeBenchResult) -> str:
    """The report: a fetch-time table, then throughput, hits, requests and bytes."""
    from memsim.texttable import table

    ft = r.fetch_time_s
    lines = [f"serve-bench of layout {r.layout} on {r.profile}, bank {r.bank}, workload "
             f"{r.workload}: {r.callers} {r.mode} caller{'s' if r.callers != 1 else ''}, batch "
             f"{r.batch}, {r.queries:,} queries measured (+{r.warmup:,} warm-up), seed {r.seed}",
             "",
             table(["fetch time", "mean", "p50", "p95", "p99", "max"],
                   [["per query", *(format_time(ft[k]) if ft[k] == ft[k] else "-"
                                    for k in ("mean", "p50", "p95", "p99", "max"))]]),
             ""]
    lines.append(f"throughput: {r.throughput_qps:,.1f} queries/s over "
                 f"{format_time(r.wall_s)} wall time")
    lines.append(f"hit ratio: {_ratio(r.hit_ratio)}; prefetch-hit ratio: "
                 f"{_ratio(r.prefetch_hit_ratio)}")
    rows = [[tier, f"{r.requests.get(tier, 0):,}", format_size(r.bytes.get(tier, 0))]
            for tier in r.requests]  # in the profile's order
    rows.append(["total", f"{r.requests_total:,}", format_size(sum(r.bytes.values()))])
    lines += ["", table(["tier", "requests", "bytes read"], rows), ""]
    lines.append(f"deduplication saved {r.dedup_requests_saved:,} requests "
                 f"({r.dedup_blocks_saved:,} block reads) of {r.blocks:,} blocks handed out")
    return "\n".join(lines)


@click.command("serve-bench")
@layout_options("Layout YAML of a materialized bank.", store=True)
@click.option("--workload", "workload_ref", metavar="WORKLOAD",
              help="Workload YAML or shipped name: the queries' paths (routing, locality) "
              "[default: uniform routing].")
@click.option("--trace", "trace_in", metavar="FILE", type=click.Path(dir_okay=False),
              help="Serve the paths of a Parquet trace (e.g. from `memsim route`) instead.")
@click.option("--callers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Concurrent callers, each with one batch in flight.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Paths per fetch_many call (shared blocks read once).")
@read_run_options("the statistics")
@click.option("--check-rate", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Fraction of blocks checked against the manifest.")
@click.option("--mode", type=click.Choice(MODES), default="async", show_default=True,
              help="Callers as asyncio tasks over afetch_many, or threads over fetch_many.")
@click.option("--no-cache", is_flag=True, help="Run without the layout's RAM cache.")
@json_option
@handle_errors
def serve_bench_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
                    store: tuple[str, ...], workload_ref: str | None, trace_in: str | None,
                    callers: int, batch: int, queries: int, warmup: float, seed: int,
                    warm: bool, check_rate: float, mode: str, no_cache: bool,
                    as_json: bool) -> None:
    """Serve a workload's queries through the client with concurrent callers, timing them.

    Callers are a closed loop without think time, each fetching the next batch of the
    workload's paths (the ones `memsim simulate` draws for the seed). Reports fetch-time
    percentiles, throughput, hit and prefetch-hit ratios, requests per tier, requests saved
    by deduplication and bytes read.
    """
    from memsim.client.servebench import serve_bench
    from memsim.simulate import progress_bar
    from memsim.stores import parse_overrides
    from memsim.trace import read_trace
    from memsim.workload import load_workload

    p, b, lay = load_trio(profile_ref, bank_ref, layout_ref)
    overrides = parse_overrides(store, p)
    if workload_ref is not None and trace_in is not None:
        raise InputError("give --workload or --trace, not both", field="workload")
    wl = load_workload(workload_ref) if workload_ref else None
    trace = read_trace(trace_in, b) if trace_in else None
    update, close = progress_bar(min(queries, len(trace[0])) if trace is not None else queries)
    try:
        result = serve_bench(lay, profile=p, bank=b, stores=overrides, workload=wl,
                             trace=trace, callers=callers, batch=batch, queries=queries,
                             warmup=warmup, seed=seed, cache=None if no_cache else "layout",
                             check=check_rate, cold=not warm, mode=mode, progress=update)
    finally:
        close()
    if trace_in is not None:
        result.workload = trace_in
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(serve_bench_text(result))
