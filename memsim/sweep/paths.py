"""Axis paths: `profile.tiers.flash.bandwidth` names one value inside a point's documents.

A path is a list of segments: a name selects a mapping's key, or, in a list of named
mappings (a profile's tiers), the item of that name; an integer indexes a list (or is a
mapping's key, as in a bank's `levels: {2: 1024}`). Setting a key a mapping does not have
adds it (an optional field the base leaves out); whether the field exists at all is the
model's to say, with its "did you mean" hint, when the result is validated.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

Segment = str | int

# The documents a point is made of, and the first segment of every axis path.
ROOTS = ("profile", "bank", "workload", "layout", "optimize", "rate")


class PathError(ValueError):
    """A path that does not lead anywhere in a document; `depth` is the segment at fault."""

    def __init__(self, message: str, depth: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.depth = depth


def parse_path(text: str) -> list[Segment]:
    """`"bank.levels.2"` -> `["bank", "levels", 2]`: dot-separated, digits are integers."""
    if not isinstance(text, str) or not text.strip():
        raise PathError("an axis path must be a non-empty text like "
                        "'profile.tiers.flash.bandwidth'")
    out: list[Segment] = []
    for i, part in enumerate(text.strip().split(".")):
        part = part.strip()
        if not part:
            raise PathError(f"axis path {text!r} has an empty segment (two dots, or a dot at "
                            "an end)", i)
        out.append(int(part) if part.isdigit() else part)
    return out


def format_path(path: Sequence[Segment]) -> str:
    """`["bank", "levels", 2]` -> `"bank.levels.2"` (the inverse of parse_path)."""
    return ".".join(str(p) for p in path)


def plain_copy(value: Any) -> Any:
    """A deep copy of plain data (mappings, lists, scalars); faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_copy(v) for v in value]
    return value


def apply(doc: dict[str, Any], path: Sequence[Segment], value: Any) -> dict[str, Any]:
    """A deep copy of `doc` with the value at `path` (relative to `doc`) set to `value`."""
    out = plain_copy(doc)
    set_in(out, path, value)
    return out


def _named(items: list[Any]) -> list[str] | None:
    """The names of a list of named mappings (a profile's tiers), or None if it is not one."""
    if items and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return [i["name"] for i in items]
    return None


def _hint(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def set_in(doc: dict[str, Any], path: Sequence[Segment], value: Any) -> None:
    """Set the value at `path` inside `doc` in place (the caller owns `doc`); missing keys
    along the way become mappings. Raises PathError naming the segment that fails."""
    if not path:
        raise PathError("an axis path must name a value inside the document")
    node: Any = doc
    i = 0
    while i < len(path):
        seg = path[i]
        last = i == len(path) - 1
        where = format_path(path[:i]) or "the document"
        if isinstance(node, list):
            if isinstance(seg, int):
                if seg >= len(node):
                    raise PathError(f"index {seg} is out of range: {where} has {len(node)} "
                                    f"item{'s' if len(node) != 1 else ''} (0 to "
                                    f"{len(node) - 1})" if node else
                                    f"index {seg} is out of range: {where} is empty", i)
                if last:
                    node[seg] = value
                    return
                node, i = node[seg], i + 1
                continue
            names = _named(node)
            if names is None:
                raise PathError(f"{where} is a list: select an item by its index (0 to "
                                f"{len(node) - 1}), not by {str(seg)!r}" if node else
                                f"{where} is an empty list: it has no item {str(seg)!r}", i)
            # a name may itself hold dots ('nvme.0'): take the longest run of segments that
            # names an item
            for j in range(len(path), i, -1):
                name = format_path(path[i:j])
                if name in names:
                    break
            else:
                noun = "tier" if where.endswith("tiers") else "item"
                raise PathError(f"unknown {noun} {str(seg)!r}{_hint(str(seg), names)}; "
                                f"{where.rsplit('.', 1)[-1]}: {', '.join(names)}", i)
            index = names.index(name)
            if j == len(path):  # the whole item
                node[index] = value
                return
            node, i = node[index], j
            continue
        if not isinstance(node, dict):
            raise PathError(f"{where} is a value ({_show(node)}), not a mapping: it has no "
                            f"field {str(seg)!r}", i)
        key: Any = seg
        if isinstance(seg, int) and seg not in node and str(seg) in node:
            key = str(seg)
        if last:
            node[key] = value
            return
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        node, i = child, i + 1
