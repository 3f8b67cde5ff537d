"""`memsim cloud-emulator`: a local S3 endpoint with cloud-like delay, bandwidth and faults."""

from __future__ import annotations

import json
import re
import shlex
import signal
import sys
import threading
import time
from types import FrameType

import click

from memsim.emulate.proxy import FAULT_KINDS, Faults
from memsim.emulate.s3 import LocalS3
from memsim.errors import MemsimError
from memsim.units import UnitError, format_rate, format_time, parse_rate, parse_time

__all__ = ["cloud_emulator"]

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_UNPACED = {"none", "unlimited", "unpaced", "inf"}


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return parse_time(value)
    except UnitError as exc:
        raise click.BadParameter(str(exc)) from None


def _bandwidth(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None or value.strip().lower() in _UNPACED:
        return None
    try:
        rate = parse_rate(value)
    except UnitError as exc:
        raise click.BadParameter(str(exc)) from None
    if rate <= 0:
        raise click.BadParameter(f'"{value}" is not a positive rate; for no cap leave it out')
    return rate


def _kinds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    kinds = tuple(k.strip().lower() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise click.BadParameter(f"expected a comma-separated list of {', '.join(FAULT_KINDS)}"
                                 f", not {value!r}")
    return tuple(dict.fromkeys(kinds))


def _buckets(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
             ) -> tuple[str, ...]:
    for name in value:
        if not _BUCKET.match(name) or ".." in name:
            raise click.BadParameter(f"{name!r} is not an S3 bucket name (3-63 characters: "
                                     "lowercase letters, digits, '.' and '-')")
    return tuple(dict.fromkeys(value))


def _describe(delay: float, bandwidth: float | None, faults: Faults) -> str:
    what = [f"{format_time(delay)} each way" if delay else "no delay",
            f"{format_rate(bandwidth)} per connection" if bandwidth else "unpaced"]
    if faults.rate:
        what.append(f"{faults.rate:.3g} of requests fail ({', '.join(faults.kinds)}, "
                    f"seed {faults.seed})")
    else:
        what.append("no faults")
    return ", ".join(what)


def _stop_on_sigterm() -> None:
    """Let `kill` end the emulator as cleanly as Ctrl-C does."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _serve(s3: LocalS3, log_requests: bool) -> None:
    """Wait for Ctrl-C, printing each request to stderr if asked."""
    start = time.monotonic()
    seen = 0

    def print_new() -> None:
        nonlocal seen
        records, seen = s3.proxy.requests_since(seen)
        for record in records:
            extra = f" {record.range}" if record.range else ""
            click.echo(f"{record.time - start:9.3f} s  {record.method} {record.path}{extra} "
                       f"{record.outcome}", err=True)

    stop = threading.Event()
    try:
        while not stop.wait(0.2 if log_requests else 3600):
            print_new()
    finally:
        if log_requests:
            print_new()


@click.command("cloud-emulator",
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--delay", default="0 ms", show_default=True, callback=_duration, metavar="TIME",
              help='One-way delay added in each direction, e.g. "20 ms" (a request takes '
                   "2 x delay + bytes / bandwidth).")
@click.option("--bandwidth", callback=_bandwidth, metavar="RATE",
              help='Cap per connection and direction, e.g. "100 MB/s" or "1 Gbit/s".  '
                   "[default: unpaced]")
@click.option("--fault-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of requests that fail.")
@click.option("--faults", "kinds", default="503,reset", show_default=True, callback=_kinds,
              metavar="KINDS",
              help="How requests fail, drawn evenly: 503 (S3 SlowDown answer), reset "
                   "(connection reset), stall (no answer, then the connection closes).")
@click.option("--stall-time", default="30 s", show_default=True, callback=_duration,
              metavar="TIME", help="How long a stalled request hangs before it is closed.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the fault sequence: the same seed fails the same requests.")
@click.option("--bucket", "buckets", multiple=True, default=("memsim",), show_default=True,
              callback=_buckets, metavar="NAME", help="Bucket to create (repeatable).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the endpoint on 127.0.0.1 (0: any free port).")
@click.option("--log-requests", is_flag=True,
              help="Print every request (seconds since start, method, path, range, outcome) to "
                   "stderr.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the endpoint and environment as one JSON object instead.")
def cloud_emulator(delay: float, bandwidth: float | None, fault_rate: float,
                   kinds: tuple[str, ...], stall_time: float, seed: int,
                   buckets: tuple[str, ...], port: int, log_requests: bool,
                   as_json: bool) -> None:
    """Serve a local S3 endpoint that behaves like a distant cloud store.

    moto answers S3 requests on 127.0.0.1; a proxy in front adds the delay, caps the
    bandwidth, makes a fraction of requests fail and logs them. Paste the printed `export`
    lines into a shell (or a notebook's environment) and point S3 clients at the endpoint.
    Serves until Ctrl-C.

    \b
    Example, an S3-like link (about 40 ms per small request, 100 MB/s per connection):
      memsim cloud-emulator --delay "20 ms" --bandwidth "100 MB/s"
    """
    faults = Faults(rate=fault_rate, kinds=kinds, stall_s=stall_time, seed=seed)
    s3 = LocalS3(delay=delay, bandwidth=bandwidth, faults=faults, buckets=buckets, port=port)
    try:
        s3.start()
    except MemsimError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve on 127.0.0.1:{port}: "
                                   f"{exc.strerror or exc}") from None
    try:
        _stop_on_sigterm()
        env = s3.env()
        if as_json:
            click.echo(json.dumps({"endpoint": s3.endpoint, "direct_endpoint": s3.direct_endpoint,
                                   "buckets": list(buckets), "delay_s": delay,
                                   "bandwidth_bytes_per_s": bandwidth, "fault_rate": fault_rate,
                                   "faults": list(kinds), "stall_s": stall_time, "seed": seed,
                                   "env": env}))
        else:
            click.echo(f"# memsim cloud emulator: S3 (moto) with "
                       f"{_describe(delay, bandwidth, faults)}")
            click.echo(f"# endpoint {s3.endpoint}, bucket(s) {', '.join(buckets)} "
                       f"(moto without delay or faults: {s3.direct_endpoint})")
            for name, value in env.items():
                click.echo(f"export {name}={shlex.quote(value)}")
            click.echo("# serving until Ctrl-C")
        sys.stdout.flush()
        _serve(s3, log_requests)
    except KeyboardInterrupt:
        if not as_json:
            click.echo("# stopped", err=True)
    finally:
        s3.stop()

