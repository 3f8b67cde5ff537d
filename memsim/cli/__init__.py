"""The memsim command line: a thin shell over the Python API, one module per command group.

Errors a user can cause end with one line on stderr naming file, line and field, and a
non-zero exit (2: bad input, 3: infeasible, 4: solver trouble, 5: a store cannot be used,
6: stored data is missing or corrupt); never a traceback.
"""

from __future__ import annotations

import click

from memsim.cli import calibrate, estimate, formats, optimize, realio, simulate, validate
from memsim.cli.emulate import cloud_emulator

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="memsim")
def main() -> None:
    """Place a hierarchical memory bank on a storage hierarchy and predict its fetch time.

    Profiles, banks and layouts are YAML files; shipped ones can be named instead of a path
    (see `memsim profile list`, `memsim bank list`, `memsim layout list`).
    """


for command in (formats.profile, formats.bank, formats.layout, formats.workload,
                formats.schema, estimate.estimate_cmd, optimize.optimize_cmd,
                simulate.simulate_cmd, realio.materialize_cmd, realio.verify_cmd,
                realio.replay_cmd, calibrate.calibrate_cmd, validate.validate_cmd,
                cloud_emulator):
    main.add_command(command)
