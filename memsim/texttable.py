"""Plain-text tables: what the CLI prints and what engines' text reports share."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NUMERIC = re.compile(r"^-?\d[\d.,]*[kMBT]?( [A-Za-z/]+)?$")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned; numbers (anything starting with a digit) right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        out = []
        for i, cell in enumerate(row):
            numeric = bool(_NUMERIC.match(cell))
            out.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)
