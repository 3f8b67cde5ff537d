"""`python -m memsim`: the memsim command line."""

from memsim.cli import main

main()
