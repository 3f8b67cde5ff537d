"""`memsim optimize --pareto X,Y`: the front of layouts trading two metrics, as a table,
JSON, one layout file per point and a plot (the model's points, the simulator's beside them)."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from memsim.cli.common import emit_json, ref_from
from memsim.cli.tables import table
from memsim.errors import InputError, scrub_userinfo
from memsim.optimize.pareto import METRIC_KEYS, Front, FrontPoint, pareto_front, parse_metrics
from memsim.units import format_energy, format_time

if TYPE_CHECKING:
    from memsim.bank import Bank
    from memsim.optimize.goal import Goal
    from memsim.profile import Profile
    from memsim.workload import Workload

POINT_FILE = re.compile(r"point-\d+\.yaml")
LABELS = {"time": "mean fetch time", "p99": "p99 fetch time", "cost": "cost",
          "energy": "energy per query"}


def run_pareto(profile: Profile, bank: Bank, workload: Workload | None, goal: Goal,
               metrics_text: str, *, points: int, out_dir: str | None, plot: str | None,
               verify: bool, verify_queries: int, seed: int, as_json: bool,
               options: dict[str, Any]) -> None:
    """Compute the front, then print it and write the layouts and the plot (nothing is
    written if the front fails)."""
    x, y = parse_metrics(metrics_text)
    out = _out_dir(out_dir)
    if plot is not None:
        _local(plot, "plot")
    update, close = _progress_line(f"pareto {x},{y}")
    try:
        front = pareto_front(profile, bank, (x, y), goal=goal, points=points,
                             workload=workload, verify=verify, verify_queries=verify_queries,
                             seed=seed, progress=update, **options)
    finally:
        close()
    files = write_layouts(front, profile, bank, out) if out is not None else []
    if plot is not None:
        plot_front(front, plot, title=f"bank {bank.name} on {profile.name}")
    if as_json:
        emit_json(front.to_json())
        return
    click.echo(front_text(front, bank, profile))
    if files:
        click.echo(f"layouts written to {files[0]}" + (f" .. {files[-1].name}"
                                                       if len(files) > 1 else ""))
    if plot is not None:
        click.echo(f"plot written to {plot}")


def _local(path: str, name: str) -> Path:
    """A local path for an output option: never a URL."""
    if "://" in path:
        raise InputError(f"expected a local path, not a URL ({scrub_userinfo(path)[:60]!r})",
                         field=name)
    return Path(path)


def _out_dir(out_dir: str | None) -> Path | None:
    if out_dir is None:
        return None
    path = _local(out_dir, "out-dir")
    if path.exists() and not path.is_dir():
        raise InputError(f"{out_dir!r} exists and is not a directory", field="out-dir")
    return path


def _progress_line(label: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A one-line progress counter on stderr when it is a terminal; (update, close)."""
    stream = sys.stderr
    if not stream.isatty():
        return None, lambda: None
    shown = [False]

    def update(done: int, total: int) -> None:
        shown[0] = True
        click.echo(f"\r{label}: step {done}/{max(total, done)}\x1b[K", err=True, nl=False)

    def close() -> None:
        if shown[0]:
            click.echo("\r\x1b[K", err=True, nl=False)

    return update, close


def _ref(obj: Profile | Bank, out: Path) -> str:
    """How a written layout names its profile or bank: the shipped name, or a path relative
    to the layout (as `optimize --out` does)."""
    file = obj.file
    if not file or not Path(file).is_file():
        return obj.name
    try:
        from memsim.resources import resolve

        kind = "device_profiles" if hasattr(obj, "tiers") else "banks"
        if Path(resolve(obj.name, kind)).resolve() == Path(file).resolve():
            return obj.name
    except InputError:
        pass
    return ref_from(file, str(out))


