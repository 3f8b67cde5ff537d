"""The sweep spec: a base configuration, the axes that vary it, and how points are drawn.

`load_spec` reads and checks a spec completely before anything runs: the base documents are
resolved (a path beside the spec, else a shipped name) and validated, and every axis value
is applied to the base and validated by the real model (Profile, Bank, Workload, Layout,
OptimizeOptions), so a typo fails at once, naming the spec's file, line and field, instead
of at point 4,711 an hour later. `SweepSpec.points()` then expands it into `Point`s: plain
data whose keys are stable across runs and cover the documents' content.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from memsim import limits, resources, yamlio
from memsim.errors import InputError
from memsim.sweep.paths import (
    ROOTS,
    PathError,
    Segment,
    format_path,
    parse_path,
    plain_copy,
    set_in,
)
from memsim.sweep.point import OptimizeOptions, Point, Stages
from memsim.units import parse_energy, parse_frequency, parse_size
from memsim.yamlio import Document, FieldError, Loc, format_loc, validate_model

DEFAULT_PROFILE = "paper-hypothetical"  # as `memsim optimize`
DEFAULT_BANK = "paper-storage-example"
DEFAULT_SPEC_NAME = "sweep"  # a spec given as a mapping, without a name

# The documents a base or a bare axis names by reference, and where shipped ones live.
REF_KINDS = {"profile": "device_profiles", "bank": "banks", "workload": "workloads",
             "layout": "layouts"}
RATE_PATH = "workload.rate"  # the canonical name of the rate axis (`rate` is an alias)
_AXIS_FILE = "<sweep axis>"  # the file name of documents built by applying an axis value


# ----------------------------------------------------------------------------- the file's model

def _ref(value: Any) -> Any:
    if isinstance(value, dict) or (isinstance(value, str) and value.strip()):
        return value
    raise ValueError(f"expected a shipped name, a path or a mapping, got {_show(value)}")


def _optional_ref(value: Any) -> Any:
    return None if value is None else _ref(value)


def _rate(value: Any) -> float | None:
    if value is None:
        return None
    rate = parse_frequency(value)
    if not rate > 0:
        raise ValueError(f"rate must be a positive number of queries per second, got "
                         f"{_show(value)}")
    return rate


_REF_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", "description": "a shipped name, or a path relative to the spec"},
    {"type": "object", "description": "the document itself"}]}
_RATE_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", "description": 'queries per second, e.g. "20/s", "1200/min"'},
    {"type": "number", "exclusiveMinimum": 0, "description": "queries per second"}]}
_NUMBER_OR_QUANTITY: dict[str, Any] = {"anyOf": [
    {"type": "number"}, {"type": "string", "description": 'a number and a unit, "1 GB/s"'}]}
RANGE_FIELDS = ("from", "to", "steps", "scale", "integer")
RANGE_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "Range", "additionalProperties": False,
    "required": ["from", "to"],
    "description": "steps values from `from` to `to` (both included); without steps, "
                   "random and lhs sampling draw from the range continuously",
    "properties": {
        "from": _NUMBER_OR_QUANTITY, "to": _NUMBER_OR_QUANTITY,
        "steps": {"type": "integer", "minimum": 1,
                  "maximum": limits.MAX_SWEEP_POINTS},
        "scale": {"enum": ["linear", "log"], "default": "linear"},
        "integer": {"type": "boolean", "default": False,
                    "description": "round every value to a whole number"}}}
AXES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "axis path (profile.tiers.flash.bandwidth, bank, workload.rate, "
                   "optimize.slo, ...) -> a list of values or a range",
    "additionalProperties": {"anyOf": [{"type": "array", "minItems": 1}, RANGE_SCHEMA]}}


class Sampling(BaseModel):
    """How points are drawn: grid (every combination), random or lhs (`points` points)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["grid", "random", "lhs"] = "grid"
    points: int | None = Field(default=None, ge=1,
                               description="How many points random or lhs sampling draws.")
    seed: int = Field(default=0, ge=0, description="Seed of random and lhs sampling.")

    @model_validator(mode="after")
    def _points(self) -> Sampling:
        if self.method != "grid" and self.points is None:
            raise FieldError(f"{self.method} sampling needs points: how many points to draw",
                             ("points",))
        if self.method == "grid" and self.points is not None:
            raise FieldError("grid sampling takes every combination of the axes' values; "
                             "points is for random or lhs sampling", ("points",))
        return self


def _sampling(value: Any) -> Any:
    return {"method": value} if isinstance(value, str) else value


_SAMPLING_SCHEMA: dict[str, Any] = {"anyOf": [
    {"enum": ["grid", "random", "lhs"]},
    {k: v for k, v in Sampling.model_json_schema().items() if k != "title"}],
    "default": "grid"}


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


