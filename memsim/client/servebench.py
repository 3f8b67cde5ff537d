"""serve-bench: a closed-loop run of the client (`open_bank`) as an inference server drives it.

`callers` concurrent callers each take the next `batch` paths of the workload's path sequence
(drawn from `seed` exactly as `memsim simulate` draws them) and fetch them with one
`afetch_many`, then take the next batch at once (no think time: a closed loop at full load).
A query's fetch time is the client's own timing (`FetchTimings.fetch_time_s`): from its
batch's start to when the last of its blocks was in memory.

By default the callers are asyncio tasks on one event loop over `afetch_many`: the async
path is the one that overlaps callers on every kind of store (a sync fetch on S3 runs on the
bank's private loop, one caller at a time, so threads would measure that lock, not the
client), and an inference server's request handlers are usually tasks on one loop.
`mode="threads"` runs threads over `fetch_many` instead: the sync path a synchronous server
uses, which reads local and memory stores without any event loop (its first read in the
caller's own thread), so on those stores it is the leaner of the two. The batches are the
same consecutive chunks of the path sequence in both modes, whoever takes them. The
harness keeps its costs off the clock: every path is drawn before the run and the heap that
existed before it is frozen (as replay does).

The warm-up queries (the first `int(queries * warmup)` of the sequence) run to completion
first; then the client's counters are reset and the rest are measured, so every counter
(requests, bytes, deduplication, hits) and the wall time are those of the measured queries.

`prefetch` is the client's (the layout's `prefetch:` section by default, built with the
workload, or with the served path sequence for the trace policy). With `simulate=True` the
simulator then predicts the same run: a closed loop of `callers` clients without think time
over the very same path sequence, in the same batches (`memsim.simulate.batch`), with the
same cache, resident levels and prefetch; `predicted` holds what it reports beside what was
measured. Requests per tier and deduplication depend only on the batches, so without a RAM
cache (and resident levels) the two sides count them exactly alike.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memsim import limits
from memsim.aio import frozen_heap, run_sync
from memsim.bank import Bank
from memsim.errors import InputError
from memsim.layout import CacheConfig, Layout
from memsim.profile import Profile
from memsim.workload import Workload

if TYPE_CHECKING:
    from memsim.client.bank import ServedBank
    from memsim.client.prefetch import PrefetchConfig
    from memsim.simulate import SimulationResult

__all__ = ["MODES", "ServeBenchResult", "serve_bench"]

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
MODES = ("async", "threads")


@dataclass
class ServeBenchResult:
    """What a serve-bench run measured (seconds, bytes; counters of the measured queries)."""

    layout: str
    bank: str
    profile: str
    workload: str
    callers: int
    batch: int
    queries: int  # measured (after the warm-up)
    warmup: int  # warm-up queries, run first and left out of everything below
    seed: int
    wall_s: float  # of the measured queries
    fetch_time_s: dict[str, float]  # mean, p50, p95, p99, max
    hit_ratio: float | None  # the RAM cache's (None without one), as simulate reports it
    prefetch_hit_ratio: float | None  # None when the client reports none
    requests: dict[str, int]  # tier -> byte-range requests
    bytes: dict[str, int]  # tier -> bytes read
    dedup_requests_saved: int  # requests a batch saved by reading shared blocks once
    dedup_blocks_saved: int
    blocks: int  # blocks handed to the measured queries
    reads: int  # distinct blocks read from stores
    mode: str = "async"  # callers as asyncio tasks ("async") or threads ("threads")
    client: dict[str, Any] = field(default_factory=dict)  # the client's ClientStats.to_json()
    fetch_times: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    # the client's prefetch parameters (memsim.simulate.prefetch_parameters), None: none
    prefetch: dict[str, Any] | None = None
    # simulate=True: the simulator's run of the same closed loop, and its figures keyed as
    # the measured ones (`predicted_figures`)
    simulated: SimulationResult | None = field(default=None, repr=False)
    predicted: dict[str, Any] | None = None

    @property
    def throughput_qps(self) -> float:
        """Measured queries per second of wall time."""
        return self.queries / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())

    def to_json(self) -> dict[str, Any]:
        """Plain data in base units (seconds, bytes, queries per second)."""
        return {
            "layout": self.layout, "bank": self.bank, "profile": self.profile,
            "workload": self.workload, "mode": self.mode, "callers": self.callers,
            "batch": self.batch,
            "queries": self.queries, "warmup": self.warmup, "seed": self.seed,
            "wall_s": self.wall_s, "throughput_qps": self.throughput_qps,
            "fetch_time_s": dict(self.fetch_time_s), "hit_ratio": self.hit_ratio,
            "prefetch_hit_ratio": self.prefetch_hit_ratio,
            "requests": dict(self.requests), "requests_total": self.requests_total,
            "bytes": dict(self.bytes), "bytes_total": sum(self.bytes.values()),
            "dedup_requests_saved": self.dedup_requests_saved,
            "dedup_blocks_saved": self.dedup_blocks_saved, "blocks": self.blocks,
            "reads": self.reads, "prefetch": self.prefetch, "client": self.client,
            **({"predicted": self.predicted} if self.predicted is not None else {}),
        }


def predicted_figures(sim: SimulationResult) -> dict[str, Any]:
    """A simulation's figures under the keys serve-bench measures (seconds, bytes)."""
    served = sim.served
    prefetch_ratio = (served.prefetch_hits / served.prefetch_issued
                      if served.prefetching and served.prefetch_issued else None)
    return {
        "queries": sim.queries, "warmup": sim.warmup, "simulated_s": sim.simulated_s,
        "fetch_time_s": {k: sim.fetch_time_s[k] for k in ("mean", "p50", "p95", "p99", "max")},
        "hit_ratio": served.cache_hit_ratio, "prefetch_hit_ratio": prefetch_ratio,
        "requests": dict(served.requests), "requests_total": sum(served.requests.values()),
        "bytes": dict(served.bytes), "bytes_total": sum(served.bytes.values()),
        "dedup_requests_saved": served.dedup_requests_saved,
        "dedup_blocks_saved": served.dedup_blocks_saved, "blocks": served.blocks,
        "reads": served.reads, "prefetch": sim.prefetch, "unstable": list(sim.unstable),
        "served": served.to_json(),
    }


