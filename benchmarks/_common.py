"""What every benchmark script shares: one-thread numeric pools, load averages, child RSS.

Import it before numpy: it sets the thread-count variables at import time.
"""

from __future__ import annotations

import os
import resource
import sys

# Single-threaded work: keep BLAS / OpenMP pools to one thread before numpy is imported.
# (Numpy's elementwise kernels and random generators are single-threaded anyway.)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, where the platform has them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def format_load(load: list[float] | None) -> str:
    return ", ".join(f"{x:.2f}" for x in load) if load else "unavailable"


def children_peak_rss() -> int:
    """Peak resident bytes of the largest child process waited for so far."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # KiB on Linux, bytes on macOS
