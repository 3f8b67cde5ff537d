"""Benchmark routing: embeddings per second of `memsim.client.route.route` (greedy descent of a
4-level 16-ary tree, 65,536 leaves) against a brute-force numpy nearest-leaf search over all
65,536 leaf centroids, in the same run.

For each dimension (--dims, default 256 and 1024) seeded synthetic centroids are built
(`synthetic_centroids`: children near their parent) and embeddings are drawn near random
leaves. For each batch size (--batches, default 1, 64 and 4096) both programs route batches
of that size for at least --min-time seconds (at least one batch), alternating for --rounds
rounds; the medians of embeddings/s are compared (greedy / brute force). The baseline scores
every leaf as |c|^2 / 2 - x.c with one float32 matrix product per batch (cut into pieces of
256 queries so the score matrix stays bounded), squared norms precomputed, as a nearest-leaf
search with numpy is usually written. Also printed: how often the greedy leaf is the
brute-force nearest leaf (greedy descent is an approximation of that search).

Numeric pools run one thread (benchmarks/_common.py). Nothing asserts on time: figures and
ratios are printed (or given as JSON) with the load average before and after, since the
machine may be shared. About 2 minutes with the defaults, 20 s with --quick.

    python benchmarks/bench_route.py [--quick] [--dims 256,1024] [--batches 1,64,4096]
                                     [--rounds R] [--min-time S] [--seed S] [--json]
"""

from __future__ import annotations

# First: _common sets one-thread numeric pools before numpy is imported.
from _common import format_load, load_average

# isort: split

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import memsim  # noqa: E402
from memsim.client.route import Centroids, route, synthetic_centroids  # noqa: E402

BANK = {"name": "bench-route", "branching": 16, "levels": [1, 1, 1, 1], "anchor": "160M"}
BRUTE_PIECE = 256  # queries scored against all leaves at once by the baseline


def embeddings_near_leaves(c: Centroids, n: int, seed: int) -> np.ndarray:
    """`n` embeddings, each a random leaf centroid plus small noise."""
    rng = np.random.default_rng(seed)
    leaves = c.levels[-1]
    pick = rng.integers(0, leaves.shape[0], n)
    return leaves[pick] + np.float32(0.02) * rng.standard_normal((n, c.dim), dtype=np.float32)


class BruteForce:
    """Nearest of all leaves: |c|^2 / 2 - x.c for every leaf, one matrix product per piece."""

    def __init__(self, leaves: np.ndarray) -> None:
        self.leaves = np.ascontiguousarray(leaves, dtype=np.float32)
        self.half_sq = 0.5 * np.einsum("ij,ij->i", self.leaves, self.leaves)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0], dtype=np.int64)
        for start in range(0, x.shape[0], BRUTE_PIECE):
            part = x[start:start + BRUTE_PIECE]
            scores = part @ self.leaves.T
            np.subtract(self.half_sq, scores, out=scores)
            out[start:start + BRUTE_PIECE] = np.argmin(scores, axis=1)
        return out


def rate(run: Callable[[np.ndarray], Any], x: np.ndarray, batch: int, min_time: float) -> float:
    """Embeddings per second of `run` over consecutive batches of `batch` rows of `x` (cycling),
    for at least `min_time` seconds and at least one batch."""
    batches = max(1, x.shape[0] // batch)
    done = 0
    start = time.perf_counter()
    while True:
        i = done % batches
        run(x[i * batch:(i + 1) * batch])
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return done * batch / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default="256,1024")
    parser.add_argument("--batches", default="1,64,4096")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="1 round, 0.3 s per figure")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.min_time = 1, 0.3
    dims = [int(d) for d in args.dims.split(",")]
    batch_sizes = [int(b) for b in args.batches.split(",")]
    bank = memsim.bank_from_dict(BANK, file="<bench bank>")
    load_before = load_average()
    rows: list[dict[str, Any]] = []
    for dim in dims:
        print(f"building centroids, dimension {dim} ...", file=sys.stderr)
        c = synthetic_centroids(bank, dim, seed=args.seed)
        brute = BruteForce(c.levels[-1])
        x = embeddings_near_leaves(c, max(batch_sizes), args.seed + 1)
        sample = x[:512]
        agree = float((route(c, sample)[:, -1] == brute(sample)).mean())
        for batch in batch_sizes:
            greedy_rates, brute_rates = [], []
            for r in range(args.rounds):
                order = [(greedy_rates, lambda q, c=c: route(c, q)), (brute_rates, brute)]
                for rates, run in (order if r % 2 == 0 else order[::-1]):
                    rates.append(rate(run, x, batch, args.min_time))
            g, bf = statistics.median(greedy_rates), statistics.median(brute_rates)
            rows.append({"dim": dim, "batch": batch, "greedy_per_s": g, "brute_per_s": bf,
                         "ratio": g / bf, "leaf_agreement": agree})
            print(f"  dim {dim} batch {batch}: greedy {g:,.0f}/s, brute force {bf:,.0f}/s",
                  file=sys.stderr)
    load_after = load_average()
    if args.json:
        print(json.dumps({"rows": rows, "rounds": args.rounds, "min_time_s": args.min_time,
                          "load_before": load_before, "load_after": load_after}, indent=2))
        return 0
    print("routing a 4-level 16-ary tree (65,536 leaves): embeddings/s, median of "
          f"{args.rounds} round(s)")
    print(f"{'dim':>5} {'batch':>6} {'greedy':>12} {'brute force':>12} {'ratio':>8} "
          f"{'same leaf':>10}")
    for row in rows:
        print(f"{row['dim']:>5} {row['batch']:>6} {row['greedy_per_s']:>12,.0f} "
              f"{row['brute_per_s']:>12,.0f} {row['ratio']:>7.1f}x "
              f"{row['leaf_agreement']:>9.1%}")
    print(f"load average before: {format_load(load_before)}; after: {format_load(load_after)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
