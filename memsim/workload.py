"""Workloads: when queries arrive, and which path through the bank each one takes.

Arrivals are open loop (Poisson, bursty on/off, a rate schedule: each gives seeded arrival
times) or closed loop (a fixed number of clients that think, then query; the simulator drives
them). Routing picks each query's path level by level (uniform, Zipf, or counts from a Parquet
file), and locality lets consecutive queries share the upper part of their path, as queries on
one topic do. Everything random takes a numpy Generator, and sampling is vectorized over queries.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
)

from memsim import resources, yamlio
from memsim.bank import Bank
from memsim.errors import InputError
from memsim.latency import ConstantLatency, LatencyField, Seconds
from memsim.trace import check_id_range, read_columns
from memsim.units import parse_frequency
from memsim.yamlio import validate_model

FREQUENCY_SCHEMA = {
    "anyOf": [{"type": "string", "description": 'a rate of queries such as "20/s", "20 qps", '
                                                '"1200/min", "20 Hz"'},
              {"type": "number", "minimum": 0, "description": "queries per second"}],
}
PerSecond = Annotated[float, BeforeValidator(parse_frequency), WithJsonSchema(FREQUENCY_SCHEMA)]

MAX_SEGMENTS = 1 << 22  # periods generated at once by the on/off and schedule models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive(value: float, name: str) -> float:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value:g}")
    return value


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    return value


# ----------------------------------------------------------------------------- arrivals


class OpenArrivals(_Model):
    """Open loop: queries arrive on their own schedule, whatever the system's speed."""

    open_loop: ClassVar[bool] = True

    @abstractmethod
    def arrival_times(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The first `n` arrival times in seconds from 0, sorted (float64)."""

    @abstractmethod
    def mean_rate(self) -> float:
        """Long-run queries per second."""


class PoissonArrivals(OpenArrivals):
    """Poisson arrivals: independent exponential gaps with mean 1/rate."""

    kind: Literal["poisson"] = "poisson"
    rate: PerSecond = Field(description="Queries per second.")

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: float) -> float:
        return _positive(value, "rate")

    def arrival_times(self, n: int, rng: np.random.Generator) -> np.ndarray:
        gaps = rng.exponential(1.0 / self.rate, _count(n))
        return np.cumsum(gaps, out=gaps)

    def mean_rate(self) -> float:
        return self.rate


class OnOffArrivals(OpenArrivals):
    """Bursts: a two-state Markov-modulated Poisson process.

    On and off periods alternate with exponential lengths (means `mean_on`, `mean_off`);
    queries arrive as a Poisson process at `rate_on` or `rate_off`. The first period's state
    is drawn from the long-run fractions, so the process is stationary from time 0.
    """

    kind: Literal["onoff"] = "onoff"
    rate_on: PerSecond = Field(description="Queries per second during a burst.")
    rate_off: PerSecond = Field(default=0.0, description="Queries per second between bursts.")
    mean_on: Seconds = Field(description="Mean length of a burst.")
    mean_off: Seconds = Field(description="Mean time between bursts.")

    @field_validator("rate_on", "mean_on", "mean_off")
    @classmethod
    def _pos(cls, value: float, info: Any) -> float:
        return _positive(value, info.field_name)

    def mean_rate(self) -> float:
        on, off = self.mean_on, self.mean_off
        return (self.rate_on * on + self.rate_off * off) / (on + off)

    def arrival_times(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n = _count(n)
        state = {"on": bool(rng.random() < self.mean_on / (self.mean_on + self.mean_off))}

        def periods(k: int) -> tuple[np.ndarray, np.ndarray]:
            on = np.zeros(k, dtype=bool)
            on[0 if state["on"] else 1::2] = True
            state["on"] = not on[-1]
            lengths = rng.exponential(np.where(on, self.mean_on, self.mean_off))
            return lengths, np.where(on, self.rate_on, self.rate_off)

        per_period = (self.rate_on * self.mean_on + self.rate_off * self.mean_off) / 2
        return _piecewise(n, rng, periods, per_period)


class Step(_Model):
    """One step of a rate schedule: `rate` queries per second for `duration`."""

    duration: Seconds
    rate: PerSecond

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: float) -> float:
        return _positive(value, "duration")


class ScheduleArrivals(OpenArrivals):
    """A piecewise-constant Poisson rate: each step in turn, cycled if `repeat`.

    Without `repeat`, the last step's rate holds forever after the schedule ends.
    """

    kind: Literal["schedule"] = "schedule"
    repeat: bool = Field(default=False, description="Cycle through the steps forever.")
    steps: list[Step] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[Step], info: Any) -> list[Step]:
        if not any(step.rate > 0 for step in steps):
            raise ValueError("every step has rate 0: at least one step needs a positive rate")
        if not info.data.get("repeat", False) and steps[-1].rate <= 0:
            raise ValueError(
                f"steps[{len(steps) - 1}].rate is 0, but without repeat the last step's rate "
                "holds forever after the schedule: give it a positive rate or set repeat: true"
            )
        return steps

    def mean_rate(self) -> float:
        if not self.repeat:
            return self.steps[-1].rate
        total = sum(step.duration for step in self.steps)
        return sum(step.rate * step.duration for step in self.steps) / total

    def arrival_times(self, n: int, rng: np.random.Generator) -> np.ndarray:
        target = np.cumsum(rng.exponential(1.0, _count(n)))  # unit-rate arrivals
        lengths = np.array([step.duration for step in self.steps])
        rates = np.array([step.rate for step in self.steps])
        if not self.repeat:  # the steps once, then the last rate for ever
            lengths, rates = np.r_[lengths, np.inf], np.r_[rates, rates[-1]]
            return _invert(target, lengths, rates, 0.0, 0.0)
        # The cumulative rate grows by the same amount each cycle: whole cycles map directly.
        cycle_mass = float(np.sum(lengths * rates))
        cycles = np.floor(target / cycle_mass)
        within = np.clip(target - cycles * cycle_mass, 0.0, cycle_mass)
        out = cycles * float(np.sum(lengths)) + _invert(within, lengths, rates, 0.0, 0.0)
        return np.maximum.accumulate(out, out=out) if out.shape[0] else out


def _count(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative whole number, got {n!r}")
    return int(n)


def _piecewise(
    n: int,
    rng: np.random.Generator,
    periods: Callable[[int], tuple[np.ndarray, np.ndarray]],
    per_period: float,
) -> np.ndarray:
    """The first n arrivals of a Poisson process whose rate is constant within each period.

    Time rescaling: unit-rate arrivals E_1 < E_2 < ... (cumulative exponentials) are mapped
    through the inverse of the cumulative rate, which is linear inside each period. `periods(k)`
    gives the lengths and rates of the next k periods (a length may be inf); they are drawn in
    batches, so the loop runs over batches of periods, never over queries.
    """
    target = np.cumsum(rng.exponential(1.0, n))
    out = np.empty(n)
    done, t0, m0 = 0, 0.0, 0.0  # arrivals placed; time and expected count at the batch start
    while done < n:
        k = int(min(MAX_SEGMENTS, 1.25 * (target[-1] - m0) / per_period + 2))
        lengths, rates = periods(k)
        m1 = m0 + float(np.sum(lengths * rates))
        stop = int(np.searchsorted(target, m1, side="right"))
        out[done:stop] = _invert(target[done:stop], lengths, rates, t0, m0)
        done, t0, m0 = stop, t0 + float(np.sum(lengths)), m1
    return np.maximum.accumulate(out, out=out) if n else out


def _invert(mass: np.ndarray, lengths: np.ndarray, rates: np.ndarray, t0: float,
            m0: float) -> np.ndarray:
    """Times at which the cumulative rate of these periods (starting at t0, m0) reaches `mass`.

    Periods of rate 0 take time but add nothing, so no `mass` lands inside them; the last
    period may be endless (length inf).
    """
    with np.errstate(invalid="ignore"):  # inf * 0 cannot happen: rate-0 periods give 0
        added = np.where(rates > 0, lengths * rates, 0.0)
    ends_t, ends_m = t0 + np.cumsum(lengths), m0 + np.cumsum(added)
    starts_t, starts_m = np.r_[t0, ends_t[:-1]], np.r_[m0, ends_m[:-1]]
    seg = np.minimum(np.searchsorted(ends_m, mass, side="left"), lengths.shape[0] - 1)
    rate = rates[seg]
    live = rate > 0
    times = starts_t[seg] + (mass - starts_m[seg]) / np.where(live, rate, 1.0)
    return np.where(live, np.minimum(times, ends_t[seg]), starts_t[seg])


class ClosedArrivals(_Model):
    """Closed loop: `clients` clients each send a query, wait for it, think, and repeat.

    There are no arrival times to precompute: they depend on how fast queries finish, so
    the simulator drives the clients and asks `think` for their pauses.
    """

    open_loop: ClassVar[bool] = False

    kind: Literal["closed"] = "closed"
    clients: int = Field(ge=1, description="Clients, each with one query outstanding at a time.")
    think_time: LatencyField = Field(
        default=ConstantLatency(value=0.0),
        description='Pause between a reply and the next query: a time ("5 ms") or a '
                    "distribution such as {distribution: exponential, mean: 5 ms}.",
    )

    @field_validator("clients", mode="before")
    @classmethod
    def _whole_clients(cls, value: Any) -> Any:
        return _no_bool(value)

    def think(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        """Seeded think times in seconds."""
        return self.think_time.sample(rng, size)


Arrivals = Annotated[
    PoissonArrivals | OnOffArrivals | ScheduleArrivals | ClosedArrivals,
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------------------- empirical counts


class Counts:
    """Per-cluster counts read from Parquet (level, block, count), one entry per row."""

    def __init__(self, file: Path, level: np.ndarray, block: np.ndarray,
                 count: np.ndarray) -> None:
        self.file = file
        self.level = level
        self.block = block
        self.count = count

    def check(self, bank: Bank) -> None:
        """Raise an InputError (naming the file and row) for levels or blocks not in `bank`."""
        depths = len(bank.levels)
        bad = (self.level < 1) | (self.level > depths)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"row {row} (0-based): level {self.level[row]} is not in bank "
                             f"'{bank.name}' (it has levels 1..{depths})",
                             file=self.file, field="level")
        limit = np.array([0] + [bank.branching**d - 1 for d in range(1, depths + 1)],
                         dtype=np.int64)[self.level]
        bad = (self.block < 0) | (self.block > limit)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"row {row} (0-based): block {self.block[row]} is outside 0..{limit[row]}, the "
                f"clusters at depth {self.level[row]} of bank '{bank.name}'",
                file=self.file, field="block",
            )

    def at(self, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted distinct blocks at `depth` with positive total counts (duplicates summed)."""
        mask = (self.level == depth) & (self.count > 0)
        blocks, inverse = np.unique(self.block[mask], return_inverse=True)
        totals = np.zeros(blocks.shape[0])
        np.add.at(totals, inverse, self.count[mask])
        return blocks, totals


def read_counts(path: str | Path) -> Counts:
    """Read and check a counts file: integer level and block, finite non-negative count."""
    path = Path(path)
    data = read_columns(path, {"level": "int", "block": "int", "count": "number"},
                        what="counts file")
    count = data["count"]
    bad = ~np.isfinite(count)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"row {row} (0-based): count {count[row]} is not a finite number",
                         file=path, field="count")
    bad = count < 0
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"row {row} (0-based): count {count[row]:g} is negative",
                         file=path, field="count")
    return Counts(path, data["level"], data["block"], count)


