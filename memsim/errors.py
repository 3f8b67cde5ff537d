"""Errors a user can cause, carrying where in which file they happened."""

from __future__ import annotations

import re
from pathlib import Path

_BREAKS = re.compile(r"\s*[\r\n\x0b\x0c\x85\u2028\u2029]+\s*")


# scheme://userinfo@ : the userinfo runs to the last '@' before the end of the URL (a secret may
# hold '/', '+' or ':'), so everything between '://' and that '@' is scrubbed.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?!/)[^\s'\"<>`@]*@")


CREDENTIALS_ADVICE = ("must not contain credentials; use AWS_ACCESS_KEY_ID and "
                      "AWS_SECRET_ACCESS_KEY in the environment, or ~/.aws/credentials")


def has_userinfo(text: str) -> bool:
    """Whether `text` holds a URL with userinfo (`s3://KEY:SECRET@host`)."""
    return _USERINFO.search(text) is not None


def scrub_userinfo(text: str) -> str:
    """`text` with every URL's userinfo (`s3://KEY:SECRET@host`) replaced by `***`; run it
    on a value before cutting it short for a message, so no part of a secret survives."""
    return _USERINFO.sub(lambda m: m["scheme"] + "***@", text)


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
        if self.file is not None:
            name = self.file
            if not name or any(c.isspace() for c in name):
                name = repr(name)  # a name with spaces, or none, quoted so it reads as one
            where = name + (f":{self.line}" if self.line else "")
        parts = [p for p in (where, f"field '{self.field}'" if self.field else "") if p]
        return one_line(scrub_userinfo((": ".join(parts) + ": " if parts else "") + self.message))


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
