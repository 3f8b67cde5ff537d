"""A sweep's results on disk: a directory of Parquet part files, written so a kill never
leaves half a row behind.

`results.parquet/` holds `part-000001.parquet`, `part-000002.parquet`, ... (one per flush).
Each part is written under a hidden temporary name (`.part-....tmp`: not `*.parquet`, and
hidden, so DuckDB's `dir/*.parquet` glob and pyarrow's dataset discovery skip it), synced,
renamed into place with `os.replace` and the directory synced: a part is either whole or
absent. A leftover temporary file (a kill mid-write) is removed on the next open. Names
starting with `_` (`_sweep.json`, `_lock`, the screening dataset `_screen/`) are ignored by
readers. A directory holding anything else is not a results dataset and is refused, so a
mistyped `--out` never writes into someone's folder.

A long sweep flushes many small parts; at close, more than COMPACT_PARTS of them are merged
into one `part-A-B.parquet` (the parts A..B it replaces), written atomically before they are
deleted. A part whose number lies in a merged part's range is superseded: readers here skip
it, and the next open deletes it (a kill between the rename and the deletes).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

try:
    import fcntl
except ImportError:  # not on POSIX: no lock (one sweep per dataset is then the user's care)
    fcntl = None  # type: ignore[assignment]

from memsim.errors import InputError
from memsim.sweep.columns import FIXED

FLUSH_SECONDS = 2.0  # a buffered row reaches disk at most this long after the last flush ...
FLUSH_ROWS = 256  # ... or once this many rows wait
COMPACT_PARTS = 64  # more parts than this are merged into one at close
PART_RE = re.compile(r"^part-(\d{6,})(?:-(\d{6,}))?\.parquet$")
TEMP_RE = re.compile(r"^\..*\.tmp$")
META = "_sweep.json"
LOCK = "_lock"
SCREEN = "_screen"  # the screening dataset of a --confirm sweep, inside the main one
_ALLOWED_NAMES = {META, LOCK, SCREEN}


def _span(part: Path) -> tuple[int, int]:
    """The part numbers a part file holds: (n, n), or (a, b) for a merged one."""
    m = PART_RE.match(part.name)
    assert m is not None
    return int(m[1]), int(m[2] or m[1])


def _all_parts(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if PART_RE.match(p.name) and p.is_file()]


def _superseded(parts: list[Path]) -> set[Path]:
    """Parts whose numbers lie within a wider merged part's range."""
    spans = {p: _span(p) for p in parts}
    wide = [(a, b) for a, b in spans.values() if a != b]
    return {p for p, (a, b) in spans.items()
            if any(wa <= a and b <= wb and (wa, wb) != (a, b) for wa, wb in wide)}


def part_files(path: str | Path) -> list[Path]:
    """The dataset's live part files, in the order they were written."""
    parts = _all_parts(Path(path))
    dead = _superseded(parts)
    return sorted((p for p in parts if p not in dead), key=_span)


def check_dataset(path: str | Path, *, create: bool = False, what: str = "--out") -> Path:
    """`path` as a results dataset directory (created when `create` and absent); an
    InputError when it exists and is not one: a regular file, or a directory with files a
    sweep does not write."""
    p = Path(path)
    if not p.exists():
        if not create:
            raise InputError(f"{what} {p}: no such results dataset")
        try:
            p.mkdir(parents=True)
        except OSError as exc:
            raise InputError(f"{what} {p}: cannot create the results directory: "
                             f"{exc.strerror or exc}") from None
        return p
    if not p.is_dir():
        raise InputError(f"{what} {p}: exists and is not a results dataset (a file, not a "
                         "directory of part files); choose another path or remove it")
    foreign = sorted(
        q.name for q in p.iterdir()
        if not (PART_RE.match(q.name) or TEMP_RE.match(q.name) or q.name in _ALLOWED_NAMES))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(f"{what} {p}: exists and is not a results dataset (it holds {shown}); "
                         "choose another path or remove it")
    return p


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _atomic_write(directory: Path, name: str, write: Any) -> None:
    """Write `name` in `directory` through a hidden temp file, synced and renamed in place."""
    tmp = directory / f".{name.removesuffix('.parquet')}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


