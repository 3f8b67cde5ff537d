"""Commands over the file formats: profile, bank, layout and workload groups, and schema."""

from __future__ import annotations

import sys
from typing import Any

import click

from memsim import resources
from memsim.bank import Bank, load_bank
from memsim.cli.common import emit_json, handle_errors, json_option
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


@profile.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def profile_validate(files: tuple[str, ...]) -> None:
    """Check profile FILES; print one line per file, exit non-zero if any is invalid."""
    bad = 0
    for file in files:
        try:
            p = load_profile(file)
        except MemsimError as exc:
            bad += 1
            click.echo(f"memsim: error: {exc}", err=True)
        else:
            click.echo(f"{file}: ok ({len(p.tiers)} tiers: {', '.join(p.tier_names)})")
    if bad:
        sys.exit(2)


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


# ---------------------------------------------------------------- schema
SCHEMAS = {"profile": Profile, "bank": Bank, "layout": Layout, "workload": Workload}


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

