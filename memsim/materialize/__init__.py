"""Materialize: write a bank into zarr v3 stores, one per tier, as a layout places it.

`materialize(...)` writes each tier's blocks (see `manifest` for the format) in units of whole
shards, each followed by its manifest chunk, so an interrupted run (even kill -9) resumes where
it stopped without rewriting finished shards; every object is written atomically (a rename on
local disks, a single PUT on S3), so no shard is ever half there. `verify(...)` reads every
block back and checks it against the manifest.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crc32c
import numpy as np

from memsim.aio import run_sync
from memsim.bank import Bank
from memsim.errors import MemsimError, StoreError
from memsim.layout import Layout
from memsim.materialize.content import (
    Content,
    SyntheticContent,
    WeightsContent,
    content_from,
    storage_dtype,
)
from memsim.materialize.manifest import (
    LevelPlan,
    chunk_key,
    crc_name,
    data_name,
    group_attributes,
    ids_name,
    placement_plan,
)
from memsim.profile import Profile
from memsim.stores import ByteStore, tier_stores
from memsim.stores.local import os_error

__all__ = ["Content", "MaterializeResult", "SyntheticContent", "TierWrite", "WeightsContent",
           "content_from", "materialize", "materialize_plan", "placement_plan"]


@dataclass
class TierWrite:
    """What materialize did on one tier."""

    tier: str
    store: str
    levels: list[int]
    blocks: int
    bytes_total: int
    bytes_written: int = 0
    units_skipped: int = 0  # already complete from an earlier run
    partial_removed: int = 0
    # --repair: objects (shards, or blocks when unsharded) found bad and rewritten, the
    # blocks in them, and manifest chunks corrected
    objects_repaired: int = 0
    blocks_repaired: int = 0
    manifest_repaired: int = 0
    bad_found: int = 0  # bad blocks the repair scan found in units marked complete


@dataclass
class MaterializeResult:
    tiers: dict[str, TierWrite] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    retries: dict[str, int] = field(default_factory=dict)  # tier -> requests retried
    request_errors: dict[str, dict[str, int]] = field(default_factory=dict)  # retried, by kind

    @property
    def bytes_written(self) -> int:
        return sum(t.bytes_written for t in self.tiers.values())

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "bytes_written": self.bytes_written,
                "tiers": {name: vars(t) for name, t in self.tiers.items()},
                "retries": self.retries, "request_errors": self.request_errors,
                "notes": self.notes}


def _crc_rows(data: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(data).view(np.uint8).reshape(data.shape[0], -1)
    return np.fromiter((crc32c.crc32c(r) for r in rows), dtype=np.uint32, count=rows.shape[0])


def _open_group(store: ByteStore, attrs: dict[str, Any], overwrite: bool) -> Any:
    """The store's root group, created, or reopened when it holds the same bank."""
    import zarr

    zstore = store.zarr_store()
    meta = run_sync(store.read("zarr.json"))
    if meta is not None:
        try:
            group = zarr.open_group(zstore, mode="r+", zarr_format=3)
            old = dict(group.attrs).get("memsim")
        except Exception:  # noqa: BLE001 - whatever is there is not ours
            old = None
        if old is None:
            raise StoreError(f"{store.url} already holds zarr data that memsim did not write; "
                             "choose an empty directory or prefix")
        if old.get("fingerprint") == attrs["memsim"]["fingerprint"]:
            return group
        if not overwrite and store.persistent:  # RAM copies are memsim's to replace
            raise StoreError(
                f"{store.url} holds a different bank (bank '{old.get('bank')}', layout "
                f"'{old.get('layout')}', tier '{old.get('tier')}'); pass --overwrite to replace "
                "it, or choose another store")
        for depth in old.get("levels", []):
            for name in (data_name(depth), ids_name(depth), crc_name(depth)):
                if name in group:
                    del group[name]
        group.attrs.update(attrs)
        return group
    if store.kind == "file" and store.root.is_dir() and any(store.root.iterdir()):  # type: ignore[attr-defined]
        raise StoreError(f"{store.url} is not empty and is not a memsim bank; choose an empty "
                         "directory")
    return zarr.open_group(zstore, mode="w", zarr_format=3, attributes=attrs)


def _arrays(group: Any, lp: LevelPlan, bank: Bank, tier: str) -> tuple[Any, Any]:
    """(data array, manifest array) of one level, created on first use."""
    names = set(group.array_keys())
    config = {"write_empty_chunks": True}
    if data_name(lp.depth) in names:
        return group[data_name(lp.depth)], group[crc_name(lp.depth)]
    params = lp.block_params
    data = group.create_array(
        data_name(lp.depth), shape=(lp.rows, params), chunks=(1, params),
        shards=(lp.shard, params) if lp.shard else None, dtype=storage_dtype(bank),
        compressors=None, fill_value=0, config=config,
        attributes={"dtype": bank.dtype, "level": lp.depth, "tier": tier,
                    "block_bytes": lp.block_bytes, "blocks_per_shard": lp.shard})
    ids = group.create_array(ids_name(lp.depth), shape=(lp.rows,),
                             chunks=(min(max(lp.rows, 1), 1 << 20),), dtype="int64",
                             compressors=None, fill_value=-1, config=config)
    ids[:] = lp.ids
    crc = group.create_array(crc_name(lp.depth), shape=(lp.rows,), chunks=(lp.unit,),
                             dtype="uint32", compressors=None, fill_value=0, config=config,
                             attributes={"unit_rows": lp.unit})
    return data, crc


