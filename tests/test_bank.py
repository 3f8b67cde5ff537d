"""Banks: derived sizes match the paper's published figures."""

from __future__ import annotations

import pytest

import memsim
from memsim.bank import unit_params
from memsim.errors import InputError


@pytest.mark.parametrize(
    ("name", "fetched", "bank_params"),
    [
        # Paper: A2 18M fetched, 4.6B bank (the reference checks 18.06M and 4.624B exactly).
        ("A2", 336 * 53_760, 86_016 * 53_760),
        ("B2", 672 * 73_728, 172_032 * 73_728),  # paper: 50M fetched, 12.7B (25 GB)
        ("C2", 1040 * 147_456, 143_360 * 147_456),  # paper: 153M fetched, 21.1B (42 GB)
    ],
)
def test_presets_match_paper(name, fetched, bank_params):
    bank = memsim.load_bank(name)
    assert bank.fetched_params == fetched
    assert bank.bank_params == bank_params


def test_a2_headline_numbers():
    bank = memsim.load_bank("A2")
    assert round(bank.fetched_params / 1e6, 2) == 18.06
    assert round(bank.bank_params / 1e9, 3) == 4.624


def test_b2_c2_published_sizes():
    assert round(memsim.load_bank("B2").bank_bytes / 1e9) == 25
    assert round(memsim.load_bank("C2").bank_bytes / 1e9) == 42


def test_storage_example_matches_reference(paper_bank):
    blocks = [lv.block_bytes for lv in paper_bank.active_levels]
    assert [round(b / 1e6, 1) for b in blocks] == [151.0, 37.7, 9.4]
    assert [round(lv.bytes / 1e9, 2) for lv in paper_bank.active_levels] == [38.65, 154.62,
                                                                             618.48]
    assert round(paper_bank.fetched_bytes / 1e6, 1) == 198.2
    assert [lv.blocks for lv in paper_bank.active_levels] == [256, 4096, 65536]
    assert paper_bank.level(1).empty
    assert round(paper_bank.anchor_bytes / 1e9, 1) == 0.8


def test_anchor_c0_matches_paper():
    for anchor, c0 in (("160M", 53_760), ("410M", 73_728), ("1.4B", 147_456)):
        assert unit_params("ffn", memsim.ANCHORS[anchor]) == c0


def test_memory_type_formulas():
    a = memsim.ANCHORS["410M"]
    L, d, h, dh, dff = a.layers, a.d_model, a.heads, a.head_dim, a.d_ff
    assert unit_params("lora-ffn", a) == 3 * L * (d + dff)
    assert unit_params("lora-qk", a) == 2 * L * (d + h * dh)
    assert unit_params("lora-ov", a) == 2 * L * (d + h * dh)
    assert unit_params("kv", a) == 2 * L * h * dh


def test_custom_bank_with_mapping_levels(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("name: mine\nlevels: {2: 8, 3: 2}\nanchor: {layers: 2, d_model: 4, d_ff: 8, "
                    "heads: 1, head_dim: 4}\ndtype: fp32\n")
    bank = memsim.load_bank(path)
    assert bank.levels == [0, 8, 2]
    assert bank.level(2).block_bytes == 8 * 3 * 2 * 4 * 4
    assert bank.level(3).blocks == 16**3


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("levels: [0, 0]\nanchor: 410M\n", "levels", "empty"),
        ("levels: [1, -2]\nanchor: 410M\n", "levels", "negative"),
        ("levels: [1]\nanchor: 7B\n", "anchor", "unknown anchor"),
        ("levels: [1]\nanchor: 410M\nmemory_type: moe\n", "memory_type", "ffn"),
        ("levels: [1]\nanchor: 410M\nbranching: 1\n", "branching", "2"),
    ],
)
def test_bad_bank(tmp_path, text, field, words):
    path = tmp_path / "bank.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        memsim.load_bank(path)
    assert info.value.field == field
    assert words in str(info.value)
