"""`memsim route`: query embeddings routed down the bank's tree, written as a trace."""

from __future__ import annotations

import click
import numpy as np

from memsim.cli.common import OutputFile, emit_json, handle_errors, json_option
from memsim.client.route import (
    METRICS,
    check_embeddings,
    load_centroids,
    load_embeddings,
    route,
    trace_paths,
)
from memsim.errors import InputError

DEFAULT_RATE = "10/s"


@click.command("route")
@click.option("--bank", "bank_ref", metavar="BANK", required=True,
              help="Bank file or preset (see `memsim bank list`).")
@click.option("--centroids", "centroids_ref", metavar="FILE", required=True,
              type=click.Path(),
              help="Centroids per depth: a .npz file with arrays L1, L2, ..., a directory of "
              "L1.npy, L2.npy, ..., or a zarr v3 group with arrays L1, L2, ....")
@click.option("--embeddings", "embeddings_ref", metavar="FILE", required=True,
              type=click.Path(),
              help="One embedding per query: a .npy array (queries, D), or a Parquet file "
              "with a list column (--column).")
@click.option("--column", default="embedding", show_default=True,
              help="The Parquet column holding the embeddings.")
@click.option("--metric", type=click.Choice(METRICS), default="l2", show_default=True,
              help="Nearest centroid (l2), largest inner product (ip) or cosine similarity.")
@click.option("--out", "out", metavar="FILE", type=OutputFile(), required=True,
              help="The trace to write (Parquet: query_id, arrival_s, block_L1..).")
@click.option("--rate", metavar="RATE",
              help=f"Arrival rate of the queries, e.g. '20/s' [default: {DEFAULT_RATE}].")
@click.option("--spacing", type=click.Choice(["poisson", "even"]), default=None,
              help="Arrivals at --rate: a seeded Poisson process, or evenly spaced from 0 "
              "[default: poisson].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the Poisson arrivals.")
@click.option("--arrivals", "arrivals_ref", metavar="FILE", type=click.Path(),
              help="Arrival times instead of --rate: a .npy of one time (s) per query, or a "
              "Parquet file with an arrival_s column (such as another trace).")
@json_option
@handle_errors
def route_cmd(bank_ref: str, centroids_ref: str, embeddings_ref: str, column: str,
              metric: str, out: str, rate: str | None, spacing: str | None, seed: int,
              arrivals_ref: str | None, as_json: bool) -> None:
    """Route query embeddings down the bank's tree by nearest centroid and write a trace.

    Each embedding descends the tree greedily, as the paper routes an input: at each depth
    the best of the current node's children under --metric (ties to the lowest index). The
    paths, with arrival times, form a trace that `memsim simulate --trace` and `memsim
    optimize --trace` read. Arrivals default to a Poisson process at 10 queries/s (seed
    --seed), the rate of the shipped poisson-uniform workload. A trailing empty level with
    no centroids gets the first child in the trace (no block is fetched there).
    """
    from memsim.bank import load_bank
    from memsim.trace import write_trace

    if arrivals_ref is not None and (rate is not None or spacing is not None):
        raise InputError("give --arrivals or --rate/--spacing, not both", field="arrivals")
    bank = load_bank(bank_ref)
    centroids = load_centroids(centroids_ref, bank)  # checked against the bank
    embeddings = check_embeddings(load_embeddings(embeddings_ref, column), centroids.dim,
                                  file=embeddings_ref,
                                  field=column if _is_parquet(embeddings_ref) else None)
    n = embeddings.shape[0]
    if arrivals_ref is not None:
        arrival = _read_arrivals(arrivals_ref, n)
    else:
        arrival = _arrivals(n, rate or DEFAULT_RATE, spacing or "poisson", seed)
    paths = route(centroids, embeddings, metric=metric)  # type: ignore[arg-type]
    write_trace(out, arrival, trace_paths(paths, bank))
    distinct = {lv.depth: int(np.unique(paths[:, lv.depth - 1]).shape[0])
                for lv in bank.active_levels}
    if as_json:
        emit_json({"bank": bank.name, "centroids": str(centroids_ref), "metric": metric,
                   "queries": n, "dim": centroids.dim, "trace": out,
                   "duration_s": float(arrival[-1]),
                   "distinct_blocks": {str(d): k for d, k in distinct.items()}})
        return
    per_level = ", ".join(f"level {d}: {k:,}" for d, k in distinct.items())
    click.echo(f"routed {n:,} queries ({metric}, dimension {centroids.dim}) down bank "
               f"{bank.name}; wrote {out}")
    click.echo(f"distinct blocks per level: {per_level}")


def _is_parquet(ref: str) -> bool:
    try:
        with open(ref, "rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False


def _arrivals(n: int, rate_text: str, spacing: str, seed: int) -> np.ndarray:
    """Arrival times of `n` queries at `rate_text`: Poisson (seeded) or evenly spaced."""
    from memsim.units import UnitError, parse_frequency

    try:
        rate = parse_frequency(rate_text)
    except UnitError as exc:
        raise InputError(str(exc), field="rate") from None
    if not rate > 0:
        raise InputError(f"must be positive, got {rate_text!r}", field="rate")
    if spacing == "even":
        return np.arange(n, dtype=np.float64) / rate
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n)
    return np.cumsum(gaps, out=gaps)


def _read_arrivals(ref: str, n: int) -> np.ndarray:
    """One arrival time per query from a .npy or a Parquet `arrival_s` column, checked."""
    from memsim.resources import checked_path
    from memsim.trace import read_columns

    path = checked_path(ref)
    field: str | None = "arrival_s"
    try:
        if path.is_dir():
            raise InputError("is a directory, expected a .npy or Parquet file", file=path)
        with open(path, "rb") as handle:
            magic = handle.read(6)
            handle.seek(0)
            if magic == b"\x93NUMPY":
                field = None
                arrival = np.lib.format.read_array(handle, allow_pickle=False)
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    except (OSError, ValueError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)[:120]
        raise InputError(f"cannot be read ({reason})", file=path) from None
    if magic[:4] == b"PAR1":
        arrival = read_columns(path, {"arrival_s": "number"}, what="arrivals file")["arrival_s"]
    elif field is not None:
        raise InputError("not a .npy or Parquet file", file=path)
    if arrival.ndim != 1 or arrival.dtype.kind not in "iuf":
        raise InputError(f"holds {arrival.dtype} of shape {arrival.shape}, expected one "
                         "number per query", file=path, field=field)
    arrival = arrival.astype(np.float64)
    if arrival.shape[0] != n:
        raise InputError(f"has {arrival.shape[0]:,} arrival times for {n:,} embeddings",
                         file=path, field=field)
    bad = ~np.isfinite(arrival) | (arrival < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"row {row} (0-based): arrival time {arrival[row]!r} is not a finite "
                         "non-negative number", file=path, field=field)
    if (np.diff(arrival) < 0).any():
        row = int(np.flatnonzero(np.diff(arrival) < 0)[0]) + 1
        raise InputError(f"row {row} (0-based): arrival time {arrival[row]!r} s is earlier "
                         "than the previous one; arrivals must be sorted", file=path,
                         field=field)
    return arrival