class SweepBase(BaseModel):
    """The configuration every point starts from."""

    model_config = ConfigDict(extra="forbid")

    profile: Annotated[Any, BeforeValidator(_ref), WithJsonSchema(_REF_SCHEMA)] = Field(
        default=DEFAULT_PROFILE, description="Device profile: shipped name, path or mapping.")
    bank: Annotated[Any, BeforeValidator(_ref), WithJsonSchema(_REF_SCHEMA)] = Field(
        default=DEFAULT_BANK, description="Bank: preset name, path or mapping.")
    workload: Annotated[Any, BeforeValidator(_optional_ref), WithJsonSchema(
        {"anyOf": [*_REF_SCHEMA["anyOf"], {"type": "null"}]})] = Field(
        default=None, description="Workload (optional): shipped name, path or mapping.")
    layout: Annotated[Any, BeforeValidator(_optional_ref), WithJsonSchema(
        {"anyOf": [*_REF_SCHEMA["anyOf"], {"type": "null"}]})] = Field(
        default=None, description="A layout to evaluate; the optimize stage is then skipped.")
    rate: Annotated[float | None, BeforeValidator(_rate), WithJsonSchema(
        {"anyOf": [*_RATE_SCHEMA["anyOf"], {"type": "null"}]})] = Field(
        default=None, description="Queries per second (scales the workload's arrivals).")
    optimize: OptimizeOptions = Field(default_factory=OptimizeOptions,
                                      description="Options of the optimize stage.")

    @model_validator(mode="before")
    @classmethod
    def _one_slo(cls, data: Any) -> Any:
        options = data.get("optimize") if isinstance(data, dict) else None
        if isinstance(options, dict) and isinstance(options.get("slo"), str):
            return {**data, "optimize": {**options, "slo": [options["slo"]]}}
        return data


class SweepFile(BaseModel):
    """A sweep spec file: memsim sweep SPEC runs every point it gives."""

    model_config = ConfigDict(extra="forbid", title="memsim sweep spec")

    name: str | None = Field(default=None, description="Default: the file's stem; names the "
                             "results (NAME.parquet) unless --out says otherwise.")
    description: str = ""
    base: Annotated[SweepBase, BeforeValidator(_none_is_empty)] = Field(
        default_factory=SweepBase)
    axes: Annotated[dict[str, Any], BeforeValidator(_none_is_empty),
                    WithJsonSchema(AXES_SCHEMA)] = Field(default_factory=dict)
    sample: Annotated[Sampling, BeforeValidator(_sampling),
                      WithJsonSchema(_SAMPLING_SCHEMA)] = Field(default_factory=Sampling)
    stages: Annotated[Stages, BeforeValidator(_none_is_empty)] = Field(
        default_factory=Stages, description="What runs at each point (default: optimize + "
        "estimate).")

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c in value for c in "/\\\0")):
            raise ValueError(f"name {_show(value)} must be a non-empty name without '/' or "
                             "'\\' (it names the results file)")
        return value

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Pydantic's schema, with a note on the spec's paths (`memsim schema sweep`)."""
        data = super().model_json_schema(*args, **kwargs)
        data["description"] = (
            "A sweep spec: base configuration, axes (path -> values or range), sampling and "
            "stages. Paths start with profile, bank, workload, layout, optimize or rate; "
            "profile.tiers.<tier name>.<field> selects a tier by name, an integer indexes a "
            "list.")
        return data


def sweep_schema() -> dict[str, Any]:
    """The JSON Schema of a sweep spec file."""
    return SweepFile.model_json_schema(mode="validation")


# ----------------------------------------------------------------------------- helpers

def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _join(prefix: str, inner: str | None) -> str:
    if not inner:
        return prefix
    return prefix + inner if inner.startswith("[") else f"{prefix}.{inner}"


@dataclass
class _Inside(Document):
    """A part of the spec (an inline mapping) as a document of its own: its lines are the
    spec's, its fields relative to the part."""

    parent: Document | None = None
    prefix: Loc = ()

    def line_of(self, loc: Loc) -> int | None:
        return self.parent.line_of((*self.prefix, *loc)) if self.parent else None


