"""Benchmark the client's read path (`memsim.open_bank`) against raw reads of the same blocks.

Issue 14's target: the client's throughput for the same blocks is at least 0.9x raw
`os.preadv` (local tier) and raw obstore `get_ranges` (S3 tier), at 1 MiB and 16 MiB blocks,
concurrency 1 to 8, measured in one run.

Local part. For each block size (--block-sizes, MiB) a one-level bank of about --data-mib MiB
is materialized into a temporary directory (removed at the end; --dir to choose where: it must
accept O_DIRECT). For each concurrency C (--concurrency) these programs read --mib-per-run MiB
of blocks, each block equally often in a shuffled order (the same order for all programs):

* `preadv`: C threads, each with its own preallocated private mmap buffer, starting on a
  2 MiB boundary and advised MADV_HUGEPAGE, its pages mapped before timing (transparent huge
  pages, as the client's pooled read buffers are: an O_DIRECT read into physically contiguous
  memory costs the kernel and the virtual disk far less than into scattered 4 KiB pages;
  `preadv_4k`, printed for information, is the same with 4 KiB pages), `os.preadv`
  on O_DIRECT descriptors opened beforehand, of the very ranges the client reads (found with
  `BankReader.locate`, widened to 4 KiB pages as the client widens them);
* `fetch`: C threads calling `ServedBank.fetch([block])` on one bank opened cold (O_DIRECT, the
  client's default), the disk tier's concurrency at 8 (so C callers never wait for a channel);
* `afetch`: C asyncio tasks awaiting `ServedBank.afetch([block])` on one event loop.

S3 part (--skip-s3 to leave out). The same block sizes, a smaller bank (--s3-data-mib) in the
emulated cloud (`memsim.emulate.LocalS3Process`: moto and its proxy in a child process, no
added delay, so their CPU is not this process's): `get_ranges` is C asyncio tasks calling
`obstore.get_ranges_async` on an `S3Store` configured as the client's, one range per block
(the block's byte range in its shard); `afetch` and `fetch` as above, on the S3 tier. moto
serves requests nearly one at a time: this compares the client with raw obstore on the same
server, not S3's scaling.

The client runs with `check=False` by default (the raw programs check nothing); `--check`
turns CRC32C checks on (every block) to see what they cost. Programs alternate for --rounds
rounds (order rotating) and medians are compared. Printed per row: blocks/s, MiB/s, process CPU
per MiB (time.process_time, every thread of this process) beside wall time per MiB, the ratio
against the raw baseline of the same run, and PASS/MISS against 0.9x; the load average before
and after. Nothing asserts; `--strict` exits 2 when a row misses. Progress goes to stderr.

    python benchmarks/bench_client.py [--quick] [--block-sizes 1,16] [--concurrency 1,2,4,8]
                                      [--rounds R] [--mib-per-run M] [--data-mib D]
                                      [--s3-mib-per-run M] [--s3-data-mib D] [--chunking K]
                                      [--dir DIR] [--check] [--skip-s3] [--json] [--strict]
"""

from __future__ import annotations

# First: _common sets one-thread numeric pools before numpy is imported.
from _common import format_load, load_average

# isort: split

import argparse  # noqa: E402
import asyncio  # noqa: E402
import ctypes  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import mmap  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import memsim  # noqa: E402
from memsim.aio import run_sync  # noqa: E402
from memsim.materialize import materialize  # noqa: E402
from memsim.replay.reader import BankReader, Location  # noqa: E402
from memsim.stores import tier_stores  # noqa: E402

ALIGN = 4096
HUGE_PAGE = 2 << 20  # a transparent huge page
MIB = 1 << 20
SEED = 20261202
TARGET = 0.9
BUCKET = "memsim"
PREFIX = "bench-client"
TIER_CONCURRENCY = 8  # the tier's channels: never fewer than the callers measured

DEFAULTS = {"block_sizes": "1,16", "concurrency": "1,2,4,8", "rounds": 5, "mib_per_run": 512,
            "data_mib": 128, "s3_mib_per_run": 64, "s3_data_mib": 64, "chunking": 16}
QUICK = {"block_sizes": "1,16", "concurrency": "1,2,4,8", "rounds": 1, "mib_per_run": 96,
         "data_mib": 64, "s3_mib_per_run": 32, "s3_data_mib": 32, "chunking": 16}

