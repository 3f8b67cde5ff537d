"""A local S3 endpoint for tests and notebooks: moto's server behind a DelayProxy.

moto answers S3 requests in-process (correct, but almost serial: good for correctness, not
for measuring parallel scaling); the proxy in front adds the cloud's delay, bandwidth cap and
faults. moto keeps its buckets and objects per process, so every LocalS3 in one process sees
the same data.
"""

from __future__ import annotations

import contextlib
import logging
from types import TracebackType
from typing import Any

from memsim.emulate.proxy import DelayProxy, Faults, _check_bandwidth, _check_delay
from memsim.errors import InputError

__all__ = ["ACCESS_KEY_ID", "REGION", "SECRET_ACCESS_KEY", "LocalS3", "LocalS3Process"]

ACCESS_KEY_ID = "memsim-test-key"
SECRET_ACCESS_KEY = "memsim-test-secret"
REGION = "us-east-1"
_MISSING_MOTO = "the cloud emulator needs moto: pip install 'memsim[emulate]'"


def _moto_server_class() -> Any:
    """moto's ThreadedMotoServer, imported only when needed (moto is optional)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise InputError(_MISSING_MOTO) from None
    return ThreadedMotoServer


class LocalS3:
    """moto S3 server on 127.0.0.1 with a DelayProxy in front.

    delay, bandwidth and faults configure the proxy (see DelayProxy); `buckets` are created
    on start. Clients use `endpoint` (or the variables from `env()`); `direct_endpoint`
    reaches moto without delay or faults, e.g. to set up data quickly.
    """

    def __init__(self, *, delay: float = 0.0, bandwidth: float | None = None,
                 faults: Faults | None = None, buckets: tuple[str, ...] = ("memsim",),
                 port: int = 0) -> None:
        self._settings: dict[str, Any] = {"delay": delay, "bandwidth": bandwidth,
                                          "faults": faults}
        _check_delay(delay), _check_bandwidth(bandwidth)  # fail now rather than at start
        self._buckets = tuple(buckets)
        self._port = port
        self._server: Any = None
        self._proxy: DelayProxy | None = None
        self._direct: str | None = None

    def start(self) -> LocalS3:
        """Start moto and the proxy, and create the buckets; returns self."""
        if self._server is not None:
            raise RuntimeError("LocalS3 is already running")
        server_class = _moto_server_class()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = server_class(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._server = server
        try:
            host, port = server.get_host_and_port()
            self._direct = f"http://{host}:{port}"
            self._proxy = DelayProxy(self._direct, port=self._port, **self._settings).start()
            for bucket in self._buckets:
                self.create_bucket(bucket)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the proxy and moto; idempotent."""
        if self._proxy is not None:
            self._proxy.stop()
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            inner = getattr(server, "_server", None)  # ThreadedMotoServer leaves it listening
            if inner is not None:
                with contextlib.suppress(OSError):
                    inner.server_close()

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def proxy(self) -> DelayProxy:
        """The delay proxy in front of moto (configure it at runtime, read its log)."""
        if self._proxy is None:
            raise RuntimeError("LocalS3 is not running: call start() first")
        return self._proxy

    @property
    def endpoint(self) -> str:
        """The proxied URL clients should use."""
        return self.proxy.url

    @property
    def direct_endpoint(self) -> str:
        """moto itself: no delay, no faults, not logged."""
        if self._direct is None or self._server is None:
            raise RuntimeError("LocalS3 is not running: call start() first")
        return self._direct

    def env(self) -> dict[str, str]:
        """Environment variables that point S3 clients (obstore, boto3, the AWS CLI) here."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,  # boto3 and the AWS CLI read this one
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self, *, direct: bool = False) -> Any:
        """A boto3 S3 client for this endpoint (or for moto directly), without retries."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.direct_endpoint if direct else self.endpoint,
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                          s3={"addressing_style": "path"}))

    def create_bucket(self, name: str) -> None:
        """Create bucket `name` (through moto directly); an existing one is kept."""
        from botocore.exceptions import ClientError

        try:
            self.client(direct=True).create_bucket(Bucket=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise


class LocalS3Process:
    """`memsim cloud-emulator` in a child process: the same emulated cloud, without its
    server and proxy competing for this process's interpreter lock, so that timings taken
    here (replay, validate, calibrate) are not inflated by the emulator's own Python work."""

    def __init__(self, *, delay: float = 0.0, bandwidth: float | None = None,
                 buckets: tuple[str, ...] = ("memsim",)) -> None:
        self.delay, self.bandwidth, self.buckets = delay, bandwidth, buckets
        self._proc: Any = None
        self._info: dict[str, Any] = {}

    def start(self, timeout: float = 60.0) -> LocalS3Process:
        import json
        import subprocess
        import sys

        args = [sys.executable, "-c", "from memsim.cli import main; main()", "cloud-emulator",
                "--json", "--delay", f"{self.delay} s"]
        if self.bandwidth is not None:
            args += ["--bandwidth", f"{self.bandwidth} B/s"]
        for bucket in self.buckets:
            args += ["--bucket", bucket]
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True)
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout)
            raise InputError("the cloud emulator did not start (is moto installed? "
                             "pip install 'memsim[emulate]')")
        self._info = json.loads(line)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except Exception:  # noqa: BLE001 - a child that will not go is killed
                self._proc.kill()
        self._proc = None

    def __enter__(self) -> LocalS3Process:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return self._info["endpoint"]

    @property
    def direct_endpoint(self) -> str:
        return self._info["direct_endpoint"]

    def env(self) -> dict[str, str]:
        """The AWS_* variables that point S3 clients at the emulator."""
        return dict(self._info["env"])