def _check_plain(value: Any, where: Callable[[str], InputError]) -> None:
    """Refuse data a point's key cannot hash: mappings whose keys mix numbers and text."""
    try:
        json.dumps(value, sort_keys=True, default=str, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise where(f"cannot be used as a point's input ({exc}): keep a mapping's keys all "
                    "text or all numbers") from None
    except RecursionError:
        raise where("nesting too deep") from None


def check_options(opts: OptimizeOptions) -> None:
    """Check the option texts the optimize stage parses (objective, SLOs, budgets), so a bad
    one fails when the spec loads, not at each point."""
    from memsim.optimize.goal import Objective, parse_slos

    Objective.parse(opts.objective)
    parse_slos(opts.slo)
    for name, parse in (("resident_budget", parse_size), ("replica_budget", parse_size),
                        ("energy_budget", parse_energy)):
        value = getattr(opts, name)
        if value is not None:
            try:
                parse(value)
            except ValueError as exc:
                raise InputError(str(exc), field=name) from None


# ----------------------------------------------------------------------------- ranges

_QUANTITY = re.compile(r"^\s*(?P<num>[+-]?(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
                       r"(?P<sep>\s*)(?P<unit>[^\d\s].*?)?\s*$")


@dataclass(frozen=True)
class Range:
    """A range axis: from `lo` to `hi` (both included), linear or log, in `unit` (a value's
    text is then the number, `sep` and the unit) or plain numbers."""

    lo: float
    hi: float
    steps: int | None = None
    scale: Literal["linear", "log"] = "linear"
    integer: bool = False
    unit: str = ""
    sep: str = " "

    def _number(self, u: float) -> float:
        if u <= 0.0:
            return self.lo
        if u >= 1.0:
            return self.hi
        if self.scale == "log":
            return math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))
        return self.lo + u * (self.hi - self.lo)

    def _text(self, v: float, digits: int) -> Any:
        if self.integer:
            return f"{v}{self.sep}{self.unit}" if self.unit else v
        if self.unit:
            return f"{v:.{digits}g}{self.sep}{self.unit}"
        return float(f"{v:.{digits}g}")

    def values(self) -> list[Any]:
        """The `steps` values of a grid, with the fewest significant digits (at least 4 with a
        unit, 12 without) that keep distinct values distinct; repeats are dropped (integer
        ranges narrower than their steps)."""
        steps = self.steps or 1
        numbers = [self._number(k / (steps - 1)) if steps > 1 else self.lo
                   for k in range(steps)]
        if self.integer:
            numbers = [int(round(v)) for v in numbers]
        distinct = len(set(numbers))
        digits = 4 if self.unit else 12
        while True:
            texts = [self._text(v, digits) for v in numbers]
            if len(set(texts)) >= distinct or digits >= 17:
                break
            digits += 1
        return list(dict.fromkeys(texts))

    def at(self, u: float) -> Any:
        """The value at `u` in [0, 1] (log-uniform on a log scale), for random and lhs."""
        v = self._number(u)
        return self._text(int(round(v)) if self.integer else v, 6 if self.unit else 12)


def _endpoint(value: Any, where: Callable[[str], InputError]) -> tuple[float, str, str]:
    """A range end as (number, unit, separator)."""
    if isinstance(value, bool):
        raise where(f"expected a number or a quantity like '1 GB/s', got {_show(value)}")
    if isinstance(value, (int, float)):
        number, unit, sep = float(value), "", " "
    elif isinstance(value, str):
        match = _QUANTITY.match(value)
        if not match:
            raise where(f"cannot read {_show(value)} as a number or a quantity like "
                        "'1 GB/s'")
        try:
            number = float(match["num"].replace("_", ""))
        except ValueError:
            raise where(f"cannot read the number in {_show(value)}") from None
        unit, sep = (match["unit"] or ""), (match["sep"] if match["unit"] else " ")
    else:
        raise where(f"expected a number or a quantity like '1 GB/s', got {_show(value)}")
    if not math.isfinite(number):
        raise where(f"{_show(value)} is not a finite number")
    return number, unit, sep