Result = dict[str, float]  # seconds, cpu_s, bytes, blocks


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the system


def one_level_bank(name: str, block_mib: int, data_mib: int) -> memsim.Bank:
    """A bank whose one level (depth 1) holds about data_mib / block_mib blocks of block_mib
    MiB (bf16 kv blocks: 2 * head_dim parameters of 2 bytes)."""
    branching = max(2, data_mib // block_mib)
    bank = memsim.bank_from_dict(
        {"name": name, "branching": branching, "memory_type": "kv", "dtype": "bf16",
         "levels": [1],
         "anchor": {"name": f"{name}-anchor", "layers": 1, "d_model": 1, "d_ff": 1,
                    "heads": 1, "head_dim": block_mib * MIB // 4}},
        file="<bench bank>")
    (level,) = bank.active_levels
    if level.block_bytes != block_mib * MIB:
        raise SystemExit(f"bench setup: {level.block_bytes}-byte blocks, not {block_mib} MiB")
    return bank


def profile_for(tier: str, store: str) -> memsim.Profile:
    kind = "disk" if tier == "disk" else "cloud"
    return memsim.profile_from_dict(
        {"name": f"bench-client-{tier}", "tiers": [
            {"name": "ram", "kind": "ram", "capacity": "16 GB", "bandwidth": "10 GB/s",
             "latency": "100 ns", "concurrency": 8},
            {"name": tier, "kind": kind, "capacity": "unlimited", "bandwidth": "1 GB/s",
             "latency": "100 us", "concurrency": TIER_CONCURRENCY, "store": store}]},
        file="<bench profile>")


def layout_for(tier: str, chunking: int) -> memsim.Layout:
    spec: dict[str, Any] = {"name": "bench-client-layout", "placement": {1: tier},
                            "fetch": "parallel"}
    if chunking:
        spec["chunking"] = {1: chunking}
    return memsim.layout_from_dict(spec, file="<bench layout>")


def locate_all(profile: memsim.Profile, bank: memsim.Bank, layout: memsim.Layout,
               tier: str) -> list[Location]:
    """Where each block is, through memsim's own reader (the ranges the client reads)."""
    stores = tier_stores(profile, [tier], cold=True)
    try:
        reader = BankReader(profile, bank, layout, stores, check_rate=0.0).open()

        async def main() -> list[Location]:
            await reader.preload_indexes()
            return [await reader.locate(1, b) for b in range(bank.active_levels[0].blocks)]

        return run_sync(main())
    finally:
        for store in stores.values():
            store.close()


def timed(run: Callable[[], tuple[int, int]]) -> Result:
    """Wall and process CPU of `run()` (which returns bytes, blocks)."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    nbytes, blocks = run()
    return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
            "bytes": nbytes, "blocks": blocks}


def threaded(conc: int, n: int, body: Callable[[int, int], int]) -> tuple[int, int]:
    """`conc` threads taking jobs 0..n-1 from a shared counter; body(thread, job) -> bytes."""
    counter = itertools.count()
    done = [0] * conc
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            while (i := next(counter)) < n:
                done[k] += body(k, i)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(done), n


async def tasks(conc: int, n: int, body: Callable[[int], Any]) -> tuple[int, int]:
    """`conc` asyncio tasks taking jobs 0..n-1; await body(job) -> bytes."""
    counter = itertools.count()

    async def worker() -> int:
        got = 0
        while (i := next(counter)) < n:
            got += await body(i)
        return got

    return sum(await asyncio.gather(*(worker() for _ in range(conc)))), n


class Bench:
    """One materialized one-level bank on one tier, and the programs that read it."""

    def __init__(self, tier: str, store: str, block_mib: int, data_mib: int, chunking: int,
                 mib_per_run: int, check: bool, env: dict[str, str] | None = None) -> None:
        self.tier, self.block_mib, self.check = tier, block_mib, check
        self.bank = one_level_bank(f"bench-client-{tier}-{block_mib}m", block_mib, data_mib)
        blocks = self.bank.active_levels[0].blocks
        self.layout = layout_for(tier, min(chunking, blocks) if chunking else 0)
        self.profile = profile_for(tier, store)
        self.env = env or {}
        t0 = time.perf_counter()
        materialize(self.profile, self.bank, self.layout)
        log(f"{tier}: {blocks} blocks of {block_mib} MiB written in "
            f"{time.perf_counter() - t0:.1f} s")
        self.locs = locate_all(self.profile, self.bank, self.layout, tier)
        self.reads = max(8, mib_per_run // block_mib)
        self.served = memsim.open_bank(self.layout, profile=self.profile, bank=self.bank,
                                       check=check, cache=None, resident=[], cold=True)
        mode = getattr(self.served.stores[tier], "mode", None)
        self.read_mode = mode if isinstance(mode, str) else tier

    def close(self) -> None:
        self.served.close()

    def order(self, seed: int) -> list[Location]:
        order = [self.locs[i % len(self.locs)] for i in range(self.reads)]
        random.Random(seed).shuffle(order)
        return order

    # --- local programs
    def preadv(self, conc: int, seed: int, huge: bool = True) -> Result:
        """Raw O_DIRECT os.preadv into preallocated page-aligned buffers, one per thread
        (`huge`: on a 2 MiB boundary and advised to be transparent huge pages, as the
        client's pooled buffers are; an O_DIRECT read then pins a few contiguous pages)."""
        root = Path(self.profile.tier(self.tier).store[len("file://"):])
        fds: dict[str, int] = {}
        jobs: list[tuple[int, int, int, int]] = []
        try:
            for loc in self.order(seed):
                if loc.key not in fds:
                    fds[loc.key] = os.open(root / loc.key, os.O_RDONLY | os.O_DIRECT)
                (start, length), = loc.ranges
                lo = start - start % ALIGN
                hi = -(-(start + length) // ALIGN) * ALIGN
                jobs.append((fds[loc.key], lo, hi - lo, length))
            biggest = max(j[2] for j in jobs)
            # private: an anonymous mmap is shared by default, and shared memory gets no THP
            # whole huge pages (one more: where a mapping starts is the kernel's choice)
            span = -(-biggest // HUGE_PAGE) * HUGE_PAGE + HUGE_PAGE
            buffers = [mmap.mmap(-1, span, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
                       for _ in range(conc)]
            views = []
            for b in buffers:
                if huge and hasattr(mmap, "MADV_HUGEPAGE"):
                    b.madvise(mmap.MADV_HUGEPAGE)
                whole = memoryview(b)
                pad = -ctypes.addressof(ctypes.c_char.from_buffer(b)) % HUGE_PAGE if huge \
                    else 0
                views.append(whole[pad:pad + biggest])
                whole.release()
                # pages mapped before timing, as a server's buffers would be
                views[-1][:] = bytes(biggest)

            def body(k: int, i: int) -> int:
                fd, lo, n, nbytes = jobs[i]
                view, got = views[k], 0
                while got < n:
                    r = os.preadv(fd, [view[got:n]], lo + got)
                    if r == 0:
                        raise OSError(f"short read at {lo + got}")
                    got += r
                return nbytes

            result = timed(lambda: threaded(conc, len(jobs), body))
            for v in views:
                v.release()
            for b in buffers:
                b.close()
            return result
        finally:
            for fd in fds.values():
                os.close(fd)

    def preadv_4k(self, conc: int, seed: int) -> Result:
        """`preadv` into buffers of 4 KiB pages (informational: not a baseline)."""
        return self.preadv(conc, seed, huge=False)

    def fetch(self, conc: int, seed: int) -> Result:
        """The client's sync fetch from `conc` threads."""
        ids = [loc.block for loc in self.order(seed)]
        served = self.served

        def body(_k: int, i: int) -> int:
            return served.fetch([ids[i]])[1].nbytes

        return timed(lambda: threaded(conc, len(ids), body))

    def afetch(self, conc: int, seed: int) -> Result:
        """The client's afetch from `conc` asyncio tasks on one loop."""
        ids = [loc.block for loc in self.order(seed)]
        served = self.served

        async def body(i: int) -> int:
            return (await served.afetch([ids[i]]))[1].nbytes

        return timed(lambda: asyncio.run(tasks(conc, len(ids), body)))

    # --- S3 programs
    def get_ranges(self, conc: int, seed: int) -> Result:
        """Raw obstore get_ranges_async (one range per block) from `conc` tasks."""
        import obstore
        from obstore.store import S3Store

        env = self.env
        store = S3Store(BUCKET, prefix=f"{PREFIX}-{self.block_mib}m", config={
            "region": env["AWS_REGION"], "virtual_hosted_style_request": False,
            "endpoint": env["AWS_ENDPOINT_URL"], "access_key_id": env["AWS_ACCESS_KEY_ID"],
            "secret_access_key": env["AWS_SECRET_ACCESS_KEY"]},
            client_options={"allow_http": True}, retry_config={"max_retries": 0})
        order = self.order(seed)
        sem = asyncio.Semaphore(conc)

        async def body(i: int) -> int:
            loc = order[i]
            (start, length), = loc.ranges
            async with sem:
                got = await obstore.get_ranges_async(store, loc.key, starts=[start],
                                                     lengths=[length])
            return len(memoryview(got[0]))

        async def warm() -> None:  # connections opened before timing, as the client's are
            await asyncio.gather(*(body(i % len(order)) for i in range(conc)))

        asyncio.run(warm())
        return timed(lambda: asyncio.run(tasks(conc, len(order), body)))


LOCAL_PROGRAMS = ("preadv", "preadv_4k", "fetch", "afetch")
INFO = {"preadv_4k"}  # printed with a ratio, but no verdict
S3_PROGRAMS = ("get_ranges", "afetch", "fetch")


def measure(bench: Bench, programs: Sequence[str], concs: Sequence[int], rounds: int
            ) -> list[dict[str, Any]]:
    """Rows: one per (concurrency, program), medians over rounds, ratio to programs[0]."""
    rows = []
    for prog in programs:  # untimed: caches below us (the virtual disk's host) in one state
        getattr(bench, prog)(concs[0], SEED - 1)
    for conc in concs:
        runs: dict[str, list[Result]] = {p: [] for p in programs}
        for r in range(rounds):
            turn = list(programs[r % len(programs):]) + list(programs[:r % len(programs)])
            for prog in turn:
                runs[prog].append(getattr(bench, prog)(conc, SEED + r))
        base = None
        for prog in programs:
            rs = runs[prog]
            mibs = statistics.median(x["bytes"] / MIB / x["seconds"] for x in rs)
            bps = statistics.median(x["blocks"] / x["seconds"] for x in rs)
            cpu = statistics.median(x["cpu_s"] / (x["bytes"] / MIB) for x in rs)
            wall = statistics.median(x["seconds"] / (x["bytes"] / MIB) for x in rs)
            if base is None:
                base = mibs
            rows.append({"tier": bench.tier, "mode": bench.read_mode,
                         "block_mib": bench.block_mib, "concurrency": conc, "program": prog,
                         "blocks_s": bps, "mib_s": mibs, "cpu_ms_per_mib": cpu * 1e3,
                         "wall_ms_per_mib": wall * 1e3, "ratio": mibs / base,
                         "baseline": programs[0], "rounds": rounds,
                         "runs_mib_s": [x["bytes"] / MIB / x["seconds"] for x in rs]})
        log(f"  {bench.tier} {bench.block_mib} MiB C={conc}: " + ", ".join(
            f"{r['program']} {r['mib_s']:.0f} MiB/s" for r in rows[-len(programs):]))
    return rows


def local_part(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for mib in args.block_sizes:
        bench = Bench("disk", f"file://{root / f'disk-{mib}m'}", mib, args.data_mib,
                      args.chunking, args.mib_per_run, args.check)
        try:
            if bench.read_mode != "o_direct":
                log(f"warning: the client reads in mode {bench.read_mode}, not o_direct: the "
                    "preadv baseline's O_DIRECT reads are not the same kind of read")
            rows += measure(bench, LOCAL_PROGRAMS, args.concurrency, args.rounds)
        finally:
            bench.close()
        shutil.rmtree(root / f"disk-{mib}m", ignore_errors=True)
    return rows


def s3_part(args: argparse.Namespace) -> list[dict[str, Any]] | str:
    try:
        import obstore  # noqa: F401

        from memsim.emulate import LocalS3Process
    except ImportError as exc:
        return f"skipped: {exc}"
    saved = dict(os.environ)
    rows: list[dict[str, Any]] = []
    try:
        emulator = LocalS3Process(delay=0.0, bandwidth=None, buckets=(BUCKET,)).start()
    except Exception as exc:  # noqa: BLE001 - moto missing: an InputError
        return f"skipped: cannot start the S3 emulator ({exc})"
    try:
        env = emulator.env()
        os.environ.update(env)
        for mib in args.block_sizes:
            bench = Bench("cloud", f"s3://{BUCKET}/{PREFIX}-{mib}m", mib, args.s3_data_mib,
                          args.chunking, args.s3_mib_per_run, args.check, env)
            try:
                rows += measure(bench, S3_PROGRAMS, args.concurrency, args.rounds)
            finally:
                bench.close()
    finally:
        emulator.stop()
        os.environ.clear()
        os.environ.update(saved)
    return rows


# ----------------------------------------------------------------------------- report


def missed(row: dict[str, Any]) -> bool:
    """A client row below the target against its baseline."""
    return row["program"] != row["baseline"] and row["program"] not in INFO \
        and row["ratio"] < TARGET


def print_report(report: dict[str, Any]) -> None:
    print(f"bench_client: client reads vs raw reads of the same blocks, one run "
          f"(check={'on' if report['check'] else 'off'}, {report['rounds']} round(s), "
          f"target >= {TARGET}x)")
    print(f"load average before: {format_load(report['load_before'])}")
    head = (f"{'tier':<6} {'mode':<9} {'block':>6} {'C':>2} {'program':<11} {'blocks/s':>9} "
            f"{'MiB/s':>8} {'cpu ms/MiB':>10} {'wall ms/MiB':>11} {'ratio':>6}  verdict")
    print(head)
    print("-" * len(head))
    for r in report["rows"]:
        base = r["program"] == r["baseline"]
        verdict = "(baseline)" if base else "(info)" if r["program"] in INFO else \
            f"{'PASS' if r['ratio'] >= TARGET else 'MISS'} vs {r['baseline']}"
        print(f"{r['tier']:<6} {r['mode']:<9} {r['block_mib']:>4}Mi {r['concurrency']:>2} "
              f"{r['program']:<11} {r['blocks_s']:>9.1f} {r['mib_s']:>8.1f} "
              f"{r['cpu_ms_per_mib']:>10.3f} {r['wall_ms_per_mib']:>11.3f} "
              f"{r['ratio']:>6.2f}  {verdict}")
    if isinstance(report.get("s3"), str):
        print(f"S3 part {report['s3']}")
    misses = [r for r in report["rows"] if missed(r)]
    print(f"load average after: {format_load(report['load_after'])}")
    print(f"{len(misses)} row(s) miss the {TARGET}x target" if misses else
          f"every row meets the {TARGET}x target")


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise SystemExit(f"expected positive integers, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--block-sizes")
    parser.add_argument("--concurrency")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--mib-per-run", type=int)
    parser.add_argument("--data-mib", type=int)
    parser.add_argument("--s3-mib-per-run", type=int)
    parser.add_argument("--s3-data-mib", type=int)
    parser.add_argument("--chunking", type=int)
    parser.add_argument("--dir", help="where the local banks go (default: a temp dir)")
    parser.add_argument("--check", action="store_true", help="client checks CRC32C")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a row misses")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.block_sizes = int_list(args.block_sizes)
    args.concurrency = int_list(args.concurrency)
    if max(args.concurrency) > TIER_CONCURRENCY:
        raise SystemExit(f"concurrency above {TIER_CONCURRENCY} (the tier's channels)")

    report: dict[str, Any] = {"check": args.check, "rounds": args.rounds,
                              "load_before": load_average(), "rows": []}
    root = Path(tempfile.mkdtemp(prefix="bench-client-", dir=args.dir))
    try:
        if not args.skip_local:
            report["rows"] += local_part(args, root)
        if not args.skip_s3:
            s3 = s3_part(args)
            if isinstance(s3, str):
                report["s3"] = s3
            else:
                report["rows"] += s3
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["load_after"] = load_average()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 2 if args.strict and any(missed(r) for r in report["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