def done_units(store: ByteStore, depth: int) -> set[int]:
    """Manifest chunks present: the units of rows known to be complete."""
    keys = run_sync(store.list_keys(f"{crc_name(depth)}/c"))
    out = set()
    for key in keys:
        tail = key.rsplit("/", 1)[-1]
        if tail.isdigit():
            out.add(int(tail))
    return out


def materialize(
    profile: Profile,
    bank: Bank,
    layout: Layout,
    *,
    stores: Mapping[str, str] | None = None,
    content: Content | None = None,
    overwrite: bool = False,
    repair: bool = False,
    weights: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> MaterializeResult:
    """Write the bank into each tier's store as `layout` places it; resume unfinished work.

    `stores` overrides tier stores (TIER -> URL). `content` defaults to synthetic weights with
    seed 0 (with `repair`: to the source recorded in the stores; `weights` is its file when it
    was one). `repair` first reads back every block of the units already complete, as
    `verify` does, and rewrites the objects (shards, or blocks) holding a bad one.
    `progress(n)` is told of every n bytes written, after `on_total(bytes to write)`.
    """
    layout.check(bank, profile)
    plan = placement_plan(profile, bank, layout)
    opened = tier_stores(profile, plan, stores, cold=False)
    try:
        if content is None and repair:
            content = load_content(opened, bank, weights)
        content = content or SyntheticContent(bank)
        return materialize_plan(profile, bank, layout, plan, opened, content,
                                overwrite=overwrite, repair=repair, progress=progress,
                                on_total=on_total)
    finally:
        for store in opened.values():
            store.close()


def materialize_plan(
    profile: Profile,
    bank: Bank,
    layout: Layout,
    plan: dict[str, dict[int, LevelPlan]],
    opened: Mapping[str, ByteStore],
    content: Content,
    *,
    overwrite: bool = False,
    repair: bool = False,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> MaterializeResult:
    """Write `plan` (tier -> level -> rows) into the `opened` stores (with `repair`, first
    rewrite the bad objects of complete units)."""
    started = time.perf_counter()
    result = MaterializeResult()
    jobs: list[tuple[str, ByteStore, LevelPlan, Any, Any, list[int]]] = []
    for tier, levels in plan.items():
        store = opened[tier]
        if store.persistent:
            run_sync(store.check_writable())
        try:
            removed = store.cleanup_partial()
            attrs = group_attributes(bank, tier, levels, content.describe(), layout)
            group = _open_group(store, attrs, overwrite)
            write = TierWrite(tier=tier, store=store.url, levels=sorted(levels),
                              blocks=sum(lp.rows for lp in levels.values()),
                              bytes_total=sum(lp.rows * lp.block_bytes for lp in levels.values()),
                              partial_removed=removed)
            result.tiers[tier] = write
            pending = 0
            for depth in sorted(levels):
                lp = levels[depth]
                data, crc = _arrays(group, lp, bank, tier)
                done = done_units(store, depth)
                todo = [u for u in range(lp.units) if u not in done]
                write.units_skipped += lp.units - len(todo)
                pending += _unit_bytes(lp, todo)
                jobs.append((tier, store, lp, data, crc, todo))
        except MemsimError:
            raise
        except OSError as exc:
            raise os_error(exc, "write to", store.url) from None
        except Exception as exc:  # noqa: BLE001 - zarr wraps store errors
            raise _write_error(exc, store) from None
        free = run_sync(store.free_bytes())
        if free is not None and pending > free:
            from memsim.units import format_size

            raise StoreError(f"{store.url} needs {format_size(pending)} more but has "
                             f"{format_size(free)} free")
        if not store.persistent:
            result.notes.append(f"tier '{tier}' is {store.url}: it lives in this process; "
                                "replay fills it again when it starts")
    fixes = _find_repairs(profile, bank, layout, plan, opened, result) if repair else []
    if on_total is not None:
        on_total(sum(_unit_bytes(lp, todo) for _t, _s, lp, _d, _c, todo in jobs)
                 + sum((b - a) * lp.block_bytes for _t, lp, _k, a, b, _c in fixes))
    by_level = {(tier, lp.depth): (store, data, crc)
                for tier, store, lp, data, crc, _todo in jobs}
    for tier, lp, key, a, b, stored_crc in fixes:
        store, data, crc = by_level[(tier, lp.depth)]
        write = result.tiers[tier]
        values = content.blocks(lp.depth, lp.ids[a:b])
        sums = _crc_rows(values)
        try:
            # the object goes first, so zarr writes it whole rather than merging into a
            # damaged one (a shard at the end of a level is only partly covered by rows)
            run_sync(store.zarr_store().delete(key))
            data[a:b] = values
            if not np.array_equal(sums, stored_crc):
                crc[a:b] = sums  # the manifest itself was wrong
                write.manifest_repaired += 1
        except OSError as exc:
            raise os_error(exc, "write to", store.url) from None
        except MemsimError:
            raise
        except Exception as exc:  # noqa: BLE001 - zarr wraps store errors
            raise _write_error(exc, store) from None
        nbytes = (b - a) * lp.block_bytes
        write.bytes_written += nbytes
        write.objects_repaired += 1
        write.blocks_repaired += b - a
        if progress is not None:
            progress(nbytes)
    for tier, store, lp, data, crc, todo in jobs:
        for u in todo:
            a, b = lp.unit_rows(u)
            values = content.blocks(lp.depth, lp.ids[a:b])
            try:
                data[a:b] = values
                crc[a:b] = _crc_rows(values)
            except OSError as exc:
                raise os_error(exc, "write to", store.url) from None
            except Exception as exc:  # noqa: BLE001 - zarr wraps store errors
                raise _write_error(exc, store) from None
            nbytes = (b - a) * lp.block_bytes
            result.tiers[tier].bytes_written += nbytes
            if progress is not None:
                progress(nbytes)
    for tier in plan:
        if opened[tier].persistent:
            opened[tier].flush()
        counters = opened[tier].counters
        if counters.retries:
            result.retries[tier] = counters.retries
            result.request_errors[tier] = dict(counters.errors)
    result.seconds = time.perf_counter() - started
    return result


def _find_repairs(profile: Profile, bank: Bank, layout: Layout,
                  plan: dict[str, dict[int, LevelPlan]], opened: Mapping[str, ByteStore],
                  result: MaterializeResult
                  ) -> list[tuple[str, LevelPlan, str, int, int, np.ndarray]]:
    """The objects to rewrite: every shard (or, unsharded, every block object) of a complete
    unit holding a block that is missing or fails its checksum, found as `verify` finds them.
    Each is (tier, level plan, object key, first row, end row, the manifest's CRCs of them).
    Units not complete are left to the ordinary resume, which writes them whole."""
    from memsim.materialize.verify import scan
    from memsim.replay.reader import BankReader

    readable = {t: opened[t] for t in plan
                if opened[t].persistent or "zarr.json" in getattr(opened[t], "data", {})}
    reader = BankReader(profile, bank, layout, readable, check_rate=1.0).open(
        {t: plan[t] for t in readable})
    fixes: list[tuple[str, LevelPlan, str, int, int, np.ndarray]] = []
    seen: set[tuple[str, int, int]] = set()
    for bad in scan(reader):
        level = reader.levels[(bad.tier, bad.depth)]
        row = level.row(bad.block)
        if row is None or not level.complete[row]:
            continue  # not in a complete unit: rewritten whole by the resume
        result.tiers[bad.tier].bad_found += 1
        lp = plan[bad.tier][bad.depth]
        obj = row // lp.shard if lp.shard else row
        if (bad.tier, bad.depth, obj) in seen:
            continue
        seen.add((bad.tier, bad.depth, obj))
        a, b = (obj * lp.shard, min((obj + 1) * lp.shard, lp.rows)) if lp.shard else (row,
                                                                                      row + 1)
        fixes.append((bad.tier, lp, chunk_key(bad.depth, obj), a, b, level.crc[a:b].copy()))
    for store in readable.values():
        if store.persistent:
            store.close()  # its cached file handles would outlive the rewritten files
    return fixes


def _unit_bytes(lp: LevelPlan, units: list[int]) -> int:
    return sum(lp.unit_rows(u)[1] - lp.unit_rows(u)[0] for u in units) * lp.block_bytes


def _write_error(exc: BaseException, store: ByteStore) -> StoreError:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EACCES,
                                                           errno.EROFS, errno.EDQUOT):
            return os_error(cause, "write to", store.url)
        cause = cause.__cause__ or cause.__context__
    from memsim.stores.url import redact

    secrets = getattr(getattr(store, "settings", None), "secrets", [])
    text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                  secrets)
    return StoreError(f"cannot write to {store.url}: {text}")


def load_content(stores: Mapping[str, ByteStore], bank: Bank,
                 weights: str | Path | None = None) -> Content | None:
    """The content source recorded in the first persistent store that has one."""
    for store in stores.values():
        if not store.persistent:
            continue
        meta = run_sync(store.read("zarr.json"))
        if meta is None:
            continue
        import json

        try:
            attrs = json.loads(bytes(meta)).get("attributes", {}).get("memsim")
        except ValueError:
            continue
        if attrs and "content" in attrs:
            return content_from(bank, attrs["content"], weights)
    if weights is not None:
        return WeightsContent(bank, weights)
    return None



# `memsim.materialize(...)` calls materialize(); the module stays a module
from memsim import make_callable  # noqa: E402

make_callable(__name__, "materialize")
