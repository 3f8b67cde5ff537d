"""Benchmark replay's real reads: local throughput against plain O_DIRECT preadv, and the
round trips of a sharded cloud read against zarr-python's.

Part 1 (local throughput, same byte ranges, same concurrency). For 1 MiB and 16 MiB blocks
(--block-sizes), a one-level bank of --data-mib MiB is materialized into a fresh directory
(--dir, default a temporary one; it must be on a disk filesystem that accepts O_DIRECT), sharded
--chunking blocks per shard. For each concurrency C (--concurrency) two programs read
--mib-per-run MiB of blocks:

* `memsim.replay` with the disk tier's concurrency at C (C reading threads, so C requests in
  flight, as in the baseline), a closed loop of 2C clients with no think time (so a queue of
  requests waits for the tier, as at a busy server: a thread that finishes takes the next one
  without a round trip through the event loop), uniform routing, cold reads (O_DIRECT), no
  checks, shard indexes preloaded; its throughput is the tier's bytes over
  `ReplayResult.wall_s` (the timed part of the run);
* the baseline: C threads, each with its own page-aligned `mmap` buffer, reading the same
  blocks' byte ranges (found with `BankReader.locate`, widened to 4 KiB) with `os.preadv` on
  O_DIRECT file descriptors opened beforehand, over a shuffled list that holds every block
  equally often, for the same number of reads.

The programs alternate for --rounds rounds (the order rotates from round to round) and the
medians are compared: the target is memsim >= 0.9x the baseline. Also printed: the median of
the per-round ratios, the overall ratio (all bytes over all time, steadier when runs are
bimodal), the process CPU per read of each program, and memsim's own split of a read (store
read, fetch, client cycle). --breakdown adds two programs between the baseline and replay, to
see where time goes: memsim's `LocalByteStore.read_range` alone, from C asyncio tasks (the
thread-pool hop and buffer pool), and `BankReader.locate` + `read_parts` from C tasks.

Part 2 (a sharded read from an emulated cloud). A bank of 64 KiB blocks (--s3-block-kib),
16 per shard, is materialized into a local S3 endpoint (moto) behind `memsim.emulate`'s delay
proxy (100 MB/s per connection, --s3-bandwidth). 4 blocks of one shard are read, --s3-reps
times after a warm-up, first with no delay (the emulator's own time: moto serves requests
almost one at a time) and then with a one-way delay of 20 ms (--delay): blocks 0..3 and 4
blocks spread over another shard. memsim (`BankReader`, shard indexes preloaded at start-up,
the 4 ranges fetched at once) is timed beside zarr-python's own read of the same rows
(`zarr.open_array` over obstore: it re-reads the shard index, then fetches the ranges one after
another) and beside the ideal, 2 * delay + bytes / bandwidth. The target: the delay adds about
one round trip to memsim's read (under 1.5), not 1 + 4 as for zarr-python.

Nothing here asserts on time: figures, medians, ratios and PASS/FAIL lines are printed (or
given as JSON) with the load average before and after, because the machine may be shared.
Progress goes to stderr. About 1.5 minutes with the defaults, 30 s with --quick.

    python benchmarks/bench_replay.py [--quick] [--block-sizes 1,16] [--concurrency 1,4,8]
                                      [--rounds R] [--mib-per-run M] [--data-mib D]
                                      [--chunking K] [--dir DIR] [--breakdown]
                                      [--s3-reps N] [--delay S] [--s3-bandwidth RATE]
                                      [--s3-block-kib K] [--skip-local] [--skip-s3] [--json]
"""

from __future__ import annotations

# First: _common sets one-thread numeric pools before numpy is imported.
from _common import format_load, load_average

# isort: split

import argparse  # noqa: E402
import asyncio  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import mmap  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import memsim  # noqa: E402
from memsim.aio import run_sync  # noqa: E402
from memsim.materialize import materialize  # noqa: E402
from memsim.replay import replay  # noqa: E402
from memsim.replay.reader import BankReader, Location  # noqa: E402
from memsim.stores import tier_stores  # noqa: E402

ALIGN = 4096
MIB = 1 << 20
MB = 1e6
SEED = 20251002
TARGET_RATIO = 0.9  # memsim's MB/s over the preadv baseline's

DEFAULTS = {"block_sizes": "1,16", "concurrency": "1,4,8", "rounds": 9, "mib_per_run": 512,
            "data_mib": 256, "chunking": 16, "s3_reps": 9}
