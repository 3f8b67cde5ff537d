"""memsim: where should each part of a hierarchical memory bank live, and how fast is a fetch?

The Python API mirrors the CLI: load a profile, a bank and a layout, then `estimate` a layout's
fetch time, `optimize` a new one, or `simulate` it under a workload.
"""

from memsim.bank import ANCHORS, Bank, bank_from_dict, load_bank
from memsim.errors import (
    DataError,
    InfeasibleError,
    InputError,
    MemsimError,
    SolverError,
    StoreError,
)
from memsim.estimate import Estimate, estimate
from memsim.layout import Layout, layout_from_dict, load_layout
from memsim.optimize import OptimizeResult, optimize
from memsim.profile import Profile, Tier, load_profile, profile_from_dict
from memsim.simulate import SimulationResult, saturation_rate, simulate, tier_load
from memsim.trace import read_trace, write_trace
from memsim.units import (
    format_rate,
    format_size,
    format_time,
    parse_rate,
    parse_size,
    parse_time,
)
from memsim.workload import Workload, load_workload, workload_from_dict

__version__ = "0.1.0"

__all__ = [
    "ANCHORS", "Bank", "Estimate", "InfeasibleError", "InputError", "Layout", "MemsimError",
    "OptimizeResult", "Profile", "SolverError", "Tier", "bank_from_dict", "estimate",
    "format_rate", "format_size", "format_time", "layout_from_dict", "load_bank",
    "load_layout", "load_profile", "optimize", "parse_rate", "parse_size", "parse_time",
    "profile_from_dict", "SimulationResult", "simulate", "read_trace", "write_trace",
    "Workload", "load_workload", "workload_from_dict", "saturation_rate", "tier_load",
    "DataError", "StoreError",
]
