"""Prefetch policies: after a query, which (level, block) to fetch before anyone asks.

The policies are plain deterministic objects with no I/O, so the client (`ServedBank`) and the
simulator drive the very same code: `policy.step(paths)` takes the paths just served (each a
list of (level, block), one per non-empty level, in level order), updates the policy's state
and returns its candidates, best first; `select(candidates, ...)` then keeps those that fit the
budget, in order. A prefetch *request* is one block's read.

- `none`: never prefetches.
- `children`: for each node of a served path at a non-empty level, its children at the next
  non-empty level, scored by P(child | node): from the workload's routing popularity
  (`memsim.popularity.block_popularity`) when a workload is given, else from counts learned
  online (how often each block was on a served path; a child never seen scores 0 and is not
  proposed). Candidates of every node (and every path of a batch) are merged by score, ties by
  (level, block). The path's own blocks are among them; `select`'s `skip` drops what the cache
  already holds.
- `trace`: the client replays a known trace; after the k-th query observed (0-based, counting
  every path of a batch in order), propose the blocks of trace queries k+1 .. k+lookahead in
  order. A caller that leaves the trace gets wasted prefetches, never wrong data.

`select` rule (what the simulator must mirror): walk the candidates in order; drop a key that
`skip` refuses or that was already chosen; drop a key whose level's block is bigger than the
bytes left (and go on: a smaller one may still fit); stop when the slots are used up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from memsim.errors import InputError

if TYPE_CHECKING:
    from memsim.bank import Bank
    from memsim.workload import Workload

__all__ = ["ChildrenPrefetch", "NoPrefetch", "PrefetchConfig", "PrefetchPolicy",
           "TracePrefetch", "make_policy", "select"]

Key = tuple[int, int]
Path_ = Sequence[Key]
POLICIES = ("none", "children", "trace")


@dataclass(frozen=True)
class PrefetchConfig:
    """What `open_bank(prefetch=...)` takes: the policy's name, at most `max_inflight`
    prefetch reads in flight, at most `max_bytes` bytes of prefetched-but-unused blocks
    (in flight included), and the policy's input: `workload` (children; None: learn online)
    or `trace` (trace: an (n, depths) array of paths, or a trace file)."""

    policy: Literal["none", "children", "trace"] = "none"
    max_inflight: int = 4
    max_bytes: int = 64 << 20
    trace: Any = None
    workload: Any = None
    lookahead: int = 1  # trace: how many following queries to prefetch

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InputError(f"prefetch policy must be one of {', '.join(POLICIES)}, got "
                             f"{self.policy!r}", field="prefetch.policy")
        from memsim import limits

        caps = {"max_inflight": limits.MAX_PREFETCH_INFLIGHT, "max_bytes": None,
                "lookahead": limits.MAX_PREFETCH_LOOKAHEAD}
        for name, cap in caps.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise InputError(f"prefetch {name} must be a whole number >= 0, got {value!r}",
                                 field=f"prefetch.{name}")
            if cap is not None:
                limits.check_at_most(int(value), cap, f"prefetch {name}",
                                     field=f"prefetch.{name}")
        if self.policy == "trace" and self.trace is None:
            raise InputError("the trace prefetch policy needs trace= (paths or a trace file)",
                             field="prefetch.trace")


class PrefetchPolicy(Protocol):
    """A prefetch policy: `step` observes the paths just served and returns candidates."""

    def step(self, paths: Sequence[Path_]) -> list[Key]: ...


class NoPrefetch:
    """Never prefetches."""

    def step(self, paths: Sequence[Path_]) -> list[Key]:
        return []


class ChildrenPrefetch:
    """The hottest children of a served path's nodes at the next non-empty level.

    `levels` are the bank's non-empty levels in order and `branching` its fan-out;
    `popularity` maps a level to its blocks' marginal popularity (None: learn counts)."""

    def __init__(self, levels: Sequence[int], branching: int,
                 popularity: Mapping[int, np.ndarray] | None = None) -> None:
        self.levels = list(levels)
        self.branching = branching
        self.popularity = popularity
        self.counts: dict[Key, int] = {}
        self._next = dict(zip(self.levels, self.levels[1:], strict=False))

    def _score(self, depth: int, parent: int, child_depth: int, child: int) -> float:
        if self.popularity is not None:
            p = float(self.popularity[depth][parent])
            return float(self.popularity[child_depth][child]) / p if p > 0 else 0.0
        seen = self.counts.get((depth, parent), 0)
        return self.counts.get((child_depth, child), 0) / seen if seen else 0.0

    def step(self, paths: Sequence[Path_]) -> list[Key]:
        if self.popularity is None:
            for path in paths:
                for key in path:
                    self.counts[key] = self.counts.get(key, 0) + 1
        scored: dict[Key, float] = {}
        for path in paths:
            for depth, block in path:
                nxt = self._next.get(depth)
                if nxt is None:
                    continue
                fan = self.branching ** (nxt - depth)
                for child in range(block * fan, (block + 1) * fan):
                    # rounded: the same ties whichever level's marginals a ratio came from
                    score = round(self._score(depth, block, nxt, child), 12)
                    if score > 0:
                        key = (nxt, child)
                        scored[key] = max(scored.get(key, 0.0), score)
        return sorted(scored, key=lambda k: (-scored[k], k))


