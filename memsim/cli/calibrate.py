"""`memsim calibrate`: measure real tiers and write a device profile (memsim.calibrate)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from memsim.cli.common import OutputFile, emit_json, handle_errors, json_option, size_option
from memsim.errors import InputError
from memsim.units import UnitError, format_rate, format_size, format_time, parse_size


def _pairs(values: tuple[str, ...], what: str, example: str) -> dict[str, str]:
    """NAME=VALUE arguments as a dict; each name once."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        name, rest = name.strip(), rest.strip()
        if not sep or not name or not rest:
            raise InputError(f"cannot read {value!r}; expected {what}, e.g. {example}",
                             field="tiers" if what == "TIER=URL" else "kind")
        if name in out:
            raise InputError(f"tier '{name}' is given twice", field="tiers")
        out[name] = rest
    return out


def _size_list(value: str | None, field: str) -> list[int] | None:
    if not value:
        return None
    out = []
    for part in value.split(","):
        try:
            out.append(parse_size(part.strip()))
        except UnitError as exc:
            raise InputError(f"{exc} (binary sizes: 4KiB, 1MiB)", field=field) from None
    return out


def _int_list(value: str | None, field: str) -> list[int] | None:
    if not value:
        return None
    out = []
    for part in value.split(","):
        text = part.strip()
        if not text.isdigit() or int(text) < 1:
            raise InputError(f"cannot read {text!r} in {value!r}; expected whole numbers "
                             "like 1,2,4,8", field=field)
        out.append(int(text))
    return out


def _progress_factory() -> Any:
    """tqdm bars on stderr, one per tier, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    def start(tier: str, total: int) -> tuple[Callable[[int], None], Callable[[], None]]:
        bar = tqdm(total=total, unit="read", desc=f"calibrate {tier}", file=sys.stderr,
                   mininterval=0.3)
        return bar.update, bar.close

    return start


def _check_writable(path: str | None, option: str) -> None:
    """Fail before measuring, not after, when an output file cannot be written."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{path} is a directory", field=option)
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {path}: {parent} is not a writable directory",
                         field=option)


