"""What a tier's store must do: the byte-level interface the bank reader and writer use.

A store holds one tier's part of the bank as zarr v3 arrays. Writing goes through zarr-python
(`zarr_store()`); reading goes around it, as byte ranges, so that shard indexes are cached and
the blocks of one query are fetched in parallel (zarr-python 3.1 re-reads the index and fetches
ranges one after another).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass
class StoreCounters:
    """What a store did: requests, bytes and retries (all reads, timed or not)."""

    requests: int = 0
    bytes: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # retried failures by kind


class TimedRead(NamedTuple):
    """A timed byte-range read. `done` is stamped where the bytes arrive (a local store's
    reading thread), not when the event loop next looks: waking the loop is the harness's
    cost, not the tier's, and on an idle virtual machine it can exceed a small read."""

    data: bytes | memoryview
    service_s: float  # seconds being served, excluding any queueing in the store
    done: float  # time.perf_counter() when the last byte was in memory


class ByteStore(ABC):
    """One tier's store: async reads of whole objects and byte ranges, plus a zarr face."""

    kind: str  # "file", "s3" or "memory"
    persistent: bool = True  # False: the data lives in this process only
    channels: int | None = None  # requests it serves at once by itself, queueing the rest

    def __init__(self, url: str) -> None:
        self.url = url  # for messages: never carries credentials
        self.counters = StoreCounters()

    @abstractmethod
    def zarr_store(self) -> Any:
        """A zarr-python store over the same root, for writing arrays and metadata."""

    @abstractmethod
    async def read(self, key: str) -> bytes | memoryview | None:
        """The whole object, or None when there is no such object."""

    @abstractmethod
    async def read_range(self, key: str, start: int, length: int) -> bytes | memoryview:
        """`length` bytes from `start`; a missing object or a short read is a DataError."""

    async def read_range_timed(self, key: str, start: int, length: int) -> TimedRead:
        """`read_range`, the seconds it was being served (excluding any queueing) and when
        its last byte was in memory (`time.perf_counter()`)."""
        begun = time.perf_counter()
        data = await self.read_range(key, start, length)
        done = time.perf_counter()
        return TimedRead(data, done - begun, done)

    @abstractmethod
    async def read_suffix(self, key: str, length: int) -> bytes | memoryview | None:
        """The last `length` bytes, or None when there is no such object."""

    @abstractmethod
    async def list_keys(self, prefix: str) -> set[str]:
        """Keys under `prefix` (relative to the store root)."""

    def prewarm(self, sizes: list[int], count: int) -> None:  # noqa: B027 - optional hook
        """Get ready to serve `count` reads of each of `sizes` bytes at once without
        allocating (called before timed reads)."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Make what was written durable (called when materialize finishes)."""

    async def check_writable(self) -> None:  # noqa: B027 - optional hook
        """Raise a StoreError if the store cannot be written (called before materializing)."""

    async def free_bytes(self) -> int | None:
        """Space left for new data, when the store can tell (local directories)."""
        return None

    def cleanup_partial(self) -> int:
        """Remove leftovers of writes cut short (e.g. by kill -9); returns how many."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
