"""Turn pydantic validation errors into one InputError naming file, line and field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from memsim.errors import InputError
from memsim.yamlio import Document, format_loc

M = TypeVar("M", bound=BaseModel)

# Tags that pydantic puts in error locations for tagged unions; they are not in the file.
_UNION_TAGS = {"constant", "lognormal", "empirical", "exponential"}


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(p for p in loc if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p)))


def validate(model: type[M], doc: Document) -> M:
    """Validate `doc.data` as `model`; the first problem becomes an InputError."""
    if not isinstance(doc.data, dict):
        raise InputError("expected a mapping of fields at the top level", file=doc.file, line=1)
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = _clean_loc(tuple(first["loc"]))
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(
            errors) > 1 else ""
        raise InputError(
            _message(first) + more, file=doc.file, line=doc.line_of(loc),
            field=format_loc(loc) or None,
        ) from None