def _whole(value: Any, name: str, lowest: int, highest: int) -> int:
    """A whole-number argument in lowest..highest, or a one-line InputError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(f"{name} must be a whole number, got {value!r}", field=name)
    if not lowest <= int(value) <= highest:
        raise InputError(f"{name} must be in {lowest:,}..{highest:,}, got {int(value):,}",
                         field=name)
    return int(value)


def _summary(times: np.ndarray) -> dict[str, float]:
    if times.size == 0:
        return {"mean": float("nan"), **{k: float("nan") for k in QUANTILES},
                "max": float("nan")}
    out = {"mean": float(times.mean())}
    out.update({k: float(np.quantile(times, q)) for k, q in QUANTILES.items()})
    out["max"] = float(times.max())
    return out


def _prefetch_ratio(stats: Any) -> float | None:
    """The client's prefetch-hit ratio, if this client reports one."""
    value = getattr(stats, "prefetch_hit_ratio", None)
    if callable(value):
        value = value()
    return float(value) if isinstance(value, int | float) else None


def serve_bench(layout: Layout | str | Path, *, profile: Profile | str | Path | None = None,
                bank: Bank | str | Path | None = None, stores: Mapping[str, str] | None = None,
                workload: Workload | str | Path | None = None,
                trace: tuple[np.ndarray, np.ndarray] | str | Path | None = None,
                callers: int = 1, batch: int = 1, queries: int = 1000, warmup: float = 0.1,
                seed: int = 0, cache: CacheConfig | None | str = "layout",
                check: bool | float = True, cold: bool = True, mode: str = "async",
                progress: Callable[[int], None] | None = None,
                prefetch: PrefetchConfig | None | str = "layout",
                simulate: bool = False) -> ServeBenchResult:
    """Run `queries` queries of `workload` through the client, `callers` at once in batches
    of `batch`, and report fetch-time percentiles, throughput, hits, requests and bytes.

    `layout`, `profile`, `bank`, `stores`, `cache`, `check` and `cold` are `open_bank`'s.
    `workload` (object, file or shipped name) gives the paths (its routing and locality; its
    arrivals are not used: the callers are a closed loop without think time); None is
    uniform routing. `trace` (a Parquet file, or (arrivals, paths)) gives them instead, in
    its order. `mode` is "async" (callers are tasks over `afetch_many` on one event loop) or
    "threads" (callers are threads over `fetch_many`: the sync path, which reads local and
    memory stores without an event loop but runs other stores' reads one caller at a time).
    `progress(n)` is told of every n finished queries, warm-up included. `prefetch` is the
    client's ("layout": the layout's `prefetch:` section, built with the workload, or with
    the served paths for the trace policy; a `PrefetchConfig`; None: none). `simulate=True`
    also runs the simulator on the same closed loop, paths, batches, cache, resident levels
    and prefetch, and reports it in `predicted` (and `simulated`).
    """
    from memsim.client.bank import _cache_choice, _resolve, open_bank
    from memsim.simulate import plan_queries, prefetch_parameters
    from memsim.trace import read_trace
    from memsim.workload import load_workload, workload_from_dict

    callers = _whole(callers, "callers", 1, limits.MAX_CLIENTS)
    batch = _whole(batch, "batch", 1, limits.MAX_QUERIES)
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}", field="mode")
    if trace is not None and workload is not None:
        raise InputError("give a workload or a trace, not both", field="workload")
    wl: Workload | None = None
    if trace is None:
        wl = workload if isinstance(workload, Workload) else \
            load_workload(workload) if workload is not None else \
            workload_from_dict({"name": "uniform", "arrivals": {"kind": "closed", "clients": 1}})
    prof, bk, lay = _resolve(layout, profile, bank)
    source = wl.name if wl is not None else \
        str(trace) if isinstance(trace, str | Path) else "trace"
    if isinstance(trace, str | Path):
        trace = read_trace(trace, bk)
    plan = plan_queries(bk, wl, trace, queries, seed, warmup)
    total = plan.queries
    paths = np.stack([plan.paths(i) for i in range(total)])  # drawn before the clock
    warm = int(total * warmup)
    config = _prefetch_choice(prefetch, lay, wl, paths)
    cache_config, resident = _cache_choice(lay, cache, "layout")
    # the prefetch is resolved here: the layout the client opens keeps no section of its own
    opened = lay if lay.prefetch is None else lay.model_copy(update={"prefetch": None})
    with open_bank(opened, profile=prof, bank=bk, stores=stores, check=check, cold=cold,
                   seed=seed, cache=cache, prefetch=config) as served:
        times = np.full(total, np.nan)
        run = _async_phase if mode == "async" else _thread_phase

        def phases() -> float:
            if warm:
                run(served, paths, times, 0, warm, callers, batch, progress)
            served.stats.reset()
            return run(served, paths, times, warm, total, callers, batch, progress)

        with frozen_heap():
            wall = phases()
        stats = served.stats
        measured = times[warm:]
        used = served.prefetcher.config if served.prefetcher is not None else None
        result = ServeBenchResult(
            layout=lay.name or str(layout), bank=bk.name, profile=prof.name,
            workload=source, callers=callers, batch=batch, queries=total - warm,
            warmup=warm, seed=seed, wall_s=wall, fetch_time_s=_summary(measured),
            hit_ratio=stats.cache_hit_ratio, prefetch_hit_ratio=_prefetch_ratio(stats),
            requests={t: stats.requests[t] for t in prof.tier_names if t in stats.requests},
            bytes={t: stats.bytes[t] for t in prof.tier_names if t in stats.bytes},
            dedup_requests_saved=stats.dedup_requests_saved,
            dedup_blocks_saved=stats.dedup_blocks_saved, blocks=stats.blocks,
            reads=stats.reads, mode=mode, client=stats.to_json(), fetch_times=measured,
            prefetch=prefetch_parameters(used) if used is not None else None)
    if simulate:
        sim_layout = opened.model_copy(update={"cache": cache_config, "resident": resident})
        result.simulated = simulate_bench(prof, bk, sim_layout, paths, callers=callers,
                                          batch=batch, warmup=warmup, seed=seed,
                                          prefetch=used)
        result.predicted = predicted_figures(result.simulated)
    return result


