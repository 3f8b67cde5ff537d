"""Read YAML keeping each value's line, and turn validation errors into one line naming the
file, line and field: the reading and error text every file format shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from memsim.errors import InputError

Loc = tuple[str | int, ...]


@dataclass
class Document:
    """Plain data read from a YAML file plus the line of every key and item in it."""

    data: Any
    file: str
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """Line of `loc`, or of its nearest enclosing node that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get(())

    def error(self, loc: Loc, message: str) -> InputError:
        """An InputError pointing at `loc` in this document."""
        return InputError(
            message, file=self.file, line=self.line_of(loc), field=format_loc(loc) or None
        )


def format_loc(loc: Loc) -> str:
    """`('tiers', 2, 'bandwidth')` -> `tiers[2].bandwidth`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _convert(node: yaml.Node, loc: Loc, lines: dict[Loc, int], file: str) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise InputError(
                    "mapping keys must be plain values",
                    file=file, line=key_node.start_mark.line + 1, field=format_loc(loc) or None,
                )
            key = _scalar(key_node)
            if key in out:
                raise InputError(
                    f"duplicate key '{key}'",
                    file=file, line=key_node.start_mark.line + 1, field=format_loc((*loc, key)),
                )
            lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, (*loc, key), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*loc, i), lines, file) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def loads(text: str, file: str = "<string>") -> Document:
    """Parse YAML text; syntax errors become an InputError with the line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        raise InputError(f"malformed YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML: {exc}", file=file) from None
    if node is None:
        raise InputError("file is empty", file=file)
    lines: dict[Loc, int] = {}
    data = _convert(node, (), lines, file)
    return Document(data=data, file=file, lines=lines)


def load(path: str | Path) -> Document:
    """Read a YAML file; missing or unreadable files become an InputError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a YAML file", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", file=path) from None
    return loads(text, file=str(path))


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


def validate_model(model: type[M], doc: Document) -> M:
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
