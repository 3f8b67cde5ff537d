"""Errors a user can cause, carrying where in which file they happened."""

from __future__ import annotations

import re
from pathlib import Path

_BREAKS = re.compile(r"\s*[\r\n\x0b\x0c\x85\u2028\u2029]+\s*")


def one_line(text: str) -> str:
    """`text` on one line: line breaks (from a parser's problem text, a file name) become
    spaces, so every message a user sees is a single line."""
    return _BREAKS.sub(" ", text).strip()


class MemsimError(Exception):
    """A problem with the user's input or environment, reported as one line, never a traceback."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "")
        parts = [p for p in (where, f"field '{self.field}'" if self.field else "") if p]
        return one_line((": ".join(parts) + ": " if parts else "") + self.message)


class InputError(MemsimError):
    """Malformed or invalid input file or argument."""


class InfeasibleError(MemsimError):
    """No placement satisfies the constraints; the message says which and by how much."""


class SolverError(MemsimError):
    """The solver failed or is unavailable."""


class StoreError(MemsimError):
    """A store cannot be reached, read or written (network, permissions, space, credentials)."""


class DataError(MemsimError):
    """Stored bank data is missing or does not match its manifest."""


class OverloadWarning(UserWarning):
    """A result that describes no steady state or an impossible layout: a tier asked for more
    than it can serve, fetch times growing through the run, or a tier overfilled."""
