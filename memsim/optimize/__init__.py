"""Layout optimizer: choose the tier of every level to minimise the expected fetch time.

The pieces are separate, as in FlexGen: the policy is a plain `Layout`; `tables` evaluates
policies with the shared cost model; `ilp` states the integer program; `solver` runs it;
`greedy` gives the baseline it must beat.
"""

from memsim.optimize.blocks import BlockOptimizeResult, optimize_blocks
from memsim.optimize.buckets import Policy
from memsim.optimize.greedy import greedy_placement
from memsim.optimize.level import DEFAULT_SCENARIOS, OptimizeResult, optimize, resident_switch
from memsim.optimize.tables import CostTables, build_tables

__all__ = ["OptimizeResult", "optimize", "greedy_placement", "build_tables", "CostTables",
           "resident_switch", "DEFAULT_SCENARIOS",
           "BlockOptimizeResult", "optimize_blocks", "Policy"]


# `memsim.optimize(...)` calls optimize(); the module stays a module (`memsim.optimize.<name>`)
from memsim import make_callable  # noqa: E402

make_callable(__name__, "optimize")
