"""`memsim simulate`: the fetch-time distribution under load."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from memsim.bank import Bank
from memsim.cli.common import (
    OutputFile,
    emit_json,
    handle_errors,
    json_option,
    layout_options,
    load_trio,
    size_option,
)
from memsim.cli.tables import simulation_text
from memsim.errors import InputError
from memsim.layout import CacheConfig, Layout
from memsim.limits import MAX_PREFETCH_INFLIGHT, MAX_QUERIES
from memsim.profile import Profile
from memsim.simulate import SimulationResult, progress_bar, simulate
from memsim.trace import read_trace
from memsim.units import format_size
from memsim.workload import Workload, load_workload


def prefetch_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--prefetch, --prefetch-inflight, --prefetch-bytes: the layout's `prefetch:` section
    applies unless they change it (`layout_with_prefetch`)."""
    options = [
        click.option("--prefetch", "prefetch_policy",
                     type=click.Choice(["none", "children", "trace"]), default=None,
                     help="The client's prefetch policy (needs a cache), replacing the "
                          "layout's prefetch: section ('none': no prefetch): 'children' reads "
                          "the hottest children of each served path (by the workload's "
                          "routing, or learned online), 'trace' the run's next queries "
                          "[default: the layout's]."),
        click.option("--prefetch-inflight", type=click.IntRange(0, MAX_PREFETCH_INFLIGHT),
                     default=None, help="Prefetch reads in flight at most [default: the "
                     "layout's, else 4]."),
        click.option("--prefetch-bytes", metavar="SIZE", default=None,
                     help="Prefetched, not yet used bytes at most [default: the layout's, "
                     "else 64 MiB]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def layout_with_prefetch(lay: Layout, policy: str | None, inflight: int | None,
                         size: str | None) -> tuple[Layout, bool]:
    """The layout with its `prefetch:` section as the --prefetch options change it, and
    whether they changed it (then a prefetch error is the options', not the file's)."""
    from memsim.layout import PrefetchSection

    section = lay.prefetch
    if policy is not None:
        section = None if policy == "none" else PrefetchSection(policy=policy) \
            if section is None else section.model_copy(update={"policy": policy})
    budget: dict[str, int] = {}
    if inflight is not None:
        budget["max_inflight"] = inflight
    if size is not None:
        budget["max_bytes"] = int(size_option(size, "prefetch-bytes") or 0)
    if budget:
        if section is None or section.policy == "none":
            name = "prefetch-inflight" if inflight is not None else "prefetch-bytes"
            raise InputError(f"--{name} is a prefetch budget, and no prefetch runs: give "
                             "--prefetch children or trace (or a layout with a prefetch: "
                             "section)", field=name)
        section = section.model_copy(update=budget)
    if section is lay.prefetch:
        return lay, False
    return lay.model_copy(update={"prefetch": section}), True  # keeps the file, block map


@click.command("simulate")
@layout_options()
@click.option("--workload", "workload_ref", metavar="WORKLOAD",
              help="Workload file or shipped name (see `memsim workload list`).")
@click.option("--trace", "trace_in", metavar="FILE", type=click.Path(dir_okay=False),
              help="Replay a Parquet trace (arrival_s, block_L1..) instead of a workload.")
@click.option("--queries", type=click.IntRange(1, MAX_QUERIES), default=100_000,
              show_default=True, help="Queries to simulate (a trace is cut to this many).")
@click.option("--warmup", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Fraction of queries left out of the statistics.")
@click.option("--cache-budget", metavar="SIZE",
              help="RAM cache for blocks, e.g. '2 GB' (overrides the layout's cache).")
@click.option("--cache-policy", type=click.Choice(["lru", "lfu"]), default=None,
              help="Eviction policy for --cache-budget [default: lru].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--batch", type=click.IntRange(1, MAX_QUERIES), default=1, show_default=True,
              help="Queries per batch: each batch fetches its distinct blocks once, as the "
                   "client's fetch_many (open loop: released when its last query has "
                   "arrived; closed loop: each client issues the next N queries together).")
@prefetch_options
@click.option("--trace-out", metavar="FILE", type=OutputFile(),
              help="Write every query (arrival, path, fetch and level times) to Parquet.")
@json_option
@handle_errors
def simulate_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
                 workload_ref: str | None, trace_in: str | None, queries: int, warmup: float,
                 cache_budget: str | None, cache_policy: str | None, seed: int, batch: int,
                 prefetch_policy: str | None, prefetch_inflight: int | None,
                 prefetch_bytes: str | None,
                 trace_out: str | None, as_json: bool) -> None:
    """Fetch-time distribution under load: queueing, shared bandwidth, caching.

    Queries arrive as the workload says (or as a trace recorded them); each fetches one block
    per level from its tier through FCFS channels and a bandwidth shared by the transfers in
    flight. Prints mean and percentiles with 95% batch-means confidence intervals, per-level
    and per-tier times, utilisation and the cache hit ratio. With --batch N, consecutive
    queries are served N at a time, each distinct block once, and what that saved is shown.
    The layout's prefetch: section (or --prefetch) runs the client's prefetch policy after
    each fetch (or batch) with the same budget, its reads behind demand on every tier, and
    its counters are shown.
    """
    if (workload_ref is None) == (trace_in is None):
        raise InputError("give --workload or --trace (one of them)", field="workload")
    p, b, lay = load_trio(profile_ref, bank_ref, layout_ref)
    if cache_budget is not None:
        cache = CacheConfig.model_validate({"budget": size_option(cache_budget, "cache-budget"),
                                            "policy": cache_policy or "lru"})
        lay = lay.model_copy(update={"cache": cache})  # keeps the file and its block map
    elif cache_policy is not None:
        raise InputError("--cache-policy needs --cache-budget", field="cache-policy")
    wl = load_workload(workload_ref) if workload_ref else None
    trace = read_trace(trace_in, b) if trace_in else None
    lay, by_options = layout_with_prefetch(lay, prefetch_policy, prefetch_inflight,
                                           prefetch_bytes)
    update, close = progress_bar(queries)
    try:
        result = simulate(p, b, lay, wl, trace=trace, queries=queries, seed=seed,
                          warmup=warmup, trace_out=trace_out, progress=update, batch=batch)
    except InputError as exc:
        if (exc.field or "").startswith("prefetch") and (by_options or exc.file is None):
            raise InputError(f"option --prefetch: {exc.message}") from None
        if exc.field in ("queries", "batch"):  # a bound on the run: the option sets it
            raise InputError(f"option --{exc.field}: {exc.message}") from None
        if exc.field and exc.field.startswith("arrivals") and exc.file is None and wl:
            raise InputError(exc.message, file=workload_ref, field=exc.field) from None
        if exc.field == "trace" and exc.file is None and trace_in:
            raise InputError(exc.message, file=trace_in, field="arrival_s") from None
        raise
    finally:
        close()
    if report_run(result, p, b, lay, layout_ref, wl, trace_in, as_json):
        return
    click.echo(simulation_text(result, f"layout {lay.name or layout_ref} on {p.name}, bank "
                                       f"{b.name}, workload {wl.name if wl else trace_in}"))
    if result.batch > 1:
        click.echo(dedup_text(result))
    if result.prefetch is not None:
        served = result.served
        click.echo(f"prefetch ({prefetch_text(result.prefetch)}): "
                   f"{served.prefetch_issued:,} issued, {served.prefetch_hits:,} hits, "
                   f"{served.prefetch_wasted:,} wasted")


def prefetch_text(parameters: dict[str, Any]) -> str:
    """A prefetch policy's parameters (`memsim.simulate.prefetch_parameters`), in words."""
    text = (f"{parameters['policy']}, {parameters['max_inflight']:,} in flight, "
            f"{format_size(parameters['max_bytes'])} unused at most")
    if parameters["policy"] == "trace":
        text += f", {parameters['lookahead']:,} ahead"
    return text


def dedup_text(result: SimulationResult) -> str:
    """What batching did, in the client's terms (the measured batches)."""
    served = result.served
    tiers = ", ".join(f"{name} {n:,}" for name, n in served.requests.items()) or "none"
    return (f"batches of {result.batch:,}: {served.reads:,} block reads for {served.blocks:,} "
            f"blocks handed out; deduplication saved {served.dedup_blocks_saved:,} reads "
            f"({served.dedup_requests_saved:,} requests)\n"
            f"requests per tier (cache hits apart): {tiers}")


def report_run(result: SimulationResult, p: Profile, b: Bank, lay: Layout, layout_ref: str,
                wl: Workload | None, trace_in: str | None, as_json: bool) -> bool:
    """Warnings of a simulate or replay run, and its JSON when asked; True if JSON was sent.

    One `memsim: warning:` line per problem (the API's OverloadWarnings are silenced by the
    CLI's error shell, so a problem is never told twice).
    """
    for problem in (*result.unstable, *result.capacity_warnings):
        click.echo(f"memsim: warning: {problem}", err=True)
    if as_json:
        emit_json({"profile": p.name, "bank": b.name, "layout": lay.name or layout_ref,
                    "workload": wl.name if wl else None, "trace": trace_in,
                    **result.to_json()})
    return as_json

