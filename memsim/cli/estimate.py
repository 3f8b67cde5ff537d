"""`memsim estimate`: one query's fetch time under a layout on idle tiers."""

from __future__ import annotations

import click

from memsim.cli.common import emit_json, handle_errors, json_option, layout_options, load_trio
from memsim.cli.tables import estimate_text
from memsim.estimate import DEFAULT_SAMPLES, estimate
from memsim.limits import MAX_SAMPLES
from memsim.workload import load_workload


@click.command("estimate")
@layout_options()
@click.option("--samples", type=click.IntRange(1, MAX_SAMPLES), default=DEFAULT_SAMPLES,
              show_default=True, help="Queries sampled when latencies are distributions.")
@click.option("--workload", "workload_ref", metavar="WORKLOAD",
              help="Workload whose routing decides which blocks a query reads: needed when "
              "the layout places blocks individually or blocks subtrees.")
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
@handle_errors
def estimate_cmd(profile_ref: str | None, bank_ref: str | None, layout_ref: str,
                 samples: int, workload_ref: str | None, seed: int, as_json: bool) -> None:
    """Fetch time of one query under LAYOUT on an otherwise idle machine.

    Each request waits its tier's latency, then transfers at the tier's bandwidth; blocks on one
    tier share its bandwidth and concurrency; levels on different tiers run in parallel (the
    slowest tier decides) or in sequence (times add up); resident levels cost nothing. With a
    block map or blocked subtrees, --samples paths are drawn from --workload's routing.
    """
    p, b, lay = load_trio(profile_ref, bank_ref, layout_ref)
    wl = load_workload(workload_ref) if workload_ref else None
    est = estimate(p, b, lay, samples=samples, seed=seed, workload=wl)
    overfilled = lay.overfilled(b, p)
    for problem in overfilled:
        click.echo(f"memsim: warning: {problem}", err=True)
    if as_json:
        emit_json({"profile": p.name, "bank": b.name, "layout": lay.name or layout_ref,
                    **est.to_json(), "capacity_warnings": overfilled})
    else:
        title = f"layout {lay.name or layout_ref} on {p.name}, bank {b.name}"
        click.echo(estimate_text(est, title))

