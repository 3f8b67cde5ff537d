"""Stores: where a tier's bytes live (a local directory, an S3 bucket, this process's RAM).

`open_store(url)` gives a `ByteStore`; `tier_stores(profile, overrides, tiers)` resolves each
tier's store from its profile `store:` URL, a `--store TIER=URL` override, or (for RAM) a
memory store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from memsim.errors import InputError
from memsim.profile import Profile
from memsim.stores.abc import ByteStore, StoreCounters, TimedRead
from memsim.stores.local import LocalByteStore
from memsim.stores.memory import MemoryByteStore, forget
from memsim.stores.url import StoreURL, parse_store_url, redact, s3_settings

MAX_THREADS = 256

__all__ = ["ByteStore", "LocalByteStore", "MemoryByteStore", "StoreCounters", "StoreURL",
           "TimedRead",
           "forget", "open_store", "parse_overrides", "parse_store_url", "redact",
           "tier_stores"]


def open_store(url: str, *, cold: bool = True, threads: int = 16, seed: int = 0,
               field_name: str = "store") -> ByteStore:
    """A store for `url`; S3 settings and credentials come from the environment."""
    parsed = parse_store_url(url, field_name=field_name)
    if parsed.scheme == "file":
        return LocalByteStore(parsed.path, cold=cold, threads=threads)
    if parsed.scheme == "memory":
        return MemoryByteStore(parsed.path)
    from memsim.stores.s3 import S3ByteStore

    return S3ByteStore(s3_settings(parsed), parsed.display, seed=seed)


def parse_overrides(values: Iterable[str], profile: Profile) -> dict[str, str]:
    """`TIER=URL` pairs from the command line, checked against the profile's tiers."""
    out: dict[str, str] = {}
    for value in values:
        tier, sep, url = value.partition("=")
        tier = tier.strip()
        if not sep or not tier or not url.strip():
            raise InputError(f"cannot read {value!r}; expected TIER=URL, e.g. "
                             "disk=file:///data/bank", field="store")
        if tier not in profile.tier_names:
            raise InputError(f"unknown tier '{tier}' (profile '{profile.name}' has "
                             f"{', '.join(profile.tier_names)})", field="store")
        parse_store_url(url.strip(), field_name="store")
        out[tier] = url.strip()
    return out


def tier_stores(profile: Profile, tiers: Iterable[str], overrides: Mapping[str, str] | None = None,
                *, cold: bool = True, seed: int = 0) -> dict[str, ByteStore]:
    """A store for each of `tiers`: override, else the profile's `store`, else memory for RAM."""
    overrides = dict(overrides or {})
    urls: dict[str, str] = {}
    for name in tiers:
        tier = profile.tier(name)
        url = overrides.get(name) or tier.store
        if url is None:
            if profile.ram is not None and profile.ram.name == name:
                url = f"memory://{profile.name}-{name}"
            else:
                raise InputError(
                    f"tier '{name}' has no store: add `store: file:///path` (or s3://bucket/"
                    f"prefix) to it in the profile, or pass --store {name}=URL",
                    file=profile.file, field="store")
        urls[name] = url
    seen: dict[str, str] = {}
    for name, url in urls.items():
        key = parse_store_url(url).display
        if key in seen:
            raise InputError(f"tiers '{seen[key]}' and '{name}' share the store {key}; give "
                             "each tier its own directory, bucket prefix or memory name",
                             field="store")
        seen[key] = name
    # a local tier's threads are its channels: as many as it serves requests at once
    return {name: open_store(url, cold=cold, threads=min(profile.tier(name).concurrency,
                                                         MAX_THREADS), seed=seed)
            for name, url in urls.items()}
