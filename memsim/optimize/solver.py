"""Run a PuLP model on HiGHS (default) or CBC, and say honestly how it ended."""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
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
    """HiGHS through PuLP, for the level ILP. Its presolve is off: on load-aware level models
    (big-M delay rows, chords) HiGHS 1.16's presolve has certified a wrong optimum (20.1 ms
    where 1.69 ms exists; CBC and HiGHS without presolve agree), and these models are small
    enough not to need it."""
    try:
        solver = pulp.HiGHS(mip=mip, msg=False, timeLimit=time_limit, gapRel=gap, threads=1,
                            presolve="off")
    except Exception:  # noqa: BLE001 - any failure to construct means HiGHS is unusable
        return None
    return solver if solver.available() else None


def _cbc(time_limit: float | None, gap: float, mip: bool = True,
         options: Sequence[str] = ()) -> pulp.LpSolver | None:
    with warnings.catch_warnings():  # PuLP 3.x warns that the bundled CBC goes away in 4.0
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(mip=mip, msg=False, timeLimit=time_limit, gapRel=gap,
                                   options=list(options))
    return solver if solver.available() else None


# CBC options for the array (bucket) models. Cgl's integer preprocessing of PuLP's CBC 2.10.3
# certifies wrong optima on them: a 3-tier bucket model whose optimum is 1109.09 came back
# "Optimal" at 1154.55 (one fixed column, one strengthened row, one substitution; with
# `preprocess off` CBC, HiGHS and brute force agree). The root LP and branch and bound are
# kept, which is where CBC's speed on these models comes from.
CBC_ARRAY_OPTIONS = ("preprocess off",)


def cbc_available() -> bool:
    """Whether PuLP's CBC can run here."""
    return _cbc(None, 0.0) is not None


def pick_solver(name: SolverName, time_limit: float | None, gap: float, mip: bool = True,
                cbc_options: Sequence[str] = ()) -> tuple[str, pulp.LpSolver]:
    """The solver to use: HiGHS when available, else CBC (for `auto`)."""
    if name in ("auto", "highs"):
        solver = _highs(time_limit, gap, mip)
        if solver is not None:
            return "highs", solver
        if name == "highs":
            raise SolverError("HiGHS is not available: pip install highspy (or use --solver cbc)")
    solver = _cbc(time_limit, gap, mip, cbc_options)
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
          gap: float = 0.0, relax: bool = False, cbc_options: Sequence[str] = ()
          ) -> SolveOutcome:
    """Solve `model` in place and classify the result.

    PuLP reports "Optimal" when HiGHS stops at its time limit with a feasible point, so the
    solution status and HiGHS's own model status are checked too. Under "auto", a HiGHS
    solve error falls back on CBC: HiGHS 1.x gives up on some badly scaled load models (chord
    rows of near-zero waits beside capacity rows in the thousands) that CBC solves.
    """
    outcome = _solve(model, name, time_limit, gap, relax, cbc_options)
    if name == "auto" and outcome.solver == "highs" and outcome.status == "failed":
        return _solve(model, "cbc", time_limit, gap, relax, cbc_options)
    return outcome


def _solve(model: pulp.LpProblem, name: SolverName, time_limit: float | None, gap: float,
           relax: bool, cbc_options: Sequence[str]) -> SolveOutcome:
    label, solver = pick_solver(name, time_limit, gap, mip=not relax, cbc_options=cbc_options)
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


@dataclass
class ArrayModel:
    """A MILP as arrays, for models built with numpy (the bucket ILP): minimise
    cost @ x + offset subject to row_lower <= A x <= row_upper (A row-wise, CSR) and
    lower <= x <= upper, x integer where `integer`."""

    cost: np.ndarray
    offset: float
    lower: np.ndarray
    upper: np.ndarray
    integer: np.ndarray  # bool per column
    starts: np.ndarray  # CSR row starts (rows + 1)
    index: np.ndarray
    value: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray


