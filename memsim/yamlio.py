"""Read YAML keeping each value's line, and turn validation errors into one line naming the
file, line and field: the reading and error text every file format shares."""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from memsim import limits
from memsim.errors import CREDENTIALS_ADVICE, InputError, has_userinfo, one_line, scrub_userinfo

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


# The tags of YAML's core schema: anything else (`!!python/object:...`, `!custom`) is refused.
_TAGS = {f"tag:yaml.org,2002:{t}" for t in
         ("null", "bool", "int", "float", "str", "seq", "map", "timestamp")}
# Characters YAML allows in a stream (YAML 1.1 c-printable), as PyYAML checks them.
_NOT_PRINTABLE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD"
                            "\U00010000-\U0010FFFF]")


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_YAML_DEPTH before Python's
    recursion limit is reached."""

    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self.memsim_file = file
        self.memsim_depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.memsim_depth += 1
        try:
            if self.memsim_depth > limits.MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise InputError(f"nesting deeper than memsim's limit of "
                                 f"{limits.MAX_YAML_DEPTH} levels", file=self.memsim_file,
                                 line=mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.memsim_depth -= 1


class _Converter:
    """Turns composed nodes into plain data, expanding aliases but counting every node, so an
    alias bomb stops at MAX_YAML_NODES instead of filling memory."""

    def __init__(self, file: str, lines: dict[Loc, int]) -> None:
        self.file = file
        self.lines = lines
        self.nodes = 0

    def error(self, node: yaml.Node, message: str, loc: Loc) -> InputError:
        return InputError(message, file=self.file, line=node.start_mark.line + 1,
                          field=format_loc(loc) or None)

    def convert(self, node: yaml.Node, loc: Loc) -> Any:
        self.nodes += 1
        if self.nodes > limits.MAX_YAML_NODES:
            raise self.error(node, f"more than memsim's limit of {limits.MAX_YAML_NODES:,} "
                             "values (after expanding aliases)", loc)
        if node.tag not in _TAGS:
            raise self.error(node, f"YAML tag {_quote(node.tag)} is not allowed (only plain "
                             "values, lists and mappings)", loc)
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self.error(key_node, "mapping keys must be plain values", loc)
                key = self.scalar(key_node, loc)
                if key in out:
                    raise self.error(key_node, f"duplicate key {_quote(key)}", (*loc, key))
                self.lines[(*loc, key)] = key_node.start_mark.line + 1
                out[key] = self.convert(value_node, (*loc, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*loc, i)) for i, item in enumerate(node.value)]
        return self.scalar(node, loc)

    def scalar(self, node: yaml.Node, loc: Loc) -> Any:
        if node.tag not in _TAGS:
            raise self.error(node, f"YAML tag {_quote(node.tag)} is not allowed", loc)
        text = str(node.value)
        if len(text) > limits.MAX_SCALAR_CHARS:
            raise self.error(node, f"a value of {len(text):,} characters is over memsim's "
                             f"limit of {limits.MAX_SCALAR_CHARS:,}", loc)
        if has_userinfo(text):
            what = "store URL" if loc and loc[-1] == "store" else "a URL in a file"
            raise self.error(node, f"{what} {CREDENTIALS_ADVICE}", loc)
        if node.tag.endswith(":int") and sum(c.isdigit() for c in text) > limits.MAX_INT_DIGITS:
            raise self.error(node, f"integer {_quote(text)} has more than memsim's limit of "
                             f"{limits.MAX_INT_DIGITS} digits", loc)
        try:
            return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError, TypeError):
            raise self.error(node, f"cannot read the value {_quote(text)}", loc) from None


def _quote(value: Any, limit: int = 40) -> str:
    """`value` quoted for a message, cut to `limit` characters."""
    text = scrub_userinfo(str(value))
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


_QUOTED_OR_COMMENT = re.compile(
    r'"(?:[^"\\\n]|\\.)*"'  # "double quoted"
    r"|'(?:[^'\n]|'')*'"  # 'single quoted'
    r"|(?:^|(?<=\s))#[^\n]*",  # a comment
    re.MULTILINE)
_BRACKET = re.compile(r"[\[\]{}]")


def _check_flow_depth(text: str, file: str) -> None:
    """Refuse `[[[[...` or `{{{{...` nested past MAX_YAML_DEPTH before PyYAML reads it: its
    scanner keeps a possible key per open bracket and is quadratic in their number."""
    if text.count("[") + text.count("{") <= limits.MAX_YAML_DEPTH:
        return
    code = _QUOTED_OR_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)
    depth = 0
    for match in _BRACKET.finditer(code):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        if depth > limits.MAX_YAML_DEPTH:
            raise InputError(f"nesting deeper than memsim's limit of {limits.MAX_YAML_DEPTH} "
                             "levels", file=file, line=_line_at(text, match.start()))


def loads(text: str, file: str = "<string>") -> Document:
    """Parse YAML text within memsim's limits (size, nesting, values after aliases, tags,
    integer digits); every problem becomes one InputError line with the file and line."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.MAX_FILE_BYTES:
        raise InputError(f"a YAML file of {size:,} bytes is over memsim's limit of "
                         f"{limits.MAX_FILE_BYTES:,}", file=file)
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        raise InputError(f"character U+{ord(bad.group()):04X} is not allowed in YAML "
                         "(a control character or a bad encoding?)",
                         file=file, line=_line_at(text, bad.start()))
    _check_flow_depth(text, file)
    try:
        loader = _Loader(text, file)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "cannot parse"
        raise InputError(f"malformed YAML: {problem}", file=file, line=line) from None
    except yaml.reader.ReaderError as exc:
        raise InputError(f"malformed YAML: {exc.reason}", file=file,
                         line=_line_at(text, exc.position)) from None
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML: {one_line(str(exc))}", file=file) from None
    except RecursionError:
        raise InputError(f"nesting deeper than memsim's limit of {limits.MAX_YAML_DEPTH} "
                         "levels", file=file) from None
    if node is None:
        raise InputError("file is empty", file=file)
    lines: dict[Loc, int] = {}
    data = _Converter(file, lines).convert(node, ())
    return Document(data=data, file=file, lines=lines)