QUICK = {"block_sizes": "1,16", "concurrency": "1,4", "rounds": 3, "mib_per_run": 128,
         "data_mib": 128, "chunking": 16, "s3_reps": 3}

S3_BUCKET = "memsim"
S3_PREFIX = "bench-replay"
S3_DEPTH = 3  # the level read in part 2: 4 ** 3 = 64 blocks, 4 shards of 16
S3_BLOCKS_PER_SHARD = 16
S3_PATTERNS = {
    "blocks 0..3 of shard 0": [0, 1, 2, 3],
    "4 spread over shard 1": [16, 21, 26, 31],
}


# ----------------------------------------------------------------------------- the system


def kv_bank(name: str, block_bytes: int, branching: int, depth: int) -> memsim.Bank:
    """A bank whose only level, `depth`, holds branching ** depth blocks of `block_bytes`."""
    # A kv block of multiplier 1 is 2 * layers * heads * head_dim parameters, bf16.
    head_dim = block_bytes // 4
    levels = [0] * (depth - 1) + [1]
    bank = memsim.bank_from_dict(
        {"name": name, "branching": branching, "memory_type": "kv", "dtype": "bf16",
         "levels": levels,
         "anchor": {"name": f"{name}-anchor", "layers": 1, "d_model": 1, "d_ff": 1,
                    "heads": 1, "head_dim": head_dim}},
        file="<bench bank>")
    (level,) = bank.active_levels
    if level.depth != depth or level.block_bytes != block_bytes:
        raise SystemExit(f"bench setup: bank {name} has {level.block_bytes}-byte blocks at "
                         f"level {level.depth}, not {block_bytes} at {depth}")
    return bank


def local_bank(block_mib: int, data_mib: int) -> memsim.Bank:
    """One level of at most `data_mib` MiB (branching 4: 4 ** depth blocks, depth >= 1)."""
    depth = 1
    while 4 ** (depth + 1) * block_mib <= data_mib:
        depth += 1
    return kv_bank(f"bench-replay-{block_mib}m", block_mib * MIB, 4, depth)


def local_profile(root: Path, concurrency: int) -> memsim.Profile:
    return memsim.profile_from_dict(
        {"name": "bench-replay-local", "description": "a local directory as the disk tier",
         "tiers": [
             {"name": "ram", "kind": "ram", "capacity": "16 GB", "bandwidth": "10 GB/s",
              "latency": "100 ns", "concurrency": 8},
             {"name": "disk", "kind": "disk", "capacity": "unlimited", "bandwidth": "1 GB/s",
              "latency": "100 us", "concurrency": concurrency, "store": f"file://{root}"},
         ]},
        file="<bench profile>")


def one_level_layout(depth: int, tier: str, chunking: int) -> memsim.Layout:
    spec: dict[str, Any] = {"name": "bench-replay-layout", "placement": {depth: tier},
                            "fetch": "parallel"}
    if chunking:
        spec["chunking"] = {depth: chunking}
    return memsim.layout_from_dict(spec, file="<bench layout>")


def locate_all(profile: memsim.Profile, bank: memsim.Bank, layout: memsim.Layout
               ) -> list[Location]:
    """Where each block of the bank's one level is (through memsim's reader)."""
    (level,) = bank.active_levels
    stores = tier_stores(profile, [layout.placement[level.depth]], cold=True)
    try:
        reader = BankReader(profile, bank, layout, stores, check_rate=0.0).open()

        async def main() -> list[Location]:
            await reader.preload_indexes()
            return [await reader.locate(level.depth, b) for b in range(level.blocks)]

        return run_sync(main())
    finally:
        for store in stores.values():
            store.close()


# ----------------------------------------------------------------------------- part 1