def _parse_range(data: dict[Any, Any], where: Callable[[Loc, str], InputError]) -> Range:
    """A range mapping {from, to, steps, scale, integer} checked field by field."""
    import difflib

    for key in data:
        if key not in RANGE_FIELDS:
            close = difflib.get_close_matches(str(key), RANGE_FIELDS, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else (
                f"; a range has {', '.join(RANGE_FIELDS)}")
            raise where((key,), f"unknown field {_show(str(key))}{hint}")
    for key in ("from", "to"):
        if key not in data:
            raise where((key,), f"required field '{key}' is missing (a range is "
                        "{from, to, steps, scale})")
    lo, unit, sep = _endpoint(data["from"], lambda m: where(("from",), m))
    hi, unit_to, _ = _endpoint(data["to"], lambda m: where(("to",), m))
    if unit != unit_to:
        def said(u: str) -> str:
            return f"in '{u}'" if u else "a plain number"
        raise where(("to",), f"from is {said(unit)} but to is {said(unit_to)}: give both in "
                    "the same unit")
    steps = data.get("steps")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise where(("steps",), f"steps must be a whole number of at least 1, got "
                        f"{_show(steps)}")
        at = where(("steps",), "")
        limits.check_at_most(steps, limits.MAX_SWEEP_POINTS, "steps", file=at.file,
                             line=at.line, field=at.field)
    scale = data.get("scale", "linear")
    if scale not in ("linear", "log"):
        raise where(("scale",), f"scale must be linear or log, got {_show(scale)}")
    integer = data.get("integer", False)
    if not isinstance(integer, bool):
        raise where(("integer",), f"integer must be true or false, got {_show(integer)}")
    if not math.isfinite(hi - lo):
        raise where(("to",), "the range is too wide to step through: from and to are too far "
                    "apart")
    if scale == "log" and not (lo > 0 and hi > 0):
        raise where(("from",) if lo <= 0 else ("to",),
                    f"a log scale needs from and to above 0, got {_show(data['from'])} and "
                    f"{_show(data['to'])}")
    return Range(lo=lo, hi=hi, steps=steps, scale=scale, integer=integer, unit=unit, sep=sep)


# ----------------------------------------------------------------------------- axes

@dataclass
class Axis:
    """One axis: its path (canonical, as in `SweepSpec.axes`), where it is written, and
    its values (a list, or a range's grid values) or a range sampled continuously."""

    path: str
    key: str  # as written in the spec
    root: str  # profile, bank, workload, layout, optimize, rate
    segments: list[Segment]  # inside the root's document; [] for a whole document
    linked: list[list[Segment]] = field(default_factory=list)  # 'a + b': more paths, one value
    values: list[Any] | None = None
    range: Range | None = None
    docs: list[Any] = field(default_factory=list)  # a whole-document axis: each value's data
    rates: list[float] = field(default_factory=list)  # a rate axis: each value parsed

    @property
    def whole(self) -> bool:
        return not self.segments

    def __len__(self) -> int:
        return len(self.values) if self.values is not None else 0


@dataclass
class SweepSpec:
    """A loaded, checked sweep spec. `points()` expands it; `axes` lists the axis paths in
    the order they are written (the results' first columns)."""

    name: str
    description: str
    file: str
    axes: list[str]
    sample: str
    stages: Stages
    points_wanted: int | None  # random/lhs: how many points are drawn
    seed: int
    base: dict[str, Any]  # profile, bank, workload, layout (plain data), rate, optimize
    count: int  # points before repeats are dropped (the grid's size, or points_wanted)
    axis_list: list[Axis] = field(default_factory=list, repr=False)
    folder: Path | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.count

    def points(self) -> list[Point]:
        """Every point, in order: grid = the cartesian product of the axes in the order they
        are written, the last varying fastest; random/lhs = `points` seeded draws. A point
        whose inputs repeat an earlier one's (the same key) is left out, and indexes count
        the points kept."""
        out: list[Point] = []
        seen: set[str] = set()
        stages = self.stages.model_dump()
        for choice in self._choices():
            axes_values, inputs = self._inputs(choice)
            inputs["stages"] = plain_copy(stages)
            try:
                point = Point(index=len(out), axes=axes_values, inputs=inputs,
                              source=self.file, sample=self.sample)
            except (TypeError, ValueError, RecursionError) as exc:
                raise InputError(f"the point at {axes_values} cannot be keyed ({exc}): keep a "
                                 "mapping's keys all text or all numbers", file=self.file,
                                 field="axes") from None
            if point.key in seen:
                continue
            seen.add(point.key)
            out.append(point)
        return out

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        """A point's optimize options validated, as a mapping with every default."""
        try:
            opts = OptimizeOptions.model_validate(options)
        except ValueError:
            opts = validate_model(OptimizeOptions, Document(options, self.file))
        return opts.model_dump()

    def _choices(self) -> list[list[tuple[Any, int | None]]]:
        """Each point's (value, index into the axis's values or None) per axis."""
        axes = self.axis_list
        if not axes:
            return [[]]
        if self.sample == "grid":
            return [[(a.values[i], i) for a, i in zip(axes, combo, strict=True)]
                    for combo in itertools.product(*(range(len(a)) for a in axes))]
        import numpy as np

        n = self.points_wanted or 1
        if self.sample == "lhs":
            from scipy.stats import qmc

            unit = qmc.LatinHypercube(d=len(axes), seed=self.seed).random(n)
        else:
            unit = np.random.default_rng(self.seed).random((n, len(axes)))
        rows = []
        for row in unit:
            choice: list[tuple[Any, int | None]] = []
            for a, u in zip(axes, row, strict=True):
                if a.values is not None:
                    i = min(int(math.floor(float(u) * len(a.values))), len(a.values) - 1)
                    choice.append((a.values[i], i))
                else:
                    assert a.range is not None
                    choice.append((a.range.at(float(u)), None))
            rows.append(choice)
        return rows

    def _inputs(self, choice: list[tuple[Any, int | None]]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        docs = {k: self.base[k] for k in REF_KINDS}
        rate: float | None = self.base["rate"]
        options = plain_copy(self.base["optimize"])
        for a, (value, i) in zip(self.axis_list, choice, strict=True):
            if a.root in REF_KINDS and a.whole:
                docs[a.root] = a.docs[i] if i is not None else None
            elif a.root == "rate":
                rate = a.rates[i] if i is not None else _rate(value)
            elif a.root == "optimize" and a.whole:
                options = _merged(options, value)
        docs = {k: plain_copy(v) for k, v in docs.items()}
        for a, (value, _) in zip(self.axis_list, choice, strict=True):
            if a.whole or a.root == "rate":
                continue
            for segments in (a.segments, *a.linked):
                if a.root == "optimize":
                    set_in(options, segments, _slo_list(a, plain_copy(value)))
                else:
                    set_in(docs[a.root], segments, plain_copy(value))
        inputs: dict[str, Any] = {
            "profile": docs["profile"], "bank": docs["bank"],
            "workload": _absolute(docs["workload"], "workload", self.folder),
            "layout": _layout_inputs(docs["layout"], self.folder),
            "rate": rate, "optimize": self._options(options)}
        return {a.path: value for a, (value, _) in zip(self.axis_list, choice,
                                                        strict=True)}, inputs


def _merged(options: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """Options of a whole optimize axis's value over `options` (a lone SLO text is a list)."""
    out = {**options, **plain_copy(value)}
    if isinstance(out.get("slo"), str):
        out["slo"] = [out["slo"]]
    return out


def _slo_list(axis: Axis, value: Any) -> Any:
    """An optimize.slo value may be one SLO's text: a one-item list."""
    return [value] if axis.segments == ["slo"] and isinstance(value, str) else value


def _absolute(data: Any, kind: str, folder: Path | None) -> Any:
    """`data` with the relative file it names (a workload's empirical routing counts, a
    layout's block map) made absolute against `folder`, so a point's inputs read the same
    file wherever the point runs."""
    if not isinstance(data, dict) or folder is None:
        return data
    try:
        return _absolute_in(data, kind, folder)
    except (OSError, ValueError):  # a name the OS refuses: the model's check reports it
        return data


def _absolute_in(data: dict[str, Any], kind: str, folder: Path) -> dict[str, Any]:
    if kind == "workload":
        routing = data.get("routing")
        if isinstance(routing, dict) and isinstance(routing.get("file"), str) and (
                not Path(routing["file"]).expanduser().is_absolute()):
            return {**data, "routing": {**routing, "file": str(
                (folder / Path(routing["file"]).expanduser()).resolve())}}
    elif kind == "layout":
        blocks = data.get("blocks")
        if isinstance(blocks, str) and not Path(blocks).is_absolute():
            return {**data, "blocks": str((folder / blocks).resolve())}
    return data


def _layout_inputs(data: Any, folder: Path | None) -> Any:
    """A layout as a point reads it: without its `profile:`/`bank:` refs (the point's own
    profile and bank are used)."""
    if not isinstance(data, dict):
        return data
    return _absolute({k: v for k, v in data.items() if k not in ("profile", "bank")},
                     "layout", folder)


# ----------------------------------------------------------------------------- loading

class _Loader:
    """Builds a SweepSpec from the validated file, resolving and checking as it goes."""

    def __init__(self, doc: Document, folder: Path | None) -> None:
        self.doc = doc
        self.file = doc.file
        self.folder = folder
        self.cache: dict[tuple[str, str], tuple[Any, Document]] = {}

    # -- errors
    def error(self, loc: Loc, message: str) -> InputError:
        return InputError(message, file=self.file, line=self.doc.line_of(loc),
                          field=format_loc(loc) or None)

    def model_error(self, loc: Loc, exc: InputError, what: str = "") -> InputError:
        """A model's error about a document built from an axis value, at that value."""
        if exc.file not in (None, _AXIS_FILE, self.file):
            return exc  # a problem inside a referenced file: its own file and line say more
        message = f"{exc.field}: {exc.message}" if exc.field else exc.message
        return self.error(loc, f"{what}{message}")

    # -- references
    def find(self, ref: str, kind: str, loc: Loc) -> Path:
        """The file `ref` names: beside the spec first, then a path or a shipped name."""
        line = self.doc.line_of(loc)
        resources.checked_path(ref, file=self.file, line=line, field=format_loc(loc))
        if self.folder is not None and not Path(ref).is_absolute():
            near = self.folder / ref
            if resources.is_file(near):
                return near
        try:
            return resources.resolve(ref, REF_KINDS[kind])
        except InputError as exc:
            raise self.error(loc, f"{kind} {_show(ref)}: {exc.message}") from None

    def resolve(self, value: Any, kind: str, loc: Loc) -> tuple[Any, Document | None]:
        """A ref's plain data and a Document (with lines) to validate it by."""
        if value is None:
            return None, None
        if isinstance(value, dict):
            _check_plain(value, lambda m: self.error(loc, m))
            data = _absolute(value, kind, self.folder)
            return data, _Inside(data=data, file=self.file, parent=self.doc, prefix=loc)
        if not isinstance(value, str) or not value.strip():
            raise self.error(loc, f"expected a shipped name, a path or a mapping, got "
                             f"{_show(value)}")
        cached = self.cache.get((kind, value))
        if cached is None:
            path = self.find(value, kind, loc)
            document = yamlio.load(path)
            _check_plain(document.data, lambda m: InputError(m, file=document.file))
            data = _absolute(document.data, kind, path.parent)
            cached = self.cache[(kind, value)] = (data, Document(data, document.file,
                                                                 document.lines))
        return cached

    def validate(self, kind: str, document: Document, loc: Loc | None = None) -> Any:
        """The document validated by its model; for an inline mapping at `loc`, an error's
        field is prefixed with `loc` (it already carries the spec's line)."""
        try:
            return validate_document(kind, document)
        except InputError as exc:
            if loc is not None and isinstance(document, _Inside):
                raise InputError(exc.message, file=self.file, line=exc.line,
                                 field=_join(format_loc(loc), exc.field)) from None
            raise

    # -- the spec
    def load(self, model: SweepFile, name: str) -> SweepSpec:
        base: dict[str, Any] = {}
        models: dict[str, Any] = {}
        for kind in REF_KINDS:
            loc: Loc = ("base", kind)
            data, document = self.resolve(getattr(model.base, kind), kind, loc)
            base[kind] = data
            models[kind] = self.validate(kind, document, loc) if document else None
        base["rate"] = model.base.rate
        try:
            check_options(model.base.optimize)
        except InputError as exc:
            raise self.error(("base", "optimize", *([exc.field] if exc.field else [])),
                             exc.message) from None
        base["optimize"] = model.base.optimize.model_dump()
        sample = model.sample
        axes = self.parse_axes(model.axes, sample.method)
        count = self.check_count(axes, sample)
        for axis in axes:  # whole documents first: the paths inside them are checked on them
            if axis.whole and axis.root in REF_KINDS:
                self.check_documents(axis)
        for axis in axes:
            if axis.root == "rate":
                self.check_rates(axis)
            elif axis.root == "optimize":
                self.check_options_axis(axis, base["optimize"])
            elif not axis.whole:
                self.check_path_axis(axis, axes, base)
        self.check_closed_loop(axes, model, models)
        return SweepSpec(
            name=name, description=model.description, file=self.file,
            axes=[a.path for a in axes], sample=sample.method, stages=model.stages,
            points_wanted=sample.points, seed=sample.seed, base=base, count=count,
            axis_list=axes, folder=self.folder)

    def parse_axes(self, raw: dict[str, Any], method: str) -> list[Axis]:
        axes: list[Axis] = []
        seen: dict[str, str] = {}
        for key, value in raw.items():
            loc: Loc = ("axes", key)
            try:
                paths = [parse_path(part) for part in str(key).split("+")]
            except PathError as exc:
                raise self.error(loc, exc.message) from None
            segments, linked = paths[0], [q[1:] for q in paths[1:]]
            if linked and (any(q[0] != segments[0] for q in paths) or segments[0] == "rate"
                           or any(len(q) < 2 or q == ["workload", "rate"] for q in paths)):
                raise self.error(loc, "linked paths ('a + b', one value set at each) must be "
                                 "fields inside the same document, e.g. profile.tiers.flash."
                                 "bandwidth + profile.tiers.flash.aggregate_bandwidth")
            root = segments[0]
            if root not in ROOTS:
                import difflib

                close = difflib.get_close_matches(str(root), ROOTS, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.error(loc, f"unknown axis path {_show(key)}{hint}: a path starts "
                                 f"with {', '.join(ROOTS)}")
            inner = segments[1:]
            if root == "rate" or (root == "workload" and inner == ["rate"]):
                if root == "rate" and inner:
                    raise self.error(loc, "rate is a number of queries per second: it has no "
                                     f"fields ({_show(key)})")
                root, inner = "rate", []
                path = RATE_PATH
            else:
                path = " + ".join(format_path(q) for q in paths)
            if path in seen:
                raise self.error(loc, f"axis {_show(key)} is the same as axis "
                                 f"{_show(seen[path])}: give each path once")
            seen[path] = key
            axis = Axis(path=path, key=key, root=str(root), segments=list(inner),
                        linked=linked)
            if isinstance(value, list):
                if not value:
                    raise self.error(loc, "empty axis: give at least one value")
                axis.values = value
            elif isinstance(value, dict):
                if axis.whole and root != "rate":
                    what = ("option mappings" if root == "optimize"
                            else "names, paths or mappings")
                    article = "an" if root == "optimize" else "a"
                    raise self.error(loc, f"{article} {root} axis takes a list of {what}, not "
                                     "a range")
                axis.range = _parse_range(value, lambda sub, m, loc=loc: self.error(
                    (*loc, *sub), m))
                if axis.range.steps is not None:
                    axis.values = axis.range.values()
                elif method == "grid":
                    raise self.error(loc, "a range needs steps for grid sampling (or sample "
                                     "it with sample: {method: random, points: N})")
            else:
                raise self.error(loc, f"expected a list of values or a range {{from, to, "
                                 f"steps}}, got {_show(value)}")
            axes.append(axis)
        return axes

    def check_count(self, axes: list[Axis], sample: Sampling) -> int:
        """The number of points, refused above MAX_SWEEP_POINTS before anything expands."""
        if sample.method != "grid":
            count = sample.points or 1
            limits.check_at_most(count, limits.MAX_SWEEP_POINTS, "the number of points",
                                 file=self.file, line=self.doc.line_of(("sample", "points")),
                                 field="sample.points")
            return count
        count = 1
        for axis in axes:  # (an absurd product is cut short: its digits are not the point)
            count = min(count * len(axis.values or []), 10**18 + 1)
        if count > limits.MAX_SWEEP_POINTS:
            shown = f"{count:,}" if count <= 10**18 else "over 10^18"
            raise self.error(("axes",), f"the grid has {shown} points (the product of the "
                             "axes' lengths) but memsim's limit is "
                             f"{limits.MAX_SWEEP_POINTS:,}; use fewer values, or "
                             "sample: {method: lhs, points: N}")
        return count

    def value_locs(self, axis: Axis) -> list[tuple[Loc, str]]:
        """Where each of the axis's values to check is written, and a note for messages
        (a range's generated value is named by its text)."""
        loc: Loc = ("axes", axis.key)
        if axis.range is None:
            return [((*loc, i), "") for i in range(len(axis))]
        return [(loc, f"the range's value {_show(v)}: ") for v in self.checked_values(axis)]

    @staticmethod
    def checked_values(axis: Axis) -> list[Any]:
        """The values load checks: every listed or grid value; a continuous range's ends."""
        if axis.values is not None:
            return axis.values
        assert axis.range is not None
        return [axis.range.at(0.0), axis.range.at(1.0)]

    def check_documents(self, axis: Axis) -> None:
        """A whole-document axis: each value resolved and validated."""
        assert axis.values is not None
        nullable = axis.root in ("workload", "layout")
        for i, value in enumerate(axis.values):
            loc: Loc = ("axes", axis.key, i)
            if value is None and not nullable:
                raise self.error(loc, f"a {axis.root} axis takes names, paths or mappings, "
                                 "not null")
            data, document = self.resolve(value, axis.root, loc)
            if document is not None:
                self.validate(axis.root, document, loc)
            axis.docs.append(data)

    def check_rates(self, axis: Axis) -> None:
        values = self.checked_values(axis)
        for (loc, note), value in zip(self.value_locs(axis), values, strict=True):
            try:
                rate = _rate(value)
            except ValueError as exc:
                raise self.error(loc, f"{note}{exc}") from None
            if axis.values is not None:
                axis.rates.append(rate)  # type: ignore[arg-type]

    def check_options_axis(self, axis: Axis, base: dict[str, Any]) -> None:
        values = self.checked_values(axis)
        for (loc, note), value in zip(self.value_locs(axis), values, strict=True):
            options = plain_copy(base)
            if axis.whole:
                if not isinstance(value, dict):
                    raise self.error(loc, f"an optimize axis takes mappings of options, got "
                                     f"{_show(value)}")
                options = _merged(options, value)
            else:
                try:
                    set_in(options, axis.segments, _slo_list(axis, plain_copy(value)))
                except PathError as exc:
                    raise self.error(("axes", axis.key), exc.message) from None
            _check_plain(options, lambda m, loc=loc: self.error(loc, m))
            try:
                check_options(validate_model(OptimizeOptions, Document(options, _AXIS_FILE)))
            except InputError as exc:
                raise self.model_error(loc, exc, note) from None

    def check_path_axis(self, axis: Axis, axes: list[Axis], base: dict[str, Any]) -> None:
        """A path inside a document: every value applied to the base (or to each value of the
        axis that replaces the whole document) and validated."""
        whole = next((a for a in axes if a.whole and a.root == axis.root), None)
        key_loc: Loc = ("axes", axis.key)
        if whole is not None:
            if any(d is None for d in whole.docs):
                i = next(i for i, d in enumerate(whole.docs) if d is None)
                raise self.error(key_loc, f"axis {_show(axis.key)} changes the {axis.root}, but "
                                 f"axis {_show(whole.key)} has no {axis.root} (null) at item {i}")
            targets = whole.docs
        elif base[axis.root] is not None:
            targets = [base[axis.root]]
        else:
            raise self.error(key_loc, f"axis {_show(axis.key)} changes the {axis.root}, but "
                             f"the base has none: set base.{axis.root}")
        values = self.checked_values(axis)
        locs = self.value_locs(axis)
        for t, target in enumerate(targets):
            for (loc, note), value in zip(locs, values, strict=True):
                doc = plain_copy(target)
                try:
                    for segments in (axis.segments, *axis.linked):
                        set_in(doc, segments, plain_copy(value))
                except PathError as exc:
                    raise self.error(key_loc, exc.message) from None
                if t > 0:
                    break  # the path fits this document; its values were checked on the first
                _check_plain(doc, lambda m, loc=loc: self.error(loc, m))
                doc = _absolute(doc, axis.root, self.folder)
                try:
                    validate_document(axis.root, Document(doc, _AXIS_FILE))
                except InputError as exc:
                    raise self.model_error(loc, exc, note) from None

    def check_closed_loop(self, axes: list[Axis], model: SweepFile,
                          models: dict[str, Any]) -> None:
        """A rate cannot be set on a closed-loop workload (its rate follows from its clients)."""
        rate_axis = next((a for a in axes if a.root == "rate"), None)
        if rate_axis is None and model.base.rate is None:
            return
        where: Loc = ("axes", rate_axis.key) if rate_axis else ("base", "rate")
        whole = next((a for a in axes if a.whole and a.root == "workload"), None)
        if whole is not None:
            candidates = [(d, ("axes", whole.key, i)) for i, d in enumerate(whole.docs)]
        else:
            candidates = [(models["workload"], ("base", "workload"))]
        for item, loc in candidates:
            arrivals = item.get("arrivals") if isinstance(item, dict) else getattr(
                item, "arrivals", None)
            kind = arrivals.get("kind") if isinstance(arrivals, dict) else getattr(
                arrivals, "kind", None)
            if kind == "closed":
                name = item.get("name", "workload") if isinstance(item, dict) else item.name
                raise self.error(where, f"the workload {_show(name)} ({format_loc(loc)}) is a "
                                 "closed loop: its rate follows from its clients and think "
                                 "time, so a rate cannot set it")


def validate_document(kind: str, document: Document) -> Any:
    """A profile, bank, workload or layout document validated by its model (a workload's
    counts file read too)."""
    if kind == "profile":
        from memsim.profile import Profile

        return validate_model(Profile, document)
    if kind == "bank":
        from memsim.bank import Bank

        return validate_model(Bank, document)
    if kind == "workload":
        from memsim.workload import Workload, workload_from_dict

        workload = validate_model(Workload, document)
        if workload.routing.kind == "empirical":
            workload = workload_from_dict(document.data, file=document.file)
        return workload
    if kind == "layout":
        from memsim.layout import Layout

        return validate_model(Layout, document)
    raise ValueError(f"no model for {kind!r}")


def load_spec(ref: str | Path | dict[str, Any], file: str | None = None) -> SweepSpec:
    """A sweep spec from a YAML file or a shipped spec's name, or from a mapping (`file`
    names it in messages, and relative refs in it are found beside `file`, else in the
    working folder).

    Everything is checked here: every problem is one InputError naming the spec's file,
    line and field (or, for a problem inside a referenced file, that file's).
    """
    if isinstance(ref, dict):
        name_of = file or "<sweep>"
        doc = Document(data=ref, file=name_of)
        real = file is not None and not file.startswith("<")
        folder = Path(file).parent if real else Path(".")
        stem = Path(file).stem if real else DEFAULT_SPEC_NAME
    else:
        path = resources.resolve(ref, "sweeps")  # a file, or a shipped spec by name
        doc = yamlio.load(path)
        folder, stem = path.parent, path.stem
    model = validate_model(SweepFile, doc)
    loader = _Loader(doc, folder)
    return loader.load(model, model.name or stem)


__all__ = ["SweepSpec", "Axis", "Range", "Sampling", "SweepFile", "load_spec", "sweep_schema",
           "validate_document", "check_options", "DEFAULT_PROFILE", "DEFAULT_BANK"]
