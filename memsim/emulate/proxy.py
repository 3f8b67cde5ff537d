"""A user-space HTTP/1.1 proxy that makes a local server behave like a distant cloud store.

The kernel here has no netem, so added latency, bandwidth caps and faults are emulated in user
space: every chunk read from one side is held for the one-way `delay` and paced to `bandwidth`
before it is written to the other side, so a request of n response bytes takes about
2 * delay + n / bandwidth. Request heads are parsed (bodies by Content-Length or chunked
encoding) so that every request is logged and can be failed on purpose (HTTP 503, a TCP reset,
or a stall), drawn from a seeded random sequence.

The proxy serves from a daemon thread with its own asyncio event loop, so synchronous code
(tests, notebooks, benchmarks) can use it as a context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import EllipsisType, TracebackType
from urllib.parse import urlsplit

__all__ = ["FAULT_KINDS", "OUTCOMES", "DelayProxy", "Faults", "RequestRecord"]

FAULT_KINDS = ("503", "reset", "stall")
OUTCOMES = ("forwarded", *FAULT_KINDS)

READ_SIZE = 256 * 1024  # bytes per read: large reads keep the per-chunk overhead small
SLICE = 64 * 1024  # paced writes go out in slices this big, so pacing is smooth
STREAM_LIMIT = 1024 * 1024  # longest request head; also the stream buffer size
QUEUE_CHUNKS = 64  # chunks in flight per direction (at most 16 MiB) before reading pauses
MIN_SLEEP = 0.0005  # due times closer than this are written at once (the clock catches up)
STOP_TIMEOUT = 5.0
LOG_LIMIT = 100_000  # request records kept (the oldest are dropped past it, and counted)


@dataclass(frozen=True)
class Faults:
    """Which requests fail, and how: a fraction `rate` of them, drawn from Random(seed).

    kinds: any of "503" (an S3 SlowDown answer), "reset" (the connection is reset) and
    "stall" (no answer; the proxy closes the connection after `stall_s` seconds).
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = ("503", "reset")
    stall_s: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, not {self.rate}")
        unknown = [k for k in self.kinds if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind(s) {', '.join(map(repr, unknown))}; "
                             f"expected any of {', '.join(FAULT_KINDS)}")
        if self.rate > 0 and not self.kinds:
            raise ValueError("a positive fault rate needs at least one fault kind")
        if not self.stall_s >= 0:
            raise ValueError(f"stall_s must be at least 0, not {self.stall_s}")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the proxy saw it, whatever became of it."""

    time: float  # time.monotonic() when the request head arrived
    method: str
    path: str  # request target as sent (path and query string)
    range: str | None  # the Range header, if any
    outcome: str  # "forwarded", "503", "reset" or "stall"


@dataclass(frozen=True)
class _Settings:
    delay: float
    bandwidth: float | None
    faults: Faults


def _check_delay(delay: float) -> float:
    if not (delay >= 0 and delay < float("inf")):
        raise ValueError(f"delay must be a finite number of seconds >= 0, not {delay}")
    return float(delay)


def _check_bandwidth(bandwidth: float | None) -> float | None:
    if bandwidth is None:
        return None
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive bytes/s (or None), not {bandwidth}")
    return None if bandwidth == float("inf") else float(bandwidth)


class _Reset:
    """Marker in a pipe: reset the connection (RST) instead of writing."""


class _Eof:
    """Marker in a pipe: the source side closed; pass the close on."""


_RESET = _Reset()
_EOF = _Eof()

_SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
                  b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate."
                  b"</Message><Resource>%s</Resource><RequestId>memsim-%d</RequestId></Error>")


def _slowdown(method: str, target: str, number: int, *, close: bool) -> bytes:
    """An S3-style 503 SlowDown answer (no body for HEAD, as HTTP requires)."""
    body = _SLOWDOWN_BODY % (target.encode("latin-1", "replace"), number)
    head = (f"HTTP/1.1 503 Service Unavailable\r\n"
            f"Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amz-request-id: memsim-{number}\r\n"
            f"Retry-After: 1\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode("latin-1")
    return head if method == "HEAD" else head + body


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), the way a crashed or overloaded server would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _sleep_until(when: float) -> None:
    wait = when - time.monotonic()
    if wait > MIN_SLEEP:
        await asyncio.sleep(wait)


class _Pipe:
    """One direction of one connection: holds each chunk until its due time, then writes it
    no faster than the bandwidth allows (a per-direction "next free time" clock)."""

    def __init__(self, proxy: DelayProxy, writer: asyncio.StreamWriter) -> None:
        self._proxy = proxy
        self._writer = writer
        self._queue: asyncio.Queue[tuple[float, bytes | _Reset | _Eof]] = asyncio.Queue(
            QUEUE_CHUNKS)
        self._clock = 0.0  # when the last paced byte left (or will leave)

    async def put(self, item: bytes | _Reset | _Eof, read_time: float) -> None:
        """Queue `item`, read at `read_time`, for delivery one delay later."""
        await self._queue.put((read_time + self._proxy._settings.delay, item))

    async def run(self) -> None:
        """Deliver queued items in order until EOF or a reset."""
        writer = self._writer
        while True:
            due, item = await self._queue.get()
            if isinstance(item, _Eof):
                await _sleep_until(due)
                if writer.can_write_eof():
                    writer.write_eof()
                return
            if isinstance(item, _Reset):
                await _sleep_until(due)
                _reset(writer)
                return
            bandwidth = self._proxy._settings.bandwidth
            if bandwidth is None:
                await _sleep_until(due)
                writer.write(item)
            else:
                view = memoryview(item)
                for start in range(0, len(view), SLICE):
                    piece = view[start:start + SLICE]
                    # the slice's last byte leaves len/bandwidth after the link is free and
                    # the data is due; the clock is absolute, so late wake-ups catch up
                    self._clock = max(due, self._clock) + len(piece) / bandwidth
                    await _sleep_until(self._clock)
                    writer.write(piece)
                    await writer.drain()
            await writer.drain()


class _Closed(Exception):
    """The connection is over (a stall ran out, or a request was malformed)."""


class DelayProxy:
    """An HTTP/1.1 proxy in front of `upstream` that adds delay, paces bandwidth, injects
    faults and logs every request.

    delay: one-way seconds, applied in each direction (a round trip adds 2 * delay).
    bandwidth: bytes/s per connection per direction (None: unpaced).
    A 503 or a reset reaches the client one round trip (2 * delay) after the request, as if
    the server had answered; a stall holds the connection silent for `faults.stall_s`.
    """

    def __init__(self, upstream: str, *, delay: float = 0.0, bandwidth: float | None = None,
                 faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0,
                 log_limit: int = LOG_LIMIT) -> None:
        parts = urlsplit(upstream)
        if log_limit < 1:
            raise ValueError(f"log_limit must be at least 1, not {log_limit}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must look like 'http://host:port', not {upstream!r}")
        self._upstream = (parts.hostname, parts.port or 80)
        self._host = host
        self._port = port
        self._settings = _Settings(_check_delay(delay), _check_bandwidth(bandwidth),
                                   faults or Faults())
        self._rng = random.Random(self._settings.faults.seed)
        self._lock = threading.Lock()
        # bounded, so a long-running emulator does not grow without end; outcomes are counted
        # apart from it, so `counts` stays exact when old records are dropped
        self._log: deque[RequestRecord] = deque(maxlen=log_limit)
        self._outcomes: Counter[str] = Counter()
        self._logged = 0  # records logged since the last clear_log (kept or dropped)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._bound: int | None = None
        self._numbered = 0
        self._stopping = False

    # ------------------------------------------------------------ life cycle
    def start(self) -> DelayProxy:
        """Listen and serve from a daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._serve, args=(loop,), name="memsim-delay-proxy",
                                  daemon=True)
        thread.start()
        try:
            self._server = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(
                STOP_TIMEOUT)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT)
            raise
        self._loop, self._thread, self._stopping = loop, thread, False
        self._bound = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the listener and every connection (stalled ones too); join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        try:
            if not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
                with contextlib.suppress(Exception):
                    future.result(STOP_TIMEOUT)
                loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # the loop already closed
            pass
        thread.join(STOP_TIMEOUT)
        self._server = None
        self._bound = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Where clients connect: "http://127.0.0.1:<port>"."""
        if self._bound is None:
            raise RuntimeError("the proxy is not running: call start() first")
        return f"http://{self._host}:{self._bound}"

    # ------------------------------------------------------------ settings and log
    def configure(self, *, delay: float | EllipsisType = ...,
                  bandwidth: float | None | EllipsisType = ...,
                  faults: Faults | None | EllipsisType = ...) -> None:
        """Change settings, also while running; they apply to data read from now on.

        A setting left out is kept; bandwidth=None removes the cap and faults=None removes
        faults. New faults restart the random sequence from their seed.
        """
        current = self._settings
        new_delay = current.delay if delay is ... else _check_delay(delay)
        new_bw = current.bandwidth if bandwidth is ... else _check_bandwidth(bandwidth)
        with self._lock:
            if faults is not ...:
                new_faults = faults if faults is not None else Faults()
                self._rng = random.Random(new_faults.seed)
            else:
                new_faults = current.faults
            self._settings = _Settings(new_delay, new_bw, new_faults)

    @property
    def delay(self) -> float:
        """The one-way delay in seconds."""
        return self._settings.delay

    @property
    def bandwidth(self) -> float | None:
        """The per-connection, per-direction cap in bytes/s (None: unpaced)."""
        return self._settings.bandwidth

    @property
    def faults(self) -> Faults:
        """The current fault settings."""
        return self._settings.faults

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log so far (its newest `log_limit` records)."""
        with self._lock:
            return list(self._log)

    @property
    def dropped(self) -> int:
        """Records dropped from the log (the oldest) to keep it within `log_limit`."""
        with self._lock:
            return self._logged - len(self._log)

    def requests_since(self, seen: int) -> tuple[list[RequestRecord], int]:
        """The records logged after the first `seen` (those still kept), and how many have
        been logged in all: for following the log as it grows."""
        with self._lock:
            new = max(0, min(self._logged - seen, len(self._log)))
            return list(self._log)[len(self._log) - new:], self._logged

    @property
    def counts(self) -> dict[str, int]:
        """Number of requests per outcome ("forwarded", "503", "reset", "stall") since the
        last clear_log, dropped records included."""
        with self._lock:
            return dict(self._outcomes)

    def clear_log(self) -> None:
        """Forget the requests logged so far."""
        with self._lock:
            self._log.clear()
            self._outcomes.clear()
            self._logged = 0

    def _decide(self, method: str, target: str, rng_range: str | None, when: float) -> str:
        """Draw this request's outcome and log it (two draws per request, always, so a
        higher rate with the same seed fails a superset of the requests)."""
        with self._lock:
            faults = self._settings.faults
            draw, pick = self._rng.random(), self._rng.random()
            outcome = "forwarded"
            if draw < faults.rate and faults.kinds:
                outcome = faults.kinds[min(int(pick * len(faults.kinds)), len(faults.kinds) - 1)]
            self._log.append(RequestRecord(when, method, target, rng_range, outcome))
            self._outcomes[outcome] += 1
            self._logged += 1
            self._numbered += 1
        return outcome

    # ------------------------------------------------------------ event loop side
    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._connection, self._host, self._port,
                                          limit=STREAM_LIMIT)

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT / 2)
        await asyncio.sleep(0)  # let the aborted transports close their sockets

    async def _connection(self, client_r: asyncio.StreamReader,
                          client_w: asyncio.StreamWriter) -> None:
        """Serve one client connection over its own upstream connection."""
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        upstream_w: asyncio.StreamWriter | None = None
        workers: list[asyncio.Task[None]] = []
        try:
            _nodelay(client_w)
            try:
                upstream_r, upstream_w = await asyncio.open_connection(
                    *self._upstream, limit=STREAM_LIMIT)
            except OSError:
                return
            _nodelay(upstream_w)
            to_upstream, to_client = _Pipe(self, upstream_w), _Pipe(self, client_w)
            delivery = asyncio.create_task(to_client.run())
            workers = [delivery, asyncio.create_task(to_upstream.run()),
                       asyncio.create_task(self._requests(client_r, to_upstream, to_client)),
                       asyncio.create_task(self._responses(upstream_r, to_client))]
            # over when everything has reached the client (or it was reset), or on any error
            pending: set[asyncio.Task[None]] = set(workers)
            while delivery in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(not t.cancelled() and t.exception() is not None for t in done):
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the task must not end cancelled: asyncio would log that as an error
        finally:
            for worker in workers:
                worker.cancel()
            for worker in workers:
                with contextlib.suppress(BaseException):
                    await worker
            for writer in (client_w, upstream_w):
                if writer is not None:
                    if self._stopping:
                        writer.transport.abort()
                    else:
                        writer.close()
            self._connections.discard(task)

    async def _responses(self, upstream_r: asyncio.StreamReader, to_client: _Pipe) -> None:
        """Response direction: a plain byte pump (clients do not pipeline)."""
        while True:
            data = await upstream_r.read(READ_SIZE)
            now = time.monotonic()
            if not data:
                await to_client.put(_EOF, now)
                return
            await to_client.put(data, now)

    async def _requests(self, client_r: asyncio.StreamReader, to_upstream: _Pipe,
                        to_client: _Pipe) -> None:
        """Request direction: parse each request so it can be logged, failed or forwarded."""
        while True:
            try:
                head = await client_r.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:  # the client hung up mid-head: pass on what it sent
                    await to_upstream.put(exc.partial, time.monotonic())
                await to_upstream.put(_EOF, time.monotonic())
                return
            except asyncio.LimitOverrunError:
                raise _Closed("request head too long") from None
            now = time.monotonic()
            method, target, headers = _parse_head(head)
            outcome = self._decide(method, target, headers.get("range"), now)
            if outcome == "forwarded":
                await to_upstream.put(head, now)
                await _body(client_r, headers, to_upstream.put)
            elif outcome == "503":
                # with "Expect: 100-continue" the client may or may not send the body after a
                # final answer, so the connection cannot be reused: answer and close
                expect = "100-continue" in headers.get("expect", "").lower()
                if not expect:
                    await _body(client_r, headers, None)
                answer = _slowdown(method, target, self._numbered, close=expect)
                await to_client.put(answer, time.monotonic() + self._settings.delay)
                if expect:
                    await to_client.put(_EOF, time.monotonic() + self._settings.delay)
                    return
            elif outcome == "reset":
                await to_client.put(_RESET, now + self._settings.delay)
                return
            else:  # stall: silence, then close
                await asyncio.sleep(self._settings.faults.stall_s)
                raise _Closed("stalled")


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Method, target and lower-cased headers of a request head."""
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")  # stray CRLFs may lead
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _Closed(f"malformed request line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return parts[0], parts[1], headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str],
                put: Callable[[bytes, float], Awaitable[None]] | None) -> None:
    """Read one request body (Content-Length or chunked), passing each piece to `put`
    (or dropping it when `put` is None)."""

    async def forward(data: bytes) -> None:
        if put is not None:
            await put(data, time.monotonic())

    async def exactly(n: int) -> None:
        while n > 0:
            data = await reader.read(min(n, READ_SIZE))
            if not data:
                raise _Closed("client closed mid-body")
            n -= len(data)
            await forward(data)

    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readuntil(b"\r\n")
            await forward(line)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _Closed("malformed chunk size") from None
            if size == 0:
                while True:  # trailers, up to an empty line
                    trailer = await reader.readuntil(b"\r\n")
                    await forward(trailer)
                    if trailer == b"\r\n":
                        return
            await exactly(size + 2)
    length = headers.get("content-length")
    if length is not None:
        try:
            n = int(length.split(",")[0])
        except ValueError:
            raise _Closed("malformed Content-Length") from None
        await exactly(n)