def cpu_seconds() -> float:
    """User + system CPU of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class LocalBench:
    """One materialized bank in a local directory and the programs that read it."""

    def __init__(self, root: Path, block_mib: int, data_mib: int, chunking: int,
                 mib_per_run: int) -> None:
        self.bank = local_bank(block_mib, data_mib)
        (self.level,) = self.bank.active_levels
        self.block_mib = block_mib
        self.chunking = min(chunking, self.level.blocks) if chunking else 0
        self.layout = one_level_layout(self.level.depth, "disk", self.chunking)
        self.dir = root / f"blocks-{block_mib}m"
        start = time.perf_counter()
        materialize(local_profile(self.dir, 1), self.bank, self.layout)
        self.write_s = time.perf_counter() - start
        self.locs = locate_all(local_profile(self.dir, 1), self.bank, self.layout)
        self.reads = max(1, mib_per_run // block_mib)
        self._setup_cpu: dict[int, float] = {}

    def order(self, seed: int) -> list[Location]:
        """`reads` blocks, each block equally often, shuffled."""
        order = [self.locs[i % len(self.locs)] for i in range(self.reads)]
        random.Random(seed).shuffle(order)
        return order

    # Every program returns {"seconds", "bytes", "cpu_s"} for its timed part.
    def preadv(self, conc: int, seed: int) -> dict[str, Any]:
        """The baseline: `conc` threads, O_DIRECT os.preadv into page-aligned mmap buffers."""
        jobs: list[tuple[int, int, int, int]] = []  # (fd, aligned start, aligned length, bytes)
        fds: dict[str, int] = {}
        try:
            for loc in self.order(seed):
                if loc.key not in fds:
                    try:
                        fds[loc.key] = os.open(self.dir / loc.key, os.O_RDONLY | os.O_DIRECT)
                    except OSError as exc:
                        raise SystemExit(f"cannot open {self.dir / loc.key} with O_DIRECT "
                                         f"({exc}); pass --dir on a disk filesystem (not "
                                         "tmpfs)") from None
                (start, length), = loc.ranges
                lo = start - start % ALIGN
                hi = -(-(start + length) // ALIGN) * ALIGN
                jobs.append((fds[loc.key], lo, hi - lo, length))
            biggest = max(n for _fd, _lo, n, _b in jobs)
            buffers = [mmap.mmap(-1, biggest) for _ in range(conc)]
            counter = itertools.count()  # next() is atomic under the GIL
            done = [0] * conc
            errors: list[BaseException] = []

            def worker(k: int) -> None:
                view = memoryview(buffers[k])
                try:
                    while (i := next(counter)) < len(jobs):
                        fd, lo, n, nbytes = jobs[i]
                        got = 0
                        while got < n:
                            r = os.preadv(fd, [view[got:n]], lo + got)
                            if r == 0:
                                raise OSError(f"short read at {lo + got}")
                            got += r
                        done[k] += nbytes
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    errors.append(exc)
                finally:
                    view.release()

            threads = [threading.Thread(target=worker, args=(k,), name=f"preadv-{k}")
                       for k in range(conc)]
            cpu0, start = cpu_seconds(), time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
            for buf in buffers:
                buf.close()
            if errors:
                raise errors[0]
        finally:
            for fd in fds.values():
                os.close(fd)
        return {"seconds": seconds, "bytes": sum(done), "cpu_s": cpu}

    def replay(self, conc: int, seed: int) -> dict[str, Any]:
        """memsim.replay: `conc` channels on the tier, 2 * `conc` clients, no think time."""
        profile = local_profile(self.dir, conc)
        if conc not in self._setup_cpu:  # replay's untimed set-up, from a one-query run
            cpu0 = cpu_seconds()
            self._run_replay(profile, conc, seed, 1)
            self._setup_cpu[conc] = cpu_seconds() - cpu0
        cpu0 = cpu_seconds()
        result = self._run_replay(profile, conc, seed, self.reads)
        cpu = cpu_seconds() - cpu0 - self._setup_cpu[conc]
        tier = result.per_tier["disk"]
        return {"seconds": result.wall_s, "bytes": int(tier["bytes"]), "cpu_s": cpu,
                "read_mode": result.read_mode.get("disk"),
                "store_read_s": tier["time_s"], "slot_wait_s": tier["wait_s"],
                "fetch_s": result.fetch_time_s["mean"]}

    def _run_replay(self, profile: memsim.Profile, conc: int, seed: int,
                    queries: int) -> Any:
        workload = memsim.workload_from_dict(
            {"name": "bench-replay-closed",
             "arrivals": {"kind": "closed", "clients": 2 * conc, "think_time": "0 s"}},
            file="<bench workload>")
        result = replay(profile, self.bank, self.layout, workload, queries=queries, seed=seed,
                        warmup=0.0, cold=True, check_rate=0.0, preload_index=True)
        if result.bad_blocks:
            raise SystemExit(f"replay found bad blocks: {result.bad_blocks[0]}")
        return result

    def store(self, conc: int, seed: int) -> dict[str, Any]:
        """memsim's store alone: `conc` asyncio tasks awaiting read_range (thread pool)."""
        order = self.order(seed)
        stores = tier_stores(local_profile(self.dir, conc), ["disk"], cold=True)
        store = stores["disk"]
        counter = itertools.count()

        async def worker() -> int:
            nbytes = 0
            while (i := next(counter)) < len(order):
                loc = order[i]
                (start, length), = loc.ranges
                view = await store.read_range(loc.key, start, length)
                nbytes += len(view)
                store.release(view)  # type: ignore[attr-defined]
            return nbytes

        async def main() -> tuple[float, float, int]:
            cpu0, start = cpu_seconds(), time.perf_counter()
            done = await asyncio.gather(*(worker() for _ in range(conc)))
            return time.perf_counter() - start, cpu_seconds() - cpu0, sum(done)

        try:
            seconds, cpu, nbytes = asyncio.run(main())
        finally:
            store.close()
        return {"seconds": seconds, "bytes": nbytes, "cpu_s": cpu}

    def reader(self, conc: int, seed: int) -> dict[str, Any]:
        """memsim's BankReader: `conc` asyncio tasks doing locate + read_parts + release."""
        order = [loc.block for loc in self.order(seed)]
        profile = local_profile(self.dir, conc)
        stores = tier_stores(profile, ["disk"], cold=True)
        depth = self.level.depth
        counter = itertools.count()
        try:
            reader = BankReader(profile, self.bank, self.layout, stores, check_rate=0.0).open()

            async def worker() -> int:
                nbytes = 0
                while (i := next(counter)) < len(order):
                    loc = await reader.locate(depth, order[i])
                    parts = await reader.read_parts(loc)
                    nbytes += sum(len(p) for p in parts)
                    reader.release(loc, parts)
                return nbytes

            async def main() -> tuple[float, float, int]:
                await reader.preload_indexes()
                cpu0, start = cpu_seconds(), time.perf_counter()
                done = await asyncio.gather(*(worker() for _ in range(conc)))
                return time.perf_counter() - start, cpu_seconds() - cpu0, sum(done)

            seconds, cpu, nbytes = asyncio.run(main())
        finally:
            for store in stores.values():
                store.close()
        return {"seconds": seconds, "bytes": nbytes, "cpu_s": cpu}


