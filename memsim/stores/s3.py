"""s3:// stores through obstore, with memsim's own retries so that they can be counted.

obstore's retries are turned off: every request memsim makes (GET, LIST, HEAD, PUT, DELETE),
whether its own reads or zarr's writes (through `RetryingObjectStore`), is retried here on a
transient failure (5xx, reset, timeout, short body) with exponential backoff and full jitter,
and counted in the store's counters. Every request kind is idempotent (a PUT rewrites the same
bytes), so a retry never changes the outcome. Error messages never carry credentials.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from memsim.errors import DataError, StoreError
from memsim.stores.abc import ByteStore
from memsim.stores.url import S3Settings, redact

T = TypeVar("T")

BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0


def _classify(exc: BaseException) -> str:
    """'missing', 'denied', 'bucket', 'unreachable', 'refused' (an answer that a retry would
    only repeat: already exists, precondition, unsupported, bad path) or 'transient'."""
    import obstore.exceptions as oe

    if isinstance(exc, oe.AlreadyExistsError | oe.PreconditionError | oe.NotModifiedError
                  | oe.NotSupportedError | oe.InvalidPathError
                  | oe.UnknownConfigurationKeyError | ValueError | TypeError):
        return "refused"
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
        self._read_store = self._make()

    def _make(self) -> Any:
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
        try:
            return S3Store(s.bucket, prefix=s.prefix or None, config=config,
                           client_options=client, retry_config={"max_retries": 0})
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
        return RetryingObjectStore(self._read_store, owner=self)

    async def attempt(self, call: Callable[[], Awaitable[T]],
                      expect: int | None = None) -> tuple[T, int]:
        """`call()` until it succeeds, retrying transient failures with counted backoff;
        (result, attempts). The last failure (or a lasting one) is raised as it came, so
        that callers keep its type (zarr treats a missing key as an absent chunk)."""
        attempt = 0
        while True:
            try:
                result = await call()
                if expect is not None and len(memoryview(result)) != expect:  # type: ignore[arg-type]
                    raise _ShortRead(f"short body: {len(memoryview(result))} of "  # type: ignore[arg-type]
                                     f"{expect} bytes")
                self.counters.requests += 1
                return result, attempt + 1
            except Exception as exc:
                if _classify(exc) != "transient" or attempt >= self.settings.retries:
                    exc.memsim_attempts = attempt + 1  # type: ignore[attr-defined]
                    raise
                label = _label(exc)
                self.counters.errors[label] = self.counters.errors.get(label, 0) + 1
                self.counters.retries += 1
                delay = self._rng.uniform(0, min(MAX_BACKOFF_S, BACKOFF_S * 2 ** attempt))
                attempt += 1
                await asyncio.sleep(delay)

    async def _retrying(self, key: str, call: Callable[[], Awaitable[Any]],
                        expect: int | None) -> Any:
        """`attempt`, with a failure turned into memsim's error, and the bytes counted."""
        try:
            result, _n = await self.attempt(call, expect)
        except Exception as exc:  # noqa: BLE001 - classified by self.error
            raise self.error(exc, key, getattr(exc, "memsim_attempts", 1)) from None
        self.counters.bytes += len(memoryview(result))
        return result

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

        async def call() -> list[Any]:
            # a failed page restarts the listing: pages are not resumable across attempts
            return await obstore.list(self._read_store, prefix=prefix.rstrip("/") + "/",
                                      chunk_size=1000).collect_async()

        try:
            metas, _n = await self.attempt(call)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, prefix, getattr(exc, "memsim_attempts", 1)) from None
        return {meta["path"] for meta in metas}

    async def check_writable(self) -> None:
        import obstore

        key = ".memsim-probe"
        try:
            await self.attempt(lambda: obstore.put_async(self._read_store, key, b"x"))
            await self.attempt(lambda: obstore.delete_async(self._read_store, key))
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, "", getattr(exc, "memsim_attempts", 1)) from None


