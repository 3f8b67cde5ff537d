"""The memsim command line: a thin shell over the Python API.

Errors a user can cause end with one line on stderr naming file, line and field, and a
non-zero exit (2: bad input, 3: infeasible, 4: solver trouble, 5: a store cannot be used,
6: stored data is missing or corrupt); never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from memsim import resources
from memsim.bank import Bank, load_bank
from memsim.blockmap import Subtree
from memsim.errors import (
    DataError,
    InfeasibleError,
    InputError,
    MemsimError,
    SolverError,
    StoreError,
)
from memsim.estimate import DEFAULT_SAMPLES, MAX_SAMPLES, estimate
from memsim.layout import CacheConfig, Layout, load_layout
from memsim.optimize import DEFAULT_SCENARIOS, Policy, optimize, optimize_blocks
from memsim.profile import Profile, load_profile
from memsim.report import bank_text, estimate_text, profile_text, simulation_text, table
from memsim.simulate import (
    MAX_QUERIES,
    SimulationResult,
    progress_bar,
    saturation_rate,
    simulate,
)
from memsim.trace import read_trace
from memsim.units import UnitError, format_size, format_time, parse_size
from memsim.workload import Workload, load_workload, workload_from_dict, workload_from_trace

DEFAULT_PROFILE = "paper-hypothetical"
DEFAULT_BANK = "paper-storage-example"
EXIT_CODES = {InputError: 2, InfeasibleError: 3, SolverError: 4, StoreError: 5, DataError: 6}


def _fail(message: str, code: int) -> None:
    click.echo(f"memsim: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn memsim errors into one line and an exit code; keep tracebacks for MEMSIM_DEBUG."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MemsimError as exc:
            _fail(str(exc), next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must still not dump a traceback on users
            if os.environ.get("MEMSIM_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} "
                  "(set MEMSIM_DEBUG=1 for the traceback, and please report it)", 70)

    return wrapper


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, allow_nan=False))


def _size_option(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except UnitError as exc:
        raise InputError(str(exc), field=name) from None


def _levels_option(value: str | None, name: str) -> list[int]:
    if not value:
        return []
    out = []
    for part in value.split(","):
        text = part.strip().upper().removeprefix("L")
        if not text.isdigit() or int(text) < 1:
            raise InputError(f"cannot read level {part.strip()!r} in {value!r}; expected e.g. "
                             "'2' or '2,3'", field=name)
        out.append(int(text))
    return out


def _ref_near(ref: str, base: str | None) -> str:
    """A bank/profile named in a layout file: a path is relative to the layout's folder."""
    if base and ("/" in ref or ref.endswith((".yaml", ".yml"))) and not Path(ref).is_absolute():
        candidate = Path(base).parent / ref
        if candidate.exists():
            return str(candidate)
    return ref


def _ref_from(ref: str, out: str) -> str:
    """How a layout written to `out` should name `ref`: a path relative to it, or the name."""
    path = Path(ref)
    if path.is_file():
        return os.path.relpath(path.resolve(), Path(out).resolve().parent)
    return ref


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="memsim")
def main() -> None:
    """Place a hierarchical memory bank on a storage hierarchy and predict its fetch time.

    Profiles, banks and layouts are YAML files; shipped ones can be named instead of a path
    (see `memsim profile list`, `memsim bank list`, `memsim layout list`).
    """


# ---------------------------------------------------------------- profile
@main.group()
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (base units).")
@handle_errors
def profile_show(profile_ref: str, as_json: bool) -> None:
    """Print the tiers of PROFILE (a file or a shipped name)."""
    p = load_profile(profile_ref)
    if as_json:
        _emit_json(_profile_json(p))
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
@main.group()
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (base units).")
@handle_errors
def bank_show(bank_ref: str, as_json: bool) -> None:
    """Print the levels of BANK (a file or a preset: A2, B2, C2, paper-storage-example)."""
    b = load_bank(bank_ref)
    if as_json:
        _emit_json(_bank_json(b))
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
@main.group()
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
@main.group()
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


