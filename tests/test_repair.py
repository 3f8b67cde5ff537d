"""materialize --repair: after verify finds bad blocks, rewrite exactly the objects holding
them, report what it rewrote, and verify passes again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from realio_helpers import ANCHOR, fresh_memory, local_profile  # noqa: F401 (fixtures)

import memsim
from memsim.cli import main
from memsim.materialize import SyntheticContent, materialize
from memsim.materialize.verify import verify

BANK = memsim.bank_from_dict({"name": "tiny", "branching": 4, "levels": [4, 2, 1],
                              "anchor": ANCHOR})
# level 2 (16 blocks) on flash, one object per block; level 3 (64 blocks) on disk in shards
# of 16 blocks
LAYOUT = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "flash", 3: "disk"},
                                  "chunking": {3: 16}})


profile = local_profile




def damage(root: Path) -> dict[str, float]:
    """Corrupt one block object, delete another and flip a byte inside one shard; the files'
    modification times of everything else, to show that nothing else is rewritten."""
    block5 = root / "flash" / "L2" / "c" / "5" / "0"
    raw = bytearray(block5.read_bytes())
    raw[100] ^= 0xFF
    block5.write_bytes(bytes(raw))
    (root / "flash" / "L2" / "c" / "9" / "0").unlink()
    shard2 = root / "disk" / "L3" / "c" / "2" / "0"
    raw = bytearray(shard2.read_bytes())
    raw[7] ^= 0x01  # inside the shard's first block (level 3 block 32)
    shard2.write_bytes(bytes(raw))
    return {str(f): f.stat().st_mtime_ns for f in root.rglob("*") if f.is_file()}


def test_repair_rewrites_exactly_the_bad_objects(tmp_path):
    prof = profile(tmp_path)
    materialize(prof, BANK, LAYOUT, content=SyntheticContent(BANK, 7))
    before = damage(tmp_path)
    bad = verify(prof, BANK, LAYOUT).bad
    assert {(b.tier, b.depth, b.block) for b in bad} == {("flash", 2, 5), ("flash", 2, 9),
                                                          ("disk", 3, 32)}
    plain = materialize(prof, BANK, LAYOUT, content=SyntheticContent(BANK, 7))
    assert plain.tiers["flash"].bytes_written == 0  # resuming alone does not see the damage
    result = materialize(prof, BANK, LAYOUT, repair=True)  # the content the stores record
    flash, disk = result.tiers["flash"], result.tiers["disk"]
    assert (flash.objects_repaired, flash.blocks_repaired, flash.bad_found) == (2, 2, 2)
    assert (disk.objects_repaired, disk.blocks_repaired, disk.bad_found) == (1, 16, 1)
    assert flash.manifest_repaired == disk.manifest_repaired == 0
    assert result.bytes_written == 2 * BANK.level(2).block_bytes + 16 * BANK.level(3).block_bytes
    changed = {f for f, t in before.items() if Path(f).exists()
               and Path(f).stat().st_mtime_ns != t}
    rewritten = {str(tmp_path / "flash/L2/c/5/0"), str(tmp_path / "disk/L3/c/2/0")}
    assert changed == rewritten
    assert (tmp_path / "flash/L2/c/9/0").exists()
    assert verify(prof, BANK, LAYOUT).ok
    # the bytes are the recorded content's (seed 7), not the default seed's
    from memsim.aio import run_sync
    from memsim.replay.reader import BankReader
    from memsim.stores import tier_stores

    reader = BankReader(prof, BANK, LAYOUT, tier_stores(prof, ["ram", "flash", "disk"]),
                        check_rate=1.0).open()
    got = run_sync(reader.read_block(3, 32))
    reader.close()
    assert got == SyntheticContent(BANK, 7).blocks(3, np.array([32]))[0].tobytes()
    again = materialize(prof, BANK, LAYOUT, repair=True)
    assert sum(t.objects_repaired for t in again.tiers.values()) == 0
    assert again.tiers["disk"].bytes_written == again.tiers["flash"].bytes_written == 0


def test_repair_fixes_a_wrong_manifest_entry(tmp_path):
    prof = profile(tmp_path)
    materialize(prof, BANK, LAYOUT)
    crc = tmp_path / "flash" / "L2.crc32c" / "c" / "0"
    raw = bytearray(crc.read_bytes())
    raw[4 * 3] ^= 0xFF  # row 3's checksum
    crc.write_bytes(bytes(raw))
    assert [b.block for b in verify(prof, BANK, LAYOUT).bad] == [3]
    result = materialize(prof, BANK, LAYOUT, repair=True)
    assert result.tiers["flash"].objects_repaired == 1
    assert result.tiers["flash"].manifest_repaired == 1
    assert verify(prof, BANK, LAYOUT).ok


def test_cli_verify_then_repair(tmp_path):
    prof = profile(tmp_path / "s")
    (tmp_path / "p.yaml").write_text(json.dumps(prof.model_dump(mode="json",
                                                                exclude_none=True)))
    (tmp_path / "b.yaml").write_text(json.dumps(BANK.model_dump(mode="json")))
    LAYOUT.save(tmp_path / "l.yaml")
    base = ["--layout", str(tmp_path / "l.yaml"), "--profile", str(tmp_path / "p.yaml"),
            "--bank", str(tmp_path / "b.yaml")]
    runner = CliRunner()
    assert runner.invoke(main, ["materialize", *base, "--seed", "3"]).exit_code == 0
    damage(tmp_path / "s")
    out = runner.invoke(main, ["verify", *base])
    assert out.exit_code == 6
    assert "3 bad blocks found; `memsim materialize --repair` rewrites them" in out.output
    out = runner.invoke(main, ["materialize", *base, "--repair"])
    assert out.exit_code == 0, out.output
    assert "repaired: flash 2 objects (2 blocks, 2 bad), disk 1 object (16 blocks, 1 bad)" \
        in out.output
    assert runner.invoke(main, ["verify", *base]).exit_code == 0
    out = runner.invoke(main, ["materialize", *base, "--repair", "--json"])
    doc = json.loads(out.stdout)  # stdout only: a warning of a loaded machine goes to stderr
    assert doc["tiers"]["disk"]["objects_repaired"] == 0 and doc["bytes_written"] == 0
    out = runner.invoke(main, ["materialize", *base, "--repair", "--overwrite"])
    assert out.exit_code == 2 and "not both" in out.output
    # a different seed is a different bank: refused, as without --repair
    out = runner.invoke(main, ["materialize", *base, "--repair", "--seed", "4"])
    assert out.exit_code == 5 and "different bank" in out.output


def test_repair_on_s3_through_the_emulator(tmp_path, monkeypatch):
    from memsim.emulate import LocalS3

    with LocalS3() as s3:
        for key, value in s3.env().items():
            monkeypatch.setenv(key, value)
        prof = memsim.profile_from_dict({"name": "p", "tiers": [
            {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
            {"name": "cloud", "kind": "cloud", "bandwidth": "100 MB/s", "latency": "20 ms",
             "concurrency": 8, "store": "s3://memsim/repair"}]})
        lay = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "cloud",
                                                                  3: "cloud"},
                                       "chunking": {3: 16}})
        materialize(prof, BANK, lay)
        client = s3.client(direct=True)
        client.delete_object(Bucket="memsim", Key="repair/L2/c/4/0")
        key = "repair/L3/c/1/0"
        raw = bytearray(client.get_object(Bucket="memsim", Key=key)["Body"].read())
        raw[10] ^= 0xFF
        client.put_object(Bucket="memsim", Key=key, Body=bytes(raw))
        assert {(b.depth, b.block) for b in verify(prof, BANK, lay).bad} == {(2, 4), (3, 16)}
        s3.proxy.clear_log()
        result = materialize(prof, BANK, lay, repair=True)
        cloud = result.tiers["cloud"]
        assert (cloud.objects_repaired, cloud.blocks_repaired) == (2, 17)
        puts = sorted(r.path.split("?")[0] for r in s3.proxy.requests if r.method == "PUT"
                      and "memsim-probe" not in r.path)  # the write check's probe
        assert puts == ["/memsim/repair/L2/c/4/0", "/memsim/repair/L3/c/1/0"]
        assert verify(prof, BANK, lay).ok
