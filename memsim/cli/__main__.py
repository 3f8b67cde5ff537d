"""`python -m memsim.cli`: the same as the `memsim` command."""

from memsim.cli import main

main()
