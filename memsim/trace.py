"""Traces: the queries of a run (arrival time and path), stored as Parquet.

A trace is what the simulator and the real-read replay share, so both see the same queries.
Columns: `query_id` (int64, 0..n-1), `arrival_s` (float64 seconds, non-decreasing),
`block_L1` .. `block_L{N}` (int64 cluster id at each depth; child = parent * branching + i),
then any extra numeric columns (e.g. `fetch_time_s` from the simulator). Rows in error messages
are counted from 0, like `query_id`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from memsim.bank import Bank
from memsim.errors import InputError, one_line

if TYPE_CHECKING:
    import pyarrow as pa

ColumnKind = Literal["int", "number"]
MAX_ID = 2**63  # cluster ids are int64: branching**depth must not exceed this


def block_column(depth: int) -> str:
    """Name of the trace column holding the block (cluster id) at `depth` (1-based)."""
    return f"block_L{depth}"


def check_id_range(bank: Bank, file: str | Path | None = None) -> None:
    """Raise an InputError if the bank's deepest cluster ids do not fit in int64."""
    if bank.branching ** len(bank.levels) > MAX_ID:
        raise InputError(
            f"bank '{bank.name}' has {bank.branching}**{len(bank.levels)} clusters at its "
            "deepest level, more than 64-bit cluster ids can number",
            file=file or bank.file, field="levels",
        )


# ----------------------------------------------------------------------------- writing


