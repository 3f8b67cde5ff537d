"""Benchmark the command line's start: wall time of short commands, this tree against another.

Each command runs end to end in a fresh interpreter, `python -c "from memsim.cli import
main; main()" ARGS` (the console script's own call, without the launcher), once to warm the
byte-code caches and then --runs times (at least 7), alternating between this tree and the
other (by default /tmp/before, a worktree of the code before the lazy start, commit 494e138)
so that both see the same load. Printed: the median, min and max of each, the ratio
after / before, and the load average before and after; targets: `memsim --help` under
0.3 s and `memsim optimize` (the defaults) under 1.5 s.

Nothing here asserts on time: the machine may be shared, so the figures are printed.

    python benchmarks/bench_startup.py [--runs N] [--before DIR] [--only NAME] [--json]

About 45 s at the default 7 runs on a 2-core machine (optimize dominates).
"""

from __future__ import annotations

from _common import format_load, load_average

# isort: split

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parents[1]
DEFAULT_BEFORE = Path("/tmp/before")
DEFAULT_RUNS = 7
# name -> (arguments, target in seconds or None)
COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "--help": (["--help"], 0.3),
    "profile show phone": (["profile", "show", "phone"], None),
    "estimate": (["estimate", "--layout", "paper-hierarchical"], None),
    "bad option": (["optimize", "--fetch", "both"], None),
    "optimize": (["optimize"], 1.5),
}
CODE = "from memsim.cli import main; main(prog_name='memsim')"


def run_once(tree: Path, args: list[str]) -> tuple[float, int]:
    """Wall time and exit code of one `memsim ARGS` with `tree` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CODE, *args], env=env, cwd=tree,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    return time.perf_counter() - start, proc.returncode


def measure(trees: dict[str, Path], args: list[str], runs: int) -> dict[str, dict]:
    """Interleaved runs of one command on each tree, after one warm-up run each."""
    times: dict[str, list[float]] = {name: [] for name in trees}
    codes: dict[str, set[int]] = {name: set() for name in trees}
    for tree in trees.values():
        run_once(tree, args)
    for _ in range(runs):
        for name, tree in trees.items():
            elapsed, code = run_once(tree, args)
            times[name].append(elapsed)
            codes[name].add(code)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                   "runs": len(t), "exit_codes": sorted(codes[name])}
            for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help=f"timed runs per command and tree (default {DEFAULT_RUNS})")
    parser.add_argument("--before", type=Path, default=DEFAULT_BEFORE,
                        help="the tree to compare with (default /tmp/before); missing: skip")
    parser.add_argument("--only", action="append", choices=sorted(COMMANDS),
                        help="run only this command (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    opts = parser.parse_args()
    trees = {"after": HERE}
    if (opts.before / "memsim" / "__init__.py").exists():
        trees = {"before": opts.before.resolve(), "after": HERE}
    load_before = load_average()
    results = {}
    for name in opts.only or list(COMMANDS):
        args, target = COMMANDS[name]
        results[name] = {"args": args, "target_s": target,
                         **measure(trees, args, max(1, opts.runs))}
    load_after = load_average()
    report = {"trees": {k: str(v) for k, v in trees.items()}, "runs": opts.runs,
              "load_before": load_before, "load_after": load_after, "commands": results}
    if opts.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"memsim start-up, median of {opts.runs} runs each (load before: "
          f"{format_load(load_before)})")
    print(f"{'command':<20} {'before':>22} {'after':>22} {'after/before':>13}  target")
    for name, row in results.items():
        cells = []
        for tree in ("before", "after"):
            if tree in row:
                r = row[tree]
                cells.append(f"{r['median_s']:.3f} s ({r['min_s']:.2f}-{r['max_s']:.2f})")
            else:
                cells.append("-")
        ratio = (f"{row['after']['median_s'] / row['before']['median_s']:.2f}"
                 if "before" in row else "-")
        target = row["target_s"]
        verdict = "" if target is None else (
            f"< {target:g} s: {'PASS' if row['after']['median_s'] < target else 'FAIL'}")
        print(f"{name:<20} {cells[0]:>22} {cells[1]:>22} {ratio:>13}  {verdict}")
        codes = {t: row[t]["exit_codes"] for t in trees}
        if len({tuple(c) for c in codes.values()}) > 1:
            print(f"{'':<20} exit codes differ: {codes}")
    print(f"load after: {format_load(load_after)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
