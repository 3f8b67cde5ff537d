"""A thin sync face over async code that also works inside Jupyter's running event loop, and a
quiet heap for timed runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion: here, or on a helper thread when a loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="memsim-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Move every object alive now out of the garbage collector's reach while timing.

    A full collection walks the whole heap (numpy, zarr, scipy: millions of objects) holding
    the interpreter lock for tens of milliseconds; a reading thread that finishes meanwhile
    cannot return its bytes, and the stall is measured as the device's. Frozen, collections
    only look at objects made during the run. Nested uses are harmless.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
