"""Every file format is safe on any input: bounded YAML, one-line messages naming file, line and
field, no credential accepted or echoed, and OS-refused paths reported as input errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import memsim
from memsim import limits, yamlio
from memsim.bank import bank_from_dict
from memsim.errors import InputError, one_line
from memsim.profile import profile_from_dict
from memsim.stores.url import has_credentials, parse_store_url, redact
from memsim.workload import workload_from_dict

SECRET = "zQ9sEcReT/xK+7fAkE"
RAM = {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "8 GB"}
DISK = {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms"}


def _error(text: str, tmp_path: Path) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        yamlio.load(path)
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- YAML bounds

def test_deep_nesting_is_refused_before_recursion(tmp_path):
    message = _error("a: " + "[" * 5000 + "]" * 5000 + "\n", tmp_path)
    assert "p.yaml:1:" in message and "nesting deeper" in message
    # within the limit reads fine
    depth = limits.MAX_YAML_DEPTH - 2
    assert yamlio.loads("a: " + "[" * depth + "]" * depth).data


def test_alias_bomb_stops_at_the_node_limit_quickly():
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 9):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*{'a' if i == 1 else f'l{i - 1}'}"] * 10)
                     + "]")
    start = time.perf_counter()
    with pytest.raises(InputError, match="after expanding aliases"):
        yamlio.loads("\n".join(lines), file="bomb.yaml")
    assert time.perf_counter() - start < 30  # 10**9 nodes if expanded: this cannot pass then


def test_huge_scalars_and_integers_are_refused(tmp_path):
    assert "over memsim's limit" in _error("a: " + "x" * 20_000 + "\n", tmp_path)
    message = _error("b: 1\na: " + "9" * 5000 + "\n", tmp_path)
    assert "p.yaml:2: field 'a'" in message and "digits" in message and len(message) < 200


def test_file_size_is_bounded(tmp_path):
    message = _error("# " + "x" * (limits.MAX_FILE_BYTES + 10) + "\n", tmp_path)
    assert "limit" in message


@pytest.mark.parametrize("text", ["a: !!python/object:os.system x\n",
                                  "a: !!python/object/apply:os.system [ls]\n",
                                  "a: !custom 1\n", "a: !!binary aGk=\n", "<<: {a: 1}\n"])
def test_tags_beyond_plain_values_are_refused(tmp_path, text):
    message = _error(text, tmp_path)
    assert "p.yaml:1" in message and "tag" in message


@pytest.mark.parametrize(("raw", "line"), [(b"a: 1\nb: \x01\n", 2), (b"a: 1\nb: \xff\xfe\n", 2),
                                          (b"a: 1\n\nc: \x1b[31m\n", 3)])
def test_control_characters_and_bad_encodings_name_the_line(tmp_path, raw, line):
    path = tmp_path / "p.yaml"
    path.write_bytes(raw)
    with pytest.raises(InputError) as info:
        yamlio.load(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and "\n" not in str(info.value)


def test_parser_problems_are_one_line(tmp_path):
    message = _error("a: 'unterminated\nb: [1, 2\n", tmp_path)
    assert message.startswith(str(tmp_path / "p.yaml") + ":")
    assert one_line("a\n  b\r\nc") == "a b c"


# ----------------------------------------------------------------------------- validation text

def test_unknown_field_first_with_a_suggestion():
    bad = {**RAM, "bandwith": "1 GB/s"}
    del bad["bandwidth"]
    with pytest.raises(InputError) as info:
        profile_from_dict({"name": "p", "tiers": [bad]})
    assert str(info.value) == ("<dict>: field 'tiers[0].bandwith': unknown field 'bandwith'; "
                               "did you mean 'bandwidth'?")


def test_unknown_field_in_a_tagged_union_suggests_its_fields():
    with pytest.raises(InputError, match="did you mean 'rate'"):
        workload_from_dict({"arrivals": {"kind": "poisson", "rat": 5}})


def test_tier_name_used_twice_names_the_field_and_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ntiers:\n  - {name: ram, kind: ram, bandwidth: 1 GB/s}\n"
                    "  - {name: disk, kind: disk, bandwidth: 1 MB/s}\n"
                    "  - {name: ram, kind: cloud, bandwidth: 1 MB/s}\n")
    with pytest.raises(InputError) as info:
        memsim.load_profile(path)
    assert str(info.value).startswith(f"{path}:5: field 'tiers[2].name': tier name 'ram'")


def test_blocks_per_level_limit_names_file_line_and_level(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("branching: 4096\nanchor: 160M\nlevels:\n  - 1\n  - 1\n  - 1\n  - 1\n")
    with pytest.raises(InputError) as info:
        memsim.load_bank(path)
    assert str(info.value).startswith(f"{path}:7: field 'levels[3]': ")
    assert "blocks per level" in str(info.value)
    with pytest.raises(InputError, match=r"levels\[16\]|at most 16 levels"):
        bank_from_dict({"branching": 2, "anchor": "160M", "levels": [1] * 17})


# ----------------------------------------------------------------------------- credentials

@pytest.mark.parametrize("store", [f"s3://AKIAFAKE:{SECRET}@host/bucket",
                                   f"ftp://user:{SECRET}@host/x", f"memory://k:{SECRET}@x",
                                   f"file://u:{SECRET}@localhost/data"])
def test_store_with_credentials_is_refused_without_echoing_them(store):
    with pytest.raises(InputError) as info:
        profile_from_dict({"name": "p", "tiers": [{**RAM, "store": store}]})
    assert "must not contain credentials" in str(info.value)
    assert SECRET not in str(info.value) and "AKIAFAKE" not in str(info.value)
    with pytest.raises(InputError) as info:
        parse_store_url(store)
    assert SECRET not in str(info.value)


def test_redact_scrubs_userinfo_of_any_scheme():
    text = f"bad store 's3://AKIA:{SECRET}@h/b' and http://u:{SECRET}@x:9000/"
    assert SECRET not in redact(text) and "s3://***@h/b" in redact(text)
    assert has_credentials(f"s3://K:{SECRET}@b") and not has_credentials("s3://bucket/p")
    assert not has_credentials("file:///data/a@b") and redact("file:///a@b") == "file:///a@b"


# ----------------------------------------------------------------------------- profiles

def test_profile_without_ram_is_refused():
    with pytest.raises(InputError, match=r"field 'tiers': no tier of kind ram"):
        profile_from_dict({"name": "p", "tiers": [DISK]})


def test_tiers_out_of_order_give_a_warning_naming_the_tier(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\ntiers:\n  - {name: ram, kind: ram, bandwidth: 10 GB/s}\n"
                    "  - {name: disk, kind: disk, bandwidth: 100 MB/s, latency: 5 ms}\n"
                    "  - {name: flash, kind: flash, bandwidth: 2 GB/s, latency: 80 us}\n")
    warnings = memsim.load_profile(path).order_warnings()
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}:5: field 'tiers[2]': ")
    for name in memsim.resources.shipped_names("device_profiles"):
        assert memsim.load_profile(name).order_warnings() == []


def test_with_tier_bandwidth_above_an_explicit_aggregate_raises():
    p = profile_from_dict({"name": "p", "tiers": [RAM, {**DISK, "concurrency": 4,
                                                        "aggregate_bandwidth": "200 MB/s"}]})
    with pytest.raises(InputError, match="aggregate_bandwidth"):
        p.with_tier("disk", bandwidth="1 GB/s")
    raised = p.with_tier("disk", bandwidth="1 GB/s", aggregate_bandwidth="4 GB/s")
    assert raised.tier("disk").stream_bandwidth == 1e9
    # no explicit aggregate: the aggregate follows the new bandwidth
    assert p.with_tier("ram", bandwidth="20 GB/s").tier("ram").stream_bandwidth == 2e10


# ----------------------------------------------------------------------------- paths

@pytest.mark.parametrize("ref", ["a\0b", "x" * 5000, "/" + "y" * 300 + "/p.yaml", ""])
def test_paths_the_os_refuses_are_input_errors(ref):
    for load in (memsim.load_profile, memsim.load_bank, memsim.load_layout,
                 memsim.load_workload):
        with pytest.raises(InputError) as info:
            load(ref)
        assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="directory"):
        memsim.load_profile(tmp_path)


@pytest.mark.parametrize("name", ["a\0b.parquet", "z" * 300 + ".parquet"])
def test_workload_routing_file_the_os_refuses(name):
    with pytest.raises(InputError) as info:
        workload_from_dict({"arrivals": {"kind": "poisson", "rate": 5},
                            "routing": {"kind": "empirical", "file": name}})
    assert "field 'routing.file'" in str(info.value)


def test_workload_routing_file_that_is_a_directory(tmp_path):
    with pytest.raises(InputError, match="routing.file"):
        workload_from_dict({"arrivals": {"kind": "poisson", "rate": 5},
                            "routing": {"kind": "empirical", "file": str(tmp_path)}})
