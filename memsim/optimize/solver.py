"""Run a PuLP model on HiGHS (default) or CBC, and say honestly how it ended."""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import pulp

from memsim.errors import SolverError

SolverName = Literal["auto", "highs", "cbc"]


@dataclass
class SolveOutcome:
    """How a solve ended: status is optimal, time_limit, infeasible or failed."""

    solver: str
    status: str
    objective: float | None
    bound: float | None
    gap: float | None
    seconds: float


def _highs(time_limit: float | None, gap: float, mip: bool = True) -> pulp.LpSolver | None:
    try:
        solver = pulp.HiGHS(mip=mip, msg=False, timeLimit=time_limit, gapRel=gap, threads=1)
    except Exception:  # noqa: BLE001 - any failure to construct means HiGHS is unusable
        return None
    return solver if solver.available() else None


def _cbc(time_limit: float | None, gap: float, mip: bool = True) -> pulp.LpSolver | None:
    with warnings.catch_warnings():  # PuLP 3.x warns that the bundled CBC goes away in 4.0
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(mip=mip, msg=False, timeLimit=time_limit, gapRel=gap)
    return solver if solver.available() else None


def pick_solver(name: SolverName, time_limit: float | None, gap: float, mip: bool = True
                ) -> tuple[str, pulp.LpSolver]:
    """The solver to use: HiGHS when available, else CBC (for `auto`)."""
    if name in ("auto", "highs"):
        solver = _highs(time_limit, gap, mip)
        if solver is not None:
            return "highs", solver
        if name == "highs":
            raise SolverError("HiGHS is not available: pip install highspy (or use --solver cbc)")
    solver = _cbc(time_limit, gap, mip)
    if solver is None:
        raise SolverError("no MILP solver available: install highspy, or PuLP with its CBC")
    return "cbc", solver


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Keep solver banners printed from C off stdout, which belongs to --json output."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real fd 1 (some notebook front ends)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def solve(model: pulp.LpProblem, name: SolverName = "auto", time_limit: float | None = None,
          gap: float = 0.0, relax: bool = False) -> SolveOutcome:
    """Solve `model` in place and classify the result.

    PuLP reports "Optimal" when HiGHS stops at its time limit with a feasible point, so the
    solution status and HiGHS's own model status are checked too.
    """
    label, solver = pick_solver(name, time_limit, gap, mip=not relax)
    if model.objective is None:  # a feasibility problem: PuLP's HiGHS bridge needs a row
        model.setObjective(pulp.LpAffineExpression())
    start = time.perf_counter()
    try:
        with _quiet_stdout():
            model.solve(solver)
    except pulp.PulpSolverError as exc:
        raise SolverError(f"{label} failed: {exc}") from None
    except (IndexError, ValueError, OverflowError, ZeroDivisionError, TypeError,
            AttributeError) as exc:
        # what PuLP's HiGHS bridge raises on a degenerate model (no variables, huge or
        # non-finite coefficients): a solver failure, never a traceback
        raise SolverError(f"{label} could not solve the model ({type(exc).__name__}: "
                          f"{exc}); check for absurd sizes or rates in the inputs") from None
    seconds = time.perf_counter() - start
    status = pulp.LpStatus.get(model.status, "Undefined")
    sol = getattr(model, "sol_status", None)
    bound = gap_value = None
    timed_out = False
    if label == "highs" and getattr(model, "solverModel", None) is not None:
        highs = model.solverModel
        try:
            model_status = highs.modelStatusToString(highs.getModelStatus())
            timed_out = "time limit" in model_status.lower()
            info = highs.getInfo()
            bound = float(info.mip_dual_bound)
            gap_value = float(info.mip_gap)
        except Exception:  # noqa: BLE001 - older highspy: fall back to PuLP's statuses
            pass
    if status == "Infeasible" or sol == pulp.LpSolutionInfeasible:
        kind = "infeasible"
    elif status == "Optimal" and sol == pulp.LpSolutionOptimal and not timed_out:
        kind = "optimal"
    elif sol in (pulp.LpSolutionIntegerFeasible, pulp.LpSolutionOptimal):
        kind = "time_limit"
    elif status == "Not Solved" or sol == pulp.LpSolutionNoSolutionFound:
        kind = "time_limit" if time_limit is not None else "failed"
    else:
        kind = "failed"
    objective = pulp.value(model.objective) if kind in ("optimal", "time_limit") else None
    if bound is not None and not math.isfinite(bound):
        bound = None
    if gap_value is not None and not math.isfinite(gap_value):
        gap_value = None
    return SolveOutcome(solver=label, status=kind, objective=objective, bound=bound,
                        gap=gap_value, seconds=seconds)