def write_layouts(front: Front, profile: Profile, bank: Bank, out: Path) -> list[Path]:
    """Each point's layout as out/point-01.yaml ...; earlier point files beyond the new
    front go, no other file is touched."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, p in enumerate(front.points, 1):
        path = out / f"point-{i:02d}.yaml"
        layout = p.layout.model_copy(deep=True)
        layout.name = path.stem
        layout.profile = _ref(profile, path)
        layout.bank = _ref(bank, path)
        layout.description = (f"Pareto point {i} of {len(front.points)} ({front.x} against "
                              f"{front.y})")
        header = (f"Pareto front of {front.x} against {front.y}, point {i} of "
                  f"{len(front.points)}: {front.x} {_value(front.x, p.metric(front.x))}, "
                  f"{front.y} {_value(front.y, p.metric(front.y))} (model)")
        written.append(layout.save(path, header))
    keep = {w.name for w in written}
    for stale in out.iterdir():
        if POINT_FILE.fullmatch(stale.name) and stale.name not in keep and stale.is_file():
            stale.unlink()
    return written


def _value(metric: str, value: float) -> str:
    """A metric in human units."""
    if metric in ("time", "p99"):
        return format_time(value)
    if metric == "energy":
        return format_energy(value)
    if value >= 1:
        return f"${value:,.2f}/month"
    return f"${value:.4g}/month"


def _placement(p: FrontPoint) -> str:
    resident = set(p.layout.resident)
    return " ".join(f"{d}:{t}" + ("(r)" if d in resident else "")
                    for d, t in sorted(p.layout.placement.items()))


def _simulated(p: FrontPoint, metric: str) -> str:
    got = p.simulated_metric(metric)
    if got is None:
        return "-"
    value, ci = got
    text = _value(metric, value)
    if ci is not None:
        text += f" ±{_value(metric, (ci[1] - ci[0]) / 2)}"
    if p.simulated and p.simulated.get("unstable"):
        text += " !"
    return text


def front_text(front: Front, bank: Bank, profile: Profile) -> str:
    """The front as a table: the two metrics, the placement, the simulator's figures."""
    x, y = front.x, front.y
    verified = any(p.simulated is not None for p in front.points)
    sim_metrics = [m for m in ("time", "p99", "energy") if m != "energy" or "energy" in (x, y)]
    headers = ["point", LABELS[x], LABELS[y], "placement"]
    if verified:
        headers += [f"simulated {LABELS[m].removesuffix(' fetch time')}" for m in sim_metrics]
    rows = []
    for i, p in enumerate(front.points, 1):
        row: list[object] = [i, _value(x, p.metric(x)), _value(y, p.metric(y)), _placement(p)]
        if verified:
            row += [_simulated(p, m) for m in sim_metrics]
        rows.append(row)
    lines = [f"Pareto front of {LABELS[x]} against {LABELS[y]}: bank {bank.name} on "
             f"{profile.name}, {len(front.points)} point(s), {front.solves} solves, "
             f"{front.seconds:.1f} s"]
    if front.goal is not None:  # the base goal's targets (what it minimises is x here)
        parts = front.goal.describe().split(", ", 1)
        lines.append("under: " + (parts[1] if len(parts) > 1 else "no load, no targets"))
    lines.append(table(headers, rows))
    notes = []
    if "p99" in (x, y):
        notes.append("p99: the model's exact percentile over its scenarios" if front.p99_exact
                     else "p99: the model's CVaR bound (too many scenarios for the exact "
                     "percentile)")
    if any(p.layout.resident for p in front.points):
        notes.append("(r): resident in RAM")
    if verified:
        notes.append("simulated: mean and 95% half-interval of batch means")
        if any(p.simulated and p.simulated.get("unstable") for p in front.points):
            notes.append("!: the simulation found no steady state")
    if front.skipped:
        notes.append(f"{front.skipped} bound(s) had no feasible layout and were skipped")
    lines += notes
    return "\n".join(lines)


def _scale(metric: str, values: list[float]) -> tuple[float, str]:
    """A factor and unit for an axis (ms for times under a second, mJ under a joule)."""
    top = max((abs(v) for v in values), default=0.0)
    if metric in ("time", "p99"):
        return (1e3, "ms") if top < 1 else (1.0, "s")
    if metric == "energy":
        return (1e3, "mJ") if top < 1 else (1.0, "J")
    return 1.0, "$/month"


def plot_front(front: Front, path: str | Path, title: str = "") -> Path:
    """Draw the front (model points and line; simulated points with their intervals
    beside them when verified) to `path` as a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from memsim.layout import write_atomic

    x, y = front.x, front.y
    xs = [p.metric(x) for p in front.points]
    ys = [p.metric(y) for p in front.points]
    fx, ux = _scale(x, xs)
    fy, uy = _scale(y, ys)
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([v * fx for v in xs], [v * fy for v in ys], "o-", label="model")
    for i, (vx, vy) in enumerate(zip(xs, ys, strict=True), 1):
        ax.annotate(str(i), (vx * fx, vy * fy), textcoords="offset points", xytext=(5, 5),
                    fontsize="small")
    sim = [(p, p.simulated_metric(x), p.simulated_metric(y)) for p in front.points
           if p.simulated is not None]
    if sim:
        sx, sy, ex, ey = [], [], [[], []], [[], []]
        for p, gx, gy in sim:
            for got, metric, factor, vals, err in ((gx, x, fx, sx, ex), (gy, y, fy, sy, ey)):
                value, ci = got if got is not None else (p.metric(metric), None)
                vals.append(value * factor)
                err[0].append((value - ci[0]) * factor if ci else 0.0)
                err[1].append((ci[1] - value) * factor if ci else 0.0)
        ax.errorbar(sx, sy, xerr=ex, yerr=ey, fmt="s", mfc="none", capsize=3,
                    label="simulated (95% interval)")
    p99 = "p99 fetch time" if front.p99_exact else "p99 fetch time (CVaR bound)"
    label = {**LABELS, "p99": p99}
    ax.set_xlabel(f"{label[x]} ({ux})")
    ax.set_ylabel(f"{label[y]} ({uy})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(f"Pareto front: {LABELS[x]} against {LABELS[y]}"
                 + (f"\n{title}" if title else ""), fontsize="medium")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return write_atomic(path, buffer.getvalue())


__all__ = ["run_pareto", "front_text", "plot_front", "write_layouts", "METRIC_KEYS"]
