"""Energy: the units, the profile field, the model by hand, the simulator's measured energy
against the model, and the estimate/simulate reports (JSON and text)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import memsim
from memsim.blockmap import BlockMap
from memsim.energy import EnergyFigures, block_energy_j, idle_power_w, layout_energy
from memsim.errors import InputError
from memsim.profile import profile_from_dict
from memsim.units import (
    UnitError,
    format_energy,
    format_energy_per_byte,
    format_power,
    parse_energy,
    parse_energy_per_byte,
    parse_power,
)
from memsim.workload import workload_from_dict

RAM = {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "latency": "100 ns",
       "concurrency": 4, "energy": {"per_byte": "1 nJ/B"}}
DISK = {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms",
        "request_overhead": "1 ms", "concurrency": 2, "max_request_size": "2 MB",
        "energy": {"per_byte": "2 nJ/B", "per_request": "50 uJ", "active_power": "3 W",
                   "idle_power": "1 W", "source": "test"}}
TOY = profile_from_dict({"name": "toy", "tiers": [RAM, DISK]})
# Two levels: 4 blocks of 3 MB and 16 blocks of 6 MB (int8, 3 bytes per unit of multiplier).
BANK_DATA = {"name": "toy", "levels": [1_000_000, 2_000_000], "anchor": {
    "layers": 1, "d_model": 1, "d_ff": 1, "heads": 1, "head_dim": 1, "params": 1},
    "memory_type": "ffn", "branching": 4, "dtype": "int8"}
BANK = memsim.bank_from_dict(BANK_DATA)
SLOW = {"name": "slow", "arrivals": {"kind": "poisson", "rate": "0.5/s"}}

# By hand. Disk, 3 MB block: parts 2 MB + 1 MB; channel time 2 x (5 + 1) ms + 3 MB at
# 100 MB/s = 42 ms; 6 MB block: three 2 MB parts, 3 x 6 ms + 60 ms = 78 ms. Active power
# above idle is 2 W over 2 channels.
DISK_3MB = 2e-9 * 3e6 + 50e-6 * 2 + 2.0 * 0.042 / 2
DISK_6MB = 2e-9 * 6e6 + 50e-6 * 3 + 2.0 * 0.078 / 2
RAM_3MB, RAM_6MB = 1e-9 * 3e6, 1e-9 * 6e6


def _layout(placement: dict[int, str], **extra: object) -> memsim.Layout:
    return memsim.layout_from_dict({"name": "t", "placement": placement, **extra})


# ----------------------------------------------------------------------------- units

def test_units_parse_the_forms_profiles_use():
    assert parse_energy("20 uJ") == pytest.approx(20e-6)
    assert parse_energy("0.1 mJ") == pytest.approx(1e-4)
    assert parse_energy("2 Wh") == 7200.0
    assert parse_energy(0.5) == 0.5
    assert parse_energy_per_byte("0.5 nJ/B") == pytest.approx(5e-10)
    assert parse_energy_per_byte("4 pJ/bit") == pytest.approx(32e-12)  # 8 bits a byte
    assert parse_energy_per_byte("0.1 J/MB") == pytest.approx(1e-7)
    assert parse_energy_per_byte("1 uJ/KiB") == pytest.approx(1e-6 / 1024)
    assert parse_power("250 mW") == 0.25
    assert parse_power("1.5 W") == 1.5
    assert format_energy(0.00123) == "1.23 mJ" and format_energy(0) == "0 J"
    assert format_power(0.25) == "250 mW" and format_power(0) == "0 W"
    assert format_energy_per_byte(5e-10) == "500 pJ/B"


@pytest.mark.parametrize(("parse", "text", "words"), [
    (parse_energy, "5 W", "that is a power"),
    (parse_energy, "-1 J", "negative"),
    (parse_energy, "nan", "finite"),
    (parse_energy, "1e999 J", "out of range"),
    (parse_energy, True, "expected"),
    (parse_power, "3 J", "that is an energy"),
    (parse_power, "3 W/s", "unknown power unit"),
    (parse_energy_per_byte, "5 nJ", "energy-per-byte unit"),
    (parse_energy_per_byte, "5 nJ/s", "per byte or bit"),
    (parse_energy_per_byte, "5 W/B", "energy-per-byte unit"),
    (parse_energy_per_byte, [1], "expected"),
])
def test_bad_quantities_are_refused_with_the_text(parse, text, words):
    with pytest.raises(UnitError, match=words):
        parse(text)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.floats(min_value=1e-15, max_value=1e6, allow_nan=False))
def test_energy_and_power_round_trip(x):
    assert parse_energy(format_energy(x)) == pytest.approx(x, rel=5e-4)
    assert parse_power(format_power(x)) == pytest.approx(x, rel=5e-4)
    assert parse_energy_per_byte(format_energy_per_byte(x)) == pytest.approx(x, rel=5e-4)


# ----------------------------------------------------------------------------- profile field

def _write_profile(tmp_path: Path, energy: dict[str, object]) -> Path:
    data = {"name": "p", "tiers": [RAM, {**DISK, "energy": energy}]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _line_of(path: Path, key: str) -> int:
    lines = path.read_text().splitlines()
    return max(i for i, line in enumerate(lines, 1) if line.strip().startswith(f"{key}:"))


@pytest.mark.parametrize(("energy", "field", "words"), [
    ({"per_byte": "5 W"}, "per_byte", "energy-per-byte unit 'W'"),
    ({"per_request": "-2 uJ"}, "per_request", "must not be negative"),
    ({"active_power": "1 W", "idle_power": "2 W"}, "active_power", "below idle_power"),
    ({"idle_power": "2 J"}, "idle_power", "that is an energy"),
    ({"per_bite": "1 nJ/B"}, "per_bite", "per_byte"),
])
def test_profile_validate_names_file_line_and_field(cli, tmp_path, energy, field, words):
    path = _write_profile(tmp_path, energy)
    result = cli("profile", "validate", str(path))
    assert result.exit_code != 0
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    line = _line_of(path, field)
    assert f"p.yaml:{line}: field 'tiers[1].energy.{field}'" in message, message
    assert words in message


def test_shipped_phone_and_laptop_have_energy_and_validate(cli):
    for name in ("phone", "laptop"):
        profile = memsim.load_profile(name)
        assert all(t.energy is not None and t.energy.source for t in profile.tiers), name
    result = cli("profile", "validate", "phone", "laptop")
    assert result.exit_code == 0, result.stderr


def test_schema_shows_the_energy_fields(cli):
    result = cli("schema", "profile")
    schema = json.loads(result.stdout)
    fields = schema["$defs"]["TierEnergy"]["properties"]
    assert set(fields) == {"per_byte", "per_request", "active_power", "idle_power", "source"}
    assert "pJ/bit" in json.dumps(fields["per_byte"])


# Generated values for each energy field: valid ones parse to what they say, anything else is
# one InputError line naming the field, never another exception.
UNITS = {"per_byte": {"J/B": 1.0, "nJ/B": 1e-9, "pJ/bit": 8e-12, "J/MB": 1e-6, "uJ/kB": 1e-9},
         "per_request": {"J": 1.0, "mJ": 1e-3, "uJ": 1e-6, "nJ": 1e-9},
         "active_power": {"W": 1.0, "mW": 1e-3, "kW": 1e3},
         "idle_power": {"W": 1.0, "mW": 1e-3, "uW": 1e-6}}
JUNK = st.one_of(
    st.text(max_size=12), st.booleans(), st.none(), st.lists(st.integers(), max_size=2),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not math.isfinite(x) or x < 0),
    st.sampled_from(["5 W/B", "1 J/s", "3 nJ", "1e99 J", "-4 mW", "2 Wh/B", "1,5 W", "e3 J"]))


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(field=st.sampled_from(sorted(UNITS)), valid=st.booleans(),
       number=st.floats(min_value=0, max_value=1e6, allow_nan=False), unit_index=st.integers(0, 4),
       junk=JUNK)
def test_generated_energy_values_parse_or_are_one_clear_line(field, valid, number, unit_index,
                                                              junk):
    units = UNITS[field]
    unit = sorted(units)[unit_index % len(units)]
    value: object = f"{number!r} {unit}" if valid else junk
    energy: dict[str, object] = {field: value}
    if field == "idle_power":  # keep active >= idle for valid values
        energy["active_power"] = "2 kW"
    data = {"name": "g", "tiers": [RAM, {**DISK, "energy": energy}]}
    try:
        profile = profile_from_dict(data, file="g.yaml")
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("g.yaml:")
        assert f"tiers[1].energy.{field}" in message or "active_power" in message, message
        assert valid is False or number * units[unit] > 1e3, message  # only junk, or idle > active
        return
    parsed = getattr(profile.tier("disk").energy, field)
    if valid:
        assert parsed == pytest.approx(number * units[unit], rel=1e-9)
    else:  # junk that happens to be a quantity: a non-negative finite number
        assert parsed >= 0 and math.isfinite(parsed)


# ----------------------------------------------------------------------------- the model by hand

def test_block_energy_by_hand():
    disk, ram = TOY.tier("disk"), TOY.tier("ram")
    assert block_energy_j(disk, 3_000_000) == pytest.approx(0.0481, rel=1e-12)
    assert block_energy_j(disk, 3_000_000) == pytest.approx(DISK_3MB, rel=1e-12)
    assert block_energy_j(disk, 6_000_000) == pytest.approx(DISK_6MB, rel=1e-12)
    assert block_energy_j(ram, 3_000_000) == pytest.approx(RAM_3MB, rel=1e-12)
    bare = memsim.load_profile("paper-hypothetical").tier("disk")
    assert bare.energy is None and block_energy_j(bare, 10**6) == 0.0
    assert idle_power_w(TOY) == 1.0


def test_layout_energy_by_hand_on_a_two_tier_profile():
    fig = layout_energy(TOY, BANK, _layout({1: "ram", 2: "disk"}), rate=2.0)
    dynamic = RAM_3MB + DISK_6MB
    assert fig.dynamic_j_per_query == pytest.approx(dynamic, rel=1e-12)
    assert fig.idle_power_w == 1.0
    assert fig.average_power_w == pytest.approx(1.0 + 2.0 * dynamic, rel=1e-12)
    assert fig.j_per_query == pytest.approx(dynamic + 0.5, rel=1e-12)
    out = fig.to_json()
    assert out["energy_j_per_query"] == pytest.approx(dynamic + 0.5)
    assert out["dynamic_energy_j_per_query"] == pytest.approx(dynamic)
    assert out["idle_power_w"] == 1.0 and out["rate_queries_per_s"] == 2.0
    # no rate: no average power; the energy per query is the dynamic part
    bare = layout_energy(TOY, BANK, _layout({1: "ram", 2: "disk"}))
    assert bare.average_power_w is None and bare.to_json()["energy_j_per_query"] == dynamic
    # a resident level is fetched when the query switches block
    resident = _layout({1: "disk", 2: "disk"}, resident=[1])
    assert layout_energy(TOY, BANK, resident).dynamic_j_per_query == pytest.approx(DISK_6MB)
    switching = layout_energy(TOY, BANK, resident, kept_probability={1: 0.75})
    assert switching.dynamic_j_per_query == pytest.approx(0.25 * DISK_3MB + DISK_6MB)
    # a block map weighs a level by the share of its blocks on each tier: 4 of 16 in RAM
    moved = BlockMap(tiers=TOY.tier_names)
    moved.set_level(2, np.arange(4), np.zeros(4, dtype=int))
    mapped = _layout({1: "ram", 2: "disk"}).with_block_map(moved)
    assert layout_energy(TOY, BANK, mapped).dynamic_j_per_query == pytest.approx(
        RAM_3MB + 0.25 * RAM_6MB + 0.75 * DISK_6MB, rel=1e-12)
    assert layout_energy(memsim.load_profile("paper-hypothetical"), memsim.load_bank(
        "paper-storage-example"), memsim.load_layout("paper-flat")) is None
    with pytest.raises(InputError, match="kept probability"):
        layout_energy(TOY, BANK, resident, kept_probability={1: 1.5})


# ----------------------------------------------------------------------------- measured energy

def test_simulated_energy_matches_the_model_on_deterministic_tiers():
    # Aggregate bandwidth for every channel: transfers never share, so a request holds its
    # channel for exactly latency + overhead + part / bandwidth, as the model counts.
    tiers = [RAM, {**DISK, "aggregate_bandwidth": "200 MB/s"}]
    profile = profile_from_dict({"name": "det", "tiers": tiers})
    layout = _layout({1: "disk", 2: "disk"})
    want = layout_energy(profile, BANK, layout)
    exact = memsim.simulate(profile, BANK, layout, workload_from_dict(SLOW), queries=200,
                            seed=1, warmup=0.0)
    assert exact.energy.dynamic_j_per_query == pytest.approx(want.dynamic_j_per_query,
                                                             rel=1e-9)
    run = memsim.simulate(profile, BANK, layout, workload_from_dict(SLOW), queries=400, seed=2)
    assert run.energy.dynamic_j_per_query == pytest.approx(want.dynamic_j_per_query, rel=0.02)
    assert run.energy.idle_power_w == 1.0
    assert run.energy.rate == pytest.approx(400 / run.simulated_s)
    assert run.energy.average_power_w == pytest.approx(
        1.0 + 400 / run.simulated_s * run.energy.dynamic_j_per_query)
    assert run.to_json()["energy"] == run.energy.to_json()


def test_simulated_energy_with_latency_distributions_is_close_to_the_model():
    disk = {**DISK, "aggregate_bandwidth": "200 MB/s", "latency": {"p50": "4 ms", "p99": "9 ms"}}
    profile = profile_from_dict({"name": "lognormal", "tiers": [RAM, disk]})
    layout = _layout({1: "ram", 2: "disk"})
    want = layout_energy(profile, BANK, layout).dynamic_j_per_query
    run = memsim.simulate(profile, BANK, layout, workload_from_dict(SLOW), queries=1000, seed=3)
    assert run.energy.dynamic_j_per_query == pytest.approx(want, rel=0.03)


# ----------------------------------------------------------------------------- reports

def test_estimate_reports_energy_at_the_workloads_rate():
    layout = _layout({1: "ram", 2: "disk"})
    est = memsim.estimate(TOY, BANK, layout, workload=workload_from_dict(SLOW))
    assert est.energy == layout_energy(TOY, BANK, layout, rate=0.5)
    assert est.to_json()["energy"]["average_power_w"] == pytest.approx(
        1.0 + 0.5 * (RAM_3MB + DISK_6MB))
    closed = workload_from_dict({"arrivals": {"kind": "closed", "clients": 2,
                                              "think_time": "1 s"}})
    assert memsim.estimate(TOY, BANK, layout, workload=closed).energy.rate is None
    # resident levels are mixed by their switch probability, as the fetch time is
    resident = _layout({1: "disk", 2: "disk"}, resident=[1])
    mixed = memsim.estimate(TOY, BANK, resident, workload=workload_from_dict(SLOW))
    switch = mixed.switch_probability[1]
    assert 0 < switch < 1
    assert mixed.energy.dynamic_j_per_query == pytest.approx(switch * DISK_3MB + DISK_6MB)


def test_no_energy_figures_give_null_and_no_line(paper_profile, paper_bank):
    layout = memsim.load_layout("paper-hierarchical")
    est = memsim.estimate(paper_profile, paper_bank, layout)
    assert est.energy is None and est.to_json()["energy"] is None
    run = memsim.simulate(paper_profile, paper_bank, layout, workload_from_dict(SLOW),
                          queries=50, seed=1)
    assert run.energy is None and run.to_json()["energy"] is None
    from memsim.cli.tables import estimate_text, simulation_text

    assert "energy" not in estimate_text(est) and "energy" not in simulation_text(run)


@pytest.fixture
def toy_files(tmp_path: Path) -> dict[str, str]:
    files = {"profile": {"name": "toy", "tiers": [RAM, DISK]}, "bank": BANK_DATA,
             "layout": {"name": "t", "placement": {1: "ram", 2: "disk"}},
             "workload": SLOW}
    out = {}
    for kind, data in files.items():
        path = tmp_path / f"{kind}.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        out[kind] = str(path)
    return out


def _args(files: dict[str, str]) -> list[str]:
    return ["--profile", files["profile"], "--bank", files["bank"], "--layout", files["layout"],
            "--workload", files["workload"]]


def test_estimate_cli_prints_one_energy_line_and_json(cli, toy_files):
    text = cli("estimate", *_args(toy_files))
    assert text.exit_code == 0, text.stderr
    lines = [line for line in text.stdout.splitlines() if line.startswith("energy")]
    dynamic = RAM_3MB + DISK_6MB
    assert lines == [f"energy: {format_energy(dynamic + 2.0)} per query, average power "
                     f"{format_power(1.0 + 0.5 * dynamic)} at 0.5 queries/s"]
    out = json.loads(cli("estimate", *_args(toy_files), "--json").stdout)
    assert out["energy"]["dynamic_energy_j_per_query"] == pytest.approx(dynamic)
    assert out["energy"]["energy_j_per_query"] == pytest.approx(dynamic + 2.0)
    without = cli("estimate", *_args(toy_files)[:-2])
    assert [line for line in without.stdout.splitlines() if line.startswith("energy")] == [
        f"energy: {format_energy(dynamic)} per query, idle power 1 W (a workload's rate gives "
        "the average power)"]


def test_simulate_cli_prints_the_measured_energy(cli, toy_files):
    text = cli("simulate", *_args(toy_files), "--queries", "60")
    assert text.exit_code == 0, text.stderr
    lines = [line for line in text.stdout.splitlines() if line.startswith("energy")]
    assert len(lines) == 1 and lines[0].startswith("energy (measured): ")
    assert "average power" in lines[0] and "queries/s" in lines[0]
    out = json.loads(cli("simulate", *_args(toy_files), "--queries", "60", "--json").stdout)
    energy = out["energy"]
    assert set(energy) == {"energy_j_per_query", "dynamic_energy_j_per_query", "idle_power_w",
                           "average_power_w", "rate_queries_per_s"}
    assert energy["idle_power_w"] == 1.0
    assert energy["average_power_w"] == pytest.approx(
        1.0 + energy["rate_queries_per_s"] * energy["dynamic_energy_j_per_query"])


def test_energy_figures_without_a_rate():
    fig = EnergyFigures(dynamic_j_per_query=0.2, idle_power_w=0.1)
    assert fig.average_power_w is None and fig.j_per_query is None
    assert fig.to_json() == {"energy_j_per_query": 0.2, "dynamic_energy_j_per_query": 0.2,
                             "idle_power_w": 0.1, "average_power_w": None,
                             "rate_queries_per_s": None}
