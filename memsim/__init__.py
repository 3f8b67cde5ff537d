"""memsim: where should each part of a hierarchical memory bank live, and how fast is a fetch?

The Python API mirrors the CLI: load a profile, a bank and a layout, then `estimate` a layout's
fetch time, `optimize` a new one, or `simulate` it under a workload.

`memsim.estimate`, `memsim.optimize`, `memsim.simulate`, `memsim.sweep`, `memsim.materialize`,
`memsim.replay` and `memsim.validate` are the engines' modules, and each can be called as its
main function: `memsim.optimize(profile, bank)` runs
`memsim.optimize.optimize`, while `memsim.optimize.optimize_blocks` and
`memsim.optimize.Policy` are there as in any module.

Names are imported on first use (PEP 562), so `import memsim` (and the command line, which
imports it) does not pay for numpy, scipy, pydantic or the solvers until something needs them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "ANCHORS": "memsim.bank", "Bank": "memsim.bank", "bank_from_dict": "memsim.bank",
    "load_bank": "memsim.bank",
    "DataError": "memsim.errors", "InfeasibleError": "memsim.errors",
    "InputError": "memsim.errors", "MemsimError": "memsim.errors",
    "SolverError": "memsim.errors", "StoreError": "memsim.errors",
    "Estimate": "memsim.estimate",
    "Layout": "memsim.layout", "layout_from_dict": "memsim.layout",
    "load_layout": "memsim.layout",
    "OptimizeResult": "memsim.optimize", "open_bank": "memsim.client.bank",
    "load_centroids": "memsim.client.route", "route": "memsim.client.route",
    "serve_bench": "memsim.client.servebench",
    "Profile": "memsim.profile", "Tier": "memsim.profile", "load_profile": "memsim.profile",
    "profile_from_dict": "memsim.profile",
    "SimulationResult": "memsim.simulate", "saturation_rate": "memsim.simulate",
    "tier_load": "memsim.simulate",
    "read_trace": "memsim.trace", "write_trace": "memsim.trace",
    "format_rate": "memsim.units", "format_size": "memsim.units", "format_time": "memsim.units",
    "parse_rate": "memsim.units", "parse_size": "memsim.units", "parse_time": "memsim.units",
    "Workload": "memsim.workload", "load_workload": "memsim.workload",
    "workload_from_dict": "memsim.workload",
}
# the engines: a module that is also callable as its main function of the same name
_ENGINES = ("estimate", "materialize", "optimize", "replay", "simulate", "sweep", "validate")

__all__ = [  # the keys of _EXPORTS and the engines (a test keeps them equal)
    "ANCHORS", "Bank", "DataError", "Estimate", "InfeasibleError", "InputError", "Layout",
    "MemsimError", "OptimizeResult", "Profile", "SimulationResult", "SolverError", "StoreError",
    "Tier", "Workload", "bank_from_dict", "estimate", "format_rate", "format_size",
    "format_time", "layout_from_dict", "load_bank", "load_centroids", "load_layout",
    "load_profile", "load_workload", "materialize", "open_bank", "optimize", "parse_rate",
    "parse_size", "parse_time", "profile_from_dict", "read_trace", "replay", "route",
    "saturation_rate", "serve_bench", "simulate", "sweep", "tier_load", "validate",
    "workload_from_dict", "write_trace",
]

if TYPE_CHECKING:
    from memsim import estimate, materialize, optimize, replay, simulate, sweep, validate
    from memsim.bank import ANCHORS, Bank, bank_from_dict, load_bank
    from memsim.client.bank import open_bank
    from memsim.client.route import load_centroids, route
    from memsim.client.servebench import serve_bench
    from memsim.errors import (
        DataError,
        InfeasibleError,
        InputError,
        MemsimError,
        SolverError,
        StoreError,
    )
    from memsim.estimate import Estimate
    from memsim.layout import Layout, layout_from_dict, load_layout
    from memsim.optimize import OptimizeResult
    from memsim.profile import Profile, Tier, load_profile, profile_from_dict
    from memsim.simulate import SimulationResult, saturation_rate, tier_load
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


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it, so later lookups cost nothing."""
    if name in _ENGINES:
        # importing a submodule binds it on this package; the module is callable
        return importlib.import_module(f"memsim.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'memsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class CallableModule(types.ModuleType):
    """A module that runs its main function when called (see `make_callable`)."""

    __main_function__: str

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # pickled by name, as modules are (cloudpickle sends a notebook's function with the
        # engines it uses to Dask workers)
        return importlib.import_module, (self.__name__,)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # looked up at each call, so patching the module's function patches the call too
        return getattr(self, self.__main_function__)(*args, **kwargs)


def make_callable(module_name: str, function: str) -> None:
    """Make the module `module_name` callable as its function `function`.

    An engine's module and its main function share a name (`memsim.optimize` holds
    `optimize`); rather than let the function shadow the module on the package, the module
    itself is callable, so `memsim.optimize(...)` and `memsim.optimize.optimize_blocks(...)`
    both work. Called at the end of the engine's module; `inspect.signature` and `help`
    of the call show the function's.
    """
    import inspect

    module = sys.modules[module_name]
    module.__class__ = CallableModule
    module.__main_function__ = function  # type: ignore[attr-defined]
    target = getattr(module, function)
    module.__signature__ = inspect.signature(target)  # type: ignore[attr-defined]
