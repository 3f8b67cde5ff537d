"""Device profiles: shipped ones validate and cite sources; bad ones are named precisely."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

import memsim
from memsim.errors import InputError
from memsim.latency import EmpiricalLatency, LognormalLatency
from memsim.resources import shipped_names

PROFILES = Path(__file__).resolve().parents[1] / "device_profiles"
SHIPPED = ["paper-hypothetical", "phone", "laptop", "workstation"]


def test_required_profiles_are_shipped():
    assert set(SHIPPED) <= set(shipped_names("device_profiles"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_with_ram_first(name):
    profile = memsim.load_profile(name)
    assert profile.tiers[0].kind == "ram"
    kinds = [t.kind for t in profile.tiers]
    assert kinds.count("ram") == 1 and "cloud" in kinds
    assert all(t.source for t in profile.tiers)


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_number_carries_a_source_comment(path):
    """A line with a number in its value has a comment on it or right above it."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        code = line.split("#", 1)[0]
        if ":" not in code:
            continue
        value = code.split(":", 1)[1]
        key = code.split(":", 1)[0].strip().lstrip("- ")
        if key in {"name", "description", "source", "store"} or not re.search(r"\d", value):
            continue
        above = lines[i - 1].strip() if i else ""
        assert "#" in line or above.startswith("#"), f"{path.name}:{i + 1}: no source: {line}"


SHIPPED_YAML = sorted([*PROFILES.glob("*.yaml"),
                       *(Path(memsim.__file__).parent / "presets").rglob("*.yaml")])


@pytest.mark.parametrize("path", SHIPPED_YAML, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_files_cite_public_sources_not_project_notes(path):
    """Citations name the public source itself (datasheet, paper, vendor page): the project's
    own reference notes (shared/reference/*.md) are not shipped and mean nothing to a user."""
    text = path.read_text()
    for note in ("shared/reference", "devices-and-stores.md", "hierarchical-memories.md"):
        assert note not in text, f"{path.name} cites {note}"


def test_paper_profile_matches_the_reconstruction(paper_profile):
    rates = {t.name: t.bandwidth for t in paper_profile.tiers}
    assert rates["flash"] == 4e9 and rates["disk"] == 1e9 and rates["cloud"] == 250e6
    assert paper_profile.tier("cloud").capacity is None
    assert math.isinf(paper_profile.tier("cloud").capacity_bytes)


def _profile(tmp_path: Path, tier_lines: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text("name: test\ntiers:\n  - name: ram\n    kind: ram\n" + tier_lines)
    return path


@pytest.mark.parametrize(
    ("lines", "line", "field", "words"),
    [
        ("    bandwidth: 0 GB/s\n", 5, "tiers[0].bandwidth", "positive"),
        ("    bandwidth: -4 GB/s\n", 5, "tiers[0].bandwidth", "negative"),
        ("    bandwidth: .nan\n", 5, "tiers[0].bandwidth", "finite"),
        ("    bandwidth: 4 GBs\n", 5, "tiers[0].bandwidth", "GBs"),
        ("    bandwidth: 4 GB/s\n    colour: red\n", 6, "tiers[0].colour", "unknown field"),
        ("    bandwidth: 4 GB/s\n    capacity: 12 parsecs\n", 6, "tiers[0].capacity", "parsecs"),
        ("    bandwidth: 4 GB/s\n    latency: {p50: 2 ms, p99: 1 ms}\n", 6, "tiers[0].latency",
         "p99"),
        ("    bandwidth: 4 GB/s\n    concurrency: 0\n", 6, "tiers[0].concurrency", "1"),
        ("", 3, "tiers[0].bandwidth", "missing"),
    ],
)
def test_bad_profile_names_file_line_and_field(tmp_path, lines, line, field, words):
    path = _profile(tmp_path, lines)
    with pytest.raises(InputError) as info:
        memsim.load_profile(path)
    err = info.value
    assert err.file == str(path)
    assert err.line == line
    assert err.field == field
    assert words in str(err)


def test_unknown_tier_kind(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text("name: x\ntiers:\n  - name: t\n    kind: tape\n    bandwidth: 1 GB/s\n")
    with pytest.raises(InputError, match="ram") as info:
        memsim.load_profile(path)
    assert (info.value.line, info.value.field) == (4, "tiers[0].kind")


def test_malformed_yaml_and_duplicates(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntiers: [\n")
    with pytest.raises(InputError, match="malformed YAML"):
        memsim.load_profile(path)
    path.write_text("name: x\nname: y\ntiers: []\n")
    with pytest.raises(InputError, match="duplicate key") as info:
        memsim.load_profile(path)
    assert info.value.line == 2


def test_duplicate_tier_names(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: x\ntiers:\n  - {name: a, kind: ram, bandwidth: 1 GB/s}\n"
                    "  - {name: a, kind: disk, bandwidth: 1 GB/s}\n")
    with pytest.raises(InputError, match="used twice"):
        memsim.load_profile(path)


def test_unknown_name_lists_shipped_profiles():
    with pytest.raises(InputError, match="paper-hypothetical"):
        memsim.load_profile("no-such-profile")


def test_lognormal_fit_reproduces_its_quantiles():
    lat = LognormalLatency(p50=1e-3, p99=5e-3)
    assert lat.quantile(0.5) == pytest.approx(1e-3)
    assert lat.quantile(0.99) == pytest.approx(5e-3)
    samples = lat.sample(np.random.default_rng(1), 400_000)
    assert np.percentile(samples, 99) == pytest.approx(5e-3, rel=0.03)
    assert samples.mean() == pytest.approx(lat.mean(), rel=0.01)


def test_empirical_latency_interpolates_and_clamps():
    lat = EmpiricalLatency(quantiles={"p0": 1.0, "p50": 2.0, "p100": 4.0})
    assert lat.quantile(0.25) == pytest.approx(1.5)
    assert lat.mean() == pytest.approx(0.5 * 1.5 + 0.5 * 3.0)
    samples = lat.sample(np.random.default_rng(0), 200_000)
    assert samples.min() >= 1.0 and samples.max() <= 4.0
    assert samples.mean() == pytest.approx(lat.mean(), rel=0.01)
    with pytest.raises(ValueError):
        EmpiricalLatency(quantiles={"p50": 2.0, "p90": 1.0})


def test_short_latency_forms(tmp_path):
    path = _profile(tmp_path, "    bandwidth: 1 GB/s\n    latency: {quantiles: {p50: 1 ms, "
                    "p99: 3 ms}}\n  - {name: d, kind: disk, bandwidth: 1 GB/s, latency: "
                    "{distribution: exponential, mean: 2 ms}}\n")
    profile = memsim.load_profile(path)
    assert profile.tiers[0].latency.quantile(0.99) == pytest.approx(3e-3)
    assert profile.tiers[1].latency.mean() == pytest.approx(2e-3)


def test_with_tier_validates_what_if_changes():
    profile = memsim.load_profile("laptop")
    name = profile.tiers[1].name
    faster = profile.with_tier(name, bandwidth="20 GB/s", aggregate_bandwidth="20 GB/s")
    assert faster.tier(name).bandwidth == 20e9
    assert faster.tiers[2:] == profile.tiers[2:]
    with pytest.raises(InputError, match="positive"):
        profile.with_tier(name, bandwidth="0 GB/s")
    with pytest.raises(InputError, match="unknown tier"):
        profile.with_tier("tape", bandwidth="1 GB/s")