class TracePrefetch:
    """After the k-th observed query, the blocks of trace queries k+1 .. k+lookahead.

    `paths` is the trace as lists of (level, block), one per query, in order."""

    def __init__(self, paths: Sequence[Path_], lookahead: int = 1) -> None:
        self.paths = [list(p) for p in paths]
        self.lookahead = lookahead
        self.seen = 0

    def step(self, paths: Sequence[Path_]) -> list[Key]:
        self.seen += len(paths)
        out: list[Key] = []
        for q in range(self.seen, min(self.seen + self.lookahead, len(self.paths))):
            out.extend(self.paths[q])
        return out


def select(candidates: Iterable[Key], slots: int, free_bytes: int,
           block_bytes: Mapping[int, int], skip: Callable[[Key], bool]) -> list[Key]:
    """The candidates to prefetch now, in order, within `slots` reads and `free_bytes`."""
    chosen: list[Key] = []
    taken: set[Key] = set()
    if slots <= 0:
        return chosen
    for key in candidates:
        if key in taken or skip(key):
            continue
        size = block_bytes[key[0]]
        if size > free_bytes:
            continue
        chosen.append(key)
        taken.add(key)
        free_bytes -= size
        if len(chosen) >= slots:
            break
    return chosen


def trace_keys(trace: Any, bank: Bank, levels: Sequence[int]) -> list[list[Key]]:
    """A trace (file, or an (n, depths) array of paths) as lists of (level, block)."""
    if isinstance(trace, str) or hasattr(trace, "__fspath__"):
        from memsim.trace import read_trace

        _, m = read_trace(trace, bank)
    else:
        m = np.asarray(trace)
        if m.ndim != 2 or (m.size and m.dtype.kind not in "iu"):
            raise InputError(f"a prefetch trace is an (n, depths) integer array or a trace "
                             f"file, got shape {m.shape} {m.dtype}", field="prefetch.trace")
    m = m.astype(np.int64, copy=False)
    depths = len(bank.levels)
    if m.shape[1] == len(levels) and m.shape[1] != depths:
        cols = list(range(len(levels)))
    elif m.shape[1] >= depths:
        cols = [d - 1 for d in levels]
    else:
        raise InputError(f"a prefetch trace has {depths} ids per path (one per depth), got "
                         f"{m.shape[1]}", field="prefetch.trace")
    m = m[:, cols]
    b, prev = bank.branching, None
    for j, d in enumerate(levels):  # as a fetch checks a path: ids in range, under the parent
        bad = (m[:, j] < 0) | (m[:, j] >= b ** d)
        if prev is not None:
            bad |= m[:, j] // b ** (d - levels[prev]) != m[:, prev]
        if bad.any():
            q = int(np.flatnonzero(bad)[0])
            raise InputError(f"prefetch trace query {q}: block {int(m[q, j])} at depth {d} is "
                             f"not a cluster of bank '{bank.name}' under the query's path",
                             field="prefetch.trace")
        prev = j
    return [list(zip(levels, row, strict=True)) for row in m.tolist()]


def make_policy(config: PrefetchConfig, bank: Bank) -> PrefetchPolicy:
    """The policy `config` names, for `bank` (its non-empty levels)."""
    levels = [lv.depth for lv in bank.active_levels]
    if config.policy == "none":
        return NoPrefetch()
    if config.policy == "trace":
        return TracePrefetch(trace_keys(config.trace, bank, levels), config.lookahead)
    popularity = None
    if config.workload is not None:
        from memsim.popularity import block_popularity
        from memsim.workload import load_workload

        workload: Workload = config.workload if not isinstance(config.workload, str) \
            and not hasattr(config.workload, "__fspath__") else load_workload(config.workload)
        popularity = {d: block_popularity(bank, workload.routing, d) for d in levels}
    return ChildrenPrefetch(levels, bank.branching, popularity)
