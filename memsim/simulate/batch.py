"""What the simulator counts as the client's `ServedBank.stats` would, batch by batch.

`simulate(..., batch=B)` serves queries B at a time, as a server that batches does, and each
batch then does what `ServedBank.fetch_many` does with its paths. Open loop: consecutive
queries are grouped as they arrive, and a batch is released when its last query has arrived
(or the run's last query has); a query's fetch time runs from its own arrival, so it includes
its wait for the batch to fill. Closed loop (what serve-bench measures): each client takes
the next B consecutive queries of the sequence (one counter shared by the clients), issues
them as one batch, waits until all B are answered, thinks, and repeats; the last batch may be
short, and no batch spans the end of the warm-up. Its queries' fetch times run from the
batch's issue.

Each distinct (level, block) of a batch is looked up once in the RAM cache (or residency),
level by level and each level's distinct blocks in increasing id, the client's order; only
the misses are requested from their tiers, all at once (level after level with
`fetch: sequential`). Hit ratios (`cache_hit_ratio`, per level) are then over a batch's
distinct lookups, as the client's are. With B = 1 this is exactly the simulator without
batches.

`ServedCounters` holds the counters, named and meant as `memsim.client.bank.ClientStats`'s,
over the batches with at least one measured query, so that a run with no warm-up can be
compared with a client's stats one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ServedCounters"]


@dataclass
class ServedCounters:
    """The client's counters (`ClientStats`) for the simulated queries (measured batches)."""

    fetches: int = 0  # queries served
    blocks: int = 0  # blocks handed to queries (one per non-blocked active level)
    reads: int = 0  # distinct blocks read from their tiers (cache and residency misses)
    requests: dict[str, int] = field(default_factory=dict)  # tier -> byte-range requests
    bytes: dict[str, int] = field(default_factory=dict)  # tier -> bytes read
    dedup_blocks_saved: int = 0  # block reads a batch saved by reading shared blocks once
    dedup_requests_saved: int = 0  # ... and the requests those reads would have been
    blocked: dict[int, int] = field(default_factory=dict)  # level -> blocks refused
    cache_hits: int = 0  # over the levels the cache's budget holds (resident levels apart)
    cache_misses: int = 0
    resident_hits: int = 0  # a resident level's current block was the one asked for
    resident_misses: int = 0
    prefetch_issued: int = 0  # prefetch reads started (memsim.simulate.prefetch)
    prefetch_hits: int = 0  # prefetched blocks a later demand lookup found (first use)
    prefetch_wasted: int = 0  # prefetched blocks evicted (or looked up as a miss) unused
    prefetching: bool = field(default=False, repr=False)  # a prefetch policy ran: the
    # prefetch_* counters are in to_json (without one, the JSON is the run without prefetch's)

    def read(self, tier: str, parts: int, nbytes: int) -> None:
        """One distinct block requested from `tier` in `parts` requests."""
        self.reads += 1
        self.requests[tier] = self.requests.get(tier, 0) + parts
        self.bytes[tier] = self.bytes.get(tier, 0) + nbytes

    @property
    def cache_hit_ratio(self) -> float | None:
        """Hits over lookups of the levels the cache's budget holds, as the client's."""
        lookups = self.cache_hits + self.cache_misses
        return self.cache_hits / lookups if lookups else None

    def to_json(self) -> dict[str, Any]:
        out = dict(vars(self))
        if not out.pop("prefetching"):
            for name in ("prefetch_issued", "prefetch_hits", "prefetch_wasted"):
                del out[name]
        out["requests"], out["bytes"] = dict(self.requests), dict(self.bytes)
        out["blocked"] = {str(d): n for d, n in self.blocked.items()}
        out["cache_hit_ratio"] = self.cache_hit_ratio
        return out