@main.command()
@click.argument("kind", type=click.Choice(sorted(SCHEMAS)))
def schema(kind: str) -> None:
    """Print the JSON Schema of a YAML format, for editors to complete and check files.

    For example, with the YAML language server, put at the top of a profile:
    `# yaml-language-server: $schema=profile.schema.json`.
    """
    data = SCHEMAS[kind].model_json_schema(mode="validation")
    data["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    _emit_json(data)


# ---------------------------------------------------------------- estimate
def _load_trio(profile_ref: str | None, bank_ref: str | None, layout_ref: str
               ) -> tuple[Profile, Bank, Layout]:
    lay = load_layout(layout_ref)
    profile_ref = profile_ref or (lay.profile and _ref_near(lay.profile, lay.file))
    bank_ref = bank_ref or (lay.bank and _ref_near(lay.bank, lay.file))
    if not profile_ref:
        raise InputError("no profile given: use --profile, or set 'profile' in the layout",
                         file=lay.file, field="profile")
    if not bank_ref:
        raise InputError("no bank given: use --bank, or set 'bank' in the layout",
                         file=lay.file, field="bank")
    return load_profile(profile_ref), load_bank(bank_ref), lay


@main.command("estimate")
@click.option("--profile", "profile_ref", metavar="PROFILE",
              help="Device profile file or shipped name [default: the layout's].")
@click.option("--bank", "bank_ref", metavar="BANK",
              help="Bank file or preset [default: the layout's].")
@click.option("--layout", "layout_ref", metavar="LAYOUT", required=True,
              help="Layout file or shipped name.")
@click.option("--samples", type=click.IntRange(1, MAX_SAMPLES), default=DEFAULT_SAMPLES,
              show_default=True, help="Queries sampled when latencies are distributions.")
@click.option("--workload", "workload_ref", metavar="WORKLOAD",
              help="Workload whose routing decides which blocks a query reads: needed when "
              "the layout places blocks individually or blocks subtrees.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (base units).")
@handle_errors
def estimate_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
                 samples: int, workload_ref: str | None, seed: int, as_json: bool) -> None:
    """Fetch time of one query under LAYOUT on an otherwise idle machine.

    Each request waits its tier's latency, then transfers at the tier's bandwidth; blocks on one
    tier share its bandwidth and concurrency; levels on different tiers run in parallel (the
    slowest tier decides) or in sequence (times add up); resident levels cost nothing. With a
    block map or blocked subtrees, --samples paths are drawn from --workload's routing.
    """
    p, b, lay = _load_trio(profile_ref, bank_ref, layout_ref)
    wl = load_workload(workload_ref) if workload_ref else None
    est = estimate(p, b, lay, samples=samples, seed=seed, workload=wl)
    overfilled = lay.overfilled(b, p)
    for problem in overfilled:
        click.echo(f"memsim: warning: {problem}", err=True)
    if as_json:
        _emit_json({"profile": p.name, "bank": b.name, "layout": lay.name or layout_ref,
                    **est.to_json(), "capacity_warnings": overfilled})
    else:
        title = f"layout {lay.name or layout_ref} on {p.name}, bank {b.name}"
        click.echo(estimate_text(est, title))


# ---------------------------------------------------------------- optimize
@main.command("optimize")
@click.option("--profile", "profile_ref", metavar="PROFILE", default=DEFAULT_PROFILE,
              show_default=True, help="Device profile file or shipped name.")
@click.option("--bank", "bank_ref", metavar="BANK", default=DEFAULT_BANK, show_default=True,
              help="Bank file or preset.")
@click.option("--fetch", type=click.Choice(["parallel", "sequential"]), default="parallel",
              show_default=True, help="Fetch levels at once (max) or one after another (sum).")
@click.option("--resident", "resident", metavar="LEVELS",
              help="Levels that may stay resident in RAM because consecutive queries share "
              "them, e.g. '2' or '2,3'. [default: none]")
@click.option("--resident-budget", metavar="SIZE",
              help="RAM for resident blocks, e.g. '500 MB'. [default: what RAM has free]")
@click.option("--solver", type=click.Choice(["auto", "highs", "cbc"]), default="auto",
              show_default=True, help="auto = HiGHS if installed, else CBC.")