# ----------------------------------------------------------------------------- routing


class UniformRouting(_Model):
    """Every child of a node equally likely."""

    kind: Literal["uniform"] = "uniform"


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


def _splitmix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


class ZipfRouting(_Model):
    """At each level the child of popularity rank k (1..branching) has probability ∝ 1/k^s.

    Which child holds which rank differs between parents: child index = (rank - 1 + offset)
    mod branching, with offset a hash of (parent id, depth, seed), so no per-node table is
    needed however big the tree.
    """

    kind: Literal["zipf"] = "zipf"
    s: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="Zipf exponent (> 0).")
    seed: int = Field(default=0, description="Seeds which child gets which rank.")

    @field_validator("seed", mode="before")
    @classmethod
    def _whole_seed(cls, value: Any) -> Any:
        return _no_bool(value)

    def rank_probabilities(self, branching: int) -> np.ndarray:
        """P(rank k) for k = 1..branching."""
        weights = np.arange(1, branching + 1, dtype=np.float64) ** -self.s
        return weights / weights.sum()

    def rank_offset(self, parents: np.ndarray, depth: int, branching: int) -> np.ndarray:
        """Child index (0-based) of the rank-1 child of each parent id at depth-1."""
        salt = (depth * 0xD1B54A32D192ED03 + (self.seed & _MASK) * 0xAEF17502108EF2D9) & _MASK
        x = np.asarray(parents, dtype=np.int64).astype(np.uint64) * _GOLDEN + np.uint64(salt)
        return (_splitmix(x) % np.uint64(branching)).astype(np.int64)


class EmpiricalRouting(_Model):
    """Measured per-cluster counts from a Parquet file (columns level, block, count).

    At each level P(child | parent) ∝ count(child) among the parent's children; a parent
    whose children all have count 0 or are missing picks uniformly.
    """

    kind: Literal["empirical"] = "empirical"
    file: str = Field(description="Parquet file, relative to the workload's folder.")

    _counts: Counts | None = PrivateAttr(default=None)


def _routing_shorthand(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value


Routing = Annotated[
    UniformRouting | ZipfRouting | EmpiricalRouting,
    BeforeValidator(_routing_shorthand),
    Field(discriminator="kind"),
]


class Locality(_Model):
    """Topic sessions: a query keeps the previous query's path down to `depth` with prob. p."""

    p: float = Field(ge=0, le=1, allow_inf_nan=False,
                     description="Probability a query continues the previous query's topic.")
    depth: int | None = Field(
        default=None, ge=1,
        description="Deepest level shared within a topic; default the shallowest non-empty "
                    "level of the bank.",
    )

    @field_validator("depth", mode="before")
    @classmethod
    def _whole_depth(cls, value: Any) -> Any:
        return _no_bool(value)


# ----------------------------------------------------------------------------- workload


class Workload(_Model):
    """Query arrivals, the routing distribution over paths, and optional topic locality."""

    name: str = "workload"
    description: str = ""
    arrivals: Arrivals
    routing: Routing = Field(default_factory=UniformRouting)
    locality: Locality | None = None

    _doc: yamlio.Document | None = PrivateAttr(default=None)

    @property
    def file(self) -> str | None:
        return self._doc.file if self._doc else None

    @property
    def open_loop(self) -> bool:
        return self.arrivals.open_loop

    def at_rate(self, rate: float) -> Workload:
        """A copy whose open-loop arrivals are scaled to a mean of `rate` queries/s (bursts,
        quiet spells and schedule steps keep their shape); what-if studies of load."""
        if not self.open_loop:
            raise InputError(f"workload '{self.name}' is a closed loop: its rate follows from "
                             "its clients and think time, so --rate cannot set it",
                             file=self.file, field="arrivals")
        if not (rate > 0 and math.isfinite(rate)):
            raise InputError(f"rate must be a positive number of queries per second, got "
                             f"{rate}", field="rate")
        factor = rate / self.arrivals.mean_rate()
        arrivals = self.arrivals
        if isinstance(arrivals, PoissonArrivals):
            arrivals = arrivals.model_copy(update={"rate": rate})
        elif isinstance(arrivals, OnOffArrivals):
            arrivals = arrivals.model_copy(update={"rate_on": arrivals.rate_on * factor,
                                                   "rate_off": arrivals.rate_off * factor})
        elif isinstance(arrivals, ScheduleArrivals):
            arrivals = arrivals.model_copy(update={"steps": [
                step.model_copy(update={"rate": step.rate * factor}) for step in arrivals.steps]})
        copy = self.model_copy(update={"arrivals": arrivals,
                                       "name": f"{self.name}@{rate:g}/s"})
        copy._doc = self._doc
        return copy

    def resolve(self, relative: str) -> Path:
        """A path written in the workload, relative to the workload file's folder."""
        path = Path(relative).expanduser()
        if path.is_absolute() or self.file is None or self.file.startswith("<"):
            return path
        return Path(self.file).parent / path

    def _error(self, loc: tuple[Any, ...], message: str) -> InputError:
        if self._doc is not None:
            return self._doc.error(loc, message)
        return InputError(message, field=yamlio.format_loc(loc))

    def load_files(self) -> None:
        """Read the files the workload names (empirical counts), so their errors come early."""
        routing = self.routing
        if isinstance(routing, EmpiricalRouting) and routing._counts is None:
            resources.checked_path(routing.file, file=self.file,
                                   line=self._doc.line_of(("routing", "file")) if self._doc
                                   else None, field="routing.file")
            path = self.resolve(routing.file)
            if not resources.is_file(path):
                raise self._error(("routing", "file"),
                                  f"no such file '{routing.file}' (looked for {path.resolve()})")
            routing._counts = read_counts(path)

    def check(self, bank: Bank) -> None:
        """Raise an InputError if the workload cannot route queries through `bank`."""
        check_id_range(bank, self.file)
        if self.locality is not None and self.locality.depth is not None:
            if self.locality.depth > len(bank.levels):
                raise self._error(("locality", "depth"),
                                  f"depth {self.locality.depth} is not in bank '{bank.name}' "
                                  f"(it has levels 1..{len(bank.levels)})")
        if isinstance(self.routing, EmpiricalRouting):
            self.load_files()
            assert self.routing._counts is not None
            self.routing._counts.check(bank)

    def sampler(self, bank: Bank, rng: np.random.Generator) -> PathSampler:
        """A PathSampler of this workload's paths through `bank`."""
        return PathSampler(self, bank, rng)


# ----------------------------------------------------------------------------- sampling

_Router = Callable[[np.ndarray, int], np.ndarray]


class PathSampler:
    """Draw query paths through a bank, vectorized over queries.

    `sample(n)` returns shape (n, levels) int64: column d-1 is the cluster id at depth d
    (child id = parent id * branching + child index). With locality, the session carries
    over between calls: the first query of a call may continue the last query of the previous.
    """

    def __init__(self, workload: Workload, bank: Bank, rng: np.random.Generator) -> None:
        workload.check(bank)
        self.workload = workload
        self.bank = bank
        self.rng = rng
        self.branching = bank.branching
        self.levels = len(bank.levels)
        self._step = self._router(workload.routing)
        locality = workload.locality
        self._p = locality.p if locality is not None else 0.0
        self._keep_depth = 0
        if locality is not None:
            self._keep_depth = locality.depth or bank.active_levels[0].depth
        self._last: np.ndarray | None = None

    def _router(self, routing: UniformRouting | ZipfRouting | EmpiricalRouting) -> _Router:
        b, rng = self.branching, self.rng
        if isinstance(routing, UniformRouting):
            def uniform(parents: np.ndarray, depth: int) -> np.ndarray:
                return parents * b + rng.integers(0, b, parents.shape[0])
            return uniform
        if isinstance(routing, ZipfRouting):
            cdf = np.cumsum(routing.rank_probabilities(b))
            cdf[-1] = 1.0

            def zipf(parents: np.ndarray, depth: int) -> np.ndarray:
                ranks = np.searchsorted(cdf, rng.random(parents.shape[0]), side="right")
                np.minimum(ranks, b - 1, out=ranks)
                index = (ranks + routing.rank_offset(parents, depth, b)) % b
                return parents * b + index
            return zipf
        assert routing._counts is not None
        tables = [_EmpiricalLevel(*routing._counts.at(d), b) for d in range(1, self.levels + 1)]

        def empirical(parents: np.ndarray, depth: int) -> np.ndarray:
            return tables[depth - 1].children(parents, rng)
        return empirical

    def _route(self, parents: np.ndarray, first: int, last: int, out: np.ndarray) -> None:
        """Route from `parents` at depth first-1 down to depth `last`, filling `out`."""
        for depth in range(first, last + 1):
            parents = self._step(parents, depth)
            out[:, depth - 1] = parents

    def sample(self, n: int) -> np.ndarray:
        """Paths of the next `n` queries, shape (n, levels), int64."""
        n = _count(n)
        out = np.empty((n, self.levels), dtype=np.int64)
        if n == 0:
            return out
        k = self._keep_depth
        if k == 0:
            self._route(np.zeros(n, dtype=np.int64), 1, self.levels, out)
        else:
            keep = self.rng.random(n) < self._p
            if self._last is None:
                keep[0] = False
            fresh = ~keep
            session = np.cumsum(fresh) - 1  # index of the new session each query belongs to
            prefixes = np.empty((int(fresh.sum()), k), dtype=np.int64)
            self._route(np.zeros(prefixes.shape[0], dtype=np.int64), 1, k, prefixes)
            if self._last is not None:
                prefixes = np.vstack([prefixes, self._last[:k]])  # index -1: previous session
            out[:, :k] = prefixes[session]
            self._route(out[:, k - 1].copy(), k + 1, self.levels, out)
        self._last = out[-1].copy()
        return out


class _EmpiricalLevel:
    """Sampling table for one depth: children grouped by parent, cumulative within a group."""

    def __init__(self, blocks: np.ndarray, counts: np.ndarray, branching: int) -> None:
        self.b = branching
        self.blocks = blocks
        parent_of = blocks // branching
        self.parents, starts = np.unique(parent_of, return_index=True)
        self.starts = starts.astype(np.int64)
        self.ends = np.append(self.starts[1:], blocks.shape[0]).astype(np.int64)
        if blocks.shape[0]:
            group = np.searchsorted(self.parents, parent_of)
            totals = np.add.reduceat(counts, self.starts)
            self.keys = np.cumsum(counts / totals[group])  # group g spans (g, g + 1]
        else:
            self.keys = np.empty(0)

    def children(self, parents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b = self.b
        u = rng.random(parents.shape[0])
        uniform = parents * b + np.minimum((u * b).astype(np.int64), b - 1)
        if not self.parents.shape[0]:
            return uniform
        group = np.searchsorted(self.parents, parents)
        group_c = np.minimum(group, self.parents.shape[0] - 1)
        known = self.parents[group_c] == parents
        index = np.searchsorted(self.keys, group_c + u, side="right")
        index = np.clip(index, self.starts[group_c], self.ends[group_c] - 1)
        return np.where(known, self.blocks[index], uniform)


# ----------------------------------------------------------------------------- loading

def _finish(doc: yamlio.Document) -> Workload:
    workload = validate_model(Workload, doc)
    workload._doc = doc
    workload.load_files()
    return workload


def load_workload(ref: str | Path) -> Workload:
    """A workload from a YAML file, or a shipped one by name (`zipf-topic`)."""
    return _finish(yamlio.load(resources.resolve(ref, "workloads")))


def workload_from_dict(data: dict[str, Any], file: str = "<dict>") -> Workload:
    """A workload from plain data (notebooks, tests); errors name `file`, and a relative
    routing file is found next to `file` (or in the working folder for "<dict>")."""
    return _finish(yamlio.Document(data=data, file=file))


def poisson_workload(rate: float, name: str | None = None) -> Workload:
    """Poisson arrivals at `rate` queries/s with uniform routing: the stand-in workload when
    a command has a rate but no workload."""
    return workload_from_dict({"name": name or f"poisson@{rate:g}/s",
                               "arrivals": {"kind": "poisson", "rate": rate}})


def workload_at_rate(workload: Workload | None, rate: float | None) -> Workload | None:
    """`workload` scaled to `rate` queries/s (its open-loop arrivals keep their shape), or
    Poisson arrivals with uniform routing at `rate` when there is no workload; unchanged
    without a rate. What `memsim optimize --rate` and a sweep's rate axis carry."""
    if rate is None:
        return workload
    if workload is not None:
        return workload.at_rate(rate)
    if isinstance(rate, bool) or not (rate > 0 and math.isfinite(rate)):
        raise InputError(f"rate must be a positive number of queries per second, got {rate}",
                         field="rate")
    return poisson_workload(rate)


__all__ = [
    "ClosedArrivals", "Counts", "EmpiricalRouting", "Locality", "OnOffArrivals", "OpenArrivals",
    "PathSampler", "PoissonArrivals", "ScheduleArrivals", "Step", "UniformRouting", "Workload",
    "ZipfRouting", "load_workload", "poisson_workload", "read_counts", "workload_at_rate",
    "workload_from_dict", "workload_from_trace",
]


def workload_from_trace(path: str | Path, bank: Bank) -> Workload:
    """A workload that reproduces a trace: Poisson at the trace's mean rate, routing by the
    per-cluster counts of its paths (so block popularity equals the trace's frequencies)."""
    from memsim.trace import read_trace  # trace imports this module's neighbours

    arrivals, paths = read_trace(path, bank)
    levels, blocks, counts = [], [], []
    for col in range(len(bank.levels)):
        ids, n = np.unique(paths[:, col], return_counts=True)
        levels.append(np.full(ids.size, col + 1, dtype=np.int64))
        blocks.append(ids.astype(np.int64))
        counts.append(n.astype(float))
    span = float(arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    rate = (len(arrivals) - 1) / span if span > 0 else 1.0
    workload = Workload(name=f"trace {Path(path).name}",
                        arrivals=PoissonArrivals(rate=rate),
                        routing=EmpiricalRouting(file=str(path)))
    workload.routing._counts = Counts(Path(path), np.concatenate(levels),
                                      np.concatenate(blocks), np.concatenate(counts))
    return workload
