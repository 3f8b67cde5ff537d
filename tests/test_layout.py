"""Layouts: shipped ones fit the paper bank; mistakes point at the offending line; the
prefetch section parses, round-trips and builds the client's config (generated sections too)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memsim
from memsim.errors import InputError


@pytest.mark.parametrize("name", ["paper-hierarchical", "paper-flat", "paper-flat-resident-upper"])
def test_shipped_layouts_check(name, paper_profile, paper_bank):
    layout = memsim.load_layout(name)
    layout.check(paper_bank, paper_profile)
    assert layout.fetch == "parallel"


def _layout(tmp_path, body: str):
    path = tmp_path / "l.yaml"
    path.write_text("fetch: parallel\n" + body)
    return memsim.load_layout(path)


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("placement:\n  2: flash\n  3: tape\n  4: cloud\n", 4, "unknown tier 'tape'"),
        ("placement:\n  2: flash\n  3: disk\n  4: cloud\n  7: disk\n", 6, "not in bank"),
        ("placement:\n  1: flash\n  2: flash\n  3: disk\n  4: cloud\n", 3, "empty"),
        ("placement:\n  2: flash\n  3: disk\n", 2, "4 of bank"),
        ("placement:\n  L2: flash\n  L3: disk\n  L4: tape\n", 5, "unknown tier"),
        ("placement: {2: flash, 3: disk, 4: cloud}\nresident: [1]\n", 3, "resident level 1"),
    ],
)
def test_layout_mistakes(tmp_path, paper_profile, paper_bank, body, line, words):
    layout = _layout(tmp_path, body)
    with pytest.raises(InputError) as info:
        layout.check(paper_bank, paper_profile)
    assert info.value.line == line
    assert words in str(info.value)
    assert str(tmp_path / "l.yaml") in str(info.value)


def test_bad_level_key(tmp_path):
    with pytest.raises(InputError, match="depth") as info:
        _layout(tmp_path, "placement:\n  top: flash\n")
    assert info.value.line == 2


def test_save_round_trip_is_atomic(tmp_path):
    layout = memsim.load_layout("paper-flat-resident-upper")
    out = layout.save(tmp_path / "sub" / "copy.yaml", header="copied\nfor a test")
    text = out.read_text()
    assert text.startswith("# copied\n# for a test\n")
    again = memsim.load_layout(out)
    assert again.placement == layout.placement and again.resident == [2]
    assert list((tmp_path / "sub").iterdir()) == [out]  # no temporary file left behind


def test_overlapping_blocked_subtrees_count_once(paper_profile, paper_bank):
    layout = memsim.layout_from_dict({"placement": {2: "flash", 3: "disk", 4: "cloud"},
                                      "blocked": [{"level": 2, "block": 5},
                                                  {"level": 3, "block": 5 * 16 + 2},
                                                  {"level": 2, "block": 5}]})
    counts = layout.tier_counts(paper_bank, paper_profile)
    assert counts[2] == {"flash": 255}
    assert counts[3] == {"disk": 4096 - 16}
    assert counts[4] == {"cloud": 65536 - 256}


# ----------------------------------------------------------------------------- prefetch

PLACED = "placement: {2: flash, 3: disk, 4: cloud}\n"


def test_prefetch_section_round_trips_and_builds_the_client_config(tmp_path):
    from memsim.client.prefetch import PrefetchConfig

    layout = _layout(tmp_path, PLACED + "cache: {budget: 64 MB, policy: lru}\nprefetch:\n"
                     "  policy: children\n  max_inflight: 2\n  max_bytes: 16 MiB\n")
    section = layout.prefetch
    assert isinstance(section, memsim.layout.PrefetchSection)
    assert (section.policy, section.max_inflight, section.max_bytes, section.lookahead) == (
        "children", 2, 16 * 2**20, 1)
    again = memsim.load_layout(layout.save(tmp_path / "copy.yaml"))
    assert again.prefetch == section and again.cache == layout.cache
    workload = memsim.load_workload("zipf-topic")
    assert section.config(workload=workload, trace=np.zeros((1, 4), dtype=np.int64)) == \
        PrefetchConfig("children", max_inflight=2, max_bytes=16 * 2**20, workload=workload)
    assert section.config() == PrefetchConfig("children", max_inflight=2, max_bytes=16 << 20)
    paths = np.zeros((3, 4), dtype=np.int64)
    trace = memsim.layout.PrefetchSection(policy="trace", lookahead=2).config(
        workload=workload, trace=(np.arange(3.0), paths))
    assert trace.policy == "trace" and trace.trace is paths and trace.workload is None
    assert trace.lookahead == 2 and trace.max_bytes == 64 << 20 and trace.max_inflight == 4
    assert memsim.load_layout("paper-flat").prefetch_config() is None  # no section, no prefetch


def test_the_trace_policy_needs_a_trace(tmp_path):
    layout = _layout(tmp_path, PLACED + "cache: {budget: 1 GB}\nprefetch:\n  policy: trace\n")
    with pytest.raises(InputError) as info:
        layout.prefetch.config(workload=memsim.load_workload("zipf-topic"))
    assert info.value.field == "prefetch.policy" and "trace" in info.value.message
    with pytest.raises(InputError) as info:
        layout.prefetch_config()
    assert (info.value.field, info.value.line) == ("prefetch.policy", 5)
    assert str(info.value).startswith(f"{tmp_path / 'l.yaml'}:5: field 'prefetch.policy'")


@pytest.mark.parametrize("cache", ["", "cache: {budget: 0}\n"])
def test_prefetch_without_a_cache_is_one_line_naming_the_field(tmp_path, paper_profile,
                                                                paper_bank, cache):
    layout = _layout(tmp_path, PLACED + cache + "prefetch: {policy: children}\n")
    with pytest.raises(InputError) as info:
        layout.check(paper_bank, paper_profile)
    assert info.value.field == "prefetch" and info.value.line == 3 + bool(cache)
    assert str(info.value).startswith(f"{tmp_path / 'l.yaml'}:{3 + bool(cache)}: field "
                                      "'prefetch': ")
    assert "\n" not in str(info.value) and "cache" in info.value.message
    _layout(tmp_path, PLACED + cache + "prefetch: {policy: none}\n").check(paper_bank,
                                                                           paper_profile)


def test_the_schema_has_the_prefetch_section(cli):
    result = cli("schema", "layout")
    assert result.exit_code == 0, result.stderr
    schema = json.loads(result.stdout)
    section = schema["$defs"]["PrefetchSection"]
    assert set(section["properties"]) == {"policy", "max_inflight", "max_bytes", "lookahead"}
    assert section["additionalProperties"] is False and section["required"] == ["policy"]


# Values for each field of the section, with what they must parse to (None: refused).
POLICY_VALUES = {"none": "none", "children": "children", "trace": "trace", "lru": None,
                 "Children": None, "1": None, "[]": None, "null": None}
COUNT_VALUES = {"0": 0, "1": 1, "4": 4, "4096": 4096, "4097": None, "-1": None, "true": None,
                "1.5": None, "lots": None, "[2]": None, "99999999999999999999": None}
SIZE_VALUES = {"0": 0, "4096": 4096, "'64 MB'": 64_000_000, "'16 MiB'": 16 * 2**20,
               "'1.5 KB'": 1500, "'-5 MB'": None, "'5 Mb'": None, "lots": None,
               "'80 parsecs'": None, "1.5": None, "[1]": None, "'1e400 GB'": None}
FIELDS = {"policy": POLICY_VALUES, "max_inflight": COUNT_VALUES, "max_bytes": SIZE_VALUES,
          "lookahead": COUNT_VALUES}
DEFAULTS = {"max_inflight": 4, "max_bytes": 64 << 20, "lookahead": 1}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({}, optional={
           name: st.sampled_from(sorted(choices)) for name, choices in FIELDS.items()}),
       extra=st.sampled_from([None, None, None, "budget", "max_inflights", "policy "]),
       cache=st.booleans())
def test_generated_prefetch_sections(tmp_path, paper_profile, paper_bank, values, extra,
                                     cache):
    """Every combination of valid and invalid values: a valid section loads to exactly the
    values written (defaults for the others), saves and loads back the same, and checks
    against the cache; anything else is one line naming the file, its line and a field of
    the section."""
    body = "".join(f"  {name}: {text}\n" for name, text in values.items())
    if extra is not None:
        body += f"  {extra}: 1\n"
    text = PLACED + ("cache: {budget: 1 GB}\n" if cache else "") + "prefetch:\n" + (
        body or "  {}\n")
    path = tmp_path / "l.yaml"
    path.write_text(text)
    parsed = {name: FIELDS[name][v] for name, v in values.items()}
    valid = extra is None and "policy" in values and None not in parsed.values()
    if not valid:
        with pytest.raises(InputError) as info:
            memsim.load_layout(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}:")
        assert info.value.field.startswith("prefetch") and info.value.line >= 2
        return
    layout = memsim.load_layout(path)
    expected = {**DEFAULTS, **parsed}
    assert layout.prefetch.model_dump() == expected
    assert memsim.load_layout(layout.save(tmp_path / "again.yaml")).prefetch == layout.prefetch
    if cache or expected["policy"] == "none":
        layout.check(paper_bank, paper_profile)
    else:
        with pytest.raises(InputError) as info:
            layout.check(paper_bank, paper_profile)
        assert info.value.field == "prefetch"
