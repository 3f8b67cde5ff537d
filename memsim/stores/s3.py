"""s3:// stores through obstore, with memsim's own retries so that they can be counted.

obstore's retries are turned off for reads: each failed attempt (5xx, reset, timeout, short
body) is retried here with exponential backoff and full jitter, and counted. Writes (through
zarr's ObjectStore) keep obstore's retries. Error messages never carry credentials.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

from memsim.errors import DataError, StoreError
from memsim.stores.abc import ByteStore
from memsim.stores.url import S3Settings, redact

BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0


def _classify(exc: BaseException) -> str:
    """'missing', 'denied', 'bucket', 'unreachable' or 'transient'."""
    import obstore.exceptions as oe

    text = str(exc)
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return "bucket"
    if isinstance(exc, oe.NotFoundError | FileNotFoundError):
        return "missing"
    if isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError) or any(
            s in text for s in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                                "403 Forbidden", "ExpiredToken")):
        return "denied"
    if any(s in text.lower() for s in ("connection refused", "dns error",
                                       "failed to lookup address", "no route to host")):
        return "unreachable"
    return "transient"


class S3ByteStore(ByteStore):
    """s3:// store. Reads are byte-range GETs, retried `settings.retries` times."""

    kind = "s3"

    def __init__(self, settings: S3Settings, display: str, *, seed: int = 0) -> None:
        super().__init__(display)
        self.settings = settings
        self._rng = random.Random(seed)
        self._read_store = self._make(retries=False)
        self._write_store: Any = None

    def _make(self, *, retries: bool) -> Any:
        from obstore.store import S3Store

        s = self.settings
        config: dict[str, Any] = {"region": s.region, "virtual_hosted_style_request": False}
        if s.endpoint:
            config["endpoint"] = s.endpoint
        if s.access_key_id:
            config["access_key_id"] = s.access_key_id
        if s.secret_access_key:
            config["secret_access_key"] = s.secret_access_key
        if s.session_token:
            config["session_token"] = s.session_token
        if not (s.access_key_id and s.secret_access_key):
            config["skip_signature"] = True  # public buckets; private ones answer 403
        client = {"timeout": timedelta(seconds=s.timeout_s),
                  "connect_timeout": timedelta(seconds=min(s.timeout_s, 5.0)),
                  "allow_http": bool(s.endpoint and s.endpoint.startswith("http://"))}
        retry: dict[str, Any] = ({"max_retries": 0} if not retries else
                                 {"max_retries": s.retries,
                                  "retry_timeout": timedelta(seconds=max(60.0, s.timeout_s))})
        try:
            return S3Store(s.bucket, prefix=s.prefix or None, config=config,
                           client_options=client, retry_config=retry)
        except Exception as exc:  # noqa: BLE001 - obstore raises several config error types
            raise StoreError(f"cannot set up {self.url}: {self._scrub(exc)}") from None

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()
        return redact(text[0] if text else type(exc).__name__, self.settings.secrets)

    def error(self, exc: BaseException, key: str, attempts: int = 1
              ) -> StoreError | DataError:
        """A clear, credential-free error for a failed request."""
        kind = _classify(exc)
        where = f"{self.url}/{key}" if key else self.url
        if kind == "missing":
            return DataError(f"object '{key}' is missing from {self.url}")
        if kind == "bucket":
            return StoreError(f"bucket '{self.settings.bucket}' does not exist at {self.url}")
        if kind == "denied":
            return StoreError(f"access to {where} was denied: check the credentials "
                              "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws/credentials)")
        if kind == "unreachable":
            endpoint = self.settings.endpoint or "the AWS endpoint"
            return StoreError(f"cannot reach {endpoint} for {self.url}: connection refused or "
                              "no such host")
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return StoreError(f"request for {where} failed{tries}: {self._scrub(exc)}")

    def zarr_store(self) -> Any:
        from zarr.storage import ObjectStore

        if self._write_store is None:
            self._write_store = self._make(retries=True)
        return ObjectStore(self._write_store)

    async def _retrying(self, key: str, call: Any, expect: int | None) -> Any:
        attempt = 0
        while True:
            try:
                result = await call()
                if expect is not None and len(memoryview(result)) != expect:
                    raise _ShortRead(f"short body: {len(memoryview(result))} of {expect} bytes")
                self.counters.requests += 1
                self.counters.bytes += len(memoryview(result))
                return result
            except Exception as exc:  # noqa: BLE001 - classified below
                kind = _classify(exc)
                if kind != "transient" or attempt >= self.settings.retries:
                    raise self.error(exc, key, attempt + 1) from None
                label = "short_read" if isinstance(exc, _ShortRead) else _label(exc)
                self.counters.errors[label] = self.counters.errors.get(label, 0) + 1
                self.counters.retries += 1
                delay = self._rng.uniform(0, min(MAX_BACKOFF_S, BACKOFF_S * 2 ** attempt))
                attempt += 1
                await asyncio.sleep(delay)

    async def read_range(self, key: str, start: int, length: int) -> memoryview:
        import obstore

        out = await self._retrying(
            key, lambda: obstore.get_range_async(self._read_store, key, start=start,
                                                 length=length), length)
        return memoryview(out)

    async def read_suffix(self, key: str, length: int) -> memoryview | None:
        import obstore

        async def call() -> Any:
            result = await obstore.get_async(self._read_store, key,
                                             options={"range": {"suffix": length}})
            return await result.bytes_async()

        try:
            return memoryview(await self._retrying(key, call, length))
        except DataError:
            return None

    async def read(self, key: str) -> memoryview | None:
        import obstore

        async def call() -> Any:
            result = await obstore.get_async(self._read_store, key)
            return await result.bytes_async()

        try:
            return memoryview(await self._retrying(key, call, None))
        except DataError:
            return None

    async def list_keys(self, prefix: str) -> set[str]:
        import obstore

        out: set[str] = set()
        try:
            stream = obstore.list(self._read_store, prefix=prefix.rstrip("/") + "/",
                                  chunk_size=1000)
            async for batch in stream:
                out.update(meta["path"] for meta in batch)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, prefix) from None
        return out

    async def check_writable(self) -> None:
        import obstore

        key = ".memsim-probe"
        try:
            await obstore.put_async(self._read_store, key, b"x")
            await obstore.delete_async(self._read_store, key)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, "") from None


class _ShortRead(Exception):
    """A body shorter than asked for (a connection cut mid-transfer)."""


def _label(exc: BaseException) -> str:
    text = str(exc).lower()
    if "503" in text or "slowdown" in text or "service unavailable" in text:
        return "http_503"
    if "500" in text or "502" in text or "504" in text:
        return "http_5xx"
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "reset" in text or "connection closed" in text or "broken pipe" in text or \
            "error sending request" in text or "incomplete" in text:
        return "connection"
    return "other"
