"""memory:// stores: a tier held in this process's RAM.

Stores of the same name share one dictionary for the life of the process, so a notebook can
materialize a RAM tier and replay it; a command-line run fills RAM tiers when replay starts.
Reads copy the block, as loading it into the model would.
"""

from __future__ import annotations

from typing import Any

from memsim.errors import DataError
from memsim.stores.abc import ByteStore

_REGISTRY: dict[str, dict[str, Any]] = {}


def forget(name: str | None = None) -> None:
    """Drop one memory store (or all of them) and free its RAM."""
    if name is None:
        _REGISTRY.clear()
    else:
        _REGISTRY.pop(name, None)


def _bytes(value: Any) -> memoryview:
    """The bytes of a zarr Buffer (or anything with the buffer protocol)."""
    if hasattr(value, "as_buffer_like"):
        return memoryview(value.as_buffer_like()).cast("B")
    return memoryview(value).cast("B")


class MemoryByteStore(ByteStore):
    """memory:// store: zarr's MemoryStore over a named, process-wide dictionary."""

    kind = "memory"
    persistent = False

    def __init__(self, name: str) -> None:
        super().__init__(f"memory://{name}")
        self.name = name
        self.data = _REGISTRY.setdefault(name, {})

    def zarr_store(self) -> Any:
        from zarr.storage import MemoryStore

        return MemoryStore(self.data)

    async def read(self, key: str) -> bytes | None:
        value = self.data.get(key)
        return None if value is None else bytes(_bytes(value))

    async def read_range(self, key: str, start: int, length: int) -> bytes:
        value = self.data.get(key)
        if value is None:
            raise DataError(f"object '{key}' is missing from {self.url}")
        view = _bytes(value)
        if start + length > len(view):
            raise DataError(f"object '{key}' in {self.url} is shorter than its index says")
        return bytes(view[start:start + length])

    async def read_suffix(self, key: str, length: int) -> bytes | None:
        value = self.data.get(key)
        if value is None:
            return None
        view = _bytes(value)
        if len(view) < length:
            raise DataError(f"object '{key}' in {self.url} is too short to hold its shard index")
        return bytes(view[len(view) - length:])

    async def list_keys(self, prefix: str) -> set[str]:
        return {k for k in self.data if k.startswith(prefix)}
