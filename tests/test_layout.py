"""Layouts: shipped ones fit the paper bank; mistakes point at the offending line."""

from __future__ import annotations

import pytest

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
