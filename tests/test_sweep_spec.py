"""The sweep spec: expansion order and counts, sampling, ranges, point keys, and one-line
errors naming the spec's file, line and field for every kind of mistake."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memsim import limits
from memsim.errors import InputError
from memsim.profile import profile_from_dict
from memsim.sweep.paths import PathError, apply, parse_path
from memsim.sweep.spec import DEFAULT_BANK, DEFAULT_PROFILE, load_spec, sweep_schema
from memsim.units import parse_rate

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(InputError) as info:
        load_spec(path)
    return str(info.value)


# ---------------------------------------------------------------- expansion
def test_grid_is_the_product_in_written_order_last_axis_fastest():
    spec = load_spec({"axes": {
        "profile.tiers.ram.capacity": ["8 GB", "16 GB"],
        "rate": [5, 10, 20],
        "optimize.budget": [1, 2]}})
    assert spec.axes == ["profile.tiers.ram.capacity", "workload.rate", "optimize.budget"]
    assert spec.sample == "grid" and len(spec) == 12
    points = spec.points()
    assert [p.index for p in points] == list(range(12))
    combos = [tuple(p.axes.values()) for p in points]
    assert combos[:4] == [("8 GB", 5, 1), ("8 GB", 5, 2), ("8 GB", 10, 1), ("8 GB", 10, 2)]
    assert combos[-1] == ("16 GB", 20, 2)
    assert len(set(combos)) == 12 and len({p.key for p in points}) == 12
    assert all(p.sample == "grid" and p.source == "<sweep>" for p in points)


def test_defaults_and_inputs_are_plain_data():
    spec = load_spec({"base": {"rate": "20/s",
                               "optimize": {"slo": "p99 <= 50 ms", "objective": "p99"}}})
    assert spec.name == "sweep" and spec.axes == [] and spec.stages.optimize
    (point,) = spec.points()
    inputs = point.inputs
    assert set(inputs) == {"profile", "bank", "workload", "layout", "rate", "optimize",
                           "stages"}
    assert inputs["profile"]["name"] == DEFAULT_PROFILE and inputs["bank"]["name"] == DEFAULT_BANK
    assert inputs["workload"] is None and inputs["layout"] is None
    assert inputs["rate"] == 20.0
    assert inputs["optimize"]["slo"] == ["p99 <= 50 ms"]  # one SLO's text became a list
    assert inputs["stages"]["estimate"] == {"samples": 20000, "seed": 0}
    json.dumps(inputs, sort_keys=True, allow_nan=True)  # no objects, only data


def test_an_applied_axis_changes_the_validated_document():
    spec = load_spec({"base": {"profile": "phone"},
                      "axes": {"profile.tiers.flash.bandwidth": ["1 GB/s", "2.5 GB/s"],
                               "optimize.slo": ["p99 <= 20 ms", ["p99 <= 50 ms", "mean <= 5 ms"]]}})
    points = spec.points()
    flash = [profile_from_dict(p.inputs["profile"]).tier("flash").bandwidth for p in points]
    assert flash == [1e9, 1e9, 2.5e9, 2.5e9]
    assert points[0].inputs["optimize"]["slo"] == ["p99 <= 20 ms"]
    assert points[1].inputs["optimize"]["slo"] == ["p99 <= 50 ms", "mean <= 5 ms"]
    assert points[0].axes["optimize.slo"] == "p99 <= 20 ms"  # as the spec gives it


def test_linked_paths_take_one_value_at_each():
    """The phone's flash has an explicit aggregate that caps its stream bandwidth: a linked
    axis sets both, so 8 GB/s is really 8 GB/s."""
    spec = load_spec({"base": {"profile": "phone"}, "axes": {
        "profile.tiers.flash.bandwidth + profile.tiers.flash.aggregate_bandwidth":
            ["1 GB/s", "8 GB/s"]}})
    assert spec.axes == ["profile.tiers.flash.bandwidth + profile.tiers.flash.aggregate_bandwidth"]
    flash = [profile_from_dict(p.inputs["profile"]).tier("flash") for p in spec.points()]
    assert [(t.bandwidth, t.aggregate_bandwidth) for t in flash] == [(1e9, 1e9), (8e9, 8e9)]
    for bad in ("profile.tiers.flash.bandwidth + bank.levels.2", "rate + workload.rate",
                "profile + profile.name"):
        with pytest.raises(InputError, match="linked paths"):
            load_spec({"axes": {bad: [1]}})


def test_shipped_specs_load_by_name():
    for name in ("phone-ram-flash", "devices-banks"):
        spec = load_spec(name)
        assert spec.name == name and len(spec.points()) == len(spec) > 1
    with pytest.raises(InputError, match="no shipped sweep spec of that name"):
        load_spec("no-such-sweep")


def test_whole_document_axes_and_layout_refs_dropped(tmp_path):
    layout = {"name": "mine", "profile": "phone", "bank": "A2",
              "placement": {2: "flash", 3: "cloud", 4: "cloud"}}
    spec = load_spec({"axes": {"bank": ["A2", "paper-storage-example"],
                               "layout": [None, layout]}})
    points = spec.points()
    assert [p.axes["bank"] for p in points] == ["A2", "A2", "paper-storage-example",
                                                 "paper-storage-example"]
    assert points[0].inputs["bank"]["name"] == "A2"
    assert points[0].inputs["layout"] is None
    assert points[1].inputs["layout"]["placement"] == layout["placement"]
    assert "profile" not in points[1].inputs["layout"] and "bank" not in points[1].inputs["layout"]


def test_repeated_values_give_one_point():
    spec = load_spec({"axes": {"optimize.budget": [5, 5, 10]}})
    points = spec.points()
    assert [p.axes["optimize.budget"] for p in points] == [5, 10]
    assert [p.index for p in points] == [0, 1]


# ---------------------------------------------------------------- sampling
def _sampled(method: str, seed: int, points: int = 12) -> list[dict]:
    spec = load_spec({"sample": {"method": method, "points": points, "seed": seed},
                      "axes": {"profile.tiers.flash.bandwidth": {
                                   "from": "1 GB/s", "to": "4 GB/s", "scale": "log"},
                               "rate": {"from": 1, "to": 100},
                               "optimize.budget": [1, 2, 3, 4]}})
    return [p.axes for p in spec.points()]


@pytest.mark.parametrize("method", ["random", "lhs"])
def test_sampling_is_seeded(method):
    first = _sampled(method, 1)
    assert len(first) == 12 and all(p.keys() == first[0].keys() for p in first)
    assert first == _sampled(method, 1)
    assert first != _sampled(method, 2)
    for axes in first:
        bandwidth = parse_rate(axes["profile.tiers.flash.bandwidth"])
        assert axes["profile.tiers.flash.bandwidth"].endswith(" GB/s")
        assert 1e9 * (1 - 1e-5) <= bandwidth <= 4e9 * (1 + 1e-5)
        assert 1 <= axes["workload.rate"] <= 100
        assert axes["optimize.budget"] in (1, 2, 3, 4)
    assert first != _sampled("lhs" if method == "random" else "random", 1)


def test_lhs_hits_every_bin_once_in_every_dimension():
    n = 16
    spec = load_spec({"sample": {"method": "lhs", "points": n, "seed": 3},
                      "axes": {"rate": {"from": 1, "to": 1 + n},
                               "optimize.seed": list(range(n)),
                               "optimize.budget": {"from": 0, "to": n}}})
    points = spec.points()
    assert len(points) == n and all(p.sample == "lhs" for p in points)
    for path in ("workload.rate", "optimize.budget"):
        low = 1 if path == "workload.rate" else 0
        bins = sorted(math.floor(p.axes[path] - low) for p in points)
        assert bins == list(range(n)), path
    assert sorted(p.axes["optimize.seed"] for p in points) == list(range(n))  # by index


def test_steps_in_sampled_mode_draw_among_the_steps():
    spec = load_spec({"sample": {"method": "random", "points": 20, "seed": 0},
                      "axes": {"rate": {"from": 10, "to": 30, "steps": 3}}})
    assert {p.axes["workload.rate"] for p in spec.points()} <= {10.0, 20.0, 30.0}


# ---------------------------------------------------------------- ranges
def _range(**fields: object) -> list:
    spec = load_spec({"axes": {"profile.tiers.flash.bandwidth" if "unit" in fields
                               else "rate": {k: v for k, v in fields.items() if k != "unit"}}})
    return [p.axes[spec.axes[0]] for p in spec.points()]


def test_linear_range_of_plain_numbers_gives_floats():
    assert _range(**{"from": 10, "to": 20, "steps": 5}) == [10.0, 12.5, 15.0, 17.5, 20.0]
    assert all(type(v) is float for v in _range(**{"from": 1, "to": 2, "steps": 3}))
    assert _range(**{"from": 7, "to": 9, "steps": 1}) == [7.0]


def test_log_range():
    values = _range(**{"from": 1, "to": 1000, "steps": 4, "scale": "log"})
    assert values == pytest.approx([1, 10, 100, 1000], rel=1e-12)


def test_integer_range_gives_ints_without_repeats():
    assert _range(**{"from": 1, "to": 100, "steps": 3, "scale": "log", "integer": True}) == [
        1, 10, 100]
    values = _range(**{"from": 1, "to": 3, "steps": 9, "integer": True})
    assert values == [1, 2, 3] and all(type(v) is int for v in values)


def test_range_with_units_gives_text_in_that_unit():
    values = _range(unit=True, **{"from": "1 GB/s", "to": "2 GB/s", "steps": 4, "scale": "log"})
    assert values == ["1 GB/s", "1.26 GB/s", "1.587 GB/s", "2 GB/s"]
    close = _range(unit=True, **{"from": "1 GB/s", "to": "1.0001 GB/s", "steps": 3})
    assert len(set(close)) == 3 and all(v.endswith(" GB/s") for v in close)  # more digits
    rates = [parse_rate(v) for v in close]
    assert rates == sorted(rates) and rates[0] == 1e9 and rates[-1] == pytest.approx(1.0001e9)
    assert _range(**{"from": "5/s", "to": "20/s", "steps": 3}) == ["5/s", "12.5/s", "20/s"]
    assert _range(unit=True, **{"from": "1 GB/s", "to": "3 GB/s", "steps": 3,
                                "integer": True}) == ["1 GB/s", "2 GB/s", "3 GB/s"]


# ---------------------------------------------------------------- errors
BASE = """
name: errors
base:
  profile: phone
