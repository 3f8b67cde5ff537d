"""Run a sweep's points on an executor and keep one row per point, exactly once.

Points are sent to the executor in batches, sized as they go: the first batches hold one
point each (to measure), then as many as take about `target_batch_s` each, fewer again near
the end so the workers finish together. At most about two batches per worker are in flight,
so a kill loses little. Rows are written only here, by the controller, after their batch came
back; a rerun skips every key the dataset already holds, so no point is ever written twice.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from memsim.errors import MemsimError, one_line
from memsim.sweep.columns import empty_row
from memsim.sweep.executors import Executor, InlineExecutor
from memsim.sweep.point import Point
from memsim.sweep.results import SCREEN, ResultsWriter, axis_types, read_results, rows_to_table

RunBatch = Callable[..., list[dict[str, Any]]]  # run(points, *, simulate: bool) -> rows
MAX_BATCH = 10_000
POLL_S = 0.5  # the controller wakes at least this often (time-based flushes)


class _Sink(Protocol):
    def keys(self) -> set[str]: ...
    def write(self, rows: Sequence[dict[str, Any]]) -> None: ...
    def flush_if_due(self) -> None: ...


class _MemorySink:
    """Rows kept in memory (no --out)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._keys: set[str] = set()

    def keys(self) -> set[str]:
        return set(self._keys)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        for r in rows:
            if r.get("point") not in self._keys:
                self._keys.add(r["point"])
                self.rows.append(r)

    def flush_if_due(self) -> None:
        pass

    def close(self) -> None:
        pass


def default_run(points: list[Point], *, simulate: bool = True) -> list[dict[str, Any]]:
    """The stages (`memsim.sweep.stages.run_batch`), imported on first use."""
    from memsim.sweep import stages

    return stages.run_batch(points, simulate=simulate)


def _failed_row(point: Point, exc: BaseException | str) -> dict[str, Any]:
    row = empty_row()
    msg = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    row.update(point=point.key, index=point.index, sample=point.sample, status="failed",
               error=one_line(msg)[:2000], rate=point.inputs.get("rate"))
    return row


def _complete(rows: list[dict[str, Any]], batch: Sequence[Point]) -> list[dict[str, Any]]:
    """One row per point of `batch`, in its order: each row's axes, key, index and sample
    filled from its point where the row lacks them; a point with no row gets a failed one."""
    keyless = any(not isinstance(r, dict) or r.get("point") is None for r in rows)
    if keyless and len(rows) == len(batch):  # rows without keys: matched by position
        rows = [(r if isinstance(r, dict) else {}) | {"point": p.key}
                for p, r in zip(batch, rows, strict=True)]
    by_key: dict[str, dict[str, Any]] = {}
    for r in rows:
        if isinstance(r, dict) and r.get("point") is not None:
            by_key.setdefault(r["point"], r)
    out = []
    for p in batch:
        r = by_key.get(p.key)
        if r is None:
            r = _failed_row(p, "the stages returned no row for this point")
        r = {**p.axes, **r}
        for name, value in (("index", p.index), ("sample", p.sample)):
            if r.get(name) is None:
                r[name] = value
        out.append(r)
    return out


def run_batch_timed(run: RunBatch, batch: list[Point], simulate: bool
                    ) -> tuple[list[dict[str, Any]], float]:
    """On a worker: `run(batch)`'s rows and the seconds it took. Should `run` raise (the
    stages never do), each point is retried alone and the ones that raise again become
    failed rows: a bad point costs a row, never the sweep."""
    start = time.perf_counter()
    try:
        rows = run(batch, simulate=simulate)
    except Exception as exc:  # noqa: BLE001 (becomes rows)
        if len(batch) == 1:
            rows = [_failed_row(batch[0], exc)]
        else:
            rows = []
            for p in batch:
                try:
                    rows.extend(run([p], simulate=simulate))
                except Exception as one:  # noqa: BLE001
                    rows.append(_failed_row(p, one))
    return _complete(rows, batch), time.perf_counter() - start