def simulate_bench(profile: Profile, bank: Bank, layout: Layout, paths: np.ndarray, *,
                   callers: int, batch: int, warmup: float, seed: int,
                   prefetch: PrefetchConfig | None) -> SimulationResult:
    """The simulator's run of a serve-bench: a closed loop of `callers` clients without think
    time over `paths` in order, `batch` at a time, on `layout` (cache and resident levels
    as the client's) with `prefetch`; the same warm-up."""
    from memsim.simulate import simulate
    from memsim.workload import workload_from_dict

    loop = workload_from_dict({"name": "serve-bench", "arrivals": {
        "kind": "closed", "clients": callers, "think_time": 0}})
    return simulate(profile, bank, layout, loop, paths=paths, queries=len(paths), seed=seed,
                    warmup=warmup, batch=batch, prefetch=prefetch)


def _prefetch_choice(prefetch: Any, layout: Layout, workload: Workload | None,
                     paths: np.ndarray) -> PrefetchConfig | None:
    """The client's prefetch: "layout" is the layout's section, built with the workload
    (children) or the served path sequence (trace); a PrefetchConfig or None as given."""
    if isinstance(prefetch, str):
        if prefetch != "layout":
            raise InputError(f"prefetch must be 'layout', a PrefetchConfig or None, got "
                             f"{prefetch!r}", field="prefetch")
        return layout.prefetch_config(workload=workload, trace=paths)
    return prefetch