axes:
"""


@pytest.mark.parametrize(("axes", "line", "field", "message"), [
    ("  profle.tiers.ram.capacity: [8 GB]\n", 5, "axes.profle.tiers.ram.capacity",
     "unknown axis path 'profle.tiers.ram.capacity' (did you mean 'profile'?)"),
    ("  profile.tiers.flsh.bandwidth: [1 GB/s]\n", 5, "axes.profile.tiers.flsh.bandwidth",
     "unknown tier 'flsh' (did you mean 'flash'?); tiers: ram, flash, ssd-ext, cloud"),
    ("  profile.tiers.flash.bandwith:\n    - 1 GB/s\n", 6,
     "axes.profile.tiers.flash.bandwith[0]",
     "tiers[1].bandwith: unknown field 'bandwith'; did you mean 'bandwidth'?"),
    ("  profile.tiers.flash.bandwidth:\n    - 1 GB/s\n    - 2 GB\n", 7,
     "axes.profile.tiers.flash.bandwidth[1]", "tiers[1].bandwidth: unknown rate unit 'GB'"),
    ("  profile.tiers.flash.bandwidth: [1 GB/s, 0 GB/s]\n", 5,
     "axes.profile.tiers.flash.bandwidth[1]", "tiers[1].bandwidth: bandwidth must be positive"),
    ("  profile.tiers.ram.capacity: []\n", 5, "axes.profile.tiers.ram.capacity",
     "empty axis: give at least one value"),
    ("  rate:\n    from: 1\n    to: 5\n    steps: 0\n", 8, "axes.rate.steps",
     "steps must be a whole number of at least 1, got 0"),
    ("  profile.tiers.flash.bandwidth: {from: 1 GB/s, to: 500 MB/s, steps: 3}\n", 5,
     "axes.profile.tiers.flash.bandwidth.to",
     "from is in 'GB/s' but to is in 'MB/s': give both in the same unit"),
    ("  rate: {from: 1, to: 5}\n", 5, "axes.rate", "a range needs steps for grid sampling"),
    ("  rate: {from: 0, to: 5, steps: 3, scale: log}\n", 5, "axes.rate.from",
     "a log scale needs from and to above 0"),
    ("  rate: {form: 1, to: 5, steps: 3}\n", 5, "axes.rate.form",
     "unknown field 'form'; did you mean 'from'?"),
    ("  optimize.budget: {from: 1, to: 400, steps: 400}\n  optimize.seed:"
     " {from: 0, to: 399, steps: 400}\n  optimize.gap: [0, 0.1]\n", 4, "axes",
     f"the grid has 320,000 points (the product of the axes' lengths) but memsim's limit is "
     f"{limits.MAX_SWEEP_POINTS:,}"),
    ("  optimize.slo:\n    - p99 <= 20 ms\n    - p99 <= twenty\n", 7, "axes.optimize.slo[1]",
     "slo: SLO 'p99 <= twenty': cannot read \"twenty\" as a time"),
    ("  optimize.objective: [p99, p97]\n", 5, "axes.optimize.objective[1]",
     "objective: unknown objective 'p97'"),
    ("  optimize.budgte: [5]\n", 5, "axes.optimize.budgte[0]",
     "budgte: unknown field 'budgte'; did you mean 'budget'?"),
    ("  workload: [zipf-topic, closed-8]\n  rate: [5, 10]\n", 6, "axes.rate",
     "the workload 'closed-8' (axes.workload[1]) is a closed loop"),
    ("  rate: [5, 0]\n", 5, "axes.rate[1]", "rate must be a positive number of queries"),
    ("  bank: [A2, Z9]\n", 5, "axes.bank[1]", "bank 'Z9': no such file, and no shipped bank"),
    ("  workload.routing.s: [1.0]\n", 5, "axes.workload.routing.s",
     "changes the workload, but the base has none: set base.workload"),
    ("  bank.levels.9: [1]\n", 5, "axes.bank.levels.9", "index 9 is out of range: levels has 4"),
    ("  rate: [1]\n  workload.rate: [2]\n", 6, "axes.workload.rate",
     "axis 'workload.rate' is the same as axis 'rate'"),
])
def test_axis_errors_name_file_line_and_field(tmp_path, axes, line, field, message):
    path = write(tmp_path, BASE + axes)
    text = error_of(path)
    assert text.startswith(f"{path}:{line}: field '{field}': "), text
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(("text", "line", "field", "message"), [
    ("axis: {}\n", 1, "axis", "unknown field 'axis'; did you mean 'axes'?"),
    ("name: ../elsewhere\n", 1, "name", "name '../elsewhere' must be a non-empty name without"),
    ("sample: random\n", 1, "sample.points", "random sampling needs points"),
    ("sample: {method: lhs, points: 1000000}\n", 1, "sample.points",
     "the number of points is 1,000,000 but memsim's limit is 100,000"),
    ("base:\n  workload: closed-8\n  rate: 20/s\n", 3, "base.rate",
     "the workload 'closed-8' (base.workload) is a closed loop: its rate follows from its "
     "clients and think time, so a rate cannot set it"),
    ("base:\n  optimize: {slo: p98 <= 2 ms}\n", 2, "base.optimize.slo",
     "unknown statistic 'p98'"),
    ("base:\n  rate: fast\n", 2, "base.rate", 'cannot read "fast"'),
    ("base:\n  profile: no-such-profile\n", 2, "base.profile",
     "profile 'no-such-profile': no such file, and no shipped profile"),
    ("base:\n  profile:\n    name: inline\n    tiers:\n      - {name: ram, kind: ram, "
     "bandwidth: x}\n", 5, "base.profile.tiers[0].bandwidth", 'cannot read "x" as a rate'),
    ("base:\n  optimize: {budjet: 5}\n", 2, "base.optimize.budjet",
     "did you mean 'budget'?"),
])
def test_spec_errors_name_file_line_and_field(tmp_path, text, line, field, message):
    path = write(tmp_path, text)
    shown = error_of(path)
    assert shown.startswith(f"{path}:{line}: field '{field}': "), shown
    assert message in shown


def test_an_error_inside_a_referenced_file_names_that_file(tmp_path):
    write(tmp_path, "name: bad\ntiers:\n  - name: ram\n    kind: ram\n    bandwidth: 0\n",
          "bad-profile.yaml")
    spec = write(tmp_path, "base:\n  profile: bad-profile.yaml\n")
    assert error_of(spec).startswith(f"{tmp_path / 'bad-profile.yaml'}:5: field "
                                     "'tiers[0].bandwidth': bandwidth must be positive")


# ---------------------------------------------------------------- keys
PROFILE = """
name: mine
tiers:
  - {name: ram, kind: ram, capacity: 16 GB, bandwidth: 20 GB/s}
  - {name: flash, kind: flash, capacity: 64 GB, bandwidth: {bandwidth}}
  - {name: cloud, kind: cloud, bandwidth: 100 MB/s}