def solve_arrays(model: ArrayModel, name: SolverName = "auto", time_limit: float | None = None,
                 gap: float = 0.0, relax: bool = False
                 ) -> tuple[SolveOutcome, np.ndarray | None]:
    """Solve an ArrayModel: the outcome, and the column values (None without a point).

    HiGHS is driven through highspy directly (no PuLP model: building one costs more than
    the solve), with its feasibility-jump heuristic off: on the bucket ILP's huge integer
    domains it spends most of a solve finding what the root LP rounds to anyway. CBC gets
    a PuLP model built from the arrays.
    """
    if name in ("auto", "highs") and _highs(time_limit, gap) is not None:
        return _solve_highs(model, time_limit, gap, relax)
    if name == "highs":
        raise SolverError("HiGHS is not available: pip install highspy (or use --solver cbc)")
    return _solve_pulp(model, name, time_limit, gap, relax)


class RelaxationSweep:
    """LP relaxations of one model under a series of objectives, on one HiGHS instance:
    each solve after the first starts from the previous basis (a few pivots, not a fresh
    LP). Call `objective(cost, offset)` for each; None when HiGHS is unavailable."""

    def __init__(self, model: ArrayModel, time_limit: float | None = None) -> None:
        self.h = _highs_model(model, time_limit, 0.0, relax=True)
        self.n = int(model.cost.shape[0])

    def solve(self, cost: np.ndarray, offset: float) -> SolveOutcome:
        import highspy

        h = self.h
        h.changeColsCost(self.n, np.arange(self.n, dtype=np.int32),
                         np.asarray(cost, dtype=np.float64))
        h.changeObjectiveOffset(float(offset))
        start = time.perf_counter()
        with _quiet_stdout():
            h.run()
        seconds = time.perf_counter() - start
        status = h.getModelStatus()
        ms = highspy.HighsModelStatus
        if status == ms.kOptimal:
            value = float(h.getInfo().objective_function_value)
            return SolveOutcome(solver="highs", status="optimal", objective=value,
                                bound=value, gap=0.0, seconds=seconds)
        kind = "infeasible" if status == ms.kInfeasible else "failed"
        return SolveOutcome(solver="highs", status=kind, objective=None, bound=None, gap=None,
                            seconds=seconds)


def highs_available() -> bool:
    return _highs(None, 0.0) is not None


def _highs_model(model: ArrayModel, time_limit: float | None, gap: float, relax: bool
                 ) -> object:
    """A highspy.Highs holding `model` (integrality unless `relax`)."""
    import highspy

    with _quiet_stdout():  # the first Highs() of a process prints its banner from C
        h = highspy.Highs()
        for option, value in (("output_flag", False), ("threads", 1), ("mip_rel_gap", gap),
                              ("mip_heuristic_run_feasibility_jump", False)):
            h.setOptionValue(option, value)
    if time_limit is not None:
        h.setOptionValue("time_limit", float(time_limit))
    lp = highspy.HighsLp()
    lp.num_col_ = int(model.cost.shape[0])
    lp.num_row_ = int(model.row_lower.shape[0])
    lp.col_cost_ = np.asarray(model.cost, dtype=np.float64)
    lp.col_lower_ = np.asarray(model.lower, dtype=np.float64)
    lp.col_upper_ = np.asarray(model.upper, dtype=np.float64)
    lp.row_lower_ = np.asarray(model.row_lower, dtype=np.float64)
    lp.row_upper_ = np.asarray(model.row_upper, dtype=np.float64)
    lp.offset_ = float(model.offset)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.asarray(model.starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.asarray(model.index, dtype=np.int32)
    lp.a_matrix_.value_ = np.asarray(model.value, dtype=np.float64)
    mip = not relax and bool(model.integer.any())
    if mip:
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else
                           highspy.HighsVarType.kContinuous for i in model.integer.tolist()]
    with _quiet_stdout():
        h.passModel(lp)
    return h


