"""Calibrate: measure real tiers with memsim's own stores and write a device profile.

`calibrate({"disk": "file:///data/x", "cloud": "s3://bucket/prefix"})` writes a scratch
object to each store, times cold reads across request sizes and concurrencies exactly as
replay reads (memsim/calibrate/measure.py), fits memsim's tier model to them
(memsim/calibrate/fit.py), optionally cross-checks local directories with fio
(memsim/calibrate/fio.py), and returns a `CalibrationResult`: `.profile` (a memsim Profile),
`.tiers[name]` (measurements and fit), `.to_yaml()`, `.save(path)`, `.plot(path)` and
`.to_json()`. The scratch objects are always removed, on errors and Ctrl-C too.

Every number in the written profile carries its source in a comment, and each tier records
how it was measured in its `calibration:` field. A RAM tier is included only when asked for
(`ram="memory://"`, measured like the others): memsim never invents numbers.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from memsim.calibrate import fio as fio_mod
from memsim.calibrate import measure as measure_mod
from memsim.calibrate.fit import RULES, Point, TierFit, points
from memsim.calibrate.fit import fit as fit_tier
from memsim.calibrate.measure import Measurements, Plan, make_plan
from memsim.errors import InputError
from memsim.profile import NAME_PATTERN, Profile, Tier, profile_from_dict
from memsim.stores import parse_store_url
from memsim.units import format_rate, format_size, format_time

__all__ = ["CalibrationResult", "TierCalibration", "calibrate", "guess_kind", "make_plan"]

KINDS = ("ram", "flash", "disk", "cloud", "other")
GUESS = {"file": "flash", "s3": "cloud", "memory": "ram"}
COLD = ("o_direct", "fadvise")  # local read modes that bypass or drop the page cache
Progress = Callable[[str, int], tuple[Callable[[int], None], Callable[[], None]]]


def guess_kind(url: str) -> str:
    """The tier kind a store URL suggests: file:// flash, s3:// cloud, memory:// ram."""
    return GUESS[parse_store_url(url).scheme]


def _sig(x: float, digits: int = 4) -> float:
    """`x` rounded to `digits` significant digits (records stay readable)."""
    return float(f"{x:.{digits}g}")


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:.1f}%"


def _sizes_text(sizes: list[int]) -> str:
    if len(sizes) == 1:
        return format_size(sizes[0], binary=True)
    return (f"{len(sizes)} sizes {format_size(min(sizes), binary=True)}.."
            f"{format_size(max(sizes), binary=True)}")


@dataclass
class TierCalibration:
    """One tier: where it was measured, the reads, the fit, fio's figures and the tier."""

    name: str
    url: str
    kind: str
    kind_source: str
    measurements: Measurements
    points: list[Point]
    fit: TierFit
    capacity: int | None
    capacity_source: str
    fio: list[fio_mod.FioPoint] | None = None
    fio_note: str | None = None
    tier: Tier | None = None

    @property
    def mode(self) -> str:
        """How reads were made cold: o_direct, fadvise, s3 or memory."""
        return self.measurements.mode

    def fio_rows(self) -> list[dict[str, Any]]:
        """fio's figures beside memsim's for every point both measured."""
        if not self.fio:
            return []
        mine = {(p.size, p.concurrency): p for p in self.points}
        rows = []
        for f in self.fio:
            p = mine.get((f.size, f.concurrency))
            if p is None:
                continue
            rows.append({"size_bytes": f.size, "concurrency": f.concurrency,
                         "memsim_p50_s": p.p50_s, "fio_p50_s": f.clat_p50_s,
                         "memsim_p99_s": p.p99_s, "fio_p99_s": f.clat_p99_s,
                         "memsim_bytes_per_s": p.throughput,
                         "fio_bytes_per_s": f.bw_bytes, "fio_ios": f.ios})
        return rows

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "store": self.url, "kind": self.kind, "read_mode": self.mode,
            "reads": self.measurements.reads, "wall_s": self.measurements.wall_s,
            "capacity_bytes": self.capacity, "fit": _finite(self.fit.to_json()),
            "points": [_finite(p.to_json()) for p in self.points],
        }
        if self.fio is not None:
            out["fio"] = [f.to_json() for f in self.fio]
            out["fio_vs_memsim"] = self.fio_rows()
        if self.fio_note:
            out["fio_note"] = self.fio_note
        return out


