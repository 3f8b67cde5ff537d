"""Where a sweep's batches run: in this process, in a local process pool, or on Dask.

Every executor has the same small face: `submit(fn, *args)` gives a future (`.result()`,
`.done()`), `wait(futures, timeout)` returns the ones that finished, `close()` lets go of
the workers. `workers` is how many batches run at once (0 for inline: one, in the caller).
The functions submitted must be importable module-level functions (they are pickled by
reference to worker processes).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from types import TracebackType
from typing import Any

from memsim.errors import InputError

DASK_HINT = "pip install 'memsim[dask]'"
CONNECT_TIMEOUT_S = 10.0
# imported once in the forkserver, so each worker it forks starts with them loaded
PRELOAD = ["memsim.sweep.runner", "memsim.sweep.stages", "memsim.estimate", "memsim.optimize",
           "memsim.simulate", "memsim.simulate.engine", "memsim.simulate.stats",
           "memsim.workload", "memsim.trace", "scipy.special"]


class Executor(ABC):
    """Runs submitted calls somewhere and hands back futures."""

    dashboard_link: str | None = None

    @property
    @abstractmethod
    def workers(self) -> int:
        """Calls that run at once (0: inline, one at a time in the caller)."""

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Start `fn(*args)`; a future with `.result()` and `.done()`."""

    @abstractmethod
    def wait(self, futures: Collection[Any], timeout: float | None) -> set[Any]:
        """The futures among `futures` that have finished, waiting up to `timeout` seconds
        for at least one (an empty set when none finished in time)."""

    def cancel(self, futures: Collection[Any]) -> None:
        """Cancel what has not started (best effort)."""
        for f in futures:
            f.cancel()

    def worker_died(self, exc: BaseException) -> bool:
        """Whether a future failed with `exc` because its worker process died (a crash, or
        the kernel's out-of-memory killer) rather than for a reason a rerun would repeat."""
        return False

    def restart(self) -> None:  # noqa: B027 (most executors have nothing to restart)
        """Be usable again after a worker died (nothing to do where workers are replaced by
        themselves)."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the workers."""

    def describe(self) -> str:
        return type(self).__name__

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class InlineExecutor(Executor):
    """Runs each call at submit, in this process: for debugging and notebooks."""

    @property
    def workers(self) -> int:
        return 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        fut: cf.Future[Any] = cf.Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 (handed to the caller through the future)
            fut.set_exception(exc)
        return fut

    def wait(self, futures: Collection[Any], timeout: float | None) -> set[Any]:
        return {f for f in futures if f.done()}

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "in this process"


def _start_method() -> str:
    """forkserver on Linux: a worker forks from a small clean server that imported memsim
    once (fast start, and no fork of a threaded parent: tqdm's monitor, Dask, a notebook's
    threads); spawn where there is no forkserver."""
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _worker_init() -> None:
    """Ctrl-C is the controller's to handle (it flushes the rows and shuts the pool down);
    a worker that took it too would die between batches and break the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessExecutor(Executor):
    """A local pool of worker processes (concurrent.futures.ProcessPoolExecutor)."""

    def __init__(self, workers: int, *, start_method: str | None = None) -> None:
        if workers < 1:
            raise InputError(f"--workers {workers}: a process pool needs at least one worker")
        self._workers = workers
        self.start_method = start_method or _start_method()
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        ctx = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload(PRELOAD)  # ignored once the server runs
        return cf.ProcessPoolExecutor(max_workers=self._workers, mp_context=ctx,
                                      initializer=_worker_init)

    @property
    def workers(self) -> int:
        return self._workers

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        return self._pool.submit(fn, *args)

    def wait(self, futures: Collection[Any], timeout: float | None) -> set[Any]:
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return set(done)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def worker_died(self, exc: BaseException) -> bool:
        return isinstance(exc, cf.process.BrokenProcessPool)

    def restart(self) -> None:
        """A dead worker breaks the whole pool: start a fresh one."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def describe(self) -> str:
        return f"on {self._workers} local process{'es' if self._workers > 1 else ''}"


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise InputError(f"--dask-local needs dask.distributed: {DASK_HINT}") from None
    return distributed


class DaskExecutor(Executor):
    """A dask.distributed cluster: the scheduler at `address`, or (address None) a
    LocalCluster of `workers` single-threaded worker processes with a dashboard on a free
    port. Tasks are submitted impure (every batch runs) with retries; a task on a worker
    that dies is rerun on another by the scheduler."""

    def __init__(self, address: str | None, workers: int = 2, *,
                 timeout: float = CONNECT_TIMEOUT_S, retries: int = 2) -> None:
        distributed = _distributed()
        self._distributed = distributed
        self.address = address
        self.retries = retries
        self.cluster: Any = None
        self._workers_cache: tuple[float, int] | None = None
        if address is None:
            if workers < 1:
                raise InputError(f"--workers {workers}: a local Dask cluster needs at least "
                                 "one worker")
            self.cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=":0", silence_logs=40)
            try:
                self.client = distributed.Client(self.cluster, timeout=timeout)
            except BaseException:
                self.cluster.close()
                raise
        else:
            try:
                self.client = distributed.Client(address, timeout=timeout)
            except (OSError, TimeoutError, ValueError, TypeError) as exc:
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputError(f"--scheduler {address}: no Dask scheduler answered within "
                                 f"{timeout:g} s ({detail})") from None
        try:
            self.dashboard_link = self.client.dashboard_link
        except Exception:  # noqa: BLE001 (no dashboard: bokeh missing)
            self.dashboard_link = None

    @property
    def workers(self) -> int:
        now = time.monotonic()
        if self._workers_cache is None or now - self._workers_cache[0] > 5.0:
            try:
                n = sum(self.client.nthreads().values())
            except Exception:  # noqa: BLE001 (a scheduler hiccup: keep the last count)
                n = self._workers_cache[1] if self._workers_cache else 1
            self._workers_cache = (now, max(1, n))
        return self._workers_cache[1]

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, retries=self.retries)

    def wait(self, futures: Collection[Any], timeout: float | None) -> set[Any]:
        if not futures:
            return set()
        try:
            done, _ = self._distributed.wait(list(futures), timeout=timeout,
                                             return_when="FIRST_COMPLETED")
        except TimeoutError:
            return set()
        return set(done)

    def cancel(self, futures: Collection[Any]) -> None:
        if futures:
            try:
                self.client.cancel(list(futures))
            except Exception:  # noqa: BLE001 (closing anyway)
                pass

    def worker_died(self, exc: BaseException) -> bool:
        # the scheduler reran the task on other workers (retries) and they died too
        return isinstance(exc, self._distributed.KilledWorker)

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def describe(self) -> str:
        where = f"the Dask cluster at {self.address}" if self.address else "a local Dask cluster"
        return f"on {where} ({self.workers} workers)"