class _Batcher:
    """Batch sizes: single points until measured, then about `target_s` of work, and no
    more than an even share of what is left across the slots in flight."""

    def __init__(self, target_s: float, slots: int) -> None:
        self.target_s = target_s
        self.slots = slots
        self.per_point: float | None = None
        self.probes = slots  # single-point batches sent before a measurement exists

    def observe(self, n: int, seconds: float) -> None:
        per = seconds / max(n, 1)
        self.per_point = per if self.per_point is None else 0.5 * self.per_point + 0.5 * per

    def size(self, remaining: int) -> int:
        if self.per_point is None:
            return 1
        want = self.target_s / max(self.per_point, 1e-6)
        share = math.ceil(remaining / self.slots)
        return max(1, min(int(want), share, MAX_BATCH, remaining))


def _execute(points: list[Point], sink: _Sink, *, executor: Executor, run: RunBatch,
             simulate: bool, target_batch_s: float,
             on_rows: Callable[[int], None] | None,
             mutate: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Run `points` on `executor` in adaptive batches, writing each batch's rows to `sink`
    as it comes back.

    A worker that dies (a crash or the out-of-memory killer in some point's stages) loses the
    batches in flight with it. Their points become suspects, rerun one at a time with
    nothing else in flight: a suspect whose worker dies alone is the culprit and becomes a
    failed row, the others get their rows, and the sweep goes on.
    """
    if not points:
        return
    workers = executor.workers
    slots = max(1, 2 * workers)
    batcher = _Batcher(target_batch_s, max(1, workers) * 2)
    queue = list(reversed(points))  # pop() from the end takes them in order
    inflight: dict[Any, list[Point]] = {}
    suspects: list[Point] = []  # lost with a dead worker: rerun alone
    alone: Any = None  # the future of the suspect running by itself
    restart = False  # a worker died: restart the executor once nothing is in flight
    measured_pending = 0  # single-point probes in flight before the first measurement

    def keep(rows: list[dict[str, Any]]) -> None:
        if mutate is not None:
            for r in rows:
                mutate(r)
        sink.write(rows)
        if on_rows is not None:
            on_rows(len(rows))

    try:
        while queue or inflight or suspects:
            if restart and not inflight:
                executor.restart()
                restart = False
            if suspects:
                if not inflight:
                    point = suspects.pop(0)
                    alone = executor.submit(run_batch_timed, run, [point], simulate)
                    inflight[alone] = [point]
            else:
                while queue and len(inflight) < slots:
                    if batcher.per_point is None and measured_pending >= batcher.probes:
                        break
                    n = batcher.size(len(queue))
                    batch = [queue.pop() for _ in range(min(n, len(queue)))]
                    if batcher.per_point is None:
                        measured_pending += 1
                    fut = executor.submit(run_batch_timed, run, batch, simulate)
                    inflight[fut] = batch
            done = executor.wait(list(inflight), timeout=POLL_S)
            for fut in done:
                batch = inflight.pop(fut)
                try:
                    rows, seconds = fut.result()
                except Exception as exc:  # a worker or the pool died, or the task was lost
                    if not executor.worker_died(exc):
                        raise MemsimError(
                            f"a sweep worker failed ({type(exc).__name__}: {exc}); the rows "
                            "that came back are kept: run the sweep again to resume") from exc
                    restart = True
                    if fut is alone:
                        keep([_failed_row(batch[0], "the worker process died running this "
                                          "point (a crash, or out of memory, in its stages)")])
                    else:
                        suspects.extend(batch)
                    continue
                batcher.observe(len(batch), seconds)
                keep(rows)
            sink.flush_if_due()
    finally:
        if inflight:
            executor.cancel(list(inflight))


def _unique(points: Sequence[Point]) -> list[Point]:
    """The points with distinct keys, first occurrence kept (equal inputs, one row)."""
    seen: set[str] = set()
    out = []
    for p in points:
        if p.key not in seen:
            seen.add(p.key)
            out.append(p)
    return out


def _open(out: str | Path | None, axes: list[str], types: dict[str, pa.DataType],
          name: str | None, sub: str | None = None) -> Any:
    if out is None:
        return _MemorySink()
    path = Path(out) if sub is None else Path(out) / sub
    return ResultsWriter(path, axes, types=types, name=name)


def _table(sink: Any, out: Path | None, keys: set[str], axes: list[str],
           types: dict[str, pa.DataType]) -> pa.Table:
    if out is None or isinstance(sink, _MemorySink):
        rows = [r for r in sink.rows if r["point"] in keys]
        table = rows_to_table(rows, axes, types)
        if table.num_rows:
            table = table.sort_by([("index", "ascending"), ("point", "ascending")])
        return table
    table = read_results(out)
    if table.num_rows:
        table = table.filter(pc.is_in(table.column("point"), pa.array(sorted(keys))))
    return table


def run_sweep(points: list[Point], out: str | Path | None, *, axes: list[str],
              executor: Executor | None = None,
              confirm: Callable[[pa.Table], set[str]] | None = None,
              progress: Callable[[int, int], None] | None = None,
              target_batch_s: float = 0.2, run: RunBatch | None = None,
              name: str | None = None) -> pa.Table:
    """Run every point not yet in `out` and return the rows of all of `points` (old and new).

    `out`: a results dataset directory (created if absent, resumed if present; anything else
    is refused), or None to keep rows in memory only. `executor`: where batches run (default
    inline). `run(points, *, simulate)`: the stages (default `stages.run_batch`); it must be an
    importable module-level function for process and Dask executors. `progress(done, total)`
    is called as rows come back.

    With `confirm`, the sweep runs in two phases: every point first with simulate=False into
    the screening dataset `out/_screen/` (resumable too), then `confirm(screen_table)` names
    the keys to simulate; those run again with simulate=True and are written with
    confirmed=True, the others' screening rows with confirmed=False. Each point is in the
    main dataset once either way.
    """
    executor = executor if executor is not None else InlineExecutor()
    run = run if run is not None else default_run
    axes = list(axes)
    pts = _unique(points)
    keys = {p.key for p in pts}
    types = axis_types((p.axes for p in pts), axes)
    out_path = Path(out) if out is not None else None
    done = 0
    total = 0

    def counted(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    main = _open(out_path, axes, types, name)
    try:
        have = main.keys()
        todo = [p for p in pts if p.key not in have]
        if confirm is None:
            total = len(todo)
            if progress is not None:
                progress(0, total)
            _execute(todo, main, executor=executor, run=run, simulate=True,
                     target_batch_s=target_batch_s, on_rows=counted)
        elif todo:
            screen = _open(out_path, axes, types, name, sub=SCREEN)
            try:
                screened = screen.keys()
                first = [p for p in todo if p.key not in screened]
                total = len(first)
                if progress is not None:
                    progress(0, total)
                _execute(first, screen, executor=executor, run=run, simulate=False,
                         target_batch_s=target_batch_s, on_rows=counted)
            finally:
                screen.close()
            screen_table = _table(screen, out_path / SCREEN if out_path else None, keys,
                                  axes, types)
            chosen = set(confirm(screen_table)) & {p.key for p in todo}
            rest = {p.key for p in todo} - chosen
            if rest:
                rows = [r for r in screen_table.to_pylist() if r["point"] in rest]
                for r in rows:
                    r["confirmed"] = False
                main.write(rows)
            again = [p for p in todo if p.key in chosen]
            total += len(again)
            if progress is not None:
                progress(done, total)

            def mark(r: dict[str, Any]) -> None:
                r["confirmed"] = True

            _execute(again, main, executor=executor, run=run, simulate=True,
                     target_batch_s=target_batch_s, on_rows=counted, mutate=mark)
    except BaseException:
        try:
            main.close()
        except Exception:  # noqa: BLE001 (the first error is the one to report)
            traceback.print_exc()
        raise
    main.close()
    return _table(main, out_path, keys, axes, types)
