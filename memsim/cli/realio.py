"""Commands of the real-I/O backend: materialize, verify, replay (and the cloud emulator)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from pydantic import BaseModel, ConfigDict

from memsim import yamlio
from memsim.bank import Bank
from memsim.blockmap import Subtree
from memsim.cli.common import (
    OutputFile,
    emit_json,
    handle_errors,
    json_option,
    layout_options,
    load_trio,
    read_run_options,
)
from memsim.cli.simulate import (
    layout_with_prefetch,
    prefetch_options,
    prefetch_text,
    report_run,
)
from memsim.errors import DataError, InputError
from memsim.layout import SubtreeRef
from memsim.units import format_rate, format_size, format_time
from memsim.yamlio import validate_model

MAX_LISTED = 20


class Policy(BaseModel):
    """An access policy: subtrees the reader must never fetch."""

    model_config = ConfigDict(extra="forbid")

    blocked: list[SubtreeRef] = []


def load_policy(path: str, bank: Bank) -> list[Subtree]:
    """Blocked subtrees from a policy YAML file (`blocked: [{level: 2, block: 5}]`)."""
    doc = yamlio.load(path)
    policy = validate_model(Policy, doc)
    out = []
    for i, ref in enumerate(policy.blocked):
        if ref.level > len(bank.levels) or ref.block >= bank.branching ** ref.level:
            raise InputError(f"subtree ({ref.level}, {ref.block}) is not in bank '{bank.name}'",
                             file=path, line=doc.line_of(("blocked", i)),
                             field=f"blocked[{i}]")
        out.append(Subtree(depth=ref.level, block=ref.block))
    return out


# SI prefixes (kB, MB, GB; MB/s), as the summary line prints them (DESIGN.md: units are never
# mixed), with the unit on the counts too ("1.20GB/5.00GB"), not only on the rate
BYTES_BAR: dict[str, Any] = {
    "unit": "B", "unit_scale": True, "unit_divisor": 1000, "mininterval": 0.5,
    "bar_format": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B "
                  "[{elapsed}<{remaining}, {rate_fmt}]",
}


def _bytes_bar(label: str) -> tuple[Callable[[int], None], Callable[[int], None],
                                     Callable[[], None]]:
    """(set total, advance, close) of a byte progress bar on stderr, if it is a terminal."""
    state: dict[str, Any] = {}

    def total(n: int) -> None:
        if sys.stderr.isatty() and n > 0:
            from tqdm import tqdm

            state["bar"] = tqdm(total=n, desc=label, file=sys.stderr, **BYTES_BAR)

    def advance(n: int) -> None:
        if "bar" in state:
            state["bar"].update(n)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return total, advance, close


def _report_bad(bad: list[Any], what: str, hint: str = "") -> None:
    for b in bad[:MAX_LISTED]:
        click.echo(f"memsim: bad block: {b}", err=True)
    if len(bad) > MAX_LISTED:
        click.echo(f"memsim: ... and {len(bad) - MAX_LISTED} more", err=True)
    raise DataError(f"{len(bad)} bad block{'s' if len(bad) != 1 else ''} {what}{hint}")


@click.command("materialize")
@layout_options("Layout YAML (e.g. written by `memsim optimize --out`).", store=True)
@click.option("--weights", metavar="FILE", type=click.Path(dir_okay=False),
              help="Real weights: a .npy of the whole bank (levels by depth, blocks by id) "
              "or a .safetensors with one tensor per level named L<depth>.")
@click.option("--seed", type=int, default=None,
              help="Seed of the synthetic weights [default: 0].")
@click.option("--overwrite", is_flag=True,
              help="Replace a different bank already in a store (never other files).")
@click.option("--repair", is_flag=True,
              help="First read every stored block back (as verify does) and rewrite the "
              "shards or block objects holding a missing or corrupt one; the content is the "
              "one recorded in the stores.")
@json_option
@handle_errors
def materialize_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
                    store: tuple[str, ...], weights: str | None, seed: int | None,
                    overwrite: bool, repair: bool, as_json: bool) -> None:
    """Write the bank into zarr v3 stores, one per tier, as the layout places it.

    One array per (level, tier), chunk = one block, sharded as the layout's `chunking`
    says, with a CRC32C manifest of every block. Rerunning after an interruption (even
    kill -9) finishes the bank without rewriting completed shards. After `verify` finds bad
    blocks, `--repair` rewrites exactly the objects that hold them.
    """
    from memsim.materialize import SyntheticContent, WeightsContent, materialize
    from memsim.stores import parse_overrides

    p, b, lay = load_trio(profile_ref, bank_ref, layout_ref)
    if seed is not None and weights is not None:
        raise InputError("give --seed (synthetic weights) or --weights, not both",
                         field="seed")
    overrides = parse_overrides(store, p)
    if repair and overwrite:
        raise InputError("give --repair (fix this bank) or --overwrite (replace it), not both",
                         field="repair")
    content = (WeightsContent(b, weights) if weights else
               None if repair and seed is None else SyntheticContent(b, seed or 0))
    total, advance, close = _bytes_bar("materialize")
    try:
        result = materialize(p, b, lay, stores=overrides, content=content,
                             overwrite=overwrite, repair=repair, weights=weights,
                             progress=advance, on_total=total)
    finally:
        close()
    if as_json:
        emit_json(result.to_json())
        return
    for name, t in result.tiers.items():
        done = f", {t.units_skipped} units already done" if t.units_skipped else ""
        click.echo(f"{name:<8} {t.store}: levels {', '.join(map(str, t.levels))}, "
                   f"{t.blocks:,} blocks, {format_size(t.bytes_total)} "
                   f"({format_size(t.bytes_written)} written{done})")
    if repair:
        fixed = [f"{name} {t.objects_repaired:,} object{'s' if t.objects_repaired != 1 else ''}"
                 f" ({t.blocks_repaired:,} blocks, {t.bad_found:,} bad)"
                 for name, t in result.tiers.items() if t.objects_repaired]
        click.echo("repaired: " + ", ".join(fixed) if fixed else
                   "repair: every block of the complete units matches the manifest")
    rate = result.bytes_written / result.seconds if result.seconds > 0 else 0.0
    click.echo(f"wrote {format_size(result.bytes_written)} in "
               f"{format_time(result.seconds)} ({format_rate(rate)})")
    if result.retries:
        click.echo("retries: " + ", ".join(f"{t} {n}" for t, n in result.retries.items()))
    for note in result.notes:
        click.echo(f"note: {note}")

@click.command("verify")
@layout_options("Layout YAML (e.g. written by `memsim optimize --out`).", store=True)
@json_option
@handle_errors
def verify_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
               store: tuple[str, ...], as_json: bool) -> None:
    """Read every stored block back and check it against the manifest.

    Names every bad block (level, block, tier, store) and exits 6 if there is any.
    """
    from memsim.materialize.verify import verify
    from memsim.stores import parse_overrides

    p, b, lay = load_trio(profile_ref, bank_ref, layout_ref)
    total, advance, close = _bytes_bar("verify")
    try:
        result = verify(p, b, lay, stores=parse_overrides(store, p), progress=advance,
                        on_total=total)
    finally:
        close()
    if as_json:
        emit_json(result.to_json())
    else:
        for tier, n in result.checked.items():
            click.echo(f"{tier:<8} {n:,} blocks checked")
        if result.ok:
            click.echo(f"all {sum(result.checked.values()):,} blocks match the manifest "
                       f"({format_size(result.bytes)} in {format_time(result.seconds)})")
    if not result.ok:
        _report_bad(result.bad, "found", "; `memsim materialize --repair` rewrites them")

@click.command("replay")
@layout_options("Layout YAML (e.g. written by `memsim optimize --out`).", store=True)
@click.option("--workload", "workload_ref", metavar="WORKLOAD",
              help="Workload YAML or shipped name (arrivals and routing).")
@click.option("--trace", "trace_in", metavar="FILE", type=click.Path(dir_okay=False),
              help="Replay the queries of a Parquet trace instead.")
@read_run_options("the statistics")
@click.option("--check-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Fraction of blocks checked against the manifest.")
@click.option("--lazy-index", is_flag=True,
              help="Read shard indexes on first use, timed (default: all at start-up).")
@click.option("--policy", metavar="FILE", type=click.Path(dir_okay=False),
              help="Access policy YAML: `blocked: [{level: L, block: B}]` subtrees the "
              "reader must never fetch (added to the layout's).")
@click.option("--weights", metavar="FILE", type=click.Path(dir_okay=False),
              help="The weights file the bank was written from (to fill RAM tiers).")
@prefetch_options
@click.option("--trace-out", metavar="FILE", type=OutputFile(),
              help="Write every query (arrival, path, fetch and level times) to Parquet.")
@json_option
@handle_errors
def replay_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
               store: tuple[str, ...], workload_ref: str | None, trace_in: str | None,
               queries: int, warmup: float, seed: int, warm: bool, check_rate: float,
               lazy_index: bool, policy: str | None, weights: str | None,
               prefetch_policy: str | None, prefetch_inflight: int | None,
               prefetch_bytes: str | None, trace_out: str | None, as_json: bool) -> None:
    """Run a workload against the materialized bank with real reads, timing each request.

    The reads are the client's (`memsim.open_bank`), with the layout's cache, resident
    levels and prefetch (--prefetch changes it). Open-loop workloads keep their arrival
    times, closed loops their clients. Output has the statistics and JSON keys of `memsim
    simulate`, plus retries, read mode and checks. A missing or corrupt block is named and
    the exit code is 6.
    """
    from memsim.cli.tables import simulation_text
    from memsim.replay import replay
    from memsim.simulate import progress_bar
    from memsim.stores import parse_overrides
    from memsim.trace import read_trace
    from memsim.workload import load_workload

    if (workload_ref is None) == (trace_in is None):
        raise InputError("give --workload or --trace (one of them)", field="workload")
    p, b, lay = load_trio(profile_ref, bank_ref, layout_ref)
    overrides = parse_overrides(store, p)
    blocked = load_policy(policy, b) if policy else None
    wl = load_workload(workload_ref) if workload_ref else None
    trace = read_trace(trace_in, b) if trace_in else None
    lay, by_options = layout_with_prefetch(lay, prefetch_policy, prefetch_inflight,
                                           prefetch_bytes)
    # the bar counts every finished query (replay reports each one), warm-up included; a
    # trace shorter than --queries replays all of its queries and no more
    update, close = progress_bar(min(queries, len(trace[0])) if trace is not None else queries)
    try:
        result = replay(p, b, lay, wl, trace=trace, queries=queries, seed=seed,
                        warmup=warmup, stores=overrides, cold=not warm,
                        check_rate=check_rate, preload_index=not lazy_index,
                        blocked=blocked, weights=weights, trace_out=trace_out,
                        progress=update)
    except InputError as exc:
        if (exc.field or "").startswith("prefetch") and (by_options or exc.file is None):
            raise InputError(f"option --prefetch: {exc.message}") from None
        raise
    finally:
        close()
    if not report_run(result, p, b, lay, layout_ref, wl, trace_in, as_json):
        click.echo(simulation_text(result, f"replay of layout {lay.name or layout_ref} on "
                                           f"{p.name}, bank {b.name}, workload "
                                           f"{wl.name if wl else trace_in} (real reads)",
                                   clock="wall time"))
        if result.prefetch is not None:
            served = result.served
            click.echo(f"prefetch ({prefetch_text(result.prefetch)}): "
                       f"{served.prefetch_issued:,} issued, {served.prefetch_hits:,} hits, "
                       f"{served.prefetch_wasted:,} wasted")
        modes = ", ".join(f"{t} {m}" for t, m in result.read_mode.items())
        click.echo(f"reads: {modes}; {result.checked_blocks:,} blocks checked")
        if result.retries:
            click.echo("retries: " + ", ".join(f"{t} {n}" for t, n in
                                               result.retries.items()))
        if result.blocked_reads:
            click.echo("blocked by access control: " + ", ".join(
                f"level {d}: {n}" for d, n in sorted(result.blocked_reads.items())))
    if result.bad_blocks:
        _report_bad(result.bad_blocks, "met during replay")
