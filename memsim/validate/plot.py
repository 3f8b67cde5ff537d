"""The validation figure: real and simulated response-time CDFs, one panel per tier and one
for the fetch time, each titled with its errors. Drawn with matplotlib's Agg canvas directly,
so the caller's pyplot backend (a notebook's, say) is left alone."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memsim.layout import write_atomic
from memsim.validate.metrics import percent as _pct

if TYPE_CHECKING:
    from memsim.validate import Samples, ValidationResult
    from memsim.validate.metrics import Comparison

__all__ = ["plot_cdfs"]

COLUMNS = 3  # panels per row
LOG_SPAN = 30  # a log time axis when the slowest sample is this many times the fastest


def plot_cdfs(result: ValidationResult, path: str | Path) -> Path:
    """Draw `result`'s CDFs and write them to `path` as a PNG (atomically); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels: list[tuple[str, Comparison, Samples]] = [
        (f"tier {name}", result.per_tier[name], s) for name, s in result.tier_samples.items()
        if name in result.per_tier]
    if result.fetch is not None and result.fetch_samples is not None:
        panels.append(("fetch time", result.fetch, result.fetch_samples))
    cols = min(COLUMNS, max(len(panels), 1))
    rows = max(1, -(-len(panels) // cols))
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, c, (real, sim)) in zip(axes, panels, strict=False):
        for values, label, style in ((real, "real", "-"), (sim, "simulated", "--")):
            x = np.sort(values) * 1e3
            ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", linestyle=style,
                    label=label)
        low, high = float(min(real.min(), sim.min())), float(max(real.max(), sim.max()))
        if low > 0 and high / low > LOG_SPAN:
            ax.set_xscale("log")
        ax.set_xlabel("response time (ms)")
        ax.set_ylabel("CDF")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
        ax.set_title(f"{title}\np50 {_pct(c.p50_error)}, p99 {_pct(c.p99_error)}, "
                     f"demerit {_pct(c.demerit, sign=False)}", fontsize="medium")
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if not panels:
        axes[0].text(0.5, 0.5, "nothing to compare", ha="center", va="center")
    fig.suptitle(f"layout {result.layout} on {result.profile}, workload {result.workload}: "
                 "real vs simulated")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return write_atomic(path, buffer.getvalue())

