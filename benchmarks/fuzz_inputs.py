"""Run the generated-input fuzzer (tests/test_fuzz.py) at full size and count failures by class.

Each input (mutated profile, bank, layout, workload YAML, Parquet trace and command options)
runs in-process through click's CliRunner within --timeout seconds, inside worker processes
that the parent kills and restarts if one gets stuck in C code past the bound. Printed: how
many inputs ran, exit codes, and per class (traceback, exit 70, hang, leak, multi-line
message, message without a location) the count and up to --show reproducers.

    python benchmarks/fuzz_inputs.py [--inputs 2000] [--workers 2] [--timeout 10] [--seed 0]
                                     [--small] [--show 3] [--json]
"""

from __future__ import annotations

# First: _common sets one-thread numeric pools before numpy is imported.
from _common import format_load, load_average

# isort: split

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def worker(first: int, last: int, seed: int, timeout: float, full: bool, out: Path) -> None:
    """Run inputs first..last-1, appending one JSON line per input to `out` (flushed before
    each input starts, so a parent that kills this process knows which input hung)."""
    import test_fuzz as fz

    invoke = fz._invoker()
    with out.open("a") as log:
        for index in range(first, last):
            log.write(json.dumps({"start": index}) + "\n")
            log.flush()
            case = fz.make_case(random.Random(seed * 1_000_003 + index), full=full)
            with tempfile.TemporaryDirectory(prefix="memsim-fuzz-") as folder:
                started = time.perf_counter()
                outcome = fz.run_case(case, Path(folder), invoke, timeout)
                problems = outcome.problems(folder)
            log.write(json.dumps({
                "index": index, "kind": case.kind, "code": outcome.code, "problems": problems,
                "seconds": round(time.perf_counter() - started, 3),
                "case": case.describe(), "stderr": outcome.stderr[-400:],
                "exception": outcome.exception}) + "\n")
            log.flush()


def run(args: argparse.Namespace) -> dict:
    records: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="memsim-fuzz-logs-") as logs:
        # each worker takes a contiguous range of the inputs
        size = -(-args.inputs // args.workers)
        ranges = [(i * size, min((i + 1) * size, args.inputs)) for i in range(args.workers)]
        procs: dict[int, tuple[subprocess.Popen, Path, int, float]] = {}

        def start(slot: int, first: int, last: int) -> None:
            log = Path(logs) / f"w{slot}-{first}.jsonl"
            cmd = [sys.executable, __file__, "--worker", f"{first}:{last}", "--seed",
                   str(args.seed), "--timeout", str(args.timeout), "--log", str(log)]
            if args.small:
                cmd.append("--small")
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs[slot] = (proc, log, last, time.monotonic())

        for slot, (first, last) in enumerate(ranges):
            if first < last:
                start(slot, first, last)
        while procs:
            time.sleep(0.5)
            for slot, (proc, log, last, _) in list(procs.items()):
                lines = log.read_text().splitlines() if log.exists() else []
                done = [json.loads(x) for x in lines if '"index"' in x]
                for rec in done:
                    records[rec["index"]] = rec
                started = [json.loads(x)["start"] for x in lines if '"start"' in x]
                current = started[-1] if started else None
                finished_current = current is None or current in records
                age = log.stat().st_mtime if log.exists() else procs[slot][3]
                stuck = (not finished_current and time.time() - age > args.timeout + 20)
                if proc.poll() is None and not stuck:
                    continue
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                del procs[slot]
                if current is not None and current not in records:
                    records[current] = {"index": current, "code": None,
                                        "problems": ["hang" if stuck else "worker died"],
                                        "case": "(see seed and index)", "stderr": "",
                                        "exception": f"exit {proc.returncode}"}
                nxt = (current + 1) if current is not None else last
                if nxt < last:
                    start(slot, nxt, last)
    classes = collections.Counter(p for r in records.values() for p in set(r["problems"]))
    codes = collections.Counter(str(r["code"]) for r in records.values())
    by_kind = collections.Counter(f"{r.get('kind', '?')} {r['code']}" for r in records.values())
    examples: dict[str, list[dict]] = collections.defaultdict(list)
    for rec in sorted(records.values(), key=lambda r: r["index"]):
        for problem in set(rec["problems"]):
            if len(examples[problem]) < args.show:
                examples[problem].append(rec)
    slow = sorted(records.values(), key=lambda r: -r.get("seconds", 0))[:3]
    return {"inputs": len(records), "seed": args.seed, "timeout_s": args.timeout,
            "exit_codes": dict(codes), "by_command": dict(sorted(by_kind.items())),
            "classes": {k: classes.get(k, 0) for k in (
                "traceback", "exit 70", "hang", "leak", "multi-line message",
                "message without a location", "error without a message", "worker died")},
            "failing_inputs": sum(1 for r in records.values() if r["problems"]),
            "slowest_s": [r.get("seconds") for r in slow],
            "examples": examples, "load": load_average()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true",
                        help="Keep work options small, as the suite does.")
    parser.add_argument("--show", type=int, default=3, help="Reproducers shown per class.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        first, last = map(int, args.worker.split(":"))
        os.environ.setdefault("MEMSIM_FUZZ", "1")
        worker(first, last, args.seed, args.timeout, not args.small, Path(args.log))
        return 0
    started = time.perf_counter()
    report = run(args)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['inputs']} inputs in {report['wall_s']} s (seed {args.seed}, bound "
          f"{args.timeout:g} s each, load {format_load(report['load'])})")
    print("exit codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(report["exit_codes"].items())))
    print("by command and exit: " + ", ".join(f"{k}: {v}"
                                               for k, v in report["by_command"].items()))
    for name, count in report["classes"].items():
        print(f"{name:28s} {count}")
    print(f"failing inputs: {report['failing_inputs']}; slowest: {report['slowest_s']} s")
    for name, recs in report["examples"].items():
        for rec in recs:
            print(f"\n[{name}] input {rec['index']}: {rec['case']}\n  exit {rec['code']} "
                  f"{rec['exception']}\n  stderr: {rec['stderr'].strip()[-300:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