def _async_phase(served: ServedBank, paths: np.ndarray, times: np.ndarray, lo: int, hi: int,
                 callers: int, batch: int, progress: Callable[[int], None] | None) -> float:
    """Queries lo..hi by `callers` tasks over afetch_many, each taking the next batch; the
    wall time they took."""
    cursor = [lo]

    async def caller() -> None:
        while cursor[0] < hi:
            i = cursor[0]
            j = min(i + batch, hi)
            cursor[0] = j
            got = await served.afetch_many(paths[i:j], timed=True)
            times[i:j] = [t.fetch_time_s for t in got.timings]
            if progress is not None:
                progress(j - i)

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(min(callers, hi - lo))))
        return time.perf_counter() - t0

    return run_sync(main()) if hi > lo else 0.0


def _thread_phase(served: ServedBank, paths: np.ndarray, times: np.ndarray, lo: int, hi: int,
                  callers: int, batch: int, progress: Callable[[int], None] | None) -> float:
    """`_async_phase` with threads over fetch_many; the first error is re-raised."""
    lock = threading.Lock()
    cursor = [lo]
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            while not errors:
                with lock:
                    i = cursor[0]
                    if i >= hi:
                        return
                    j = cursor[0] = min(i + batch, hi)
                got = served.fetch_many(paths[i:j], timed=True)
                times[i:j] = [t.fetch_time_s for t in got.timings]
                if progress is not None:
                    with lock:
                        progress(j - i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=caller, name=f"serve-bench-{k}", daemon=True)
               for k in range(min(callers, hi - lo))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall
