"""A tier under load, in SimPy: FCFS channels, latency, then a bandwidth shared by all
transfers in flight (processor sharing with a per-stream cap)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from memsim.profile import Tier

if TYPE_CHECKING:  # SimPy is imported by the engine that runs, not at every start-up
    import simpy


class LatencyDraws:
    """Latency + overhead samples drawn in blocks, so each request costs no numpy call."""

    def __init__(self, tier: Tier, rng: np.random.Generator, block: int = 4096) -> None:
        self.tier, self.rng, self.block = tier, rng, block
        self.constant = tier.latency.mean() + tier.request_overhead if (
            tier.latency.is_constant) else None
        self._buf: list[float] = []

    def next(self) -> float:
        if self.constant is not None:
            return self.constant
        if not self._buf:
            draws = self.tier.latency.sample(self.rng, self.block) + self.tier.request_overhead
            self._buf = draws.tolist()[::-1]
        return self._buf.pop()


class SharedLink:
    """The tier's bandwidth: n transfers in flight each get min(stream, aggregate / n).

    All transfers in flight share one rate, so a transfer's progress is the same 'virtual
    time' for everyone: a transfer that starts at virtual time V with b bytes ends when the
    virtual time reaches V + b. Finish tags live in a heap; one timer waits for the smallest.
    """

    def __init__(self, env: simpy.Environment, stream: float, aggregate: float) -> None:
        self.env, self.stream, self.aggregate = env, stream, aggregate
        self.virtual = 0.0  # bytes served to each transfer in flight since the start
        self.updated = 0.0
        self.tags: list[tuple[float, int, Callable[[], None]]] = []
        self.version = 0
        self._seq = 0

    def _rate(self) -> float:
        n = len(self.tags)
        return min(self.stream, self.aggregate / n) if n else 0.0

    def _advance(self) -> None:
        now = self.env.now
        if self.tags:
            self.virtual += self._rate() * (now - self.updated)
        self.updated = now

    def transfer(self, nbytes: float, done: Callable[[], None]) -> None:
        """Move `nbytes`; `done()` runs when they have arrived."""
        self._advance()
        self._seq += 1
        heapq.heappush(self.tags, (self.virtual + nbytes, self._seq, done))
        self._schedule()
        return done

    def _schedule(self) -> None:
        self.version += 1
        if not self.tags:
            return
        wait = max(self.tags[0][0] - self.virtual, 0.0) / self._rate()
        version = self.version
        timer = self.env.timeout(wait)
        timer.callbacks.append(lambda _event: self._wake(version))

    def _wake(self, version: int) -> None:
        if version != self.version:  # a transfer started or ended since: a newer timer rules
            return
        self._advance()
        tags = self.tags
        # The earliest tag is due by construction (this timer was set for it), whatever
        # rounding says; tags within rounding of it end together.
        first, _, callback = heapq.heappop(tags)
        finished = [callback]
        limit = first * (1 + 1e-9) + 1e-6
        while tags and tags[0][0] <= limit:
            finished.append(heapq.heappop(tags)[2])
        self.virtual = max(self.virtual, first)
        if not tags:
            self.virtual = 0.0  # restart the virtual clock: keeps tags small and exact
        self._schedule()
        for callback in finished:  # after rescheduling: callbacks may start new transfers
            callback()


class Channels:
    """FCFS service channels: a request holds one from grant to last byte. Prefetch requests
    (`low=True`) have a non-preemptive lower priority: a freed channel goes to the first
    queued demand request, else to the first queued prefetch (FIFO within each class).

    Grants happen synchronously (no SimPy event) because a grant at the current time is
    exactly what an immediately triggered `simpy.Resource` request would give, at a third of
    the cost on the simulator's hot path.
    """

    def __init__(self, capacity: int) -> None:
        self.free = capacity
        self.queue: deque[Callable[[], None]] = deque()
        self.low: deque[Callable[[], None]] = deque()  # queued prefetch requests
        self.longest_queue = 0

    def acquire(self, granted: Callable[[], None], low: bool = False) -> None:
        if self.free:
            self.free -= 1
            granted()
        elif low:
            self.low.append(granted)
        else:
            self.queue.append(granted)
            if len(self.queue) > self.longest_queue:
                self.longest_queue = len(self.queue)

    def release(self) -> None:
        if self.queue:
            self.queue.popleft()()  # hand the channel straight to the next in line
        elif self.low:
            self.low.popleft()()
        else:
            self.free += 1


class TierServer:
    """One tier: `concurrency` FCFS channels and a shared link; collects busy time."""

    def __init__(self, env: simpy.Environment, tier: Tier, rng: np.random.Generator) -> None:
        self.env, self.tier = env, tier
        self.channels = Channels(tier.concurrency)
        self.latency = LatencyDraws(tier, rng)
        stream, aggregate = tier.stream_bandwidth, tier.total_bandwidth
        # With enough aggregate bandwidth for every channel, transfers never slow each other.
        self.independent = aggregate >= stream * tier.concurrency
        self.link = SharedLink(env, stream, aggregate)
        self.stream = stream
        self.busy_time = 0.0  # channel-seconds
        self.wait_time = 0.0
        self.service_time = 0.0  # arrival at the tier to last byte, summed
        self.demand = 0.0  # channel-seconds asked for, at the stream rate with no sharing
        self.bytes_asked = 0.0
        self.mean_latency = tier.latency.mean() + tier.request_overhead
        self.requests = 0
        self.bytes = 0.0

    def fetch(self, nbytes: float, done: Callable[[], None], prefetch: bool = False) -> None:
        """Request `nbytes`; `done()` runs when the last byte has arrived. A `prefetch`
        request waits for a channel behind every queued demand request.

        Written as a chain of event callbacks rather than a SimPy process: a request is the
        hot path of every run, and callbacks save the process's own events.
        """
        env = self.env
        arrived = env.now
        start = arrived
        self.demand += self.mean_latency + nbytes / self.stream
        self.bytes_asked += nbytes

        def finish(_event: object = None) -> None:
            now = env.now
            self.channels.release()
            self.busy_time += now - start
            self.requests += 1
            self.bytes += nbytes
            self.service_time += now - arrived
            done()

        def transfer(_event: object = None) -> None:
            self.link.transfer(nbytes, finish)

        def granted() -> None:
            nonlocal start
            start = env.now
            self.wait_time += start - arrived
            latency = self.latency.next()
            if self.independent:
                env.timeout(latency + nbytes / self.stream).callbacks.append(finish)
            elif latency > 0.0:
                env.timeout(latency).callbacks.append(transfer)
            else:
                transfer()

        self.channels.acquire(granted, prefetch)
