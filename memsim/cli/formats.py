"""Commands over the file formats: profile, bank, layout and workload groups, and schema."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from memsim import resources
from memsim.bank import Bank, load_bank
from memsim.cli.common import (
    emit_json,
    error,
    handle_errors,
    json_option,
    load_trio,
    scrub,
    warn,
)
from memsim.cli.tables import bank_text, profile_text, table
from memsim.errors import MemsimError
from memsim.layout import Layout, load_layout
from memsim.profile import Profile, load_profile
from memsim.units import format_size
from memsim.workload import Workload, load_workload


@click.group()
def profile() -> None:
    """Device profiles: the tiers of a storage hierarchy."""


@profile.command("list")
@handle_errors
def profile_list() -> None:
    """Shipped device profiles."""
    rows = []
    for name in resources.shipped_names("device_profiles"):
        p = load_profile(name)
        rows.append([name, ", ".join(p.tier_names), p.description])
    click.echo(table(["profile", "tiers", "description"], rows))


@profile.command("show")
@click.argument("profile_ref", metavar="PROFILE")
@json_option
@handle_errors
def profile_show(profile_ref: str, as_json: bool) -> None:
    """Print the tiers of PROFILE (a file or a shipped name)."""
    p = load_profile(profile_ref)
    if as_json:
        emit_json(_profile_json(p))
    else:
        click.echo(profile_text(p))


def _profile_json(p: Profile) -> dict[str, Any]:
    tiers = []
    for t in p.tiers:
        tiers.append({
            "name": t.name, "kind": t.kind, "capacity_bytes": t.capacity,
            "latency": t.latency.model_dump(by_alias=True),
            "latency_mean_s": t.latency.mean(),
            "bandwidth_bytes_per_s": t.bandwidth,
            "aggregate_bandwidth_bytes_per_s": t.total_bandwidth,
            "concurrency": t.concurrency, "request_overhead_s": t.request_overhead,
            "cost": t.cost.model_dump() if t.cost else None, "store": t.store,
            "source": t.source,
        })
    return {"name": p.name, "description": p.description, "tiers": tiers}


def _validate_files(files: tuple[str, ...], load: Callable[[str], Any],
                    describe: Callable[[Any], str],
                    warnings: Callable[[Any], list[str]] | None = None) -> None:
    """Check FILES one by one: `FILE: ok (...)` on stdout, one `memsim: error:` line on stderr
    per bad file (and `memsim: warning:` lines for usable files with a problem); exit 2 if any
    file is bad."""
    bad = 0
    for file in files:
        try:
            item = load(file)
            text, notes = describe(item), warnings(item) if warnings else []
        except MemsimError as exc:
            bad += 1
            error(str(exc))
            continue
        for note in notes:
            warn(note)
        click.echo(scrub(f"{file}: ok ({text})"))
    if bad:
        sys.exit(2)


_FILES = click.argument("files", nargs=-1, required=True)  # the loaders check each path


@profile.command("validate")
@_FILES
@handle_errors
def profile_validate(files: tuple[str, ...]) -> None:
    """Check profile FILES; print one line per file, exit non-zero if any is invalid.

    Tiers not listed fastest first (by the time to fetch a 1 MB block) get a warning line.
    """
    _validate_files(files, load_profile,
                    lambda p: f"{len(p.tiers)} tiers: {', '.join(p.tier_names)}",
                    lambda p: p.order_warnings())


# ---------------------------------------------------------------- bank
@click.group()
def bank() -> None:
    """Memory banks: tree shape, multipliers per level, memory type and anchor."""


@bank.command("list")
@handle_errors
def bank_list() -> None:
    """Bank presets."""
    rows = []
    for name in resources.shipped_names("banks"):
        b = load_bank(name)
        rows.append([name, b.anchor.name, str(b.levels), format_size(b.fetched_bytes),
                     format_size(b.bank_bytes), b.description])
    click.echo(table(["bank", "anchor", "multipliers", "fetched", "bank size", "description"],
                     rows))


@bank.command("show")
@click.argument("bank_ref", metavar="BANK")
@json_option
@handle_errors
def bank_show(bank_ref: str, as_json: bool) -> None:
    """Print the levels of BANK (a file or a preset: A2, B2, C2, paper-storage-example)."""
    b = load_bank(bank_ref)
    if as_json:
        emit_json(_bank_json(b))
    else:
        click.echo(bank_text(b))


@bank.command("validate")
@_FILES
@handle_errors
def bank_validate(files: tuple[str, ...]) -> None:
    """Check bank FILES; print one line per file, exit non-zero if any is invalid."""
    _validate_files(files, load_bank,
                    lambda b: f"{len(b.active_levels)} levels, branching {b.branching}, "
                    f"{format_size(b.bank_bytes)}")


def _bank_json(b: Bank) -> dict[str, Any]:
    return {
        "name": b.name, "memory_type": b.memory_type, "branching": b.branching,
        "dtype": b.dtype, "anchor": b.anchor.model_dump(), "anchor_params": b.anchor_params,
        "anchor_bytes": b.anchor_bytes, "unit_params": b.unit_params,
        "levels": [{"depth": lv.depth, "multiplier": lv.multiplier, "blocks": lv.blocks,
                    "block_params": lv.block_params, "block_bytes": lv.block_bytes,
                    "level_params": lv.params, "level_bytes": lv.bytes}
                   for lv in b.all_levels],
        "fetched_params": b.fetched_params, "fetched_bytes": b.fetched_bytes,
        "bank_params": b.bank_params, "bank_bytes": b.bank_bytes,
    }


# ---------------------------------------------------------------- layout
@click.group()
def layout() -> None:
    """Layouts: which tier holds each level, and which levels stay resident."""


@layout.command("list")
@handle_errors
def layout_list() -> None:
    """Shipped layouts."""
    rows = []
    for name in resources.shipped_names("layouts"):
        lay = load_layout(name)
        rows.append([name, lay.fetch, ", ".join(f"{d}:{t}" for d, t in lay.placement.items()),
                     ",".join(map(str, lay.resident)) or "-", lay.description])
    click.echo(table(["layout", "fetch", "placement", "resident", "description"], rows))


@layout.command("show")
@click.argument("layout_ref", metavar="LAYOUT")
@json_option
@handle_errors
def layout_show(layout_ref: str, as_json: bool) -> None:
    """Print LAYOUT (a file or a shipped name): the tier of each level, what stays resident,
    the cache, blocked subtrees, zarr chunking, and the profile and bank it names."""
    lay = load_layout(layout_ref)
    if as_json:
        emit_json(_layout_json(lay))
    else:
        click.echo(scrub(_layout_text(lay)))


def _layout_json(lay: Layout) -> dict[str, Any]:
    return {
        "name": lay.name, "description": lay.description, "file": lay.file,
        "profile": lay.profile, "bank": lay.bank, "fetch": lay.fetch,
        "levels": [{"depth": d, "tier": t, "resident": d in lay.resident,
                    "blocks_per_shard": lay.chunking.get(d, 1)}
                   for d, t in sorted(lay.placement.items())],
        "resident": sorted(lay.resident),
        "cache": None if lay.cache is None else {
            "budget_bytes": lay.cache.budget, "policy": lay.cache.policy,
            "levels": lay.cache.levels},
        "blocked": [{"level": t.level, "block": t.block} for t in lay.blocked],
        "block_map": lay.blocks,
    }


def _layout_text(lay: Layout) -> str:
    lines = [f"layout {lay.name or '(unnamed)'}" + (f": {lay.description}"
                                                    if lay.description else ""),
             f"profile: {lay.profile or '-'}   bank: {lay.bank or '-'}   fetch: {lay.fetch}"]
    rows = [[f"L{d}", t, "yes" if d in lay.resident else "-", str(lay.chunking.get(d, 1))]
            for d, t in sorted(lay.placement.items())]
    lines.append(table(["level", "tier", "resident", "blocks per shard"], rows))
    if lay.cache is not None:
        levels = ", ".join(f"L{d}" for d in lay.cache.levels) if lay.cache.levels else "all"
        lines.append(f"cache: {format_size(lay.cache.budget)} {lay.cache.policy} "
                     f"(levels: {levels})")
    else:
        lines.append("cache: none")
    blocked = ", ".join(f"{t.level}:{t.block}" for t in lay.blocked)
    lines.append(f"blocked subtrees: {blocked or 'none'}")
    if lay.blocks:
        lines.append(f"block map: {lay.blocks}")
    return "\n".join(lines)


@layout.command("validate")
@_FILES
@handle_errors
def layout_validate(files: tuple[str, ...]) -> None:
    """Check layout FILES on their own (fields, levels, tiers named); with the profile and
    bank a layout names, check that it fits them too."""
    def check(ref: str) -> Layout:
        lay = load_layout(ref)
        if lay.profile and lay.bank:
            p, b, lay = load_trio(None, None, ref)
            lay.check(b, p)
        return lay

    _validate_files(files, check,
                    lambda lay: ", ".join(f"L{d}: {t}" for d, t in sorted(lay.placement.items()))
                    + (f"; resident {','.join(map(str, sorted(lay.resident)))}"
                       if lay.resident else ""))


# ---------------------------------------------------------------- workload
@click.group()
def workload() -> None:
    """Workloads: query arrivals, routing over tree paths, topic locality."""


@workload.command("list")
@handle_errors
def workload_list() -> None:
    """Shipped workloads."""
    rows = []
    for name in resources.shipped_names("workloads"):
        w = load_workload(name)
        rows.append([name, w.arrivals.kind, w.routing.kind,
                     f"p={w.locality.p:g}" if w.locality else "-", w.description])
    click.echo(table(["workload", "arrivals", "routing", "locality", "description"], rows))


@workload.command("validate")
@_FILES
@handle_errors
def workload_validate(files: tuple[str, ...]) -> None:
    """Check workload FILES (and the counts files they name); one line per file, exit
    non-zero if any is invalid."""
    _validate_files(files, load_workload,
                    lambda w: f"arrivals {w.arrivals.kind}, routing {w.routing.kind}"
                    + (f", locality p={w.locality.p:g}" if w.locality else ""))


# ---------------------------------------------------------------- schema
class _SweepSchema:
    """The sweep spec's schema, its module imported only when asked for."""

    @staticmethod
    def model_json_schema(mode: str = "validation") -> dict[str, Any]:
        from memsim.sweep.spec import sweep_schema

        return sweep_schema()


SCHEMAS: dict[str, Any] = {"profile": Profile, "bank": Bank, "layout": Layout,
                           "workload": Workload, "sweep": _SweepSchema}


@click.command()
@click.argument("kind", type=click.Choice(sorted(SCHEMAS)))
def schema(kind: str) -> None:
    """Print the JSON Schema of a YAML format, for editors to complete and check files.

    For example, with the YAML language server, put at the top of a profile:
    `# yaml-language-server: $schema=profile.schema.json`.
    """
    data = SCHEMAS[kind].model_json_schema(mode="validation")
    data["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    emit_json(data)

