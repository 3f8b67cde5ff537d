"""`memsim optimize`: choose where every level or block lives."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from memsim.bank import Bank, load_bank
from memsim.cli.common import (
    OutputFile,
    emit_json,
    handle_errors,
    json_option,
    levels_option,
    ref_from,
    size_option,
    warn,
)
from memsim.cli.tables import table
from memsim.errors import InfeasibleError, InputError
from memsim.estimate import estimate
from memsim.layout import Layout
from memsim.limits import MAX_BUCKETS, MAX_QUERIES, MAX_SCENARIOS
from memsim.optimize import DEFAULT_SCENARIOS, OptimizeResult, Policy, optimize, optimize_blocks
from memsim.optimize.goal import DEFAULT_MAX_UTILIZATION, Goal, bucket_policy, make_goal
from memsim.optimize.verify import DEFAULT_ROUNDS, VerifiedResult, simulated_workload
from memsim.profile import Profile, load_profile
from memsim.simulate import saturation_rate, simulate
from memsim.units import format_energy, format_size, format_time, parse_frequency
from memsim.workload import (
    Workload,
    load_workload,
    poisson_workload,
    workload_at_rate,
    workload_from_trace,
)

DEFAULT_PROFILE = "paper-hypothetical"
DEFAULT_BANK = "paper-storage-example"


@click.command("optimize")
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
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True, max=1e6),
              metavar="SECONDS",
              help="Stop the solver after this; the best layout found so far is kept.")
@click.option("--gap", type=click.FloatRange(min=0, max=1e6), default=0.0, show_default=True,
              help="Relative optimality gap at which the solver may stop.")
@click.option("--scenarios", type=click.IntRange(1, MAX_SCENARIOS), default=DEFAULT_SCENARIOS,
              show_default=True,
              help="Latency draws the objective averages over (when latencies vary).")
@click.option("--granularity", type=click.Choice(["level", "bucket"]), default="level",
              show_default=True, help="Place whole levels, or blocks by popularity bucket.")
@click.option("--buckets", type=click.IntRange(1, MAX_BUCKETS), default=64, show_default=True,
              help="Popularity buckets per level (bucket granularity).")
@click.option("--workload", "workload_ref", metavar="WORKLOAD",
              help="Workload whose locality and routing give how often resident levels switch "
              "block (level granularity), block popularity (bucket granularity), and which "
              "--verify simulates. [default: every query switches; uniform routing]")
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
@click.option("--rate", metavar="RATE",
              help="Queries per second the layout must carry, e.g. '40/s' (scales the "
              "--workload's arrivals). [default: the workload's rate; none: idle]")
@click.option("--idle", is_flag=True,
              help="Place for an idle machine: ignore the workload's rate (it still gives "
              "locality and popularity).")
@click.option("--max-utilization", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=DEFAULT_MAX_UTILIZATION, show_default=True,
              help="Under load, no tier may be busier than this (channels or link).")
@click.option("--objective", "objective_text", metavar="STAT", default="mean",
              show_default=True,
              help="Fetch-time statistic to minimise: mean, p50, p90, p95, p99, p999 or "
              "cvar:LEVEL (mean of the worst 1-LEVEL).")
@click.option("--slo", "slo_texts", multiple=True, metavar="TARGET",
              help="A target that must hold, e.g. 'p99 <= 50 ms' or 'mean <= 8 ms' "
              "(repeatable).")
@click.option("--minimize", type=click.Choice(["time", "cost", "energy"]), default="time",
              show_default=True,
              help="Minimise fetch time (by --objective), dollars per month, or joules per "
              "query; the --slo targets still hold.")
@click.option("--energy-budget", metavar="ENERGY",
              help="Most energy per query, e.g. '500 mJ' (dynamic plus the idle power's "
              "share at the rate).")
@click.option("--pareto", "pareto", metavar="X,Y",
              help="Compute the trade-off front of two of time, p99, cost, energy instead of "
              "one layout (epsilon-constraint).")
@click.option("--points", type=click.IntRange(2, 50), default=10, show_default=True,
              help="Points on the --pareto front.")
@click.option("--out-dir", type=OutputFile(), metavar="DIR",
              help="Write each --pareto layout here (point-01.yaml, ...).")
@click.option("--plot", type=OutputFile(), metavar="FILE",
              help="Draw the --pareto front to a PNG, simulated points beside the model's.")
@click.option("--verify", is_flag=True,
              help="Also simulate the chosen layout; under a load or targets, re-solve where "
              "the simulation misses them (up to --verify-rounds).")
@click.option("--verify-rounds", type=click.IntRange(1, 10), default=DEFAULT_ROUNDS,
              show_default=True, help="Optimize-and-simulate rounds --verify may run.")
@click.option("--verify-queries", type=click.IntRange(100, MAX_QUERIES), default=20_000,
              show_default=True, help="Queries the --verify simulation runs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=OutputFile(), metavar="FILE",
              help="Write the chosen layout here (YAML; a block map goes beside it as "
              "FILE.blocks.parquet), e.g. layouts/mine.yaml.")
@json_option
@handle_errors
def optimize_cmd(profile_ref: str, bank_ref: str, fetch: str, resident: str | None,
                 resident_budget: str | None, solver: str, time_limit: float | None, gap: float,
                 scenarios: int, granularity: str, buckets: int, workload_ref: str | None,
                 trace_counts: str | None, budget: float | None, private: tuple[str, ...],
                 private_tiers: str | None,
                 blocked: tuple[str, ...], replica_budget: str | None, volatile: str | None,
                 rate: str | None, idle: bool, max_utilization: float, objective_text: str,
                 slo_texts: tuple[str, ...], minimize: str, energy_budget: str | None,
                 pareto: str | None, points: int, out_dir: str | None, plot: str | None,
                 verify: bool, verify_rounds: int, verify_queries: int, seed: int,
                 out: str | None, as_json: bool) -> None:
    """Choose where every level (or every block) lives to minimise the expected fetch time.

    Solves an integer program (HiGHS, or CBC) under the tiers' capacities, with the anchor
    model held in RAM, and compares with a greedy baseline. With no options it places the
    paper's storage-example bank on the paper's hypothetical device. With --granularity
    bucket, the hottest blocks of each level (by the workload's routing) go to faster tiers.

    Under load (--workload or --rate) no tier may pass --max-utilization and each tier's
    queueing delay counts; --objective, --slo, --minimize cost|energy and the budgets say
    what to optimise, --verify checks the answer in the simulator (re-solving where it
    misses), and --pareto X,Y gives the trade-off front.
    """
    p, b = load_profile(profile_ref), load_bank(bank_ref)
    name = Path(out).stem if out else f"{b.name}-on-{p.name}"
    if workload_ref and trace_counts:
        raise InputError("give --workload or --trace, not both", field="trace")
    wl = load_workload(workload_ref) if workload_ref else None
    if trace_counts:
        wl = workload_from_trace(trace_counts, b)
    command = _command(profile_ref=profile_ref, bank_ref=bank_ref, fetch=fetch,
                       resident=resident, resident_budget=resident_budget, solver=solver,
                       time_limit=time_limit, gap=gap, scenarios=scenarios,
                       granularity=granularity, buckets=buckets, workload_ref=workload_ref,
                       trace_counts=trace_counts, budget=budget, private=private,
                       private_tiers=private_tiers, blocked=blocked,
                       replica_budget=replica_budget, volatile=volatile, seed=seed, out=out)
    bucket_only = {"--trace": trace_counts is not None,
                   "--private": bool(private),
                   "--blocked": bool(blocked), "--private-tiers": private_tiers is not None,
                   "--replica-budget": replica_budget is not None,
                   "--volatile": volatile is not None}
    sim_wl = _at_rate(wl, rate)  # what the layout must carry, and what --verify simulates
    if idle and rate is not None:
        raise InputError("give --rate or --idle, not both", field="idle")
    goal = make_goal(p, b, sim_wl, fetch=fetch, idle=idle,  # type: ignore[arg-type]
                     max_utilization=max_utilization, objective=objective_text,
                     slos=slo_texts, minimize=minimize, budget=budget,
                     energy_budget=energy_budget)
    if granularity == "bucket":
        if resident or resident_budget:
            raise InputError("--resident applies to level granularity only", field="resident")
        for flag, given in (("--pareto", pareto), ("--out-dir", out_dir), ("--plot", plot)):
            if given:
                raise InputError(f"{flag} applies to level granularity only",
                                 field=flag.lstrip("-"))
        policy = bucket_policy(p, b, goal, budget=budget, private=private,
                               private_tiers=_names(private_tiers), blocked=blocked,
                               replica_budget=replica_budget, volatile=_names(volatile))
        _optimize_buckets(p, b, sim_wl, fetch=fetch, buckets=buckets, budget=budget, goal=goal,
                          policy=policy, solver=solver,
                          time_limit=time_limit, gap=gap, seed=seed, name=name,
                          out=out, verify=verify, verify_queries=verify_queries,
                          as_json=as_json, refs=(profile_ref, bank_ref), command=command)
        return
    for flag, given in bucket_only.items():
        if given:
            raise InputError(f"{flag} needs --granularity bucket", field=flag.lstrip("-"))
    levels = levels_option(resident, "resident")
    budget_bytes = size_option(resident_budget, "resident-budget")
    if budget_bytes is not None:
        if not levels:
            warn("--resident-budget has no effect without --resident")
        else:
            smallest = min(b.level(d).block_bytes for d in levels if d in
                           {lv.depth for lv in b.active_levels}) if any(
                d in {lv.depth for lv in b.active_levels} for d in levels) else None
            if smallest is not None and budget_bytes < smallest:
                warn(f"--resident-budget {format_size(budget_bytes)} is smaller than the "
                     f"smallest resident block ({format_size(smallest)}): no level can be "
                     "resident")
    options: dict[str, Any] = dict(
        fetch=fetch, resident_levels=levels, resident_budget=budget_bytes, solver=solver,
        time_limit=time_limit, gap=gap, scenarios=scenarios, name=name)
    if pareto:
        if out:
            raise InputError("--pareto writes several layouts: use --out-dir, not --out",
                             field="out")
        from memsim.cli.pareto import run_pareto

        run_pareto(p, b, sim_wl, goal, pareto, points=points, out_dir=out_dir, plot=plot,
                   verify=verify, verify_queries=verify_queries, seed=seed, as_json=as_json,
                   options=options)
        return
    for flag, given in (("--out-dir", out_dir), ("--plot", plot)):
        if given:
            raise InputError(f"{flag} needs --pareto", field=flag.lstrip("-"))
    verified = None
    checked = None
    if verify and (goal.loaded or goal.slos):
        from memsim.optimize.verify import optimize_verified

        verified = optimize_verified(p, b, simulated_workload(sim_wl, goal, light_rate=1.0),
                                     goal,
                                     rounds=verify_rounds, queries=verify_queries, seed=seed,
                                     **options)
        assert verified.result is not None
        result = verified.result
    else:
        result = optimize(p, b, seed=seed, workload=sim_wl, goal=goal, **options)
        checked = _verify(p, b, result.layout, sim_wl, verify_queries, seed) if verify else None
    if verified is not None and not verified.met:
        if as_json:
            data = result.to_json()
            data.update({"profile": p.name, "bank": b.name, "out": None,
                         "verify": verified.to_json()})
            emit_json(data)
        else:
            click.echo(optimize_text(result, b, p, fetch))
            click.echo(rounds_text(verified))
        raise InfeasibleError(verified.message + (" (no layout written)" if out else ""),
                              field="slo" if goal.slos else "rate")
    if out:  # only once everything succeeded: a failed --verify leaves no file behind
        # Record where the profile and bank came from so `estimate --layout OUT` finds them.
        result.layout.profile = ref_from(profile_ref, out)
        result.layout.bank = ref_from(bank_ref, out)
        header = (f"Chosen by: {command}\nsolver {result.solver}, status {result.status}, "
                  f"expected fetch time {format_time(result.objective_s)}")
        result.layout.save(out, header)
    if as_json:
        data = result.to_json()
        data.update({"profile": p.name, "bank": b.name, "out": out})
        if checked is not None:
            data["verify"] = checked
        if verified is not None:
            data["verify"] = verified.to_json()
        emit_json(data)
        return
    click.echo(optimize_text(result, b, p, fetch))
    if out:
        click.echo(f"layout written to {out}")
    if checked is not None:
        click.echo(_verify_text(checked))
    if verified is not None:
        click.echo(rounds_text(verified))


def _at_rate(wl: Workload | None, rate: str | None) -> Workload | None:
    """The workload scaled to --rate (Poisson with uniform routing when there is none)."""
    if rate is None:
        return wl
    try:
        value = parse_frequency(rate)
    except ValueError as exc:
        raise InputError(f"--rate: {exc}", field="rate") from None
    if not value > 0:
        raise InputError("--rate must be a positive number of queries per second",
                         field="rate")
    return workload_at_rate(wl, value)


def rounds_text(verified: VerifiedResult) -> str:
    """The simulator-in-the-loop rounds: layout, model against simulation, what changed."""
    rows = []
    for r in verified.rounds:
        where = " ".join(f"{d}:{t}" for d, t in sorted(r.placement.items()))
        model = r.model or {}
        sim = r.simulated["fetch_time_s"]
        ci = r.simulated["fetch_time_ci_s"].get("p99")
        busiest = max(r.simulated["offered_load"].items(), key=lambda kv: kv[1],
                      default=("-", 0.0))
        rows.append([r.index, where,
                     format_time(model.get("mean_s", float("nan"))) if model else "-",
                     format_time(model.get("quantile_s", {}).get("p99", float("nan")))
                     if model else "-",
                     format_time(sim["mean"]), format_time(sim["p99"]) + (
                         f" [{format_time(ci[0])} .. {format_time(ci[1])}]" if ci else ""),
                     f"{busiest[0]} {busiest[1]:.2f}",
                     "met" if r.met else "missed: " + "; ".join(r.misses)])
    lines = ["verify rounds (model against simulation):",
             table(["round", "placement", "model mean", "model p99", "sim mean", "sim p99",
                    "busiest tier", "verdict"], rows)]
    lines += [f"  round {r.index}: {r.action}" for r in verified.rounds if r.action]
    lines.append(verified.message)
    return "\n".join(lines)


def optimize_text(result: OptimizeResult, b: Bank, p: Profile, fetch: str) -> str:
    """The level optimizer's report: the placement beside greedy's, the solve, the times."""
    rows = []
    for lv in b.active_levels:
        where = result.layout.placement[lv.depth]
        if lv.depth in result.layout.resident:
            where += " (resident)"
        base = result.baseline.placement[lv.depth] if result.baseline else "-"
        if result.baseline and lv.depth in result.baseline.resident:
            base += " (resident)"
        rows.append([lv.depth, format_size(lv.block_bytes), format_size(lv.bytes), where, base])
    lines = [f"bank {b.name} on {p.name}, {fetch} fetch",
             table(["level", "block", "level size", "tier", "greedy"], rows), ""]
    if result.status == "optimal":
        status = "optimal"
    else:
        status = "time_limit (stopped at the time limit: may not be optimal"
        status += "; the greedy placement was the best found)" if result.chosen == "greedy" \
            else ")"
    lines.append(f"solver: {result.solver}, {status}, {result.solve_time_s * 1e3:.0f} ms")
    what = "expected fetch time"
    if result.scenarios > 1:
        what += f" over {result.scenarios} latency scenarios"
    goal, fig = result.goal, result.figures
    if goal is not None and fig is not None:
        lines.append(f"goal: {goal.describe()}")
        where = f" at {goal.rate:.4g} queries/s" if goal.loaded else ""
        lines.append(f"expected fetch time{where}: mean {format_time(fig.mean_s)}, p99 "
                     f"{format_time(fig.quantile_s['p99'])}"
                     + (f" over {result.scenarios} latency scenarios"
                        if result.scenarios > 1 else ""))
        if goal.loaded:
            lines.append("utilisation: " + ", ".join(
                f"{t} {rho:.2f}" + (f" (+{format_time(fig.wait_s[t])} queueing)"
                                    if fig.wait_s.get(t) else "")
                for t, rho in fig.utilization.items()))
        money = [f"${fig.cost_usd_month:,.2f} per month"] if any(
            t.cost for t in p.tiers) else []
        if any(t.energy for t in p.tiers):
            money.append(f"{format_energy(fig.energy_j_per_query)} per query")
        if money:
            lines.append("cost: " + ", energy: ".join(money) if len(money) == 2 else
                         ("cost: " if money[0].startswith("$") else "energy: ") + money[0])
    else:
        lines.append(f"{what}: {format_time(result.objective_s)}")
    if result.switch_probability:
        rates = ", ".join(f"level {d} {100 * v:.3g}%" for d, v in
                          result.switch_probability.items())
        source = result.workload or "no --workload: every query"
        lines.append(f"resident switches ({source}): {rates}; all resident blocks current: "
                     f"{format_time(result.current_s or 0.0)}")
    if result.chosen == "greedy":
        lines.append(f"greedy baseline: {format_time(result.baseline_s or 0.0)} (the layout "
                     "above: the solver found nothing better in the time limit)")
    else:
        lines.append(_baseline_text(result.baseline_s, result.objective_s,
                                    result.goal is not None))
    f = result.fetch_time_s
    idle = " (idle machine)" if goal is not None and goal.loaded else ""
    lines.append(f"estimator{idle}: mean {format_time(f['mean'])}, p50 "
                 f"{format_time(f['p50'])}, p99 {format_time(f['p99'])}")
    return "\n".join(lines)


def _baseline_text(baseline_s: float | None, objective_s: float, goal: bool = False) -> str:
    """The greedy baseline against the optimum, in words that hold when either is 0."""
    if baseline_s is None:
        return ("greedy baseline: none that meets the goal" if goal else
                "greedy baseline: found no feasible placement")
    if baseline_s <= objective_s * (1 + 1e-9):
        return f"greedy baseline: {format_time(baseline_s)} (as fast as the optimum)"
    if objective_s <= 0:
        return f"greedy baseline: {format_time(baseline_s)} (the optimum fetches nothing)"
    return (f"greedy baseline: {format_time(baseline_s)} "
            f"({baseline_s / objective_s:.2f}x the optimum)")


def _command(*, profile_ref: str, bank_ref: str, fetch: str, resident: str | None,
             resident_budget: str | None, solver: str, time_limit: float | None, gap: float,
             scenarios: int, granularity: str, buckets: int, workload_ref: str | None,
             trace_counts: str | None, budget: float | None, private: tuple[str, ...],
             private_tiers: str | None, blocked: tuple[str, ...], replica_budget: str | None,
             volatile: str | None, seed: int, out: str | None) -> str:
    """The command line that reproduces this run (options that change the answer)."""
    args = ["memsim", "optimize", "--profile", profile_ref, "--bank", bank_ref,
            "--fetch", fetch]
    if granularity != "level":
        args += ["--granularity", granularity, "--buckets", str(buckets)]
    for flag, value in (("--resident", resident), ("--resident-budget", resident_budget),
                        ("--workload", workload_ref), ("--trace", trace_counts),
                        ("--private-tiers", private_tiers),
                        ("--replica-budget", replica_budget), ("--volatile", volatile)):
        if value is not None:
            args += [flag, value]
    if budget is not None:
        args += ["--budget", f"{budget:g}"]
    for tree in private:
        args += ["--private", tree]
    for tree in blocked:
        args += ["--blocked", tree]
    if solver != "auto":
        args += ["--solver", solver]
    if time_limit is not None:
        args += ["--time-limit", f"{time_limit:g}"]
    if gap:
        args += ["--gap", f"{gap:g}"]
    if scenarios != DEFAULT_SCENARIOS:
        args += ["--scenarios", str(scenarios)]
    if seed:
        args += ["--seed", str(seed)]
    if out:
        args += ["--out", out]
    return shlex.join(args)


def _verify(p: Profile, b: Bank, layout: Layout, wl: Workload | None, queries: int,
            seed: int) -> dict[str, Any]:
    """The estimator's and the simulator's verdict on a chosen layout."""
    if wl is None:
        rate, _tier = saturation_rate(p, b, layout)
        wl = poisson_workload(0.1 * rate, name="verify")
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


def _names(text: str | None) -> list[str] | None:
    """A comma-separated list option ('ram,flash'); None when not given."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _optimize_buckets(p: Profile, b: Bank, wl: Workload | None, *, fetch: str, buckets: int,
                      budget: float | None, goal: Goal, policy: Policy, solver: str,
                      time_limit: float | None, gap: float, seed: int, name: str,
                      out: str | None, verify: bool, verify_queries: int, as_json: bool,
                      refs: tuple[str, str], command: str) -> None:
    """Place blocks by popularity under `policy`, write and report the answer."""
    routing_wl = wl or poisson_workload(1.0, name="uniform")
    result = optimize_blocks(p, b, routing_wl, fetch=fetch, buckets=buckets, policy=policy,
                             solver=solver, time_limit=time_limit, gap=gap, seed=seed,
                             name=name)
    checked = _verify(p, b, result.layout, routing_wl, verify_queries, seed) if verify else None
    if out:  # only once everything succeeded (the block map is written first, beside it)
        result.layout.profile = ref_from(refs[0], out)
        result.layout.bank = ref_from(refs[1], out)
        result.layout.save(out, f"Chosen by: {command}\nsolver {result.solver}, status "
                                f"{result.status}, model objective "
                                f"{format_time(result.objective_s)}")
    if as_json:
        data = result.to_json()
        data.update({"profile": p.name, "bank": b.name, "out": out,
                     "workload": routing_wl.name})
        if checked is not None:
            data["verify"] = checked
        emit_json(data)
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
    if goal.loaded and result.utilization:
        click.echo(f"at {goal.rate:.4g} queries/s: utilisation " + ", ".join(
            f"{t} {rho:.2f}" for t, rho in result.utilization.items() if rho > 0)
            + (f"; queueing wait (model bound) {format_time(result.wait_s)}"
               if result.wait_s else ""))
    if result.energy_j_per_query is not None and any(t.energy for t in p.tiers):
        click.echo(f"energy: {format_energy(result.energy_j_per_query)} per query (dynamic)")
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

