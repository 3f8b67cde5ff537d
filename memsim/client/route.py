"""Routing: a query's path down the bank's tree, by greedy descent over centroids per level.

The paper (arXiv 2510.02375) routes an input by its sentence embedding: at depth 1 the nearest
of the root's `branching` child centroids, then the nearest among the children of the chosen
node, and so on. `route` does that for a batch of embeddings at once with numpy, and returns
the cluster id at every depth (child = parent * branching + i, as in a trace).

Centroids (`Centroids`) are one array per depth d, of shape (branching**d, D): row j is the
centroid of cluster j at that depth. Files (`load_centroids`, `write_centroids`):

* a `.npz` file with arrays `L1`, `L2`, ... (`np.savez(path, L1=..., L2=...)`);
* a directory of `.npy` files `L1.npy`, `L2.npy`, ...;
* a zarr v3 group (a directory holding `zarr.json`) with arrays `L1`, `L2`, ....

Values are float32, float16 or bfloat16 (float64 is accepted and read as float32); scores are
computed in float32. bfloat16 is stored as numpy stores an `ml_dtypes.bfloat16` array: in
`.npy`/`.npz` a 2-byte void (`|V2`) array, read back as bfloat16; in zarr (which has no bf16
data type) a uint16 array of the raw bits with the attribute `dtype: bf16`, as
`memsim materialize` stores bf16 blocks.

Empty levels (multiplier 0) hold no blocks but are still depths of the tree: the descent needs
centroids at every depth from 1 down to the bank's deepest non-empty level, empty ones
included. Below it (trailing empty levels) centroids are optional: without them the path stops
at the deepest non-empty level, and `trace_paths` fills the deeper trace columns with the
first child (no block is fetched there, so nothing reads those ids).

Metrics: `l2` (nearest centroid), `ip` (largest inner product), `cosine` (largest cosine
similarity; a zero vector has similarity 0 to everything). Among candidates whose float32
scores are equal the lowest index wins, so exact ties (duplicate centroids) always resolve the
same way. `l2` is computed as |c|^2 / 2 - x.c, which loses precision when the points sit far
from the origin compared with the distances between them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import ml_dtypes
import numpy as np

from memsim import limits
from memsim.bank import Bank
from memsim.errors import InputError, one_line
from memsim.limits import MAX_QUERIES, check_at_most

Metric = Literal["l2", "ip", "cosine"]
METRICS: tuple[str, ...] = ("l2", "ip", "cosine")
BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)

CHUNK_BYTES = 1 << 23            # candidate centroids gathered at once per chunk (8 MiB)
GROUP_DIM = 1024                 # one product per node when nodes * GROUP_DIM <= queries * D
_SCORE_MAX = float(np.finfo(np.float32).max) / 4  # |v|^2 bound: scores stay finite


def level_name(depth: int) -> str:
    """Name of the centroid array at `depth` (1-based): `L1`, `L2`, ..."""
    return f"L{depth}"


# ----------------------------------------------------------------------------- centroids


@dataclass(frozen=True, eq=False)
class Centroids:
    """Centroids per depth: `levels[d - 1]` has shape (branching**d, dim), float32/16 or bf16.

    Construction checks shapes, dtypes and values (finite, squared norms within float32);
    a problem is an InputError naming `file` and the array.
    """

    levels: tuple[np.ndarray, ...]
    branching: int
    file: str | None = None

    def __post_init__(self) -> None:
        if not self.levels:
            raise InputError("no centroid arrays (expected L1, L2, ...)", file=self.file)
        if self.branching < 2:
            raise InputError(f"branching must be at least 2, got {self.branching}",
                             file=self.file)
        levels = []
        dim = None
        for depth, array in enumerate(self.levels, start=1):
            array = _as_values(np.asarray(array), self.file, level_name(depth))
            want_rows = self.branching**depth
            if array.ndim != 2 or array.shape[0] != want_rows or (
                    dim is not None and array.shape[1] != dim):
                width = "D" if dim is None else str(dim)
                raise InputError(
                    f"has shape {array.shape}, expected ({want_rows}, {width}): one row per "
                    f"cluster at depth {depth} (branching {self.branching}), of the "
                    f"dimension of {level_name(1)}", file=self.file, field=level_name(depth))
            if array.shape[1] < 1:
                raise InputError("has dimension 0", file=self.file, field=level_name(depth))
            dim = array.shape[1]
            levels.append(np.ascontiguousarray(array))
        object.__setattr__(self, "levels", tuple(levels))
        for depth in range(1, len(levels) + 1):
            self._sq(depth)  # checks finiteness and range once, here

    @property
    def depth(self) -> int:
        """Depths the centroids cover (1..depth)."""
        return len(self.levels)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.levels[0].shape[1])

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype of the arrays (float32, float16 or bfloat16)."""
        return self.levels[0].dtype

    @cached_property
    def _norms(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per depth: squared norms and norms (float32), computed in float32."""
        out = []
        for depth, level in enumerate(self.levels, start=1):
            sq = np.empty(level.shape[0], dtype=F32)
            step = max(1, CHUNK_BYTES // (4 * level.shape[1]))
            for start in range(0, level.shape[0], step):
                part = level[start:start + step].astype(F32, copy=False)
                if not np.isfinite(part).all():
                    row = start + int(np.flatnonzero(~np.isfinite(part).all(axis=1))[0])
                    raise InputError(f"row {row} holds a value that is not finite (NaN or "
                                     "infinity)", file=self.file, field=level_name(depth))
                with np.errstate(over="ignore"):
                    sq[start:start + step] = np.einsum("ij,ij->i", part, part)
            big = ~(sq <= _SCORE_MAX)
            if big.any():
                row = int(np.flatnonzero(big)[0])
                raise InputError(f"row {row} is too large: its squared norm exceeds "
                                 f"{_SCORE_MAX:.3g}, where float32 scores overflow",
                                 file=self.file, field=level_name(depth))
            out.append((sq, np.maximum(np.sqrt(sq), np.finfo(F32).tiny)))
        return out

    def _sq(self, depth: int) -> np.ndarray:
        return self._norms[depth - 1][0]

    def _norm(self, depth: int) -> np.ndarray:
        return self._norms[depth - 1][1]


def _as_values(array: np.ndarray, file: str | None, name: str) -> np.ndarray:
    """`array` as float32, float16 or bfloat16 (a 2-byte void is bf16; float64 -> float32)."""
    dtype = array.dtype
    if dtype.kind == "V" and dtype.itemsize == 2 and dtype.fields is None:
        return array.view(BF16)
    if dtype in (F32, np.dtype(np.float16), BF16):
        return array
    if dtype == np.dtype(np.float64):
        return array.astype(F32)
    raise InputError(f"holds {dtype}, expected float32, float16 or bfloat16 values",
                     file=file, field=name)


def check_against(centroids: Centroids, bank: Bank, file: str | Path | None = None) -> None:
    """Raise an InputError unless `centroids` fit `bank`: same branching, every depth down to
    the deepest non-empty level, none deeper than the bank."""
    _check_shape(centroids.branching, centroids.depth, bank,
                 file if file is not None else centroids.file)


def _check_shape(branching: int, depth: int, bank: Bank, file: str | Path | None) -> None:
    if branching != bank.branching:
        raise InputError(f"centroids have branching {branching}, bank "
                         f"'{bank.name}' has {bank.branching}", file=file)
    need = max(lv.depth for lv in bank.active_levels)
    if depth < need:
        raise InputError(
            f"missing array {level_name(depth + 1)}: bank '{bank.name}' routes down "
            f"to depth {need} (its deepest non-empty level), so centroids need "
            f"{level_name(1)}..{level_name(need)}", file=file)
    if depth > len(bank.levels):
        raise InputError(
            f"has array {level_name(len(bank.levels) + 1)} but bank '{bank.name}' has "
            f"{len(bank.levels)} levels", file=file, field=level_name(len(bank.levels) + 1))


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class _Array:
    """One stored centroid array: its shape and dtype from the header, and how to read it."""

    shape: tuple[int, ...]
    dtype: np.dtype
    read: Any  # () -> np.ndarray


def _npy_header(handle: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    return tuple(shape), np.dtype(dtype)


def _npz_arrays(path: Path) -> dict[str, _Array]:
    out: dict[str, _Array] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            name = member[:-4]
            with archive.open(member) as handle:
                shape, dtype = _npy_header(handle)

            def read(member: str = member) -> np.ndarray:
                with zipfile.ZipFile(path) as zf, zf.open(member) as handle:
                    return np.lib.format.read_array(handle, allow_pickle=False)

            out[name] = _Array(shape, dtype, read)
    return out


def _npy_dir_arrays(path: Path) -> dict[str, _Array]:
    out: dict[str, _Array] = {}
    for item in sorted(path.glob("*.npy")):
        with open(item, "rb") as handle:
            shape, dtype = _npy_header(handle)

        def read(item: Path = item) -> np.ndarray:
            return np.load(item, allow_pickle=False)

        out[item.stem] = _Array(shape, dtype, read)
    return out


def _zarr_arrays(path: Path) -> dict[str, _Array]:
    import zarr

    group = zarr.open_group(str(path), mode="r", zarr_format=3)
    out: dict[str, _Array] = {}
    for name, array in group.arrays():
        dtype = np.dtype(array.dtype)
        if dtype == np.dtype(np.uint16) and str(array.attrs.get("dtype", "")).lower() in (
                "bf16", "bfloat16"):
            dtype = BF16

        def read(array: Any = array, dtype: np.dtype = dtype) -> np.ndarray:
            data = np.asarray(array[...])
            return data.view(BF16) if dtype == BF16 else data

        out[name] = _Array(tuple(array.shape), dtype, read)
    return out


def _stored(path: Path) -> tuple[str, dict[str, _Array]]:
    """The format of a centroids file and its arrays (headers only, nothing loaded yet)."""
    import zarr

    try:
        if path.is_dir():
            if (path / "zarr.json").exists():
                return "zarr", _zarr_arrays(path)
            return "npy", _npy_dir_arrays(path)
        if not path.exists():
            raise InputError("no such file or directory", file=path)
        with open(path, "rb") as handle:
            magic = handle.read(6)
        if magic == b"\x93NUMPY":
            raise InputError("a .npy file holds one array; give a .npz file with arrays L1, "
                             "L2, ..., a directory of L1.npy, L2.npy, ... or a zarr v3 group",
                             file=path)
        if magic[:2] != b"PK":
            raise InputError("not a .npz file, a directory of .npy files or a zarr v3 group",
                             file=path)
        return "npz", _npz_arrays(path)
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, zarr.errors.BaseZarrError) as exc:
        reason = getattr(exc, "strerror", None) or one_line(str(exc))[:200]
        raise InputError(f"cannot be read as centroids ({reason})", file=path) from None


def load_centroids(path: str | Path, bank: Bank | None = None) -> Centroids:
    """Centroids from a `.npz` file, a directory of `.npy` files or a zarr v3 group.

    Arrays `L1`, `L2`, ... in order (a gap ends them; other names are refused). With `bank`,
    the branching comes from it and the depths are checked against it (see the module
    docstring); without, the branching is the row count of `L1`. Sizes are checked from the
    headers before anything is loaded. Errors are one line naming the file and the array.
    """
    from memsim.resources import checked_path

    path = checked_path(path)
    _, arrays = _stored(path)
    depths = 0
    while level_name(depths + 1) in arrays:
        depths += 1
    if depths == 0:
        raise InputError(f"holds no array {level_name(1)} (centroid arrays are named L1, L2, "
                         f"...; found {', '.join(sorted(arrays)[:8]) or 'none'})", file=path)
    extra = sorted(set(arrays) - {level_name(d) for d in range(1, depths + 1)})
    if extra:
        raise InputError(f"unexpected array '{extra[0]}' (centroid arrays are "
                         f"{level_name(1)}..{level_name(depths)}, with no gap)", file=path)
    branching = bank.branching if bank is not None else arrays[level_name(1)].shape[0]
    total = 0
    for depth in range(1, depths + 1):
        name = level_name(depth)
        head = arrays[name]
        if len(head.shape) != 2:
            raise InputError(f"has shape {head.shape}, expected 2-D (clusters, dimension)",
                             file=path, field=name)
        check_at_most(head.shape[1], limits.MAX_DIM, "the dimension", file=path, field=name)
        if head.shape[0] != branching**depth:
            raise InputError(
                f"has {head.shape[0]:,} rows, expected {branching**depth:,}: one per cluster "
                f"at depth {depth} (branching {branching})", file=path, field=name)
        total += head.shape[0] * head.shape[1] * 4
        check_at_most(total, limits.MAX_CENTROID_BYTES, "the centroids' size in bytes (float32, "
                      f"down to {name})", file=path, field=name)
        _as_values(np.empty(0, dtype=head.dtype), str(path), name)  # dtype, before loading
    if bank is not None:
        _check_shape(branching, depths, bank, path)  # before loading the data
    levels = []
    for depth in range(1, depths + 1):
        try:
            levels.append(arrays[level_name(depth)].read())
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"cannot be read ({one_line(str(exc))[:200]})", file=path,
                             field=level_name(depth)) from None
    return Centroids(tuple(levels), branching, file=str(path))


def write_centroids(path: str | Path, centroids: Centroids,
                    format: Literal["npz", "npy", "zarr"] | None = None) -> Path:
    """Write centroids as `load_centroids` reads them; the format from `format` or the name
    (`.npz` a file, `.zarr` a zarr v3 group, anything else a directory of `.npy` files).

    The file or directory appears whole (written beside it, then renamed into place), and
    replaces one that was there.
    """
    path = Path(path)
    fmt = format or ("npz" if path.suffix == ".npz" else "zarr" if path.suffix == ".zarr"
                     else "npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {level_name(d): a for d, a in enumerate(centroids.levels, start=1)}
    if fmt == "npz":
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return path
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        if fmt == "npy":
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", array)
        elif fmt == "zarr":
            import zarr

            group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
            for name, array in arrays.items():
                bf16 = array.dtype == BF16
                stored = array.view(np.uint16) if bf16 else array
                out = group.create_array(name, shape=stored.shape, dtype=stored.dtype,
                                         attributes={"dtype": "bf16"} if bf16 else {})
                out[...] = stored
        else:
            raise ValueError(f"unknown centroid format {fmt!r} (npz, npy, zarr)")
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def synthetic_centroids(bank: Bank, dim: int, seed: int = 0, *, depth: int | None = None,
                        spread: float = 0.25, dtype: Any = np.float32) -> Centroids:
    """Seeded centroids shaped for `bank` (every level, or `depth` levels): root children
    are standard normal, each child is its parent plus noise `spread` times smaller per level,
    so nearby embeddings share upper-level clusters as in a real hierarchical k-means."""
    rng = np.random.default_rng(seed)
    b = bank.branching
    depth = depth or len(bank.levels)
    levels = []
    parent = np.zeros((1, dim), dtype=np.float32)
    for d in range(1, depth + 1):
        noise = rng.standard_normal((b**d, dim), dtype=np.float32) * np.float32(spread**(d - 1))
        level = np.repeat(parent, b, axis=0) + noise
        levels.append(level.astype(dtype))
        parent = level
    return Centroids(tuple(levels), b)


# ----------------------------------------------------------------------------- routing


def check_embeddings(embeddings: Any, dim: int, file: str | Path | None = None,
                     field: str = "embeddings") -> np.ndarray:
    """`embeddings` as a C-contiguous float32 (N, dim) array, or an InputError naming
    `file`/`field`: wrong shape or dimension, non-float values, NaN or infinity, too large."""
    x = np.asarray(embeddings)
    if x.dtype.kind == "V" and x.dtype.itemsize == 2 and x.dtype.fields is None:
        x = x.view(BF16)
    if x.ndim != 2:
        raise InputError(f"has shape {x.shape}, expected (queries, {dim})", file=file,
                         field=field)
    if x.shape[1] != dim:
        raise InputError(f"has dimension {x.shape[1]}, but the centroids have {dim}",
                         file=file, field=field)
    if x.shape[0] == 0:
        raise InputError("holds no embeddings (0 rows)", file=file, field=field)
    check_at_most(x.shape[0], MAX_QUERIES, "the number of embeddings", file=file, field=field)
    check_at_most(x.size * 4, limits.MAX_EMBEDDING_BYTES, "the embeddings' size in bytes (float32)",
                  file=file, field=field)
    if x.dtype not in (F32, np.dtype(np.float16), np.dtype(np.float64), BF16):
        raise InputError(f"holds {x.dtype}, expected floating-point values", file=file,
                         field=field)
    x = np.ascontiguousarray(x, dtype=F32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InputError(f"row {row} (0-based) holds a value that is not finite (NaN or "
                         "infinity)", file=file, field=field)
    with np.errstate(over="ignore"):
        sq = np.einsum("ij,ij->i", x, x)
    big = ~(sq <= _SCORE_MAX)
    if big.any():
        row = int(np.flatnonzero(big)[0])
        raise InputError(f"row {row} (0-based) is too large: its squared norm exceeds "
                         f"{_SCORE_MAX:.3g}", file=file, field=field)
    return x


def route(centroids: Centroids, embeddings: Any, *, metric: Metric = "l2",
          chunk: int | None = None) -> np.ndarray:
    """Each embedding's path by greedy descent: (N, centroids.depth) int64 cluster ids.

    At each depth the query moves to the best of the current node's `branching` children
    under `metric`; ties go to the lowest index. Queries are processed `chunk` at a time
    (default: as many as keep the gathered candidates near 8 MiB); the result does not
    depend on it beyond float32 rounding of near-ties.
    """
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r} (choose from {', '.join(METRICS)})",
                         field="metric")
    x = check_embeddings(embeddings, centroids.dim)
    b = centroids.branching
    rows = chunk or max(1, CHUNK_BYTES // (4 * b * centroids.dim))
    if rows < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    out = np.empty((x.shape[0], centroids.depth), dtype=np.int64)
    for start in range(0, x.shape[0], rows):
        _descend(centroids, x[start:start + rows], metric, out[start:start + rows])
    return out


def _descend(c: Centroids, x: np.ndarray, metric: str, out: np.ndarray) -> None:
    b = c.branching
    node = np.zeros(x.shape[0], dtype=np.int64)
    offsets = np.arange(b, dtype=np.int64)
    for depth, level in enumerate(c.levels, start=1):
        blocks = level.reshape(-1, b, level.shape[1])  # children of node p: blocks[p]
        dots = _child_dots(blocks, node, x)
        ids = node[:, None] * b + offsets
        if metric == "l2":
            child = np.argmin(np.float32(0.5) * c._sq(depth)[ids] - dots, axis=1)
        elif metric == "ip":
            child = np.argmax(dots, axis=1)
        else:
            child = np.argmax(dots / c._norm(depth)[ids], axis=1)
        node = node * b + child
        out[:, depth - 1] = node


def _child_dots(blocks: np.ndarray, node: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x[i] . blocks[node[i], k] for all i, k (float32): one matrix product per node when the
    nodes are few for the work (a product's fixed cost against gathering D floats per
    candidate), else the children gathered for all queries at once."""
    m, dim = node.shape[0], blocks.shape[2]
    if blocks.shape[0] == 1:
        return x @ blocks[0].astype(F32, copy=False).T
    grouped = m > 1 and GROUP_DIM <= m * dim
    if grouped:
        nodes, inverse, counts = np.unique(node, return_inverse=True, return_counts=True)
        grouped = nodes.shape[0] * GROUP_DIM <= m * dim
    if grouped:
        order = np.argsort(inverse, kind="stable")
        ends = np.cumsum(counts)
        dots = np.empty((m, blocks.shape[1]), dtype=F32)
        start = 0
        for p, end in zip(nodes.tolist(), ends.tolist(), strict=True):
            idx = order[start:end]
            dots[idx] = x[idx] @ blocks[p].astype(F32, copy=False).T
            start = end
        return dots
    gathered = np.take(blocks, node, axis=0)
    if gathered.dtype != F32:
        gathered = gathered.astype(F32)
    return np.einsum("nkd,nd->nk", gathered, x)


def trace_paths(paths: np.ndarray, bank: Bank) -> np.ndarray:
    """`paths` widened to the bank's depth for a trace: a depth without centroids (a trailing
    empty level) gets the first child of the node above (no block is fetched there)."""
    depth = len(bank.levels)
    if paths.shape[1] >= depth:
        return paths[:, :depth]
    out = np.empty((paths.shape[0], depth), dtype=np.int64)
    out[:, :paths.shape[1]] = paths
    for d in range(paths.shape[1], depth):
        out[:, d] = out[:, d - 1] * bank.branching
    return out


__all__ = ["Centroids", "METRICS", "Metric", "check_against", "check_embeddings",
           "level_name", "load_centroids", "route", "synthetic_centroids", "trace_paths",
           "write_centroids"]


# ----------------------------------------------------------------------------- embedding files


def load_embeddings(path: str | Path, column: str = "embedding") -> np.ndarray:
    """Embeddings from a `.npy` file (queries, D) or a Parquet file's list column `column`
    (one list of floats per row, all of one length). Sizes are checked before loading;
    errors name the file (and the column). Values are checked by `check_embeddings`."""
    from memsim.resources import checked_path

    path = checked_path(path)
    try:
        if path.is_dir():
            raise InputError("is a directory, expected a .npy or Parquet file", file=path)
        with open(path, "rb") as handle:
            magic = handle.read(6)
            if magic == b"\x93NUMPY":
                handle.seek(0)
                shape, dtype = _npy_header(handle)
                if len(shape) == 2:
                    check_at_most(shape[0], MAX_QUERIES, "the number of embeddings", file=path)
                    check_at_most(shape[0] * shape[1] * 4, limits.MAX_EMBEDDING_BYTES,
                                  "the embeddings' size in bytes (float32)", file=path)
                if dtype.hasobject:
                    raise InputError(f"holds {dtype}, expected floating-point values",
                                     file=path)
                handle.seek(0)
                return np.lib.format.read_array(handle, allow_pickle=False)
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or one_line(str(exc))[:200]
        raise InputError(f"cannot be read ({reason})", file=path) from None
    if magic[:4] != b"PAR1":
        raise InputError("not a .npy or Parquet file", file=path)
    return _parquet_embeddings(path, column)


def _parquet_embeddings(path: Path, column: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from memsim.trace import read_schema

    schema = read_schema(path, "embeddings file")
    if column not in schema.names:
        raise InputError(f"no column '{column}' (columns: {', '.join(schema.names[:10])})",
                         file=path, field=column)
    typ = schema.field(column).type
    listy = (pa.types.is_list(typ) or pa.types.is_large_list(typ)
             or pa.types.is_fixed_size_list(typ))
    if not listy or not pa.types.is_floating(typ.value_type):
        raise InputError(f"column holds {typ}, expected a list of floats per row", file=path,
                         field=column)
    rows = pq.ParquetFile(path).metadata.num_rows
    check_at_most(rows, MAX_QUERIES, "the number of embeddings", file=path, field=column)
    try:
        data = pq.read_table(path, columns=[column]).column(column).combine_chunks()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet file ({one_line(str(exc))[:200]})",
                         file=path) from None
    if len(data) == 0:
        raise InputError("holds no embeddings (0 rows)", file=path, field=column)
    if data.null_count:
        row = int(np.flatnonzero(data.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"row {row} (0-based) is empty", file=path, field=column)
    lengths = np.asarray(pc.list_value_length(data).to_numpy(zero_copy_only=False))
    if (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise InputError(f"row {row} (0-based) has {lengths[row]} values, row 0 has "
                         f"{lengths[0]}; every embedding needs the same dimension", file=path,
                         field=column)
    values = data.flatten()
    if values.null_count:
        row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"row {row // int(lengths[0])} (0-based) holds an empty value",
                         file=path, field=column)
    return np.asarray(values.to_numpy(zero_copy_only=False)).reshape(len(data), int(lengths[0]))


__all__ += ["load_embeddings"]