def _retrying_object_store_class() -> type:
    """zarr's ObjectStore with every request sent through `S3ByteStore.attempt` (built on
    first use: zarr is imported only by commands that write or read zarr metadata)."""
    global _RETRYING_CLASS
    if _RETRYING_CLASS is not None:
        return _RETRYING_CLASS
    import obstore as obs
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
    from zarr.storage import ObjectStore

    missing = (FileNotFoundError, IsADirectoryError, NotADirectoryError)

    class _Retrying(ObjectStore):  # type: ignore[misc, type-arg]
        """Zarr's face of an S3ByteStore: the same obstore client, memsim's retries."""

        def __init__(self, store: Any, *, owner: S3ByteStore, read_only: bool = False
                     ) -> None:
            super().__init__(store, read_only=read_only)
            self.owner = owner

        def with_read_only(self, read_only: bool = False) -> Any:
            return type(self)(self.store, owner=self.owner, read_only=read_only)

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            async def call() -> Any:
                if byte_range is None:
                    return await (await obs.get_async(self.store, key)).bytes_async()
                if isinstance(byte_range, RangeByteRequest):
                    return await obs.get_range_async(self.store, key, start=byte_range.start,
                                                     end=byte_range.end)
                if isinstance(byte_range, OffsetByteRequest):
                    opts: Any = {"range": {"offset": byte_range.offset}}
                elif isinstance(byte_range, SuffixByteRequest):
                    opts = {"range": {"suffix": byte_range.suffix}}
                else:
                    raise ValueError(f"unexpected byte range {byte_range!r}")
                return await (await obs.get_async(self.store, key, options=opts)).bytes_async()

            try:
                data, _n = await self.owner.attempt(call)
            except missing:
                return None
            return prototype.buffer.from_bytes(data)

        async def get_partial_values(self, prototype: Any,
                                     key_ranges: Iterable[tuple[str, Any]]) -> list[Any]:
            return list(await asyncio.gather(*(self.get(k, prototype, r)
                                               for k, r in key_ranges)))

        async def exists(self, key: str) -> bool:
            try:
                await self.owner.attempt(lambda: obs.head_async(self.store, key))
            except FileNotFoundError:
                return False
            return True

        async def set(self, key: str, value: Any) -> None:
            self._check_writable()
            buf = value.as_buffer_like()
            await self.owner.attempt(lambda: obs.put_async(self.store, key, buf))

        async def set_if_not_exists(self, key: str, value: Any) -> None:
            self._check_writable()
            buf = value.as_buffer_like()
            try:
                await self.owner.attempt(lambda: obs.put_async(self.store, key, buf,
                                                               mode="create"))
            except obs.exceptions.AlreadyExistsError:
                pass

        async def delete(self, key: str) -> None:
            self._check_writable()
            try:
                await self.owner.attempt(lambda: obs.delete_async(self.store, key))
            except FileNotFoundError:
                pass

        async def delete_dir(self, prefix: str) -> None:
            self._check_writable()
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            metas, _n = await self.owner.attempt(
                lambda: obs.list(self.store, prefix).collect_async())
            await asyncio.gather(*(self.delete(m["path"]) for m in metas))

        async def _list(self, prefix: str | None = None) -> AsyncGenerator[Any, None]:
            metas, _n = await self.owner.attempt(
                lambda: obs.list(self.store, prefix=prefix).collect_async())
            for meta in metas:
                yield meta

        def list_dir(self, prefix: str) -> AsyncGenerator[str, None]:
            async def listing() -> AsyncGenerator[str, None]:
                got, _n = await self.owner.attempt(
                    lambda: obs.list_with_delimiter_async(self.store, prefix=prefix))
                base = prefix.rstrip("/")
                for path in [*got["common_prefixes"], *(m["path"] for m in got["objects"])]:
                    yield path[len(base) + 1:] if base and path.startswith(base + "/") else path

            return listing()

        async def getsize(self, key: str) -> int:
            meta, _n = await self.owner.attempt(lambda: obs.head_async(self.store, key))
            return int(meta["size"])

    _RETRYING_CLASS = _Retrying
    return _Retrying


_RETRYING_CLASS: type | None = None


def RetryingObjectStore(store: Any, *, owner: S3ByteStore) -> Any:  # noqa: N802 - a class
    """zarr's ObjectStore over `store`, every request retried and counted by `owner`."""
    return _retrying_object_store_class()(store, owner=owner)


class _ShortRead(Exception):
    """A body shorter than asked for (a connection cut mid-transfer)."""


_STATUS = re.compile(r"status code: (\d{3})")
_TIMEOUT = re.compile(r"kind: timeout\b|timedout|timed out|operation timeout")


def _label(exc: BaseException) -> str:
    """The kind of a transient failure, from obstore's message: its status code, or its
    debug dump's error kind (not bare numbers or words: the message also holds the port, the
    elapsed milliseconds and settings such as `retry_timeout`)."""
    if isinstance(exc, _ShortRead):
        return "short_read"
    text = str(exc).lower()
    status = _STATUS.search(text)
    if status is not None:
        code = int(status.group(1))
        return "http_503" if code == 503 else "http_5xx" if code >= 500 else f"http_{code}"
    if "slowdown" in text or "service unavailable" in text:
        return "http_503"
    if _TIMEOUT.search(text):
        return "timeout"
    if any(s in text for s in ("reset", "connection closed", "broken pipe",
                               "error sending request", "incomplete")):
        return "connection"
    return "other"