PROGRAMS = {  # name -> (LocalBench method, label)
    "preadv": ("preadv", "O_DIRECT os.preadv threads (baseline)"),
    "memsim": ("replay", "memsim.replay, closed loop"),
    "store": ("store", "LocalByteStore.read_range from asyncio tasks"),
    "reader": ("reader", "BankReader locate + read_parts from asyncio tasks"),
}


def local_part(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    names = ["preadv", "memsim"] + (["store", "reader"] if args.breakdown else [])
    for block_mib in args.block_sizes:
        bench = LocalBench(root, block_mib, args.data_mib, args.chunking, args.mib_per_run)
        log(f"{block_mib} MiB blocks: {bench.level.blocks} blocks "
            f"({bench.level.bytes / MIB:,.0f} MiB, {bench.chunking or 1} per object) written "
            f"in {bench.write_s:.1f} s; {bench.reads} reads per run")
        for conc in args.concurrency:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for r in range(args.rounds):
                # Rotate the order within each round so that no program always goes first.
                for name in names[r % len(names):] + names[:r % len(names)]:
                    out = getattr(bench, PROGRAMS[name][0])(conc, SEED + r)
                    out["mb_s"] = out["bytes"] / out["seconds"] / MB
                    out["cpu_us_per_read"] = 1e6 * out["cpu_s"] / bench.reads
                    runs[name].append(out)
            row: dict[str, Any] = {"block_mib": block_mib,
                                   "blocks_per_shard": bench.chunking or None,
                                   "concurrency": conc, "reads": bench.reads}
            for name in names:
                row[name] = {
                    "mb_s": statistics.median(o["mb_s"] for o in runs[name]),
                    "cpu_us_per_read": statistics.median(o["cpu_us_per_read"]
                                                         for o in runs[name]),
                    "runs_mb_s": [o["mb_s"] for o in runs[name]],
                    # All bytes over all time: steadier than the median when runs are bimodal.
                    "overall_mb_s": sum(o["bytes"] for o in runs[name])
                    / sum(o["seconds"] for o in runs[name]) / MB,
                }
            mem = runs["memsim"]
            row["memsim"].update(
                read_mode=mem[-1]["read_mode"],
                # Per read, mean over the run: the store's read (thread-pool hop + preadv),
                # the whole fetch (locate, slot, read), and one client's cycle.
                store_read_us=1e6 * statistics.median(o["store_read_s"] for o in mem),
                slot_wait_us=1e6 * statistics.median(o["slot_wait_s"] for o in mem),
                fetch_us=1e6 * statistics.median(o["fetch_s"] for o in mem),
                cycle_us=1e6 * statistics.median(o["seconds"] * conc / bench.reads
                                                 for o in mem))
            row["preadv"]["cycle_us"] = 1e6 * statistics.median(
                o["seconds"] * conc / bench.reads for o in runs["preadv"])
            row["ratio"] = row["memsim"]["mb_s"] / row["preadv"]["mb_s"]
            row["overall_ratio"] = (row["memsim"]["overall_mb_s"]
                                    / row["preadv"]["overall_mb_s"])
            row["paired_ratios"] = [m["mb_s"] / b["mb_s"]
                                    for m, b in zip(mem, runs["preadv"], strict=True)]
            row["target_met"] = row["ratio"] >= TARGET_RATIO
            rows.append(row)
            log(f"  C={conc}: " + "; ".join(
                f"{name} {row[name]['mb_s']:,.0f} MB/s ({fmt_runs(row[name]['runs_mb_s'])})"
                for name in names) + f"; ratio {row['ratio']:.2f}")
        shutil.rmtree(bench.dir, ignore_errors=True)
    return rows


# ----------------------------------------------------------------------------- part 2


def s3_part(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from memsim.emulate import LocalS3
    except ImportError as exc:
        return {"skipped": f"memsim.emulate is not available ({exc})"}
    try:
        import zarr
        from obstore.store import S3Store
        from zarr.storage import ObjectStore
    except ImportError as exc:
        return {"skipped": f"zarr/obstore missing ({exc})"}

    block_bytes = args.s3_block_kib * 1024
    bank = kv_bank("bench-replay-s3", block_bytes, 4, S3_DEPTH)
    layout = one_level_layout(S3_DEPTH, "cloud", S3_BLOCKS_PER_SHARD)
    profile = memsim.profile_from_dict(
        {"name": "bench-replay-s3", "description": "an emulated S3 bucket as the cloud tier",
         "tiers": [
             {"name": "ram", "kind": "ram", "capacity": "16 GB", "bandwidth": "10 GB/s",
              "latency": "100 ns", "concurrency": 8},
             {"name": "cloud", "kind": "cloud", "capacity": "unlimited",
              "bandwidth": args.s3_bandwidth, "latency": f"{args.delay} s",
              "concurrency": 16, "store": f"s3://{S3_BUCKET}/{S3_PREFIX}"},
         ]},
        file="<bench profile>")
    saved = dict(os.environ)
    try:
        s3 = LocalS3(delay=0.0, bandwidth=None, buckets=(S3_BUCKET,))
    except Exception as exc:  # noqa: BLE001 - moto missing: InputError
        return {"skipped": f"cannot set up the S3 emulator ({exc})"}
    with s3:
        env = s3.env()
        os.environ.update(env)
        try:
            t0 = time.perf_counter()
            materialize(profile, bank, layout)
            written = time.perf_counter() - t0
            log(f"S3: {bank.active_levels[0].blocks} blocks of {args.s3_block_kib} KiB "
                f"written in {written:.1f} s through {s3.endpoint}")
            s3.proxy.configure(bandwidth=args.s3_bandwidth_bytes)
            zarr_array = zarr.open_array(
                ObjectStore(S3Store(
                    S3_BUCKET, prefix=S3_PREFIX, endpoint=s3.endpoint,
                    access_key_id=env["AWS_ACCESS_KEY_ID"],
                    secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_REGION"],
                    client_options={"allow_http": True}, virtual_hosted_style_request=False)),
                path=f"L{S3_DEPTH}", mode="r", zarr_format=3)
            stores = tier_stores(profile, ["cloud"], cold=True)
            try:
                reader = BankReader(profile, bank, layout, stores, check_rate=0.0).open()
                rows = [s3_pattern(args, s3, reader, zarr_array, name, blocks, block_bytes)
                        for name, blocks in S3_PATTERNS.items()]
            finally:
                for store in stores.values():
                    store.close()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return {"delay_s": args.delay, "bandwidth_bytes_s": args.s3_bandwidth_bytes,
            "block_bytes": block_bytes, "blocks_per_shard": S3_BLOCKS_PER_SHARD,
            "reps": args.s3_reps, "patterns": rows}


def s3_pattern(args: argparse.Namespace, s3: Any, reader: BankReader, zarr_array: Any,
               name: str, blocks: list[int], block_bytes: int) -> dict[str, Any]:
    """Median times of memsim's and zarr-python's reads of `blocks` (rows = block ids), with
    no delay (what the emulator itself takes) and with the delay."""
    depth = S3_DEPTH
    proxy = s3.proxy

    async def memsim_reads() -> tuple[list[float], list[int], bytes]:
        await reader.preload_indexes()  # at start-up, untimed (a no-op once cached)
        locs = [await reader.locate(depth, b) for b in blocks]
        parts = await asyncio.gather(*(reader.read_parts(loc) for loc in locs))  # warm-up
        data = b"".join(bytes(p) for ps in parts for p in ps)
        times, requests = [], []
        for _ in range(args.s3_reps):
            proxy.clear_log()
            t0 = time.perf_counter()
            await asyncio.gather(*(reader.read_parts(loc) for loc in locs))
            times.append(time.perf_counter() - t0)
            requests.append(len(proxy.requests))
        return times, requests, data

    def zarr_read() -> Any:
        if blocks == list(range(blocks[0], blocks[0] + len(blocks))):
            return zarr_array[blocks[0]:blocks[0] + len(blocks)]
        return zarr_array.oindex[blocks, :]

    def zarr_reads() -> tuple[list[float], list[int], bytes]:
        data = zarr_read().tobytes()  # warm-up
        times, requests = [], []
        for _ in range(args.s3_reps):
            proxy.clear_log()
            t0 = time.perf_counter()
            zarr_read()
            times.append(time.perf_counter() - t0)
            requests.append(len(proxy.requests))
        return times, requests, data

    out: dict[str, Any] = {}
    for label, delay in (("no_delay", 0.0), ("delay", args.delay)):
        proxy.configure(delay=delay)
        out[label] = {"memsim": asyncio.run(memsim_reads()), "zarr": zarr_reads()}
    nbytes = len(blocks) * block_bytes
    rtt = 2 * args.delay
    transfer = nbytes / args.s3_bandwidth_bytes
    med = {(label, prog): statistics.median(out[label][prog][0])
           for label in out for prog in ("memsim", "zarr")}
    mem, zr = med["delay", "memsim"], med["delay", "zarr"]
    row = {"pattern": name, "blocks": blocks, "bytes": nbytes,
           "memsim_s": mem, "zarr_s": zr,
           "memsim_no_delay_s": med["no_delay", "memsim"],
           "zarr_no_delay_s": med["no_delay", "zarr"],
           "ideal_s": rtt + transfer, "serial_model_s": (1 + len(blocks)) * rtt + transfer,
           # What the delay added, in round trips: the emulator's own time (moto serves
           # requests almost one at a time) cancels out.
           "memsim_round_trips": (mem - med["no_delay", "memsim"]) / rtt,
           "zarr_round_trips": (zr - med["no_delay", "zarr"]) / rtt,
           "memsim_runs_s": out["delay"]["memsim"][0], "zarr_runs_s": out["delay"]["zarr"][0],
           "memsim_requests_per_read": statistics.median(out["delay"]["memsim"][1]),
           "zarr_requests_per_read": statistics.median(out["delay"]["zarr"][1]),
           "same_bytes": out["delay"]["memsim"][2] == out["delay"]["zarr"][2]}
    row["target_met"] = row["memsim_round_trips"] < 1.5
    log(f"  {name}: memsim {fmt_ms(mem)} ({fmt_ms(row['memsim_no_delay_s'])} without delay, "
        f"{row['memsim_requests_per_read']:g} requests), zarr-python {fmt_ms(zr)} "
        f"({fmt_ms(row['zarr_no_delay_s'])}, {row['zarr_requests_per_read']:g} requests), "
        f"ideal {fmt_ms(rtt + transfer)}")
    return row


# ----------------------------------------------------------------------------- output


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fmt_ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f} ms"


def fmt_runs(values: Sequence[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers like 1,4,8, got {text!r}"
                                         ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


def print_report(report: dict[str, Any]) -> None:
    local, cloud = report["local"], report["s3"]
    print(f"memsim {report['memsim']} replay benchmark (Python {report['python']}, "
          f"{report['cpus']} CPUs)")
    if local is not None:
        print()
        print(f"part 1: local reads, memsim.replay vs O_DIRECT os.preadv of the same ranges at "
              f"the same concurrency C, median of {report['rounds']} alternating round(s)")
        print(f"{'block':>7}{'shard':>6}{'C':>3}{'reads':>6}{'preadv MB/s':>12}"
              f"{'memsim MB/s':>12}{'ratio':>7}{'paired':>8}{'overall':>8}{'CPU us/read':>15}"
              "  mode")
        for row in local:
            shard = row["blocks_per_shard"] or "-"
            pre, mem = row["preadv"], row["memsim"]
            cpu = f"{pre['cpu_us_per_read']:.0f} / {mem['cpu_us_per_read']:.0f}"
            print(f"{row['block_mib']:>4} MiB{shard!s:>6}{row['concurrency']:>3}"
                  f"{row['reads']:>6}{pre['mb_s']:>12,.0f}{mem['mb_s']:>12,.0f}"
                  f"{row['ratio']:>7.2f}{statistics.median(row['paired_ratios']):>8.2f}"
                  f"{row['overall_ratio']:>8.2f}{cpu:>15}  {mem['read_mode']}")
        print("(MB/s and ratio: medians over rounds; paired: median of the per-round ratios; "
              "overall: all bytes over all time; CPU: process CPU per read, preadv / memsim, "
              "replay's untimed set-up left out)")
        print()
        print("per read, in microseconds (means over a run, medians over rounds): one client's "
              "cycle, and within memsim's the fetch (locate + slot + read) and the store read "
              "(thread-pool hop + preadv)")
        print(f"{'block':>7}{'C':>3}{'preadv cycle':>14}{'memsim cycle':>14}{'fetch':>9}"
              f"{'store read':>12}{'slot wait':>11}")
        for row in local:
            pre, mem = row["preadv"], row["memsim"]
            print(f"{row['block_mib']:>4} MiB{row['concurrency']:>3}{pre['cycle_us']:>14,.0f}"
                  f"{mem['cycle_us']:>14,.0f}{mem['fetch_us']:>9,.0f}"
                  f"{mem['store_read_us']:>12,.0f}{mem['slot_wait_us']:>11,.0f}")
        if "store" in local[0]:
            print()
            print("breakdown (--breakdown), MB/s and CPU us per read, same reads:")
            for name in ("preadv", "store", "reader", "memsim"):
                print(f"  {name:<7} {PROGRAMS[name][1]}")
            print(f"{'block':>7}{'C':>3}" + "".join(f"{name:>18}" for name in
                                                 ("preadv", "store", "reader", "memsim")))
            for row in local:
                cells = "".join(f"{row[n]['mb_s']:>9,.0f} ({row[n]['cpu_us_per_read']:>4.0f} us)"
                                for n in ("preadv", "store", "reader", "memsim"))
                print(f"{row['block_mib']:>4} MiB{row['concurrency']:>3}{cells}")
    if cloud is not None:
        print()
        if "skipped" in cloud:
            print(f"part 2 skipped: {cloud['skipped']}")
        else:
            print(f"part 2: 4 blocks of {cloud['block_bytes'] // 1024} KiB from one shard of "
                  f"{cloud['blocks_per_shard']}, emulated S3 at {1e3 * cloud['delay_s']:g} ms "
                  f"one-way, {cloud['bandwidth_bytes_s'] / MB:g} MB/s per connection, median of "
                  f"{cloud['reps']}")
            print(f"{'pattern':<24}{'memsim':>10}{'zarr':>10}{'ideal':>10}{'1+k RTs':>10}"
                  f"{'no delay memsim/zarr':>23}{'RTs added memsim/zarr':>24}"
                  f"{'GETs memsim/zarr':>18}")
            for row in cloud["patterns"]:
                no_delay = (f"{fmt_ms(row['memsim_no_delay_s'])} / "
                            f"{fmt_ms(row['zarr_no_delay_s'])}")
                added = f"{row['memsim_round_trips']:.2f} / {row['zarr_round_trips']:.2f}"
                gets = (f"{row['memsim_requests_per_read']:g} / "
                        f"{row['zarr_requests_per_read']:g}")
                print(f"{row['pattern']:<24}{fmt_ms(row['memsim_s']):>10}"
                      f"{fmt_ms(row['zarr_s']):>10}{fmt_ms(row['ideal_s']):>10}"
                      f"{fmt_ms(row['serial_model_s']):>10}{no_delay:>23}{added:>24}{gets:>18}")
            print("(ideal: 2 * delay + bytes / bandwidth; 1+k RTs: an index read, then the k "
                  "ranges one after another; no delay: the same reads with the proxy's delay "
                  "at 0, i.e. the emulator's own time (moto serves requests almost one at a "
                  "time); RTs added: (time - no-delay time) / (2 * delay))")
            same = all(row["same_bytes"] for row in cloud["patterns"])
            print(f"memsim and zarr-python read the same bytes: {'yes' if same else 'NO'}")
    print()
    if local is not None:
        for row in local:
            verdict = "PASS" if row["target_met"] else "FAIL"
            print(f"{verdict}: {row['block_mib']} MiB blocks, C={row['concurrency']}: memsim "
                  f"{row['memsim']['mb_s']:,.0f} MB/s = {row['ratio']:.3f}x preadv "
                  f"({row['preadv']['mb_s']:,.0f} MB/s; overall {row['overall_ratio']:.2f}x); "
                  f"ratio >= {TARGET_RATIO}: {'yes' if row['target_met'] else 'no'}")
    if cloud is not None and "skipped" not in cloud:
        for row in cloud["patterns"]:
            verdict = "PASS" if row["target_met"] else "FAIL"
            print(f"{verdict}: S3 {row['pattern']}: memsim {fmt_ms(row['memsim_s'])}, "
                  f"{row['memsim_round_trips']:.2f} round trips added by the delay (zarr-python "
                  f"{fmt_ms(row['zarr_s'])}, {row['zarr_round_trips']:.2f}; ideal "
                  f"{fmt_ms(row['ideal_s'])}); about one round trip (< 1.5): "
                  f"{'yes' if row['target_met'] else 'no'}")
    print(f"note: wall-clock timings on a possibly shared machine ({report['cpus']} CPUs); "
          f"load average (1, 5, 15 min) before {format_load(report['load_average_before'])}, "
          f"after {format_load(report['load_average_after'])}")


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a quick look: " + ", ".join(
                            f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()))
    parser.add_argument("--block-sizes", type=int_list, default=None,
                        help=f"block sizes in MiB (default {DEFAULTS['block_sizes']})")
    parser.add_argument("--concurrency", type=int_list, default=None,
                        help=f"reads in flight (default {DEFAULTS['concurrency']})")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"alternating rounds, median kept (default {DEFAULTS['rounds']})")
    parser.add_argument("--mib-per-run", type=int, default=None,
                        help=f"MiB read per timed run (default {DEFAULTS['mib_per_run']})")
    parser.add_argument("--data-mib", type=int, default=None,
                        help=f"size of each local bank in MiB (default {DEFAULTS['data_mib']})")
    parser.add_argument("--chunking", type=int, default=None,
                        help="blocks per shard in part 1, 0 for one object per block "
                             f"(default {DEFAULTS['chunking']})")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to write the local banks (default: a temporary directory)")
    parser.add_argument("--s3-reps", type=int, default=None,
                        help=f"timed reads per pattern in part 2 (default {DEFAULTS['s3_reps']})")
    parser.add_argument("--delay", type=float, default=0.02,
                        help="one-way delay of the S3 proxy in seconds (default 0.02)")
    parser.add_argument("--s3-bandwidth", default="100 MB/s",
                        help="per-connection bandwidth of the S3 proxy (default '100 MB/s')")
    parser.add_argument("--s3-block-kib", type=int, default=64,
                        help="block size in KiB in part 2 (default 64)")
    parser.add_argument("--breakdown", action="store_true",
                        help="in part 1 also time memsim's store and reader alone (where the "
                             "time goes)")
    parser.add_argument("--skip-local", action="store_true", help="skip part 1")
    parser.add_argument("--skip-s3", action="store_true", help="skip part 2")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, int_list(value) if key in ("block_sizes", "concurrency")
                    else value)
    if args.rounds < 1 or args.mib_per_run < 1 or args.data_mib < 1 or args.s3_reps < 1:
        parser.error("--rounds, --mib-per-run, --data-mib and --s3-reps must be at least 1")
    if args.chunking < 0 or args.delay <= 0 or args.s3_block_kib < 4 or args.s3_block_kib % 4:
        parser.error("--chunking must be >= 0, --delay > 0, --s3-block-kib a multiple of 4")
    if max(args.block_sizes) > args.data_mib:
        parser.error("--data-mib must hold at least one block of each size")
    try:
        args.s3_bandwidth_bytes = memsim.parse_rate(args.s3_bandwidth)
    except Exception as exc:  # noqa: BLE001 - a UnitError
        parser.error(f"--s3-bandwidth: {exc}")

    load_before = load_average()
    local = cloud = None
    if not args.skip_local:
        root = Path(tempfile.mkdtemp(prefix="memsim-bench-replay-", dir=args.dir))
        try:
            local = local_part(args, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if not args.skip_s3:
        cloud = s3_part(args)
    report = {"local": local, "s3": cloud, "rounds": args.rounds, "target_ratio": TARGET_RATIO,
              "load_average_before": load_before, "load_average_after": load_average(),
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "memsim": memsim.__version__}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
