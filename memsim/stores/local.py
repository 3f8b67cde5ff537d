"""A local directory as a store, read cold so that the device, not the page cache, is measured.

Cold reads use O_DIRECT: offsets and lengths are widened to 4 KiB and read with `os.preadv`
into page-aligned `mmap` buffers, which are pooled and handed to the caller without a copy.
Where O_DIRECT is refused (tmpfs, some network filesystems) each read drops its pages from the
cache afterwards (`posix_fadvise(DONTNEED)`). Reads run on a pool of `threads` threads, which
are the tier's channels: requests queue in front of the pool, and a thread that finishes takes
the next one at once, without a round trip through the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from memsim.errors import DataError, StoreError
from memsim.stores.abc import ByteStore, TimedRead

ALIGN = 4096
O_DIRECT = getattr(os, "O_DIRECT", 0)
MAX_OPEN = 256  # files kept open between reads; more are opened per read (fd limits)
PREWARM_BYTES = 512 << 20  # buffers made ready before timed reads, at most, per store
MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def os_error(exc: OSError, what: str, where: str) -> StoreError:
    """One clear message for the usual local failures."""
    hints = {
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EROFS: "the filesystem is read-only",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.ENOTDIR: "a part of the path is not a directory",
        errno.EISDIR: "is a directory",
    }
    reason = hints.get(exc.errno or 0, exc.strerror or str(exc))
    return StoreError(f"cannot {what} {where}: {reason}")


class BufferPool:
    """Page-aligned buffers by size class, reused once the caller releases them."""

    def __init__(self) -> None:
        self._free: dict[int, list[mmap.mmap]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def size_class(n: int) -> int:
        """Powers of two up to 64 KiB, then multiples of 64 KiB (little waste on big blocks)."""
        if n <= 1 << 16:
            return max(ALIGN, 1 << (n - 1).bit_length())
        return -(-n // (1 << 16)) << 16

    def get(self, n: int) -> mmap.mmap:
        size = self.size_class(n)
        with self._lock:
            free = self._free.get(size)
            if free:
                return free.pop()
        return mmap.mmap(-1, size)

    def fill(self, n: int, count: int) -> int:
        """Have `count` buffers of `n` bytes' class ready, their pages already mapped (a first
        touch costs a page fault per 4 KiB: milliseconds for a big block on a virtual
        machine, which a timed read would otherwise pay); returns the bytes added."""
        size = self.size_class(n)
        added = 0
        with self._lock:
            free = self._free.setdefault(size, [])
            while len(free) < min(count, 64):
                buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                                | MAP_POPULATE)
                if not MAP_POPULATE:
                    buf.write(bytes(size))
                free.append(buf)
                added += size
        return added

    def put(self, buf: mmap.mmap) -> None:
        with self._lock:
            free = self._free.setdefault(len(buf), [])
            if len(free) < 64:
                free.append(buf)


class LocalByteStore(ByteStore):
    """file:// store. `cold` reads bypass the page cache; `threads` bounds parallel reads."""

    kind = "file"

    def __init__(self, root: str | Path, *, cold: bool = True, threads: int = 16) -> None:
        self.root = Path(root)
        super().__init__(f"file://{self.root}")
        self.cold = cold
        self.mode = "warm"  # what cold reads turned out to be: o_direct, fadvise or warm
        if cold:
            self.mode = "o_direct" if O_DIRECT else "fadvise"
        self._fds: dict[str, tuple[int, bool]] = {}  # key -> (fd, direct)
        self._fd_lock = threading.Lock()
        self._pool = BufferPool()
        self._threads = self.channels = threads
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ writing side
    def zarr_store(self) -> Any:
        from zarr.storage import LocalStore

        return LocalStore(self.root)

    async def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".memsim-probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as exc:
            raise os_error(exc, "write to", self.url) from None

    async def free_bytes(self) -> int | None:
        path = self.root
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            return shutil.disk_usage(path).free
        except OSError:
            return None

    def flush(self) -> None:
        """fsync every file and directory under the root. Durability, and also timing: a cold
        (O_DIRECT) read of pages still dirty in the page cache first waits for them to be
        written back, which would be measured as the device's read time."""
        if not self.root.is_dir():
            return
        try:
            for dirpath, _dirs, files in os.walk(self.root):
                for name in [*files, "."]:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        except OSError as exc:
            raise os_error(exc, "flush", self.url) from None

    def cleanup_partial(self) -> int:
        removed = 0
        if self.root.is_dir():
            for leftover in self.root.rglob("*.partial"):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    # ------------------------------------------------------------------ reading side
    def _executor_(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="memsim-io")
        return self._executor

    def _fd(self, key: str) -> tuple[int, bool, bool]:
        """(fd, direct, kept open)."""
        entry = self._fds.get(key)
        if entry is not None:
            return (*entry, True)
        with self._fd_lock:
            entry = self._fds.get(key)
            if entry is not None:
                return (*entry, True)
            path = self.root / key
            direct = self.mode == "o_direct"
            try:
                try:
                    fd = os.open(path, os.O_RDONLY | (O_DIRECT if direct else 0))
                except OSError as exc:
                    if not direct or exc.errno != errno.EINVAL:
                        raise
                    self.mode, direct = "fadvise", False  # the filesystem refuses O_DIRECT
                    fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise DataError(f"object '{key}' is missing from {self.url}") from None
            except OSError as exc:
                raise os_error(exc, "read", f"{self.url}/{key}") from None
            if len(self._fds) >= MAX_OPEN:
                return fd, direct, False
            self._fds[key] = (fd, direct)
            return fd, direct, True

    def _pread(self, key: str, start: int, length: int) -> memoryview:
        fd, direct, kept = self._fd(key)
        try:
            return self._read_fd(fd, direct, key, start, length)
        finally:
            if not kept:
                os.close(fd)

    def _read_fd(self, fd: int, direct: bool, key: str, start: int, length: int) -> memoryview:
        lo = start - start % ALIGN if direct else start
        hi = -(-(start + length) // ALIGN) * ALIGN if direct else start + length
        buf = self._pool.get(hi - lo)
        view = memoryview(buf)
        got = 0
        try:
            while lo + got < hi:
                n = os.preadv(fd, [view[got:hi - lo]], lo + got)
                if n == 0:
                    break
                got += n
        except OSError as exc:
            view.release()
            raise os_error(exc, "read", f"{self.url}/{key}") from None
        if self.mode == "fadvise":
            os.posix_fadvise(fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
        if got < start - lo + length:
            view.release()
            self._pool.put(buf)
            raise DataError(f"object '{key}' in {self.url} is shorter than its index says "
                            f"({lo + got} bytes, need {start + length})")
        return view[start - lo:start - lo + length]

    def prewarm(self, sizes: list[int], count: int) -> None:
        """Ready `count` buffers for each request size (and the class a read widened to 4 KiB
        pages lands in), within PREWARM_BYTES."""
        budget = PREWARM_BYTES
        for n in sorted(set(sizes)):
            for m in {n, n + 2 * ALIGN}:
                want = min(count, budget // max(self._pool.size_class(m), 1))
                if want > 0:
                    budget -= self._pool.fill(m, want)

    def release(self, view: memoryview) -> None:
        """Give a buffer returned by a read back to the pool (optional; speeds up reuse)."""
        buf = view.obj
        view.release()
        if isinstance(buf, mmap.mmap):
            self._pool.put(buf)

    async def read_range(self, key: str, start: int, length: int) -> memoryview:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor_(), self._pread, key, start, length)

    def _timed_pread(self, key: str, start: int, length: int) -> TimedRead:
        begun = time.perf_counter()
        view = self._pread(key, start, length)
        done = time.perf_counter()
        return TimedRead(view, done - begun, done)

    async def read_range_timed(self, key: str, start: int, length: int) -> TimedRead:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor_(), self._timed_pread, key, start,
                                          length)

    def _size(self, key: str) -> int | None:
        try:
            return (self.root / key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise os_error(exc, "read", f"{self.url}/{key}") from None

    async def read_suffix(self, key: str, length: int) -> bytes | None:
        size = self._size(key)
        if size is None:
            return None
        if size < length:
            raise DataError(f"object '{key}' in {self.url} is too short ({size} bytes) to "
                            "hold its shard index")
        view = await self.read_range(key, size - length, length)
        out = bytes(view)
        self.release(view)
        return out

    async def read(self, key: str) -> bytes | None:
        size = self._size(key)
        if size is None:
            return None
        if size == 0:
            return b""
        view = await self.read_range(key, 0, size)
        out = bytes(view)
        self.release(view)
        return out

    async def list_keys(self, prefix: str) -> set[str]:
        base = self.root / prefix
        out: set[str] = set()
        if not base.is_dir():
            return out
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if not name.endswith(".partial"):
                    out.add(f"{rel}/{name}" if rel != "." else name)
        return out

    def close(self) -> None:
        with self._fd_lock:
            for fd, _direct in self._fds.values():
                os.close(fd)
            self._fds.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