def load(path: str | Path) -> Document:
    """Read a YAML file (UTF-8, at most MAX_FILE_BYTES); missing, unreadable or badly encoded
    files become an InputError."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(limits.MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a YAML file", file=path) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"cannot read: {reason}", file=path) from None
    if len(raw) > limits.MAX_FILE_BYTES:
        raise InputError(f"file is over memsim's limit of {limits.MAX_FILE_BYTES:,} bytes",
                         file=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte 0x{raw[exc.start]:02X} cannot be decoded)",
                         file=path, line=raw.count(b"\n", 0, exc.start) + 1) from None
    return loads(text.removeprefix("\ufeff"), file=str(path))


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


class FieldError(ValueError):
    """A model-level check's error that names the field it is about (`loc`, relative to the
    model being validated), so validate_model can point at its line: `tiers[2].name`."""

    def __init__(self, message: str, loc: Loc) -> None:
        super().__init__(message)
        self.loc = tuple(loc)


def _models_of(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, Union, list, dict,
    Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out.extend(_models_of(arg))
    return out


def _fields_at(model: type[BaseModel], raw_loc: tuple[Any, ...]) -> set[str]:
    """Field names of the model(s) found at `raw_loc` (pydantic's loc, union tags included)."""
    models: list[type[BaseModel]] = [model]
    for part in raw_loc:
        if isinstance(part, int):
            continue
        nxt = [m for owner in models if part in owner.model_fields
               for m in _models_of(owner.model_fields[part].annotation)]
        if nxt:
            models = nxt
        elif any(part in owner.model_fields for owner in models):
            return set()  # a field that holds no model (a dict of plain values)
        # else: a union tag or a dict key: stay with the same models
    return {name for m in models for name in m.model_fields}


def _unknown_field(model: type[BaseModel], err: dict[str, Any],
                   errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """The message for an unknown field, with the closest known name as a suggestion."""
    loc = _clean_loc(err)
    name = str(loc[-1]) if loc else "?"
    known = _fields_at(model, tuple(err["loc"][:-1]))
    if not known:  # fall back on the fields reported missing beside it
        known = {str(e["loc"][-1]) for e in errors
                 if e.get("type") == "missing" and tuple(e["loc"][:-1]) == err["loc"][:-1]}
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else (
        f"; known fields: {', '.join(sorted(known))}" if known and len(known) <= 12 else "")
    return f"unknown field {_quote(name)}{hint}", close[0] if close else None


def validate_model(model: type[M], doc: Document) -> M:
    """Validate `doc.data` as `model`; the first problem becomes an InputError.

    An unknown field is reported before anything else (a typo is the likely cause of a
    "missing" field beside it), with the closest known name as a suggestion.
    """
    if not isinstance(doc.data, dict):
        raise InputError("expected a mapping of fields at the top level", file=doc.file, line=1)
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        errors = exc.errors()
    except RecursionError:  # data built in Python, deeper than any file memsim reads
        raise InputError("nesting too deep", file=doc.file) from None
    unknown = [e for e in errors if e.get("type") == "extra_forbidden"]
    first = unknown[0] if unknown else errors[0]
    loc = _clean_loc(first)
    rest = len(errors) - 1
    if unknown:
        message, suggestion = _unknown_field(model, first, errors)
        if suggestion:  # the suggested field reported missing is the same problem
            rest -= sum(1 for e in errors if e.get("type") == "missing"
                        and tuple(e["loc"]) == (*first["loc"][:-1], suggestion))
    else:
        message = _message(first)
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc = (*loc, *cause.loc)
    more = f" (and {rest} more problem{'s' if rest > 1 else ''})" if rest > 0 else ""
    raise InputError(message + more, file=doc.file, line=doc.line_of(loc),
                     field=format_loc(loc) or None) from None