def summary_text(result: Any) -> str:
    """What was measured and fitted, per tier, and fio beside memsim when it ran."""
    from memsim.texttable import table

    blocks = []
    for name, cal in result.tiers.items():
        f, m = cal.fit, cal.measurements
        head = (f"tier {name}: {cal.url}, kind {cal.kind}, reads {cal.mode}, "
                f"{m.reads:,} reads in {format_time(m.wall_s)}")
        rows = []
        for p in cal.points:
            model = f.predict(p.size, p.concurrency)
            rows.append([format_size(p.size, binary=True), p.concurrency, p.reads,
                         format_time(p.p50_s), format_time(p.p99_s), f"{p.in_flight:.1f}",
                         format_rate(p.throughput), format_time(model),
                         f"{100 * (model - p.effective_s) / p.effective_s:+.0f}%"])
        lines = [head, table(["size", "streams", "reads", "p50", "p99", "in flight",
                              "throughput", "model p50", "model error"], rows), ""]
        lines.append(f"fit: bandwidth {format_rate(f.bandwidth)} per stream, latency p50 "
                     f"{format_time(f.latency_p50_s)}, p99 {format_time(f.latency_p99_s)}, "
                     f"aggregate {format_rate(cal.tier.total_bandwidth)}, concurrency "
                     f"{f.concurrency}")
        lines.append("fit residuals (relative RMS of model vs measured medians): "
                     f"{100 * f.residual_c1:.1f}% at concurrency 1, "
                     f"{100 * f.residual_all:.1f}% over all points")
        if len(f.residual_by_concurrency) > 1:
            lines.append(f"concurrency by rule '{f.rule}'; over all points, with channels " +
                         ", ".join(f"{c}: {100 * v:.0f}%"
                                   for c, v in f.residual_by_concurrency.items()))
        lines += [f"note: {n}" for n in f.notes]
        if cal.fio:
            engine = cal.fio[0].engine
            direct = "direct" if cal.fio[0].direct else "buffered"
            fio_rows = [[format_size(r["size_bytes"], binary=True), r["concurrency"],
                         format_time(r["memsim_p50_s"]), format_time(r["fio_p50_s"]),
                         format_time(r["memsim_p99_s"]), format_time(r["fio_p99_s"]),
                         format_rate(r["memsim_bytes_per_s"]), format_rate(r["fio_bytes_per_s"])]
                        for r in cal.fio_rows()]
            lines += ["", f"fio ({engine}, {direct}, same file) beside memsim:",
                      table(["size", "streams", "memsim p50", "fio p50", "memsim p99",
                             "fio p99", "memsim bw", "fio bw"], fio_rows)]
            if cal.fio_note:
                lines.append(f"note: {cal.fio_note}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)



@click.command("calibrate")
@click.argument("tiers", nargs=-1, metavar="TIER=URL...")
@click.option("--out", "out", metavar="FILE", type=OutputFile(),
              help="Write the profile YAML here (atomically); otherwise it is printed.")
@click.option("--plot", "plot", metavar="FILE.png", type=OutputFile(),
              help="Plot measured medians (bars to p99) against the fitted model.")
@click.option("--fio", "use_fio", is_flag=True,
              help="Also run fio on local tiers (same file, sizes and concurrency) and "
              "print its figures beside memsim's.")
@click.option("--fio-engine", type=click.Choice(["psync", "libaio"]), default="psync",
              show_default=True,
              help="psync: one thread per stream, as memsim reads; libaio: --iodepth.")
@click.option("--quick", is_flag=True,
              help="4 KiB..1 MiB at concurrency 1 and 4, few reads: seconds, not minutes.")
@click.option("--samples", type=int, default=None,
              help="Reads per (size, concurrency) point [default: 20; --quick: 6]; big "
              "requests read at most 1 GiB per point, never under 2 reads per stream.")
@click.option("--sizes", metavar="LIST",
              help="Request sizes [default: 4KiB,16KiB,64KiB,256KiB,1MiB,4MiB,16MiB,64MiB].")
@click.option("--concurrency", metavar="LIST",
              help="Requests at once [default: 1,2,4,8,16,32]; must include 1.")
@click.option("--max-size", metavar="SIZE", help="Leave out request sizes above this.")
@click.option("--object-size", metavar="SIZE",
              help="Size of the scratch object read [default: twice the largest request].")
@click.option("--concurrency-rule", type=click.Choice(["iops", "fit"]), default="iops",
              show_default=True,
              help="iops: the concurrency beyond which small-read IOPS grow by no more than "
              "10%; fit: the tested concurrency whose model fits every point best.")
@click.option("--latency-size", "latency_size", metavar="LIST",
              help="Fit the latency distribution from single reads of these sizes "
              "(added to --sizes), e.g. your bank's block size, so that the spread of its "
              "reads is modelled [default: the latency-bound sizes].")
@click.option("--latency-samples", type=int, default=None,
              help="Single reads of each latency size [default: 200; --quick: 60].")
@click.option("--gap-ratio", type=float, default=1.0, show_default=True,
              help="Single reads start from idle: each is followed by a random pause of "
              "this many times its duration, as at moderate load (0: back to back).")
@click.option("--warm", is_flag=True,
              help="Read local files through the page cache, as `replay --warm` and "
              "`validate --warm` do [default: cold, O_DIRECT].")
@click.option("--kind", "kind", multiple=True, metavar="TIER=KIND",
              help="Tier kind (ram, flash, disk, cloud, other) instead of the guess from "
              "the URL (file: flash, s3: cloud, memory: ram). Repeatable.")
@click.option("--name", metavar="NAME", help="Profile name [default: calibrated-HOST].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the offsets and the scratch object's bytes.")
@json_option
@handle_errors
def calibrate_cmd(tiers: tuple[str, ...], out: str | None, plot: str | None,
                  use_fio: bool, fio_engine: str, quick: bool, samples: int | None,
                  sizes: str | None, concurrency: str | None, max_size: str | None,
                  object_size: str | None, concurrency_rule: str,
                  latency_size: str | None, latency_samples: int | None, gap_ratio: float,
                  warm: bool, kind: tuple[str, ...], name: str | None, seed: int, as_json: bool
                  ) -> None:
    """Measure real tiers and write a device profile.

    Each TIER=URL (file:///dir, s3://bucket/prefix, memory://name) gets a scratch object
    of random bytes, read cold at random offsets across request sizes and concurrency,
    timed as replay times its reads; memsim's tier model is fitted to the times. The
    scratch object is removed afterwards, also on errors and Ctrl-C. Add
    ram=memory:// to measure this process's RAM as the profile's RAM tier.

    \b
    memsim calibrate disk=file:///mnt/ssd/x --out ssd.yaml --plot ssd.png --fio
    memsim calibrate ram=memory:// cloud=s3://bucket/calib --quick
    """
    from memsim.calibrate import calibrate

    pairs = _pairs(tiers, "TIER=URL", "disk=file:///data/calib")
    kinds = _pairs(kind, "TIER=KIND", "disk=disk")
    _check_writable(out, "out")
    _check_writable(plot, "plot")
    result = calibrate(
        pairs, quick=quick, sizes=_size_list(sizes, "sizes"),
        concurrencies=_int_list(concurrency, "concurrency"), samples=samples,
        max_size=size_option(max_size, "max-size"),
        object_size=size_option(object_size, "object-size"), kinds=kinds, name=name,
        fio=use_fio, fio_engine=fio_engine, concurrency_rule=concurrency_rule,
        latency_sizes=_size_list(latency_size, "latency-size"),
        latency_samples=latency_samples, gap_ratio=gap_ratio, cold=not warm, seed=seed,
        progress=_progress_factory())
    saved = str(result.save(out)) if out else None
    plotted = str(result.plot(plot)) if plot else None
    if as_json:
        data = result.to_json()
        data["out"], data["plot"] = saved, plotted
        emit_json(data)
        return
    click.echo(summary_text(result))
    for note in result.notes:
        click.echo(f"note: {note}")
    if saved:
        click.echo(f"wrote {saved} ({len(result.profile.tiers)} tier"
                   f"{'s' if len(result.profile.tiers) != 1 else ''}: "
                   f"{', '.join(result.profile.tier_names)})")
    else:
        click.echo("\n" + result.to_yaml(), nl=False)
    if plotted:
        click.echo(f"wrote {plotted}")