def write_trace(
    path: str | Path,
    arrival_s: np.ndarray,
    paths: np.ndarray,
    *,
    columns: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a trace atomically (a temporary file in the same folder, then a rename).

    `paths` has one row per query and one column per depth; `columns` adds numeric columns.
    Shape or type mistakes are programming errors (ValueError); an unwritable path is an
    InputError naming the file.
    """
    import pyarrow as pa  # here, not at the top: pyarrow costs every command's start-up

    path = Path(path)
    arrival = np.asarray(arrival_s)
    blocks = np.asarray(paths)
    if arrival.ndim != 1:
        raise ValueError(f"arrival_s must be 1-D, got shape {arrival.shape}")
    if arrival.dtype.kind not in "iuf":
        raise ValueError(f"arrival_s must be numeric, got dtype {arrival.dtype}")
    n = arrival.shape[0]
    if blocks.ndim != 2 or blocks.shape[0] != n or blocks.shape[1] < 1:
        raise ValueError(f"paths must have shape ({n}, levels), got {blocks.shape}")
    if blocks.dtype.kind not in "iu":
        raise ValueError(f"paths must hold integers, got dtype {blocks.dtype}")
    data: dict[str, pa.Array] = {
        "query_id": pa.array(np.arange(n, dtype=np.int64)),
        "arrival_s": pa.array(arrival.astype(np.float64, copy=False)),
    }
    for d in range(1, blocks.shape[1] + 1):
        data[block_column(d)] = pa.array(blocks[:, d - 1].astype(np.int64, copy=False))
    for name, values in (columns or {}).items():
        values = np.asarray(values)
        if not isinstance(name, str) or not name:
            raise ValueError(f"extra column names must be non-empty strings, got {name!r}")
        if name in data or name.startswith("block_L"):
            raise ValueError(f"extra column '{name}' clashes with a trace column")
        if values.ndim != 1 or values.shape[0] != n:
            raise ValueError(f"extra column '{name}' must have shape ({n},), got {values.shape}")
        if values.dtype.kind not in "iuf":
            raise ValueError(f"extra column '{name}' must be int or float, got {values.dtype}")
        data[name] = pa.array(values)
    table = pa.table(data)
    return _write_atomic(path, table)


def _write_atomic(path: Path, table: pa.Table) -> Path:
    """Write `table` as Parquet through a temporary file; never leave a partial file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", file=path) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, pa.ArrowException) as exc:
        tmp.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise InputError(f"cannot write: {reason}", file=path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------- reading


def read_schema(path: str | Path, what: str = "Parquet file") -> pa.Schema:
    """The schema of a Parquet file; a missing or non-Parquet file is an InputError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from memsim.resources import checked_path

    path = checked_path(path)
    try:
        if path.is_dir():
            raise InputError(f"is a directory, expected a {what}", file=path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot be read: {getattr(exc, 'strerror', None) or exc}",
                         file=path) from None
    try:
        return pq.read_schema(path)
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet file ({one_line(str(exc))[:200]})",
                         file=path) from None


def read_columns(
    path: str | Path,
    columns: Mapping[str, ColumnKind],
    *,
    what: str = "Parquet file",
    schema: pa.Schema | None = None,
) -> dict[str, np.ndarray]:
    """Read the named columns of a Parquet file as numpy arrays (int64 or float64).

    Errors name the file, and the column and row where that applies: a missing file, not
    Parquet, missing columns, a wrong column type, zero rows, empty (null) cells.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if schema is None:
        schema = read_schema(path, what)
    missing = [name for name in columns if name not in schema.names]
    if missing:
        listed = ", ".join(f"'{m}'" for m in missing)
        raise InputError(
            f"missing column{'s' if len(missing) > 1 else ''} {listed}; a {what} needs "
            f"columns {', '.join(columns)}", file=path,
        )
    for name, kind in columns.items():
        typ = schema.field(name).type
        ok = pa.types.is_integer(typ) or (kind == "number" and pa.types.is_floating(typ))
        if not ok:
            want = "integers" if kind == "int" else "numbers"
            raise InputError(f"column holds {typ}, expected {want}", file=path, field=name)
    try:
        table = pq.read_table(path, columns=list(columns))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet file ({one_line(str(exc))[:200]})",
                         file=path) from None
    if table.num_rows == 0:
        raise InputError(f"the {what} has no rows", file=path)
    out: dict[str, np.ndarray] = {}
    for name, kind in columns.items():
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"row {row} (0-based) is empty", file=path, field=name)
        target = pa.int64() if kind == "int" else pa.float64()
        try:
            column = column.cast(target)
        except pa.ArrowInvalid:
            raise InputError("values do not fit in 64-bit integers", file=path,
                             field=name) from None
        out[name] = np.asarray(column.to_numpy(), dtype=np.int64 if kind == "int" else np.float64)
    return out


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def read_trace(path: str | Path, bank: Bank) -> tuple[np.ndarray, np.ndarray]:
    """The arrival times (float64 s) and paths (int64, one column per depth) of a trace.

    The trace must hold a block column for each of the bank's levels (extra deeper columns
    are ignored), sorted finite non-negative arrival times, and consistent paths.
    """
    path = Path(path)
    depths = len(bank.levels)
    b = bank.branching
    check_id_range(bank, path)
    schema = read_schema(path, "trace")
    have = [d for d in range(1, depths + 1) if block_column(d) in schema.names]
    if len(have) < depths and "arrival_s" in schema.names:
        absent = [block_column(d) for d in range(1, depths + 1) if d not in have]
        raise InputError(
            f"bank '{bank.name}' has {depths} levels, so a trace needs columns "
            f"{block_column(1)}..{block_column(depths)}; missing {', '.join(absent)}",
            file=path,
        )
    wanted: dict[str, ColumnKind] = {"arrival_s": "number"}
    wanted.update({block_column(d): "int" for d in range(1, depths + 1)})
    data = read_columns(path, wanted, what="trace", schema=schema)

    arrival = data["arrival_s"]
    bad = ~np.isfinite(arrival)
    if bad.any():
        row = _first(bad)
        raise InputError(f"row {row} (0-based): arrival time {arrival[row]} is not a finite "
                         "number", file=path, field="arrival_s")
    bad = arrival < 0
    if bad.any():
        row = _first(bad)
        raise InputError(f"row {row} (0-based): arrival time {arrival[row]!r} s is negative",
                         file=path, field="arrival_s")
    bad = np.diff(arrival) < 0
    if bad.any():
        row = _first(bad) + 1
        raise InputError(
            f"row {row} (0-based): arrival time {arrival[row]!r} s is earlier than the previous "
            f"row's {arrival[row - 1]!r} s; a trace must be sorted by arrival time",
            file=path, field="arrival_s",
        )

    paths = np.empty((arrival.shape[0], depths), dtype=np.int64)
    for d in range(1, depths + 1):
        name = block_column(d)
        ids = data[name]
        bad = (ids < 0) | (ids > b**d - 1)
        if bad.any():
            row = _first(bad)
            raise InputError(
                f"row {row} (0-based): block {ids[row]} is outside 0..{b**d - 1}, the clusters "
                f"at depth {d} of bank '{bank.name}' (branching {b})", file=path, field=name,
            )
        if d > 1:
            parents = paths[:, d - 2]
            bad = ids // b != parents
            if bad.any():
                row = _first(bad)
                p = parents[row]
                raise InputError(
                    f"row {row} (0-based): block {ids[row]} is not a child of "
                    f"{block_column(d - 1)} = {p} (its children are {p * b}..{p * b + b - 1} "
                    f"with branching {b}); the path is inconsistent", file=path, field=name,
                )
        paths[:, d - 1] = ids
    return arrival, paths


__all__ = ["block_column", "read_columns", "read_schema", "read_trace", "write_trace"]