def _finite(data: Any) -> Any:
    """NaN and infinities as None (JSON and YAML records stay plain)."""
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    if isinstance(data, float) and not np.isfinite(data):
        return None
    return data


@dataclass
class CalibrationResult:
    """A calibration: the profile it gives, and per tier the reads and fit behind it."""

    profile: Profile
    tiers: dict[str, TierCalibration]
    plan: Plan
    date: str
    host: str
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ output
    def to_yaml(self) -> str:
        """The profile as YAML, every number with its source in a comment."""
        day = self.date[:10]
        lines = [
            f"# Device profile measured by memsim calibrate on host {self.host}, {self.date}.",
            "# Every number below was measured on this host (or read from its OS): see the",
            "# comment above each one, and each tier's `calibration:` record of how.",
            f"name: {_scalar(self.profile.name)}",
            f"description: {_scalar(self.profile.description)}",
            f"source: {_scalar(self.profile.source)}",
            "tiers:",
        ]
        for tier in self.profile.tiers:
            if tier.name in self.tiers:
                lines += self._tier_yaml(tier, self.tiers[tier.name], day)
            else:  # the RAM tier added when none was measured
                lines += [f"  - name: {tier.name}", f"    kind: {tier.kind}"]
                for text in textwrap.wrap(tier.source or "", 94, break_on_hyphens=False):
                    lines.append(f"    # {text}")
                lines.append(f"    bandwidth: {_scalar(format_rate(tier.bandwidth))}")
                if tier.capacity is not None:
                    lines.append(f"    capacity: {_scalar(format_size(tier.capacity))}  "
                                 "# the host's physical memory, from the OS")
                lines.append(f"    source: {_scalar(tier.source or '')}")
        return "\n".join(lines) + "\n"

    def _tier_yaml(self, tier: Tier, cal: TierCalibration, day: str) -> list[str]:
        f = cal.fit
        by = f"measured by memsim calibrate on {day}"
        out = [f"  - name: {tier.name}",
               f"    kind: {tier.kind}  # {cal.kind_source}"]

        def put(key: str, value: str, comment: str) -> None:
            for text in textwrap.wrap(comment, 94, break_on_hyphens=False):
                out.append(f"    # {text}")
            out.append(f"    {key}: {value}")

        if cal.capacity is None:
            out.append(f"    capacity: unlimited  # {cal.capacity_source}")
        else:
            put("capacity", _scalar(format_size(cal.capacity)), cal.capacity_source)
        put("bandwidth", _scalar(format_rate(tier.bandwidth)),
            f"{by}: per-stream rate, the slope of a relative least-squares line through the "
            f"median read time of {_sizes_text(f.c1_sizes)} at concurrency 1 ({f.c1_reads} "
            f"reads); relative RMS residual of the model there {_pct(f.residual_c1)}")
        agg_size, agg_c = f.aggregate_at
        agg_text = (f"largest throughput measured: {agg_c} x "
                    f"{format_size(agg_size, binary=True)} reads at once "
                    "(reads in flight x size / median time, Little's law)")
        if f.aggregate_measured < f.bandwidth:
            best = format_rate(f.aggregate_measured)
            agg_text = (f"no concurrency tested beat one stream ({best} at best): set to the "
                        "per-stream bandwidth")
        put("aggregate_bandwidth", _scalar(format_rate(tier.total_bandwidth)),
            f"{by}: {agg_text}")
        cells = ", ".join(f'{k}: "{v}"' for k, v in _latency_quantiles(f).items())
        put("latency", f"{{quantiles: {{{cells}}}}}",
            f"{by}: {f.latency_reads} single reads of {_sizes_text(f.latency_sizes)}, "
            "each from idle, minus their transfer time at the bandwidth above: their "
            "empirical distribution (memsim interpolates between these quantiles)")
        iops = ", ".join(f"{c}: {v:,.0f}/s" for c, v in sorted(f.iops.items()))
        small = format_size(f.concurrency_size, binary=True)
        limit = (" (still growing at the largest concurrency tested: a lower bound)"
                 if f.concurrency_at_limit else "")
        if f.rule == "fit":
            why = (f"of the concurrencies tested, the model with {tier.concurrency} channels "
                   f"fits every point best (relative RMS {_pct(f.residual_all)}; "
                   f"{small} reads per second: {iops})")
        elif f.iops and max(p.in_flight for p in cal.points) < 1.5 and len(f.iops) > 1:
            why = "the store never had two reads in flight at once: one channel"
        else:
            why = (f"{small} reads per second stop growing by more than 10% beyond "
                   f"{tier.concurrency} at once{limit} ({iops})")
        put("concurrency", str(tier.concurrency), f"{by}: {why}")
        if f.overhead_reads:
            put("request_overhead", _scalar(format_time(f.request_overhead_s)),
                f"{by}: mean time the channel is held but not reading (from when a read "
                "could start to its start: waking a reading thread, the hand-over between "
                f"reads), over {f.overhead_reads} reads under load")
        else:
            put("request_overhead", "0 s", "not separable from latency by reads alone: the "
                "software path is included in the latency above")
        out.append(f"    store: {_scalar(tier.store or '')}")
        out.append(f"    source: {_scalar(tier.source)}")
        out.append("    # how the numbers above were measured (memsim calibrate)")
        record = yaml.safe_dump({"calibration": tier.calibration}, sort_keys=False,
                                default_flow_style=None, width=96)
        out += ["    " + line for line in record.splitlines()]
        return out

    def save(self, path: str | Path) -> Path:
        """Write the profile YAML atomically (a temporary file, then a rename)."""
        from memsim.layout import write_atomic

        return write_atomic(path, self.to_yaml())

    def to_json(self) -> dict[str, Any]:
        """Machine-readable: the profile (base units), and per tier points, fit and fio."""
        return {"date": self.date, "host": self.host, "plan": self.plan.to_json(),
                "profile": _finite(self.profile.model_dump(mode="json", by_alias=True)),
                "tiers": {name: t.to_json() for name, t in self.tiers.items()},
                "notes": list(self.notes)}

    def plot(self, path: str | Path) -> Path:
        """A PNG: per tier, time vs size at concurrency 1 and throughput vs concurrency,
        measured (median, bar to p99) against the fitted model."""
        return _plot(self, Path(path))


