"""Built-in bounds on sizes, counts, nesting and work, checked before the work starts.

Every bound a user can hit lives here, so that a message can name the limit and the input that
crossed it, and no command hangs, runs out of memory or overflows on absurd input.
"""

from __future__ import annotations

from pathlib import Path

from memsim.errors import InputError

# Files
MAX_FILE_BYTES = 2**20               # a YAML file people author (PyYAML reads ~0.5 MB/s)
MAX_YAML_DEPTH = 64                  # nesting of mappings and lists
MAX_YAML_NODES = 200_000             # nodes after aliases are expanded (alias bombs)
MAX_SCALAR_CHARS = 10_000            # one value
MAX_INT_DIGITS = 30                  # an integer (Python refuses > 4,300 digits, slowly)

# Banks and profiles
MAX_LEVELS = 16                      # depth of the tree
MAX_BLOCKS_PER_LEVEL = 2**40         # blocks of one level
MAX_TIERS = 32

# Work
MAX_QUERIES = 10_000_000             # simulate and replay
MAX_SIM_REQUESTS = 10_000_000        # simulate: queries x block requests (20k-150k/s: minutes)
MAX_STALLED_QUERIES = 100_000        # simulate: queries issued at one instant of a closed loop
MAX_TRACE_CELLS = 64_000_000         # simulate --trace-out: queries x columns (8 B) in memory
MAX_CLIENTS = 100_000                # simulate and replay: clients of a closed loop
MAX_SIM_SECONDS = 1e9                # simulated time: beyond, a float clock loses microseconds
MAX_SAMPLES = 20_000_000             # estimate: 160 MB of fetch times kept for percentiles
MAX_SCENARIOS = 4_096                # latency scenarios of the level ILP
MAX_BUCKETS = 4_096                  # popularity buckets per level
MAX_BUCKET_CELLS = 16_384            # buckets x levels x tiers of the bucket ILP (~5 s to build)
MAX_SCENARIO_CELLS = 50_000_000      # scenarios x tiers x subsets, the level ILP's tables
MAX_BLOCK_BYTES = 2**70              # one block (about 1.2 ZB): floats stay exact enough
MAX_FLUID_CELLS = 4_000_000          # queries x request parts in one pass of the tier model
MAX_FLUID_WORK = 1_000_000_000       # queries x parts x (2 parts + 2) of the tier model (~10 s)
MAX_SWEEP_POINTS = 100_000           # points of one sweep (each runs the optimizer: hours)
MAX_CENTROID_BYTES = 2**33           # routing: all levels' centroids as float32 (8 GiB)
MAX_EMBEDDING_BYTES = 2**33          # routing: the embeddings as float32 in memory
MAX_DIM = 1 << 16                    # routing: embedding dimension
MAX_PREFETCH_INFLIGHT = 4096         # prefetch reads in flight (the client's prefetch threads)
MAX_PREFETCH_LOOKAHEAD = 4096        # trace prefetch: queries proposed after each (work/fetch)


def check_at_most(value: int | float, limit: int | float, what: str, *,
                  field: str | None = None, file: str | Path | None = None,
                  line: int | None = None) -> None:
    """Refuse `value` above `limit` with one line naming the input and the limit."""
    if value > limit:
        raise InputError(f"{what} is {value:,} but memsim's limit is {limit:,}",
                         file=file, line=line, field=field)
