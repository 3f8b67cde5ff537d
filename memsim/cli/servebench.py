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
from memsim.cli.simulate import layout_with_prefetch, prefetch_options, prefetch_text
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
    if r.prefetch is not None:
        lines.append(f"prefetch: {prefetch_text(r.prefetch)}")
    if r.predicted is not None:
        lines += ["", predicted_text(r)]
    return "\n".join(lines)


def predicted_text(r: ServeBenchResult) -> str:
    """Measured beside predicted: the simulator's closed loop of the same callers, paths,
    batches, cache and prefetch."""
    from memsim.texttable import table

    pred = r.predicted
    assert pred is not None

    def time(value: float) -> str:
        return format_time(value) if value == value else "-"

    rows = [[f"fetch time {k}", time(r.fetch_time_s[k]), time(pred["fetch_time_s"][k])]
            for k in ("mean", "p50", "p99")]
    rows.append(["hit ratio", _ratio(r.hit_ratio), _ratio(pred["hit_ratio"])])
    rows.append(["prefetch-hit ratio", _ratio(r.prefetch_hit_ratio),
                 _ratio(pred["prefetch_hit_ratio"])])
    tiers = [t for t in r.requests] + [t for t in pred["requests"] if t not in r.requests]
    rows += [[f"requests {tier}", f"{r.requests.get(tier, 0):,}",
              f"{pred['requests'].get(tier, 0):,}"] for tier in tiers]
    rows.append(["requests total", f"{r.requests_total:,}", f"{pred['requests_total']:,}"])
    rows.append(["dedup requests saved", f"{r.dedup_requests_saved:,}",
                 f"{pred['dedup_requests_saved']:,}"])
    head = (f"predicted by the simulator: a closed loop of {r.callers} client"
            f"{'s' if r.callers != 1 else ''} without think time over the same paths, batch "
            f"{r.batch}")
    if pred["prefetch"] is not None:
        head += f", prefetch {prefetch_text(pred['prefetch'])}"
    return head + "\n" + table(["", "measured", "predicted"], rows)


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
@click.option("--no-cache", is_flag=True, help="Run without the layout's RAM cache (and so "
              "without prefetch).")
@prefetch_options
@click.option("--simulate", "and_simulate", is_flag=True,
              help="Also simulate the same closed loop (callers, paths, batches, cache, "
                   "prefetch) and show predicted beside measured.")
@json_option
@handle_errors
def serve_bench_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
                    store: tuple[str, ...], workload_ref: str | None, trace_in: str | None,
                    callers: int, batch: int, queries: int, warmup: float, seed: int,
                    warm: bool, check_rate: float, mode: str, no_cache: bool,
                    prefetch_policy: str | None, prefetch_inflight: int | None,
                    prefetch_bytes: str | None, and_simulate: bool, as_json: bool) -> None:
    """Serve a workload's queries through the client with concurrent callers, timing them.

    Callers are a closed loop without think time, each fetching the next batch of the
    workload's paths (the ones `memsim simulate` draws for the seed). Reports fetch-time
    percentiles, throughput, hit and prefetch-hit ratios, requests per tier, requests saved
    by deduplication and bytes read. The layout's prefetch: section (or --prefetch) is the
    client's prefetch. With --simulate, the simulator runs the same closed loop on the same
    paths and its predictions are shown beside the measurements.
    """
    from memsim.client.servebench import serve_bench
    from memsim.simulate import progress_bar
    from memsim.stores import parse_overrides
    from memsim.trace import read_trace
    from memsim.workload import load_workload

    p, b, lay = load_trio(profile_ref, bank_ref, layout_ref)
    if no_cache and prefetch_policy is None and lay.prefetch is not None:
        prefetch_policy = "none"  # prefetch reads into the cache: without one, none
    lay, by_options = layout_with_prefetch(lay, prefetch_policy, prefetch_inflight,
                                           prefetch_bytes)
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
                             check=check_rate, cold=not warm, mode=mode, progress=update,
                             simulate=and_simulate)
    except InputError as exc:
        if (exc.field or "").startswith("prefetch") and (by_options or exc.file is None):
            raise InputError(f"option --prefetch: {exc.message}") from None
        raise
    finally:
        close()
    if result.simulated is not None:
        for problem in (*result.simulated.unstable, *result.simulated.capacity_warnings):
            click.echo(f"memsim: warning: simulation: {problem}", err=True)
    if trace_in is not None:
        result.workload = trace_in
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(serve_bench_text(result))
