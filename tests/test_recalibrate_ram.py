"""validate --recalibrate with a RAM tier on memory://: the RAM tier lives in this process, so
it is neither recalibrated nor read by the recalibration; replay fills it as usual."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from realio_helpers import ANCHOR, fresh_memory  # noqa: F401 (fixtures)

import memsim
from memsim.calibrate.onbank import calibrate_on_bank, default_tiers
from memsim.cli import main
from memsim.errors import InputError
from memsim.materialize import materialize
from memsim.stores import forget

BANK = memsim.bank_from_dict({"name": "tiny", "branching": 4, "levels": [4, 2, 1],
                              "anchor": ANCHOR})
LAYOUT = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "ram", 3: "disk"},
                                  "chunking": {3: 16}})


def profile(root: Path, ram_store: str | None = None) -> memsim.Profile:
    ram = {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"}
    if ram_store:
        ram["store"] = ram_store
    return memsim.profile_from_dict({"name": "p", "tiers": [
        ram,
        {"name": "disk", "kind": "disk", "bandwidth": "1 GB/s", "latency": "100 us",
         "concurrency": 2, "store": f"file://{root}/disk"},
    ]})




@pytest.mark.parametrize("ram_store", [None, "memory://bank-ram"])
def test_recalibration_skips_an_unfilled_memory_tier(tmp_path, ram_store):
    """Before: the pilot opened every tier's store, and a memory tier not filled in this
    process (a new `memsim validate` after `memsim materialize`) failed with "run memsim
    materialize first" (exit 6)."""
    prof = profile(tmp_path, ram_store)
    materialize(prof, BANK, LAYOUT)
    forget()  # as a new process sees it: the RAM tier is empty
    assert default_tiers(prof, BANK, LAYOUT) == ["disk"]
    new, done = calibrate_on_bank(prof, BANK, LAYOUT, samples=20, cold=False)
    assert list(done) == ["disk"] and done["disk"].reads == 20
    assert new.tier("ram") == prof.tier("ram")
    with pytest.raises(InputError, match="lives in this process"):
        calibrate_on_bank(prof, BANK, LAYOUT, ["ram"], samples=20, cold=False)


def test_cli_validate_recalibrate_with_a_memory_ram_tier(tmp_path):
    prof = profile(tmp_path / "s", "memory://bank-ram")
    (tmp_path / "p.yaml").write_text(json.dumps(prof.model_dump(mode="json",
                                                                exclude_none=True)))
    (tmp_path / "b.yaml").write_text(json.dumps(BANK.model_dump(mode="json")))
    LAYOUT.save(tmp_path / "l.yaml")
    (tmp_path / "w.yaml").write_text(json.dumps(
        {"name": "w", "arrivals": {"kind": "poisson", "rate": "200/s"}}))
    base = ["--layout", str(tmp_path / "l.yaml"), "--profile", str(tmp_path / "p.yaml"),
            "--bank", str(tmp_path / "b.yaml")]
    runner = CliRunner()
    assert runner.invoke(main, ["materialize", *base]).exit_code == 0
    forget()
    out = runner.invoke(main, ["validate", *base, "--workload", str(tmp_path / "w.yaml"),
                               "--queries", "40", "--recalibrate", "--warm", "--json"])
    assert out.exit_code == 0, out.output  # the verdict is in the output, not the exit code
    doc = json.loads(out.stdout)
    assert list(doc["recalibrated"]) == ["disk"]