def _axis_type(values: Iterable[Any]) -> pa.DataType:
    """float64 when every (non-null) value is a number (bools are not), else string."""
    seen = False
    for v in values:
        if v is None:
            continue
        seen = True
        if isinstance(v, bool) or not isinstance(v, int | float):
            return pa.string()
    return pa.float64() if seen else pa.string()


def axis_types(axes_values: Iterable[dict[str, Any]], axes: Sequence[str]
               ) -> dict[str, pa.DataType]:
    """Each axis's column type over all the points of a sweep (so every part agrees)."""
    rows = list(axes_values)
    return {a: _axis_type(r.get(a) for r in rows) for a in axes}


def _as_text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, default=str)


def _column(values: list[Any], typ: pa.DataType) -> pa.Array:
    if pa.types.is_string(typ):
        values = [_as_text(v) for v in values]
    elif pa.types.is_floating(typ):
        values = [None if v is None else float(v) for v in values]
    elif pa.types.is_integer(typ):
        values = [None if v is None else int(v) for v in values]
    elif pa.types.is_boolean(typ):
        values = [None if v is None else bool(v) for v in values]
    return pa.array(values, type=typ)


def rows_to_table(rows: Sequence[dict[str, Any]], axes: Sequence[str],
                  types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """Rows as a table: the axis columns first (typed by `types`, else by these rows'
    values: float64 when all are numbers, else string, keeping the user's text), then the
    FIXED columns with their declared types. Keys a row lacks are null; others are dropped."""
    types = types or {}
    axes = [a for a in axes if a not in FIXED]
    arrays = []
    names = []
    for a in axes:
        values = [r.get(a) for r in rows]
        arrays.append(_column(values, types.get(a) or _axis_type(values)))
        names.append(a)
    for name, (typ, _) in FIXED.items():
        arrays.append(_column([r.get(name) for r in rows], typ))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def empty_table(axes: Sequence[str] = ()) -> pa.Table:
    return rows_to_table([], axes)


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Tables concatenated with permissive promotion (a column missing from one is null
    there); a column typed differently in two parts (an axis whose values changed kind on
    resume) is read as text."""
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        kinds: dict[str, set[pa.DataType]] = {}
        for t in tables:
            for f in t.schema:
                if not pa.types.is_null(f.type):
                    kinds.setdefault(f.name, set()).add(f.type)
        clash = {n for n, ts in kinds.items() if len(ts) > 1}
        fixed = []
        for t in tables:
            for n in clash & set(t.column_names):
                i = t.column_names.index(n)
                t = t.set_column(i, n, t.column(n).cast(pa.string()))
            fixed.append(t)
        return pa.concat_tables(fixed, promote_options="permissive")


def _ordered(table: pa.Table) -> pa.Table:
    """Axis (and any other non-fixed) columns first, then the fixed ones in FIXED's order;
    rows by index, then point."""
    names = table.column_names
    order = [n for n in names if n not in FIXED] + [n for n in FIXED if n in names]
    table = table.select(order)
    if table.num_rows and "index" in names and "point" in names:
        table = table.sort_by([("index", "ascending"), ("point", "ascending")])
    return table


def read_results(path: str | Path) -> pa.Table:
    """Every row of a results dataset, parts concatenated (missing columns null), sorted by
    index then point."""
    p = check_dataset(path, what="results")
    parts = part_files(p)
    if not parts:
        axes: list[str] = []
        try:
            axes = list(json.loads((p / META).read_text()).get("axes", []))
        except (OSError, ValueError, AttributeError):
            pass
        return empty_table(axes)
    try:
        tables = [pq.read_table(f) for f in parts]
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"results {p}: cannot read a part file: {exc}") from None
    return _ordered(_concat(tables))


def read_keys(path: Path) -> set[str]:
    """The `point` keys present in a dataset's parts."""
    keys: set[str] = set()
    for f in part_files(path):
        try:
            col = pq.read_table(f, columns=["point"]).column("point")
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise InputError(f"results {path}: cannot read {f.name}: {exc}") from None
        keys.update(k for k in col.to_pylist() if k is not None)
    return keys


class ResultsWriter:
    """Appends rows to a results dataset, one part file per flush, each row's key once.

    Opening takes the dataset's lock (a second sweep writing into it is refused), removes
    temporary files a killed run left, and reads the keys already present. Rows are
    buffered; a part is written when FLUSH_SECONDS passed since the last flush or FLUSH_ROWS
    rows wait, and at close. A row whose key is already present is not written again.
    """

    def __init__(self, path: str | Path, axes: list[str], *,
                 types: dict[str, pa.DataType] | None = None, name: str | None = None,
                 what: str = "--out") -> None:
        self.path = check_dataset(path, create=True, what=what)
        self.axes = list(axes)
        self.types = dict(types or {})
        self.flush_seconds = FLUSH_SECONDS
        self.flush_rows = FLUSH_ROWS
        self._lock: IO[str] | None = open(self.path / LOCK, "a")  # noqa: SIM115
        try:
            if fcntl is not None:
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise InputError(f"{what} {self.path}: another sweep is writing to this results "
                             "dataset") from None
        for q in self.path.iterdir():
            if TEMP_RE.match(q.name):
                q.unlink(missing_ok=True)
        for q in _superseded(_all_parts(self.path)):  # a compaction killed before its deletes
            q.unlink(missing_ok=True)
        self._next = max((_span(q)[1] for q in _all_parts(self.path)), default=0) + 1
        self._keys = read_keys(self.path)
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._write_meta(name)

    def _write_meta(self, name: str | None) -> None:
        meta_path = self.path / META
        old: dict[str, Any] = {}
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            pass
        axes = list(old.get("axes", [])) if isinstance(old, dict) else []
        axes += [a for a in self.axes if a not in axes]
        import memsim

        meta = {"name": name if name is not None else old.get("name"), "axes": axes,
                "format": 1, "memsim": memsim.__version__}
        text = json.dumps(meta, indent=1).encode()
        _atomic_write(self.path, META, lambda fh: fh.write(text))

    def keys(self) -> set[str]:
        """The point keys present: on disk when opened, plus every row written since."""
        return set(self._keys)

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        """Buffer rows (a key already present is skipped); flush when one is due."""
        for r in rows:
            key = r.get("point")
            if key is None or key in self._keys:
                continue
            self._keys.add(key)
            self._buffer.append(r)
        self.flush_if_due()

    def flush_if_due(self) -> None:
        if self._buffer and (len(self._buffer) >= self.flush_rows
                             or time.monotonic() - self._last_flush >= self.flush_seconds):
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one new part file (atomically)."""
        if self._buffer:
            table = rows_to_table(self._buffer, self.axes, self.types)
            name = f"part-{self._next:06d}.parquet"
            _atomic_write(self.path, name, lambda fh: pq.write_table(table, fh))
            self._next += 1
            self._buffer = []
        self._last_flush = time.monotonic()

    def compact(self) -> None:
        """Merge the live parts into one (written atomically first, then the old deleted)."""
        parts = part_files(self.path)
        if len(parts) < 2:
            return
        table = _concat([pq.read_table(f) for f in parts])
        first, last = _span(parts[0])[0], max(_span(q)[1] for q in parts)
        name = f"part-{first:06d}-{last:06d}.parquet"
        _atomic_write(self.path, name, lambda fh: pq.write_table(table, fh))
        for q in parts:
            if q.name != name:
                q.unlink(missing_ok=True)
        _fsync_dir(self.path)
        self._next = max(self._next, last + 1)

    def close(self) -> None:
        """Flush, merge the parts if there are many, and release the lock."""
        try:
            self.flush()
            if len(part_files(self.path)) > COMPACT_PARTS:
                self.compact()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