def _scalar(value: str) -> str:
    """A YAML scalar for `value`, quoted only when YAML would misread it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


# ---------------------------------------------------------------------- plotting
def _plot(result: CalibrationResult, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [t.name for t in result.profile.tiers if t.name in result.tiers]  # measured ones
    fig = Figure(figsize=(11, 4 * len(names)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), 2, squeeze=False)
    for row, name in zip(axes, names, strict=True):
        cal = result.tiers[name]
        f = cal.fit
        ax = row[0]
        single = [p for p in cal.points if p.concurrency == 1]
        sizes = np.array([p.size for p in single], dtype=float)
        p50 = np.array([p.p50_s for p in single])
        p99 = np.array([p.p99_s for p in single])
        ax.errorbar(sizes, p50, yerr=[np.zeros_like(p50), p99 - p50], fmt="o", capsize=3,
                    label="measured median (bar to p99)")
        grid = np.geomspace(sizes.min(), sizes.max(), 100)
        ax.plot(grid, [f.predict(s, 1) for s in grid], "-", label="fitted model, p50")
        ax.plot(grid, [f.predict(s, 1, latency_s=f.latency_p99_s) for s in grid], "--",
                label="fitted model, p99")
        ax.set(xscale="log", yscale="log", xlabel="request size (bytes)", ylabel="time (s)",
               title=f"{name}: {cal.url}, one stream")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax = row[1]
        all_sizes = sorted({p.size for p in cal.points})
        shown = sorted({all_sizes[0], all_sizes[len(all_sizes) // 2], all_sizes[-1]})
        for i, size in enumerate(shown):
            pts = [p for p in cal.points if p.size == size]
            cs = np.array([p.concurrency for p in pts], dtype=float)
            colour = f"C{i}"
            ax.plot(cs, [p.throughput for p in pts], "o", color=colour,
                    label=f"{format_size(size, binary=True)} measured")
            fine = np.unique(np.geomspace(cs.min(), cs.max(), 30).round().astype(int))
            ax.plot(fine, [c * size / f.predict(size, int(c)) for c in fine], "-",
                    color=colour, label=f"{format_size(size, binary=True)} model")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({p.concurrency for p in cal.points}),
                      [str(c) for c in sorted({p.concurrency for p in cal.points})])
        ax.set(yscale="log", xlabel="requests at once (concurrency)",
               ylabel="throughput (bytes/s)",
               title=f"{name}: throughput (in flight x size / median time)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


# ---------------------------------------------------------------------- calibrate
def _capacity(url: str) -> tuple[int | None, str]:
    parsed = parse_store_url(url)
    day = dt.date.today().isoformat()
    if parsed.scheme == "s3":
        return None, "object storage: no practical limit"
    if parsed.scheme == "memory":
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return int(total), f"physical memory of this host on {day} (sysconf SC_PHYS_PAGES)"
    path = Path(parsed.path)
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    return int(free), (f"free space of the filesystem holding {parsed.path} on {day}, after "
                       "the calibration (shutil.disk_usage); the bank may use at most this")


def _check_request(tiers: Mapping[str, str], kinds: Mapping[str, str]) -> dict[str, str]:
    if not tiers:
        raise InputError("name at least one tier to measure, e.g. disk=file:///data/x",
                         field="tiers")
    seen: dict[str, str] = {}
    urls = {}
    for name, url in tiers.items():
        if not re.match(NAME_PATTERN, name):
            raise InputError(f"tier name {name!r} must start with a letter and hold only "
                             "letters, digits, '_', '.' and '-'", field="tiers")
        parsed = parse_store_url(url, field_name=f"tiers.{name}")
        key = parsed.display
        if key in seen:
            raise InputError(f"tiers '{seen[key]}' and '{name}' share the store {key}; give "
                             "each tier its own directory, bucket prefix or memory name",
                             field="tiers")
        seen[key] = name
        urls[name] = url
    for name, kind in kinds.items():
        if name not in tiers:
            raise InputError(f"--kind names tier '{name}', which is not measured "
                             f"(tiers: {', '.join(tiers)})", field="kind")
        if kind not in KINDS:
            raise InputError(f"unknown tier kind {kind!r} for '{name}' (use "
                             f"{', '.join(KINDS)})", field="kind")
    return urls


def _order(tiers: dict[str, TierCalibration]) -> list[str]:
    """Fastest first, RAM first: profiles list tiers that way."""
    return sorted(tiers, key=lambda n: (tiers[n].kind != "ram",
                                        tiers[n].fit.predict(1 << 20, 1)))


def calibrate(
    tiers: Mapping[str, str],
    *,
    quick: bool = False,
    sizes: list[int] | None = None,
    concurrencies: list[int] | None = None,
    samples: int | None = None,
    max_size: int | None = None,
    object_size: int | None = None,
    kinds: Mapping[str, str] | None = None,
    name: str | None = None,
    fio: bool = False,
    fio_engine: str = "psync",
    fio_runtime_s: float | None = None,
    concurrency_rule: str = "iops",
    latency_sizes: list[int] | None = None,
    latency_samples: int | None = None,
    gap_ratio: float = measure_mod.GAP_RATIO,
    cold: bool = True,
    load: float = measure_mod.LOAD,
    seed: int = 0,
    progress: Progress | None = None,
) -> CalibrationResult:
    """Measure each tier (name -> store URL) and fit memsim's tier model to it.

    `quick` measures 4 KiB..1 MiB at concurrency 1 and 4 with few reads (seconds); the full
    preset 4 KiB..64 MiB at concurrency 1..32. `sizes`, `concurrencies`, `samples` (reads
    per point), `max_size` and `object_size` narrow it. `kinds` overrides the kind guessed
    from each URL. `fio` also runs fio on local tiers (same file, sizes and concurrency).
    `concurrency_rule` "iops" takes the concurrency beyond which small-read IOPS grow by no more
    than 10%; "fit" the tested one whose model fits every point best (both are recorded).
    `latency_sizes`: the request sizes whose single reads (`latency_samples` of them) give the
    latency distribution; a bank's block size models the spread of its reads (default: the
    latency-bound sizes). Single reads start from idle: each is followed by a random pause of
    `gap_ratio` times its duration (0: back to back).
    `cold=False` reads local files through the page cache (as `replay --warm` does). The
    latency distribution is fitted from reads of the latency sizes arriving at random with one
    channel busy `load` of the time (0: from the single reads from idle instead).
    `progress(tier, total_reads)` may return (update, close) for a progress bar.
    """
    if concurrency_rule not in RULES:
        raise InputError(f"unknown concurrency rule {concurrency_rule!r} (use "
                         f"{' or '.join(RULES)})", field="concurrency-rule")
    kinds = dict(kinds or {})
    urls = _check_request(tiers, kinds)
    plan = make_plan(quick=quick, sizes=sizes, concurrencies=concurrencies, samples=samples,
                     max_size=max_size, object_size=object_size, seed=seed,
                     latency_sizes=latency_sizes, latency_samples=latency_samples,
                     gap_ratio=gap_ratio, cold=cold, load=load)
    notes: list[str] = []
    if fio:
        if fio_engine not in fio_mod.ENGINES:
            raise InputError(f"unknown fio engine {fio_engine!r} (use "
                             f"{' or '.join(fio_mod.ENGINES)})", field="fio-engine")
        fio_mod.fio_binary()
        local = [n for n, u in urls.items() if parse_store_url(u).scheme == "file"]
        if not local:
            raise InputError("--fio cross-checks local directories (file://) only, and no "
                             "tier is one", field="fio")
        skipped = [n for n in urls if n not in local]
        if skipped:
            notes.append(f"fio skipped tier(s) {', '.join(skipped)}: it reads local "
                         "directories only")
    runtime = fio_runtime_s if fio_runtime_s is not None else (0.25 if quick else 1.0)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    date, host = now.isoformat().replace("+00:00", "Z"), socket.gethostname()
    done: dict[str, TierCalibration] = {}
    for tier_name, url in urls.items():
        scheme = parse_store_url(url).scheme
        update, close = (progress(tier_name, plan.total_reads) if progress is not None
                         else (None, lambda: None))
        fio_note: list[str] = []

        def while_present(store: Any, obj: Any, meas: Measurements, scheme: str = scheme,
                          fio_note: list[str] = fio_note,
                          update: Callable[[int], None] | None = update
                          ) -> list[fio_mod.FioPoint] | None:
            if plan.load > 0:  # the latency sizes again, at random arrivals under load
                service = {s: float(np.median(meas.at(s, 1))) for s in plan.latency_reads_at}
                measure_mod.under_load(store, obj, meas, plan, service, update)
            if not fio or scheme != "file" or obj.path is None:
                return None
            direct = meas.mode == "o_direct"
            if not direct:
                fio_note.append("the filesystem refuses O_DIRECT: fio ran with --direct=0 and "
                                "may read from the page cache")
            return fio_mod.run(obj.path, list(plan.sizes), list(plan.concurrencies),
                               obj.size, engine=fio_engine, direct=direct,
                               runtime_s=runtime)

        try:
            meas, fio_points = measure_mod.measure(url, plan, progress=update,
                                                   while_present=while_present,
                                                   field_name=f"tiers.{tier_name}")
        finally:
            close()
        pts = points(meas)
        capacity, capacity_source = _capacity(url)
        kind = kinds.get(tier_name) or GUESS[scheme]
        kind_source = ("set with --kind" if tier_name in kinds else
                       f"guessed from the store URL ({scheme}://); --kind {tier_name}=KIND "
                       "overrides")
        done[tier_name] = TierCalibration(
            name=tier_name, url=meas.url, kind=kind, kind_source=kind_source,
            measurements=meas, points=pts, fit=fit_tier(meas, concurrency_rule,  # type: ignore[arg-type]
                                                              plan.latency_sizes),
            capacity=capacity,
            capacity_source=capacity_source, fio=fio_points,
            fio_note=fio_note[0] if fio_note else None)
    order = _order(done)
    if not any(done[n].kind == "ram" for n in order):
        notes.append("no RAM tier was measured, and layouts need one for the anchor model: "
                     "the profile's tier 'ram' has only a copy bandwidth of this host's memory "
                     "(measure it as the others with ram=memory://, or edit it)")
    profile = _profile(done, order, plan, urls, date, host, name)
    for t in profile.tiers:
        if t.name in done:  # not the RAM tier added when none was measured
            done[t.name].tier = t
    return CalibrationResult(profile=profile, tiers={n: done[n] for n in order}, plan=plan,
                             date=date, host=host, notes=notes)


def _latency_quantiles(f: TierFit) -> dict[str, str]:
    """The fitted latency quantiles as profile keys ("min", "p50", "max") and times."""
    out = {}
    for q, v in f.latency_quantiles.items():
        key = "min" if q == 0 else "max" if q == 1 else f"p{q * 100:g}"
        out[key] = format_time(v)
    return out


def _record(cal: TierCalibration, plan: Plan, date: str, host: str) -> dict[str, Any]:
    f, m = cal.fit, cal.measurements
    rec: dict[str, Any] = {
        "tool": "memsim calibrate", "date": date, "host": host, "store": cal.url,
        "cold_mode": m.mode, "sizes_bytes": list(plan.sizes),
        "concurrencies": list(plan.concurrencies), "samples_per_point": plan.samples,
        "reads": m.reads, "object_size_bytes": m.object_size or plan.object_size,
        "seconds": _sig(m.wall_s), "seed": plan.seed,
        "single_reads": f"from idle: each followed by a random pause of {plan.gap_ratio:g}x "
                        "its time",
        "latency_sizes_bytes": list(f.latency_sizes),
        "fit": {"method": "bandwidth: relative least squares of median time vs size at "
                          "concurrency 1; latency: empirical quantiles of reads of the latency "
                          "sizes (or the small ones) minus transfer time, arriving at random "
                          "under load where measured so, else single reads from idle; request "
                          "overhead: mean time a channel is held but not reading; "
                          "aggregate: largest reads in flight x size / median time; "
                          "concurrency: rule iops (where small-read IOPS stop growing by more "
                          "than 10%) or fit (the tested concurrency fitting all points best)",
                "intercept_s": _sig(f.intercept_s), "latency_reads": f.latency_reads,
                "aggregate_measured_bytes_per_s": _sig(f.aggregate_measured),
                "iops": {int(c): _sig(v) for c, v in sorted(f.iops.items())},
                "concurrency_rule": f.rule, "concurrency_by_iops": f.concurrency_iops,
                "concurrency_best_fit": f.concurrency_fit},
        "residuals": {"measure": "relative RMS of model vs measured median times",
                      "concurrency_1": _sig(f.residual_c1, 3),
                      "all_points": _sig(f.residual_all, 3),
                      "all_points_by_concurrency": {
                          int(c): _sig(v, 3) for c, v in f.residual_by_concurrency.items()}},
        "under_load": {str(size): {
            "reads": int(m.loaded[size].size), "offered_reads_per_s": _sig(m.loaded_rate[size]),
            "utilization": _sig(m.loaded_utilization[size], 3),
            "service_p50_s": _sig(float(np.median(m.loaded[size]))),
            "service_p99_s": _sig(float(np.quantile(m.loaded[size], 0.99))),
            "overhead_mean_s": _sig(float(m.loaded_overhead[size].mean()))}
            for size in sorted(m.loaded)},
        "points": [{"size": p.size, "concurrency": p.concurrency, "reads": p.reads,
                    "p50_s": _sig(p.p50_s), "p99_s": _sig(p.p99_s)} for p in cal.points],
    }
    if f.notes:
        rec["notes"] = list(f.notes)
    if cal.fio:
        rec["fio"] = [{"size": x.size, "concurrency": x.concurrency, "engine": x.engine,
                       "direct": x.direct, "ios": x.ios, "bw_bytes_per_s": _sig(x.bw_bytes),
                       "clat_p50_s": _sig(x.clat_p50_s), "clat_p99_s": _sig(x.clat_p99_s)}
                      for x in cal.fio]
    return _finite(rec)


def _ram_tier(day: str, host: str) -> dict[str, Any]:
    """This host's RAM as a tier, for a profile of measured devices that has none: its
    bandwidth from timed copies of a 64 MB buffer (best of 5), its size from the OS."""
    import time

    src = np.ones(64_000_000, dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    tier: dict[str, Any] = {
        "name": "ram", "kind": "ram", "bandwidth": format_rate(src.nbytes / max(best, 1e-9)),
        "source": f"memsim calibrate on host {host}, {day}: copies of a 64 MB buffer in "
                  "memory (added because every profile needs a RAM tier)"}
    try:
        import os

        tier["capacity"] = format_size(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    return tier


def _profile(done: dict[str, TierCalibration], order: list[str], plan: Plan,
             urls: Mapping[str, str], date: str, host: str, name: str | None) -> Profile:
    day = date[:10]
    tiers = []
    for n in order:
        cal = done[n]
        f = cal.fit
        tiers.append({
            "name": n, "kind": cal.kind,
            "capacity": "unlimited" if cal.capacity is None else format_size(cal.capacity),
            "bandwidth": format_rate(f.bandwidth),
            "aggregate_bandwidth": format_rate(max(f.aggregate_bandwidth, f.bandwidth)),
            "latency": {"quantiles": _latency_quantiles(f)},
            "concurrency": f.concurrency,
            "request_overhead": format_time(f.request_overhead_s), "store": urls[n],
            "source": f"memsim calibrate on host {host}, {day}: {cal.measurements.reads} "
                      f"{'cold ' if cal.mode in COLD else ''}reads ({cal.mode}) through "
                      "memsim's own store, as replay reads",
            "calibration": _record(cal, plan, date, host),
        })
    if not any(done[n].kind == "ram" for n in order) and "ram" not in order:
        tiers.insert(0, _ram_tier(day, host))  # every profile needs one (the model's RAM)
    data = {"name": name or f"calibrated-{host}",
            "description": f"Measured by memsim calibrate on host {host}, {day} "
                           f"({', '.join(f'{n}: {urls[n]}' for n in order)})",
            "source": f"memsim calibrate on host {host}, {date}", "tiers": tiers}
    return profile_from_dict(data, file="<memsim calibrate>")