"""
SPEC = """
base:
  profile: {profile}
  workload: zipf-topic
axes:
  profile.tiers.ram.capacity: [8 GB, 16 GB]
  rate: {{from: 5, to: 50, steps: 3, scale: log}}
"""


def _keys(path: Path) -> list[str]:
    return [p.key for p in load_spec(path).points()]


def test_keys_are_stable_and_follow_the_profile_content(tmp_path):
    write(tmp_path, PROFILE.replace("{bandwidth}", "2 GB/s"), "mine.yaml")
    spec = write(tmp_path, SPEC.format(profile="mine.yaml"))
    keys = _keys(spec)
    assert len(set(keys)) == 6 and keys == _keys(spec)
    assert load_spec(spec).name == "sweep"  # the file's stem
    # the same content under another name: the same keys (refs are resolved to content)
    write(tmp_path, PROFILE.replace("{bandwidth}", "2 GB/s"), "copy.yaml")
    assert _keys(write(tmp_path, SPEC.format(profile="copy.yaml"), "other.yaml")) == keys
    # the profile's content changes: every key changes
    write(tmp_path, PROFILE.replace("{bandwidth}", "3 GB/s"), "mine.yaml")
    changed = _keys(spec)
    assert not set(changed) & set(keys)


def test_refs_resolve_beside_the_spec_before_shipped_names(tmp_path):
    write(tmp_path, PROFILE.replace("{bandwidth}", "2 GB/s"), "phone")  # shadows the shipped
    spec = load_spec(write(tmp_path, "base: {profile: phone}\n"))
    assert spec.points()[0].inputs["profile"]["name"] == "mine"
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    spec = load_spec(write(elsewhere, "base: {profile: phone}\n"))
    assert spec.points()[0].inputs["profile"]["name"] == "phone"


def test_a_workload_counts_file_is_found_beside_its_workload(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from memsim.workload import workload_from_dict

    folder = tmp_path / "wl"
    folder.mkdir()
    pq.write_table(pa.table({"level": [2, 2], "block": [0, 1], "count": [5.0, 1.0]}),
                   folder / "counts.parquet")
    write(folder, "arrivals: {kind: poisson, rate: 5}\nrouting: {kind: empirical, file: "
          "counts.parquet}\n", "measured.yaml")
    spec = load_spec(write(tmp_path, "base: {workload: wl/measured.yaml}\n"))
    routing = spec.points()[0].inputs["workload"]["routing"]
    assert routing["file"] == str((folder / "counts.parquet").resolve())
    monkeypatch.chdir(folder.parent.parent)  # a point reads it from anywhere
    assert workload_from_dict(spec.points()[0].inputs["workload"]).routing.kind == "empirical"


# ---------------------------------------------------------------- paths and schema
def test_apply_selects_tiers_by_name_and_copies():
    doc = {"tiers": [{"name": "ram", "bandwidth": 1}, {"name": "flash", "bandwidth": 2}],
           "levels": [0, 4, 8]}
    out = apply(doc, ["tiers", "flash", "bandwidth"], 5)
    assert out["tiers"][1]["bandwidth"] == 5 and doc["tiers"][1]["bandwidth"] == 2
    assert apply(doc, parse_path("levels.2"), 9)["levels"] == [0, 4, 9]
    assert apply(doc, ["tiers", "ram", "cost", "usd"], 1)["tiers"][0]["cost"] == {"usd": 1}
    with pytest.raises(PathError, match="unknown tier 'fash' .did you mean 'flash'..; tiers"):
        apply(doc, ["tiers", "fash", "bandwidth"], 1)
    with pytest.raises(PathError, match="levels is a list: select an item by its index"):
        apply(doc, ["levels", "x"], 1)
    with pytest.raises(PathError, match="not a mapping"):
        apply(doc, ["levels", 1, "x"], 1)


def test_schema(cli):
    schema = sweep_schema()
    assert {"base", "axes", "sample", "stages"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    shown = json.loads(cli("schema", "sweep").stdout)
    assert shown["properties"]["axes"] == schema["properties"]["axes"]


# ---------------------------------------------------------------- fuzz
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["8 GB", "1 GB/s", "0 GB/s", "20/s", "p99 <= 20 ms", "p99", "A2", "phone",
                     "closed-8", "zipf-topic", "paper-hierarchical", "x", "", "1e400 GB"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["name", "kind", "rate", "slo", "p99", "tiers", 2]), inner, max_size=3),
    max_leaves=5)
_ENDS = st.one_of(st.sampled_from([1, 2.5, 50, "1 GB/s", "4 GB/s", "5/s", "20/s"]),
                  st.integers(-2, 50), st.floats(-1e3, 1e308), _SCALARS,
                  st.sampled_from(["2 MB/s", "1e400", "1 GB"]))
_RANGES = st.fixed_dictionaries({"from": _ENDS, "to": _ENDS}, optional={
    "steps": st.integers(1, 4) | st.integers(-1, 0) | _SCALARS,
    "scale": st.sampled_from(["linear", "log", "x"]),
    "integer": st.booleans() | _SCALARS, "form": _SCALARS})
# path -> values that make sense there (mixed below with junk, lists and ranges)
_GOOD = {
    "profile": ["phone", "laptop", "paper-hypothetical"], "bank": ["A2", "C2"],
    "workload": ["zipf-topic", "poisson-uniform", "closed-8", None],
    "layout": [None, "paper-hierarchical"], "rate": [5, "20/s", 1.5],
    "workload.rate": [5, "20/s"], "optimize": [{"budget": 5}, {"slo": "p99 <= 20 ms"}],
    "optimize.budget": [1, 5.0, None], "optimize.slo": ["p99 <= 20 ms", ["mean <= 5 ms"]],
    "optimize.objective": ["p99", "mean", "cvar:0.9"], "optimize.resident.0": [2],
    "profile.tiers.ram.capacity": ["8 GB", "16 GB"],
    "profile.tiers.flash.bandwidth": ["1 GB/s", "3 GB/s"], "profile.tiers.flsh.x": [1],
    "profile.tiers.0.concurrency": [1, 4], "profile.tiers.flash.latency.p99": ["1 ms"],
    "bank.levels.1": [0, 256], "bank.branching": [4, 16], "workload.arrivals.rate": [5, "9/s"],
    "workload.routing": ["uniform", "zipf"], "layout.placement.2": ["flash", "disk"],
    "profile..x": [1], "": [1], "nope.x": [1], "rate.x": [1], "optimize.budget.3": [1],
    "profile.tiers.ram.calibration.a": [{"b": 1}]}


_GOOD_RANGES = st.fixed_dictionaries({"from": st.sampled_from([1, 2.5, "1 GB/s", "5/s"]),
                                      "to": st.sampled_from([4, 50, "4 GB/s", "20/s"])},
                                     optional={"steps": st.integers(1, 3),
                                               "scale": st.sampled_from(["linear", "log"]),
                                               "integer": st.booleans()})
# plausible specs: most load, so points() runs on many shapes
_GOOD_SPECS = st.fixed_dictionaries({}, optional={
    "base": st.fixed_dictionaries({}, optional={
        "profile": st.sampled_from(["phone", "laptop"]),
        "bank": st.sampled_from(["A2", "C2"]),
        "workload": st.sampled_from(["zipf-topic", "closed-8", None]),
        "layout": st.sampled_from([None, "paper-hierarchical"]),
        "rate": st.sampled_from([None, "20/s", 5])}),
    "axes": st.lists(st.one_of(*[st.tuples(st.just(path), st.permutations(good)
        | _GOOD_RANGES)
        for path, good in _GOOD.items()]), min_size=1, max_size=4).map(dict),
    "sample": st.sampled_from(["grid", "lhs"]) | st.fixed_dictionaries(
        {"method": st.sampled_from(["random", "lhs"]), "points": st.integers(1, 6)},
        optional={"seed": st.integers(0, 5)})})
# anything: junk values anywhere
_SPECS = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["s", "phone sweep"]) | _SCALARS,
    "base": st.fixed_dictionaries({}, optional={
        "profile": st.sampled_from(["phone", "laptop", "nope"]) | _VALUES,
        "bank": st.sampled_from(["A2", "C2"]) | _VALUES,
        "workload": st.sampled_from(["zipf-topic", "closed-8", None]) | _VALUES,
        "layout": st.sampled_from([None, "paper-hierarchical"]),
        "rate": st.sampled_from([None, "20/s", 0, -1, "x", 5]),
        "optimize": st.dictionaries(st.sampled_from(["budget", "slo", "objective", "bogus"]),
                                    st.sampled_from([5, "p99", "p99 <= 9 ms"]) | _VALUES,
                                    max_size=2)}),
    "axes": st.lists(st.one_of(*[st.tuples(st.just(path), st.one_of(
        st.lists(st.sampled_from(good) | _VALUES, max_size=3), _RANGES, _VALUES))
        for path, good in _GOOD.items()]), max_size=3).map(dict),
    "sample": st.sampled_from(["grid", "random", "lhs", "nope"]) | st.fixed_dictionaries(
        {"method": st.sampled_from(["grid", "random", "lhs"])},
        optional={"points": st.integers(-1, 5), "seed": st.integers(-1, 5)}),
    "stages": st.sampled_from([None, {}, {"simulate": {"queries": 100}}, {"bogus": 1}])})


def _loads_or_refuses(data: dict) -> bool:
    """load_spec either gives a spec whose points() works, or one InputError line."""
    try:
        spec = load_spec(data)
    except InputError as exc:
        assert "\n" not in str(exc)
        return False
    points = spec.points()
    assert 1 <= len(points) <= len(spec)
    assert len({p.key for p in points}) == len(points)
    for point in points:
        assert list(point.axes) == spec.axes
        json.dumps(point.inputs, sort_keys=True, default=str, allow_nan=True)
    return True


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_GOOD_SPECS)
def test_plausible_specs_load_and_expand_or_are_one_input_error(data):
    _loads_or_refuses(data)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_SPECS)
def test_any_spec_loads_and_expands_or_is_one_input_error(data):
    _loads_or_refuses(data)


def test_a_spec_round_trips_through_yaml(tmp_path):
    data = {"base": {"profile": "phone"}, "axes": {"profile.tiers.flash.bandwidth": [
        "1 GB/s", "2 GB/s"]}}
    from_file = load_spec(write(tmp_path, yaml.safe_dump(data)))
    from_dict = load_spec(data)
    assert [p.key for p in from_file.points()] == [p.key for p in from_dict.points()]
