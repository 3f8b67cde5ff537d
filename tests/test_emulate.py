"""The emulated cloud tier: the delay proxy's timing, pacing, faults and log; LocalS3; the CLI."""

from __future__ import annotations

import http.client
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from memsim.cli.emulate import cloud_emulator
from memsim.emulate import DelayProxy, Faults, LocalS3, RequestRecord

MB = 1_000_000
_BLOCK = bytes(range(256)) * 4096  # 1 MiB of a known pattern


def _pattern(n: int) -> bytes:
    return (_BLOCK * (n // len(_BLOCK) + 1))[:n]


class _Handler(BaseHTTPRequestHandler):
    """GET /bytes/N answers N bytes of the pattern; PUT answers the body's length."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass

    def do_GET(self):
        n = int(self.path.split("?")[0].rsplit("/", 1)[-1]) if "/bytes/" in self.path else 2
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        view = memoryview(_BLOCK)
        while n:
            k = min(n, len(_BLOCK))
            self.wfile.write(view[:k])
            n -= k

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()

    def do_PUT(self):
        got = 0
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):  # trailers
                        pass
                    break
                got += len(self.rfile.read(size + 2)) - 2
        else:
            n = int(self.headers.get("Content-Length", 0))
            while got < n:
                got += len(self.rfile.read(min(n - got, 1 << 20)))
        body = str(got).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _conn(url: str, timeout: float = 10.0) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def _get(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
         ) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    return time.perf_counter() - start, response.status, body


# ---------------------------------------------------------------- timing and pacing
def test_small_get_takes_one_round_trip(upstream):
    """The delay is a floor no machine load can lower; the upper bounds are generous (a busy
    machine only adds time), and the delay is big enough that its removal shows."""
    with DelayProxy(upstream, delay=0.2) as proxy:
        conn = _conn(proxy.url)
        times = []
        for _ in range(3):
            elapsed, status, body = _get(conn, "/bytes/10")
            assert status == 200 and body == _BLOCK[:10]
            times.append(elapsed)
        assert min(times) >= 0.4
        assert statistics.median(times) < 0.4 + 0.3
        proxy.configure(delay=0.0)  # applies to new data: the next request is fast again
        assert _get(conn, "/bytes/10")[0] < 0.3
        conn.close()


def test_large_bodies_are_paced_to_the_bandwidth(upstream):
    n, delay, bandwidth = 4 * MB, 0.02, 20 * MB
    expected = 2 * delay + n / bandwidth
    with DelayProxy(upstream, delay=delay, bandwidth=bandwidth) as proxy:
        conn = _conn(proxy.url)
        elapsed, status, body = _get(conn, f"/bytes/{n}")
        assert status == 200 and body == _pattern(n)
        assert 0.95 * expected <= elapsed <= expected + 2.0, (elapsed, expected)
        start = time.perf_counter()  # the request direction is paced too
        conn.request("PUT", "/upload", body=_pattern(n))
        response = conn.getresponse()
        assert response.read() == str(n).encode()
        elapsed = time.perf_counter() - start
        assert 0.95 * expected <= elapsed <= expected + 2.0, (elapsed, expected)
        conn.close()


def test_unpaced_throughput_is_high(upstream):
    n = 64 * MB
    with DelayProxy(upstream) as proxy:
        direct, proxied = _conn(upstream), _conn(proxy.url)
        best_direct = best_proxied = math.inf
        for _ in range(3):  # interleaved, so both see the same machine load
            best_direct = min(best_direct, _get(direct, f"/bytes/{n}")[0])
            best_proxied = min(best_proxied, _get(proxied, f"/bytes/{n}")[0])
        direct.close()
        proxied.close()
    # here (client, proxy and server in one process): ~3 GB/s direct, ~1 GB/s proxied; a proxy
    # with small reads or a sleep per chunk would fall to a few percent of the direct rate
    rates = f"{n / best_proxied / MB:.0f} MB/s proxied, {n / best_direct / MB:.0f} direct"
    print(rates)
    assert best_direct / best_proxied > 0.1, rates


# ---------------------------------------------------------------- faults
def _outcomes(url: str, n: int) -> list[str]:
    """What a client sees for n GETs: "forwarded", "503" or "reset" (a connection error)."""
    seen = []
    conn = _conn(url)
    for _ in range(n):
        try:
            _, status, body = _get(conn, "/bytes/3")
        except ConnectionError:
            seen.append("reset")
            conn.close()
            conn = _conn(url)
            continue
        assert status in (200, 503)
        if status == 503:
            assert b"<Code>SlowDown</Code>" in body
        seen.append("forwarded" if status == 200 else "503")
    conn.close()
    return seen


def test_fault_rates_are_plausible_and_seeded(upstream):
    n, rate = 200, 0.3
    faults = Faults(rate=rate, kinds=("503", "reset"), seed=11)
    with DelayProxy(upstream, faults=faults) as proxy:
        seen = _outcomes(proxy.url, n)
        logged = [r.outcome for r in proxy.requests]
        assert logged == seen  # every request is logged with what the client saw
        counts = proxy.counts
        assert sum(counts.values()) == n
        proxy.configure(faults=faults)  # the same seed again: the same sequence
        proxy.clear_log()
        assert _outcomes(proxy.url, n) == seen
        proxy.configure(faults=Faults(rate=rate, kinds=("503", "reset"), seed=12))
        assert _outcomes(proxy.url, n) != seen
    # binomial bounds, 4.5 standard deviations wide
    for p, observed in [(rate, n - counts.get("forwarded", 0)), (rate / 2, counts.get("503", 0)),
                        (rate / 2, counts.get("reset", 0))]:
        sd = math.sqrt(n * p * (1 - p))
        assert abs(observed - n * p) <= 4.5 * sd, (p, observed, counts)


def test_503_keeps_the_connection_usable(upstream):
    with DelayProxy(upstream, delay=0.01, faults=Faults(rate=1.0, kinds=("503",))) as proxy:
        conn = _conn(proxy.url)
        start = time.perf_counter()
        conn.request("PUT", "/x", body=b"y" * 100_000)  # the body is drained, not forwarded
        response = conn.getresponse()
        body = response.read()
        assert time.perf_counter() - start >= 0.02  # answered one round trip later
        assert response.status == 503 and b"<Code>SlowDown</Code>" in body
        assert response.getheader("Content-Length") == str(len(body))
        sock = conn.sock
        conn.request("HEAD", "/x")  # a 503 to HEAD has no body
        response = conn.getresponse()
        assert response.status == 503 and response.read() == b""
        proxy.configure(faults=None)
        assert _get(conn, "/bytes/5")[1:] == (200, _BLOCK[:5])
        assert conn.sock is sock  # still the same connection
        conn.close()
        assert [(r.method, r.outcome) for r in proxy.requests] == [
            ("PUT", "503"), ("HEAD", "503"), ("GET", "forwarded")]


def test_reset_surfaces_as_a_connection_error(upstream):
    with DelayProxy(upstream, delay=0.01, faults=Faults(rate=1.0, kinds=("reset",))) as proxy:
        conn = _conn(proxy.url)
        start = time.perf_counter()
        with pytest.raises(ConnectionResetError):
            _get(conn, "/bytes/5")
        assert time.perf_counter() - start >= 0.02  # one round trip later
        conn.close()
        host, port = proxy.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(ConnectionResetError):  # an RST, not an orderly close
                sock.recv(1024)
        assert proxy.counts == {"reset": 2}


def test_stall_hangs_then_closes(upstream):
    with DelayProxy(upstream, faults=Faults(rate=1.0, kinds=("stall",), stall_s=0.3)) as proxy:
        conn = _conn(proxy.url)
        start = time.perf_counter()
        with pytest.raises(ConnectionError):
            _get(conn, "/bytes/5")
        assert 0.3 <= time.perf_counter() - start < 10
        conn.close()
        assert proxy.counts == {"stall": 1}


def test_stop_is_prompt_while_a_request_stalls(upstream):
    proxy = DelayProxy(upstream, faults=Faults(rate=1.0, kinds=("stall",), stall_s=30)).start()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            _get(_conn(proxy.url, timeout=20), "/bytes/5")
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while not proxy.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.counts == {"stall": 1}
    start = time.perf_counter()
    proxy.stop()
    assert time.perf_counter() - start < 10  # not the stall's 30 s
    proxy.stop()  # idempotent
    thread.join(5)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], ConnectionError)
    with pytest.raises(RuntimeError):
        _ = proxy.url


def test_bad_settings_are_refused(upstream):
    with pytest.raises(ValueError, match="fault rate"):
        Faults(rate=1.5)
    with pytest.raises(ValueError, match="fault kind"):
        Faults(rate=0.1, kinds=("timeout",))
    with pytest.raises(ValueError, match="delay"):
        DelayProxy(upstream, delay=-1)
    with pytest.raises(ValueError, match="bandwidth"):
        DelayProxy(upstream, bandwidth=0)
    with pytest.raises(ValueError, match="upstream"):
        DelayProxy("127.0.0.1:80")


# ---------------------------------------------------------------- the request log
def test_log_records_method_path_and_range(upstream):
    with DelayProxy(upstream) as proxy:
        before = time.monotonic()
        conn = _conn(proxy.url)
        _get(conn, "/bytes/100?part=2", {"Range": "bytes=0-99"})
        conn.request("PUT", "/chunked", body=iter([b"abc", b"defgh"]), encode_chunked=True)
        assert conn.getresponse().read() == b"8"
        _get(conn, "/bytes/1")  # the chunked body ended where it should
        conn.close()
        log = proxy.requests
        assert [(r.method, r.path, r.range, r.outcome) for r in log] == [
            ("GET", "/bytes/100?part=2", "bytes=0-99", "forwarded"),
            ("PUT", "/chunked", None, "forwarded"),
            ("GET", "/bytes/1", None, "forwarded"),
        ]
        assert all(isinstance(r, RequestRecord) for r in log)
        assert before <= log[0].time <= log[1].time <= log[2].time <= time.monotonic()
        log.clear()  # a copy
        assert len(proxy.requests) == 3
        proxy.clear_log()
        assert proxy.requests == [] and proxy.counts == {}


# ---------------------------------------------------------------- LocalS3
@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3]:
    with LocalS3(delay=0.005, buckets=("memsim", "second")) as server:
        yield server


def test_local_s3_through_the_proxy_with_boto3(s3):
    client = s3.client()
    data = _pattern(300_000)
    client.put_object(Bucket="memsim", Key="a/b.bin", Body=data)
    s3.proxy.clear_log()
    assert client.get_object(Bucket="memsim", Key="a/b.bin")["Body"].read() == data
    part = client.get_object(Bucket="memsim", Key="a/b.bin", Range="bytes=100-199")
    assert part["Body"].read() == data[100:200]
    log = s3.proxy.requests
    assert [(r.method, r.path, r.range) for r in log] == [
        ("GET", "/memsim/a/b.bin", None), ("GET", "/memsim/a/b.bin", "bytes=100-199")]
    names = {b["Name"] for b in s3.client(direct=True).list_buckets()["Buckets"]}
    assert {"memsim", "second"} <= names
    s3.create_bucket("memsim")  # already there: kept


def test_local_s3_with_obstore_and_env(s3):
    import obstore
    from obstore.store import S3Store

    env = s3.env()
    assert env["AWS_ENDPOINT_URL"] == s3.endpoint != s3.direct_endpoint
    assert env["AWS_REGION"] == "us-east-1" and env["AWS_ALLOW_HTTP"] == "true"
    store = S3Store("memsim", endpoint=env["AWS_ENDPOINT_URL"],
                    access_key_id=env["AWS_ACCESS_KEY_ID"],
                    secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region=env["AWS_REGION"],
                    client_options={"allow_http": True}, virtual_hosted_style_request=False)
    data = _pattern(100_000)
    obstore.put(store, "o/x.bin", data)
    s3.proxy.clear_log()
    assert bytes(obstore.get_range(store, "o/x.bin", start=10, end=20)) == data[10:20]
    assert [(r.method, r.path, r.range) for r in s3.proxy.requests] == [
        ("GET", "/memsim/o/x.bin", "bytes=10-19")]
    assert bytes(obstore.get(store, "o/x.bin").bytes()) == data


def test_local_s3_faults_reach_the_client(s3):
    from botocore.exceptions import ClientError

    client = s3.client()
    client.put_object(Bucket="memsim", Key="f", Body=b"abc")
    s3.proxy.configure(faults=Faults(rate=1.0, kinds=("503",)))
    try:
        with pytest.raises(ClientError, match="SlowDown"):
            client.get_object(Bucket="memsim", Key="f")
    finally:
        s3.proxy.configure(faults=None)
    assert client.get_object(Bucket="memsim", Key="f")["Body"].read() == b"abc"


def test_local_s3_needs_a_start():
    server = LocalS3()
    with pytest.raises(RuntimeError):
        _ = server.endpoint
    server.stop()  # harmless


# ---------------------------------------------------------------- CLI
def test_cli_help_and_bad_options():
    runner = CliRunner()
    result = runner.invoke(cloud_emulator, ["--help"])
    assert result.exit_code == 0
    for option in ("--delay", "--bandwidth", "--fault-rate", "--faults", "--bucket", "--port"):
        assert option in result.output
    for args in (["--delay", "20 parsecs"], ["--bandwidth", "fast"], ["--bandwidth", "0 MB/s"],
                 ["--fault-rate", "1.5"], ["--faults", "503,boom"], ["--bucket", "Not_A_Bucket"],
                 ["--port", "-1"]):
        result = runner.invoke(cloud_emulator, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Invalid value" in result.output and "Traceback" not in result.output


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_cli_serves_until_ctrl_c():
    code = "from memsim.cli.emulate import cloud_emulator; cloud_emulator()"
    args = ["--delay", "5 ms", "--bucket", "bench-data", "--log-requests"]
    proc = subprocess.Popen([sys.executable, "-c", code, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    watchdog = threading.Timer(300, proc.kill)  # never hang the suite, even on a busy machine
    watchdog.start()
    try:
        lines = []
        for line in proc.stdout:  # wait for the readiness line, however long start-up takes
            lines.append(line)
            if "serving" in line:
                break
        assert lines and "serving" in lines[-1], "".join(lines)
        exports = dict(line.removeprefix("export ").strip().split("=", 1)
                       for line in lines if line.startswith("export "))
        assert exports["AWS_ACCESS_KEY_ID"] and exports["AWS_ALLOW_HTTP"] == "true"
        conn = _conn(exports["AWS_ENDPOINT_URL"])
        elapsed, status, _ = _get(conn, "/bench-data")  # list the bucket through the proxy
        conn.close()
        assert status == 200 and elapsed >= 0.01
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        watchdog.cancel()
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "GET /bench-data forwarded" in err