def _solve_highs(model: ArrayModel, time_limit: float | None, gap: float, relax: bool
                 ) -> tuple[SolveOutcome, np.ndarray | None]:
    import highspy

    mip = not relax and bool(model.integer.any())
    start = time.perf_counter()
    try:
        h = _highs_model(model, time_limit, gap, relax)
        with _quiet_stdout():
            h.run()
    except Exception as exc:  # noqa: BLE001 - a HiGHS failure on a degenerate model
        raise SolverError(f"highs could not solve the model ({type(exc).__name__}: {exc}); "
                          "check for absurd sizes or rates in the inputs") from None
    seconds = time.perf_counter() - start
    status = h.getModelStatus()
    ms = highspy.HighsModelStatus
    info = h.getInfo()
    has_point = info.primal_solution_status == 2  # feasible
    if status == ms.kOptimal:
        kind = "optimal"
    elif status in (ms.kInfeasible,):
        kind = "infeasible"
    elif status in (ms.kTimeLimit, ms.kIterationLimit, ms.kSolutionLimit,
                    ms.kInterrupt):
        kind = "time_limit"
    else:
        kind = "failed"
    x = np.asarray(h.getSolution().col_value, dtype=np.float64) if (
        has_point and kind in ("optimal", "time_limit")) else None
    objective = float(info.objective_function_value) if x is not None else None
    bound = gap_value = None
    if mip:
        bound, gap_value = float(info.mip_dual_bound), float(info.mip_gap)
    elif kind == "optimal":
        bound, gap_value = objective, 0.0
    if bound is not None and not math.isfinite(bound):
        bound = None
    if gap_value is not None and not math.isfinite(gap_value):
        gap_value = None
    return SolveOutcome(solver="highs", status=kind, objective=objective, bound=bound,
                        gap=gap_value, seconds=seconds), x


def _solve_pulp(model: ArrayModel, name: SolverName, time_limit: float | None, gap: float,
                relax: bool) -> tuple[SolveOutcome, np.ndarray | None]:
    prob = pulp.LpProblem("memsim_array_model", pulp.LpMinimize)
    cols = [prob.add_variable(f"x{j}", lowBound=float(lo) if math.isfinite(lo) else None,
                              upBound=float(up) if math.isfinite(up) else None,
                              cat="Integer" if integer and not relax else "Continuous")
            for j, (lo, up, integer) in enumerate(zip(model.lower.tolist(),
                                                       model.upper.tolist(),
                                                       model.integer.tolist(), strict=True))]
    starts = model.starts.tolist()
    index = model.index.tolist()
    value = model.value.tolist()
    for r, (lo, up) in enumerate(zip(model.row_lower.tolist(), model.row_upper.tolist(),
                                     strict=True)):
        expr = pulp.LpAffineExpression(
            [(cols[index[k]], value[k]) for k in range(starts[r], starts[r + 1])])
        if lo == up:
            prob += expr == lo, f"r{r}"
            continue
        if math.isfinite(lo):
            prob += expr >= lo, f"r{r}_lo"
        if math.isfinite(up):
            prob += expr <= up, f"r{r}_up"
    prob.setObjective(pulp.LpAffineExpression(
        [(c, v) for c, v in zip(cols, model.cost.tolist(), strict=True) if v]) + model.offset)
    outcome = solve(prob, name, time_limit, gap, relax=relax, cbc_options=CBC_ARRAY_OPTIONS)
    if outcome.status not in ("optimal", "time_limit"):
        return outcome, None
    values = [c.value() for c in cols]
    if any(v is None for v in values):
        return outcome, None
    x = np.asarray(values, dtype=np.float64)
    objective = float(model.cost @ x + model.offset)
    outcome = replace(outcome, objective=objective)
    if outcome.solver == "cbc" and outcome.status == "optimal" and (
            relax or not gap or not model.integer.any()):
        # CBC proved optimality with no gap allowed (PuLP does not pass its bound on)
        outcome = replace(outcome, bound=objective, gap=0.0)
    return outcome, x
