"""One shape for the Python API: the engines are modules that can also be called.

`memsim.optimize(...)` runs the level optimizer and `memsim.optimize.optimize_blocks(...)`
the bucket one; the same for `memsim.estimate` and `memsim.simulate`. Names load lazily.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import types

import pytest

import memsim


def _fresh(code: str) -> str:
    """Run `code` in a new interpreter (nothing imported beforehand); its stdout."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


def test_engine_modules_reachable_from_a_bare_import():
    """The notebooks' style: only `import memsim`, then attributes of the engine modules."""
    out = _fresh("import memsim\n"
                 "print(memsim.optimize.Policy.__name__, memsim.optimize.optimize_blocks.__name__,"
                 " memsim.simulate.SimulationResult.__name__, memsim.estimate.Estimate.__name__)")
    assert out == "Policy optimize_blocks SimulationResult Estimate"


def test_from_import_gives_the_callable_module():
    out = _fresh("from memsim import optimize, simulate, estimate\n"
                 "import types\n"
                 "print(all(isinstance(m, types.ModuleType) and callable(m)"
                 " for m in (optimize, simulate, estimate)))")
    assert out == "True"


@pytest.mark.parametrize("name", ["estimate", "optimize", "simulate"])
def test_engine_is_its_module_and_calls_its_function(name):
    module = getattr(memsim, name)
    assert module is importlib.import_module(f"memsim.{name}")
    assert isinstance(module, types.ModuleType) and callable(module)
    assert inspect.signature(module) == inspect.signature(getattr(module, name))


def test_calling_the_module_runs_the_function(paper_profile, paper_bank):
    result = memsim.optimize(paper_profile, paper_bank, scenarios=4)
    assert isinstance(result, memsim.OptimizeResult)
    assert result.status == "optimal"
    est = memsim.estimate(paper_profile, paper_bank, result.layout, samples=2000)
    assert isinstance(est, memsim.Estimate) and est.mean_s > 0


def test_the_call_follows_a_patched_function(monkeypatch):
    """The module looks its function up at each call, so patching one patches both."""
    monkeypatch.setattr(memsim.estimate, "estimate", lambda *a, **k: ("patched", a, k))
    assert memsim.estimate(1, x=2) == ("patched", (1,), {"x": 2})


def test_optimize_blocks_through_the_module(paper_profile, paper_bank):
    workload = memsim.load_workload("zipf-topic")
    result = memsim.optimize.optimize_blocks(paper_profile, paper_bank, workload, buckets=16,
                                             samples=2000)
    assert result.status == "optimal"
    assert result.buckets > 0 and result.objective_s > 0
    # every block of every level is placed somewhere
    for depth, counts in result.tier_blocks.items():
        assert sum(counts.values()) == paper_bank.level(depth).blocks


def test_policy_through_the_module():
    policy = memsim.optimize.Policy(budget_usd_month=10.0)
    assert policy.budget_usd_month == 10.0


def test_all_names_resolve_and_are_listed():
    assert sorted(memsim.__all__) == sorted([*memsim._EXPORTS, *memsim._ENGINES])
    for name in memsim.__all__:
        assert getattr(memsim, name) is not None
        assert name in dir(memsim)
    assert memsim.InputError is importlib.import_module("memsim.errors").InputError


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        memsim.nope  # noqa: B018 - the lookup is the test
