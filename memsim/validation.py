"""Turn pydantic validation errors into one InputError naming file, line and field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from memsim.errors import InputError
from memsim.yamlio import Document, format_loc

M = TypeVar("M", bound=BaseModel)

# Tags pydantic puts in error locations for tagged unions; they are not in the file.
_UNION_TAGS = {"constant", "lognormal", "empirical", "exponential", "poisson", "onoff",
               "schedule", "closed", "uniform", "zipf"}


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        return f"unknown kind '{ctx.get('tag')}'; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "required field 'kind' is missing"
    if kind == "model_attributes_type":
        return "expected a mapping of fields"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def _clean_loc(err: dict[str, Any]) -> tuple[Any, ...]:
    loc = tuple(p for p in err["loc"]
                if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p)))
    if err.get("type") == "union_tag_invalid":
        loc = (*loc, "kind")
    return loc


def validate(model: type[M], doc: Document) -> M:
    """Validate `doc.data` as `model`; the first problem becomes an InputError."""
    if not isinstance(doc.data, dict):
        raise InputError("expected a mapping of fields at the top level", file=doc.file, line=1)
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = _clean_loc(first)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(
            errors) > 1 else ""
        raise InputError(
            _message(first) + more, file=doc.file, line=doc.line_of(loc),
            field=format_loc(loc) or None,
        ) from None
