"""What goes into the blocks: deterministic synthetic weights, or real ones from a file.

A block's content depends only on the source and (level, block), never on the layout, so the
same block reads back the same whichever tier holds it. Parameters are stored with a 2-, 1- or
4-byte storage dtype; bf16 and fp8 go in as raw bits (uint16/uint8) with the real dtype in the
array's attributes, since zarr v3 has no bf16 data type.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from memsim.bank import Bank
from memsim.errors import InputError

# bank dtype -> (numpy dtype of the values, storage dtype in zarr)
DTYPES: dict[str, tuple[Any, str]] = {
    "bf16": (ml_dtypes.bfloat16, "uint16"),
    "fp16": (np.float16, "float16"),
    "fp32": (np.float32, "float32"),
    "fp8": (ml_dtypes.float8_e4m3fn, "uint8"),
    "int8": (np.int8, "int8"),
}
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
SLAB = 1 << 22  # parameters hashed at once (bounded memory)


def storage_dtype(bank: Bank) -> np.dtype:
    return np.dtype(DTYPES[bank.dtype][1])


def to_storage(values: np.ndarray, bank: Bank) -> np.ndarray:
    """Convert values to the bank's dtype and view them as the storage dtype."""
    real, store = DTYPES[bank.dtype]
    if values.dtype == np.dtype(store):
        return values
    if bank.dtype == "int8":
        return np.clip(np.rint(values), -128, 127).astype(np.int8)
    return values.astype(real).view(store)


class Content(ABC):
    """A source of block contents."""

    @abstractmethod
    def blocks(self, depth: int, ids: np.ndarray) -> np.ndarray:
        """Rows of storage-dtype parameters, one per block id."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able identity of the source (part of the store fingerprint)."""


class SyntheticContent(Content):
    """Seeded pseudo-random weights, about N(0, 0.02)-sized, from a counter-based hash."""

    def __init__(self, bank: Bank, seed: int = 0) -> None:
        self.bank, self.seed = bank, int(seed)

    def blocks(self, depth: int, ids: np.ndarray) -> np.ndarray:
        params = self.bank.level(depth).block_params
        ids = np.asarray(ids, dtype=np.uint64)
        out = np.empty((ids.size, params), dtype=storage_dtype(self.bank))
        key = np.uint64((self.seed * 0x1000193 + depth * 0x2545F491) & (2**64 - 1))
        col = np.arange(params, dtype=np.uint64)
        rows = max(1, SLAB // max(params, 1))
        with np.errstate(over="ignore"):
            for a in range(0, ids.size, rows):
                x = (ids[a:a + rows, None] * np.uint64(params) + col[None, :]) * _GOLDEN ^ key
                x = x ^ (x >> np.uint64(30))
                x = x * _MIX1
                x = x ^ (x >> np.uint64(27))
                x = x * _MIX2
                x = x ^ (x >> np.uint64(31))
                uniform = (x >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
                out[a:a + rows] = to_storage((uniform - np.float32(0.5)) * np.float32(0.07),
                                             self.bank)
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "synthetic", "seed": self.seed}


def _digest(path: Path) -> str:
    """A cheap identity for a big file: size, and hashes of its first and last MiB."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        if size > 1 << 20:
            f.seek(max(size - (1 << 20), 0))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


class WeightsContent(Content):
    """Real weights: a .npy with the whole bank (levels by depth, blocks by id, C order), or a
    safetensors file with one tensor per level named `L<depth>` (blocks x parameters, or flat).
    Values are converted to the bank's dtype; uint16 data for a bf16 bank is taken as bf16 bits.
    """

    def __init__(self, bank: Bank, path: str | Path) -> None:
        self.bank = bank
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("no such weights file", file=self.path)
        suffix = self.path.suffix.lower()
        self._offsets: dict[int, int] = {}
        try:
            if suffix == ".npy":
                self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
                self._check_npy()
            elif suffix == ".safetensors":
                from safetensors import safe_open

                self._st = safe_open(str(self.path), framework="numpy")
                self._check_safetensors()
            else:
                raise InputError("weights must be a .npy or .safetensors file", file=self.path)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - numpy and safetensors raise many kinds
            raise InputError(f"cannot read weights: {exc}", file=self.path) from None
        self._id = _digest(self.path)

    def _check_kind(self, dtype: np.dtype, where: str) -> None:
        if dtype.kind not in "fiu" and dtype.name not in ("bfloat16", "float8_e4m3fn"):
            raise InputError(f"{where} has dtype {dtype}, not numbers", file=self.path)

    def _check_npy(self) -> None:
        self._check_kind(self._array.dtype, "the array")
        need = sum(lv.blocks * lv.block_params for lv in self.bank.active_levels)
        if self._array.size != need:
            raise InputError(f"the array holds {self._array.size:,} values but bank "
                             f"'{self.bank.name}' has {need:,} parameters", file=self.path)
        offset = 0
        for lv in self.bank.active_levels:
            self._offsets[lv.depth] = offset
            offset += lv.blocks * lv.block_params

    def _check_safetensors(self) -> None:
        names = set(self._st.keys())
        for lv in self.bank.active_levels:
            name = f"L{lv.depth}"
            if name not in names:
                raise InputError(f"no tensor '{name}' for level {lv.depth} (the file has "
                                 f"{', '.join(sorted(names)) or 'none'})", file=self.path)
            shape = self._st.get_slice(name).get_shape()
            if int(np.prod(shape)) != lv.blocks * lv.block_params:
                raise InputError(f"tensor '{name}' has shape {list(shape)}; level {lv.depth} "
                                 f"needs {lv.blocks:,} blocks x {lv.block_params:,} parameters",
                                 file=self.path)

    def _values(self, depth: int, lo: int, hi: int) -> np.ndarray:
        """Parameters of blocks lo..hi-1 of a level, as (hi - lo, params)."""
        params = self.bank.level(depth).block_params
        if hasattr(self, "_array"):
            flat = self._array.reshape(-1)
            base = self._offsets[depth]
            return np.asarray(flat[base + lo * params:base + hi * params]).reshape(-1, params)
        tensor = self._st.get_slice(f"L{depth}")
        shape = tensor.get_shape()
        if len(shape) == 2:
            return np.asarray(tensor[lo:hi]).reshape(-1, params)
        return np.asarray(tensor[lo * params:hi * params]).reshape(-1, params)

    def blocks(self, depth: int, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((ids.size, self.bank.level(depth).block_params),
                       dtype=storage_dtype(self.bank))
        if ids.size == 0:
            return out
        # runs of consecutive ids are read as one slice
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        for run in np.split(np.arange(ids.size), breaks):
            lo, hi = int(ids[run[0]]), int(ids[run[-1]]) + 1
            values = self._values(depth, lo, hi)
            if values.dtype == np.uint16 and self.bank.dtype == "bf16":
                out[run] = values
            else:
                out[run] = to_storage(values, self.bank)
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "weights", "file": self.path.name, "digest": self._id}


def content_from(bank: Bank, descriptor: dict[str, Any], weights: str | Path | None = None
                 ) -> Content:
    """Rebuild a content source from a store's recorded descriptor."""
    if descriptor.get("kind") == "synthetic":
        return SyntheticContent(bank, int(descriptor.get("seed", 0)))
    if weights is None:
        raise InputError(f"the bank was written from weights file '{descriptor.get('file')}'; "
                         "pass it with --weights", field="weights")
    content = WeightsContent(bank, weights)
    if content.describe() != descriptor:
        raise InputError("this weights file is not the one the bank was written from",
                         file=weights)
    return content