@click.option("--time-limit", type=float, metavar="SECONDS", help="Stop the solver after this.")
@click.option("--gap", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Relative optimality gap at which the solver may stop.")
@click.option("--scenarios", type=click.IntRange(min=1), default=DEFAULT_SCENARIOS,
              show_default=True,
              help="Latency draws the objective averages over (when latencies vary).")
@click.option("--granularity", type=click.Choice(["level", "bucket"]), default="level",
              show_default=True, help="Place whole levels, or blocks by popularity bucket.")
@click.option("--buckets", type=click.IntRange(min=1), default=64, show_default=True,
              help="Popularity buckets per level (bucket granularity).")
@click.option("--workload", "workload_ref", metavar="WORKLOAD",
              help="Workload whose routing gives block popularity (bucket granularity) and "
              "which --verify simulates. [default: uniform routing]")
@click.option("--trace", "trace_counts", metavar="FILE", type=click.Path(dir_okay=False),
              help="Take block popularity from a Parquet trace's paths instead of a workload "
              "(bucket granularity).")
@click.option("--budget", type=click.FloatRange(min=0), metavar="USD",
              help="Dollars per month for storage plus requests (bucket granularity).")
@click.option("--private", "private", multiple=True, metavar="LEVEL:BLOCK",
              help="A private subtree (repeatable), e.g. 1:3; it may only use --private-tiers.")
@click.option("--private-tiers", metavar="TIERS",
              help="Tiers private subtrees may live on, e.g. 'ram,flash,disk'.")
@click.option("--blocked", "blocked", multiple=True, metavar="LEVEL:BLOCK",
              help="A blocked subtree (repeatable): never placed, never fetched.")
@click.option("--replica-budget", metavar="SIZE",
              help="Bytes of extra copies of hot blocks on faster tiers (bucket granularity).")
@click.option("--volatile", metavar="TIERS",
              help="Tiers that may hold only replicas, not the durable copy, e.g. 'ram'.")
@click.option("--verify", is_flag=True,
              help="Also run the estimator and the simulator on the chosen layout.")
@click.option("--verify-queries", type=click.IntRange(min=100), default=20_000,
              show_default=True, help="Queries the --verify simulation runs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the chosen layout here (YAML; a block map goes beside it as "
              "FILE.blocks.parquet), e.g. layouts/mine.yaml.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (base units).")
@handle_errors
def optimize_cmd(profile_ref: str, bank_ref: str, fetch: str, resident: str | None,
                 resident_budget: str | None, solver: str, time_limit: float | None, gap: float,
                 scenarios: int, granularity: str, buckets: int, workload_ref: str | None,
                 trace_counts: str | None, budget: float | None, private: tuple[str, ...],
                 private_tiers: str | None,
                 blocked: tuple[str, ...], replica_budget: str | None, volatile: str | None,
                 verify: bool, verify_queries: int, seed: int, out: str | None,
                 as_json: bool) -> None:
    """Choose where every level (or every block) lives to minimise the expected fetch time.

    Solves an integer program (HiGHS, or CBC) under the tiers' capacities, with the anchor
    model held in RAM, and compares with a greedy baseline. With no options it places the
    paper's storage-example bank on the paper's hypothetical device. With --granularity
    bucket, the hottest blocks of each level (by the workload's routing) go to faster tiers.
    """
    p, b = load_profile(profile_ref), load_bank(bank_ref)
    name = Path(out).stem if out else f"{b.name}-on-{p.name}"
    if workload_ref and trace_counts:
        raise InputError("give --workload or --trace, not both", field="trace")
    wl = load_workload(workload_ref) if workload_ref else None
    if trace_counts:
        wl = workload_from_trace(trace_counts, b)
    bucket_only = {"--trace": trace_counts is not None, "--budget": budget is not None,
                   "--private": bool(private),
                   "--blocked": bool(blocked), "--private-tiers": private_tiers is not None,
                   "--replica-budget": replica_budget is not None,
                   "--volatile": volatile is not None}
    if granularity == "bucket":
        if resident or resident_budget:
            raise InputError("--resident applies to level granularity only", field="resident")
        _optimize_buckets(p, b, wl, fetch=fetch, buckets=buckets, budget=budget,
                          private=private, private_tiers=private_tiers, blocked=blocked,
                          replica_budget=_size_option(replica_budget, "replica-budget"),
                          volatile=_tier_list(volatile, p, "volatile"), solver=solver,
                          time_limit=time_limit, gap=gap, seed=seed, name=name,
                          out=out, verify=verify, verify_queries=verify_queries,
                          as_json=as_json, refs=(profile_ref, bank_ref))
        return
    for flag, given in bucket_only.items():
        if given:
            raise InputError(f"{flag} needs --granularity bucket", field=flag.lstrip("-"))
    result = optimize(
        p, b, fetch=fetch, resident_levels=_levels_option(resident, "resident"),
        resident_budget=_size_option(resident_budget, "resident-budget"),
        solver=solver, time_limit=time_limit, gap=gap, scenarios=scenarios, seed=seed,
        name=name,
    )
    if out:
        # Record where the profile and bank came from so `estimate --layout OUT` finds them.
        result.layout.profile = _ref_from(profile_ref, out)
        result.layout.bank = _ref_from(bank_ref, out)
        header = (f"Chosen by: memsim optimize --profile {profile_ref} --bank {bank_ref} "
                  f"--fetch {fetch}\nsolver {result.solver}, status {result.status}, expected "
                  f"fetch time {format_time(result.objective_s)}")
        result.layout.save(out, header)
    checked = _verify(p, b, result.layout, wl, verify_queries, seed) if verify else None
    if as_json:
        data = result.to_json()
        data.update({"profile": p.name, "bank": b.name, "out": out})
        if checked is not None:
            data["verify"] = checked
        _emit_json(_finite(data))
        return
    rows = []
    for lv in b.active_levels:
        where = result.layout.placement[lv.depth]
        if lv.depth in result.layout.resident:
            where += " (resident)"
        base = result.baseline.placement[lv.depth] if result.baseline else "-"
        rows.append([lv.depth, format_size(lv.block_bytes), format_size(lv.bytes), where, base])
    click.echo(f"bank {b.name} on {p.name}, {fetch} fetch")
    click.echo(table(["level", "block", "level size", "tier", "greedy"], rows))
    click.echo("")
    status = result.status + ("" if result.status == "optimal" else
                              " (stopped at the time limit: may not be optimal)")
    click.echo(f"solver: {result.solver}, {status}, {result.solve_time_s * 1e3:.0f} ms")
    what = "expected fetch time"
    if result.scenarios > 1:
        what += f" over {result.scenarios} latency scenarios"
    click.echo(f"{what}: {format_time(result.objective_s)}")
    if result.baseline_s is not None:
        gain = result.baseline_s / result.objective_s if result.objective_s > 0 else float("inf")
        click.echo(f"greedy baseline: {format_time(result.baseline_s)} ({gain:.2f}x the optimum)")
    else:
        click.echo("greedy baseline: found no feasible placement")
    f = result.estimate.fetch_time_s
    click.echo(f"estimator: mean {format_time(f['mean'])}, p50 {format_time(f['p50'])}, "
               f"p99 {format_time(f['p99'])}")
    if out:
        click.echo(f"layout written to {out}")
    if checked is not None:
        click.echo(_verify_text(checked))


def _tier_list(value: str | None, p: Profile, name: str) -> list[str]:
    names = [t.strip() for t in value.split(",") if t.strip()] if value else []
    for tier in names:
        if tier not in p.tier_names:
            raise InputError(f"unknown tier '{tier}' (profile '{p.name}' has "
                             f"{', '.join(p.tier_names)})", field=name)
    return names


def _subtrees(values: tuple[str, ...], name: str) -> list[Subtree]:
    out = []
    for value in values:
        level, sep, block = value.partition(":")
        if not sep or not level.strip().isdigit() or not block.strip().isdigit():
            raise InputError(f"cannot read subtree {value!r}; expected LEVEL:BLOCK, e.g. 1:3",
                             field=name)
        out.append(Subtree(depth=int(level), block=int(block)))
    return out


def _verify(p: Profile, b: Bank, layout: Layout, wl: Workload | None, queries: int,
            seed: int) -> dict[str, Any]:
    """The estimator's and the simulator's verdict on a chosen layout."""
    if wl is None:
        rate, _tier = saturation_rate(p, b, layout)
        wl = workload_from_dict({"name": "verify", "arrivals": {"kind": "poisson",
                                                               "rate": 0.1 * rate}})
    est = estimate(p, b, layout, seed=seed, workload=wl)
    sim = simulate(p, b, layout, wl, queries=queries, seed=seed)
    return {"workload": wl.name, "estimate_fetch_time_s": est.fetch_time_s,
            "simulate_fetch_time_s": sim.fetch_time_s,
            "simulate_fetch_time_ci_s": sim.fetch_time_ci_s, "utilization": sim.utilization,
            "unstable": sim.unstable}


def _verify_text(checked: dict[str, Any]) -> str:
    e, s = checked["estimate_fetch_time_s"], checked["simulate_fetch_time_s"]
    ci = checked["simulate_fetch_time_ci_s"].get("mean")
    lines = [f"verify (workload {checked['workload']}):",
             f"  estimator (idle): mean {format_time(e['mean'])}, p99 {format_time(e['p99'])}",
             f"  simulator (load): mean {format_time(s['mean'])}"
             + (f" [{format_time(ci[0])} .. {format_time(ci[1])}]" if ci else "")
             + f", p99 {format_time(s['p99'])}"]
    lines += [f"  warning: {u}" for u in checked["unstable"]]
    return "\n".join(lines)


def _optimize_buckets(p: Profile, b: Bank, wl: Workload | None, *, fetch: str, buckets: int,
                      budget: float | None, private: tuple[str, ...],
                      private_tiers: str | None, blocked: tuple[str, ...],
                      replica_budget: int | None, volatile: list[str], solver: str,
                      time_limit: float | None, gap: float, seed: int, name: str,
                      out: str | None, verify: bool, verify_queries: int, as_json: bool,
                      refs: tuple[str, str]) -> None:
    routing_wl = wl or workload_from_dict({"name": "uniform", "arrivals": {
        "kind": "poisson", "rate": 1.0}})
    if private and private_tiers is None:
        raise InputError("--private needs --private-tiers (where private blocks may live)",
                         field="private-tiers")
    policy = Policy(budget_usd_month=budget, private=_subtrees(private, "private"),
                    private_tiers=_tier_list(private_tiers, p, "private-tiers") or None,
                    blocked=_subtrees(blocked, "blocked"), replica_budget=replica_budget,
                    volatile=volatile)
    for tree in policy.private + policy.blocked:
        if tree.depth > len(b.levels) or tree.block >= b.branching ** tree.depth:
            raise InputError(f"subtree {tree.depth}:{tree.block} is not in bank '{b.name}'",
                             field="private" if tree in policy.private else "blocked")
    result = optimize_blocks(p, b, routing_wl, fetch=fetch, buckets=buckets, policy=policy,
                             solver=solver, time_limit=time_limit, gap=gap, seed=seed,
                             name=name)
    if out:
        result.layout.profile = _ref_from(refs[0], out)
        result.layout.bank = _ref_from(refs[1], out)
        result.layout.save(out, f"Chosen by: memsim optimize --granularity bucket --buckets "
                                f"{buckets}\nsolver {result.solver}, status {result.status}, "
                                f"model objective {format_time(result.objective_s)}")
    checked = _verify(p, b, result.layout, routing_wl, verify_queries, seed) if verify else None
    if as_json:
        data = result.to_json()
        data.update({"profile": p.name, "bank": b.name, "out": out,
                     "workload": routing_wl.name})
        if checked is not None:
            data["verify"] = checked
        _emit_json(_finite(data))
        return
    names = p.tier_names
    rows = [[d, format_size(b.level(d).block_bytes)] + [
        f"{counts.get(t, 0):,}" if counts.get(t) else "-" for t in names]
        for d, counts in result.tier_blocks.items()]
    click.echo(f"bank {b.name} on {p.name}, {fetch} fetch, {result.buckets} buckets, "
               f"popularity from workload {routing_wl.name}")
    click.echo(table(["level", "block"] + [f"{t} blocks" for t in names], rows))
    click.echo("")
    click.echo(f"solver: {result.solver}, {result.status}, {result.solves} solve(s), "
               f"{result.solve_time_s * 1e3:.0f} ms")
    what = "expected fetch time" if fetch == "sequential" else "fetch-time bound (model)"
    click.echo(f"{what}: {format_time(result.objective_s)}")
    if result.level_objective_s is not None:
        click.echo(f"level placement, same model: {format_time(result.level_objective_s)}")
    if result.baseline_s is not None:
        click.echo(f"greedy baseline, same model: {format_time(result.baseline_s)}")
    if budget is not None or any(t.cost for t in p.tiers):
        click.echo(f"cost: ${result.monthly_cost_usd:,.2f} per month")
    if result.candidates_s:
        click.echo("estimator, mean: " + ", ".join(
            f"{k} {format_time(v)}" for k, v in result.candidates_s.items())
            + f"; kept: {result.chosen}")
    if result.estimate is not None:
        f = result.estimate.fetch_time_s
        click.echo(f"estimator ({result.chosen}): mean {format_time(f['mean'])}, p99 "
                   f"{format_time(f['p99'])}")
    if out:
        click.echo(f"layout written to {out} (block map beside it)")
    if checked is not None:
        click.echo(_verify_text(checked))


# ---------------------------------------------------------------- simulate
@main.command("simulate")
@click.option("--profile", "profile_ref", metavar="PROFILE",
              help="Device profile file or shipped name [default: the layout's].")
@click.option("--bank", "bank_ref", metavar="BANK",
              help="Bank file or preset [default: the layout's].")
@click.option("--layout", "layout_ref", metavar="LAYOUT", required=True,
              help="Layout file or shipped name.")
@click.option("--workload", "workload_ref", metavar="WORKLOAD",
              help="Workload file or shipped name (see `memsim workload list`).")
@click.option("--trace", "trace_in", metavar="FILE", type=click.Path(dir_okay=False),
              help="Replay a Parquet trace (arrival_s, block_L1..) instead of a workload.")
@click.option("--queries", type=click.IntRange(1, MAX_QUERIES), default=100_000,
              show_default=True, help="Queries to simulate (a trace is cut to this many).")
@click.option("--warmup", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Fraction of queries left out of the statistics.")
@click.option("--cache-budget", metavar="SIZE",
              help="RAM cache for blocks, e.g. '2 GB' (overrides the layout's cache).")
@click.option("--cache-policy", type=click.Choice(["lru", "lfu"]), default=None,
              help="Eviction policy for --cache-budget [default: lru].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--trace-out", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write every query (arrival, path, fetch and level times) to Parquet.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (base units).")
@handle_errors
def simulate_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
                 workload_ref: str | None, trace_in: str | None, queries: int, warmup: float,
                 cache_budget: str | None, cache_policy: str | None, seed: int,
                 trace_out: str | None, as_json: bool) -> None:
    """Fetch-time distribution under load: queueing, shared bandwidth, caching.

    Queries arrive as the workload says (or as a trace recorded them); each fetches one block
    per level from its tier through FCFS channels and a bandwidth shared by the transfers in
    flight. Prints mean and percentiles with 95% batch-means confidence intervals, per-level
    and per-tier times, utilisation and the cache hit ratio.
    """
    if (workload_ref is None) == (trace_in is None):
        raise InputError("give --workload or --trace (one of them)", field="workload")
    p, b, lay = _load_trio(profile_ref, bank_ref, layout_ref)
    if cache_budget is not None:
        cache = CacheConfig.model_validate({"budget": _size_option(cache_budget, "cache-budget"),
                                            "policy": cache_policy or "lru"})
        lay = lay.model_copy(update={"cache": cache})  # keeps the file and its block map
    elif cache_policy is not None:
        raise InputError("--cache-policy needs --cache-budget", field="cache-policy")
    wl = load_workload(workload_ref) if workload_ref else None
    trace = read_trace(trace_in, b) if trace_in else None
    update, close = progress_bar(queries)
    try:
        result = simulate(p, b, lay, wl, trace=trace, queries=queries, seed=seed,
                          warmup=warmup, trace_out=trace_out, progress=update)
    finally:
        close()
    if _report_run(result, p, b, lay, layout_ref, wl, trace_in, as_json):
        return
    click.echo(simulation_text(result, f"layout {lay.name or layout_ref} on {p.name}, bank "
                                       f"{b.name}, workload {wl.name if wl else trace_in}"))


def _report_run(result: SimulationResult, p: Profile, b: Bank, lay: Layout, layout_ref: str,
                wl: Workload | None, trace_in: str | None, as_json: bool) -> bool:
    """Warnings of a simulate or replay run, and its JSON when asked; True if JSON was sent."""
    for problem in result.unstable:
        click.echo(f"memsim: warning: {problem}", err=True)
    if as_json:
        _emit_json({"profile": p.name, "bank": b.name, "layout": lay.name or layout_ref,
                    "workload": wl.name if wl else None, "trace": trace_in,
                    **_finite(result.to_json())})
    return as_json


def _finite(data: Any) -> Any:
    """JSON has no NaN: empty statistics become null."""
    if isinstance(data, float):
        return data if data == data and abs(data) != float("inf") else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def _register_realio() -> None:
    from memsim.cli_calibrate import register as register_calibrate
    from memsim.cli_realio import register

    register(main, _load_trio, _emit_json, _report_run, handle_errors)
    register_calibrate(main, handle_errors, _emit_json)
    from memsim.cli_validate import register as register_validate

    register_validate(main, _load_trio, _emit_json, handle_errors)


_register_realio()

if __name__ == "__main__":  # pragma: no cover
    main()
