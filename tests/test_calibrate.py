"""memsim calibrate: real reads fitted to the tier model, profiles with sources, clean failures.

The fit is checked on points of memsim's own model (it must recover the parameters); the
cloud test runs the machinery on the emulated cloud with bounds no machine load can break
(benchmarks/bench_calibrate.py prints how close the fit comes to the emulator's settings).
Local tests use a temporary directory with the quick preset. Every failure test checks one
clear line, the exit code, and that nothing was left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket

import click
import numpy as np
import pytest
from click.testing import CliRunner

import memsim
from memsim.calibrate import calibrate
from memsim.calibrate import fit as fit_mod
from memsim.calibrate import measure as measure_mod
from memsim.cli.calibrate import calibrate_cmd
from memsim.emulate import Faults, LocalS3
from memsim.stores import forget, open_store

KiB, MiB = 1 << 10, 1 << 20
DELAY, BANDWIDTH = 0.02, 100e6
OBJECT = 5 * MiB  # the emulated cloud's scratch object (moto slows with object size)


@pytest.fixture(scope="module")
def group() -> click.Group:
    """A group of our own with only `calibrate`."""
    g = click.Group()
    g.add_command(calibrate_cmd)
    return g


@pytest.fixture
def run(group):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(group, ["calibrate", *args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="module")
def s3():
    with LocalS3(delay=DELAY, bandwidth=BANDWIDTH) as server, pytest.MonkeyPatch.context() as env:
        for key, value in server.env().items():
            env.setenv(key, value)
        yield server


def _objects(s3: LocalS3, prefix: str) -> list[str]:
    listing = s3.client(direct=True).list_objects_v2(Bucket="memsim", Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def _one_clear_line(result, code: int, words: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memsim: error: "), result.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ the emulated cloud
def test_cloud_calibration_writes_a_cloud_tier_and_removes_its_objects(s3):
    """The machinery on the emulated cloud: a fitted cloud tier with its store and record,
    and no scratch object left. How close the fit comes to the emulator's delay and bandwidth
    is this machine's timing, printed by benchmarks/bench_calibrate.py; here only bounds no
    machine load can break: the proxy's round trip (2 x delay) is a floor under every read,
    and pacing caps the bandwidth."""
    result = calibrate({"cloud": "s3://memsim/calib"}, sizes=[4 * KiB, 256 * KiB, MiB],
                       concurrencies=[1, 2], samples=4, object_size=OBJECT,
                       latency_samples=8, gap_ratio=0.25)
    fit = result.tiers["cloud"].fit
    assert fit.latency_p50_s >= 2 * DELAY * 0.9
    assert 0 < fit.bandwidth < 3 * BANDWIDTH
    assert np.isfinite(fit.residual_c1)
    tier = result.profile.tier("cloud")
    assert tier.kind == "cloud" and tier.capacity is None and tier.store == "s3://memsim/calib"
    assert tier.calibration["cold_mode"] == "s3"
    assert _objects(s3, "calib/") == []  # the scratch objects are gone


def test_interrupted_cloud_calibration_removes_its_object(s3, monkeypatch):
    s3.proxy.configure(delay=0.0, bandwidth=None)
    try:
        _interrupt_after(monkeypatch, 20)
        with pytest.raises(KeyboardInterrupt):
            calibrate({"cloud": "s3://memsim/interrupted"}, quick=True)
    finally:
        s3.proxy.configure(delay=DELAY, bandwidth=BANDWIDTH, faults=Faults())
    assert _objects(s3, "interrupted/") == []


def _synthetic(bandwidth: float, aggregate: float, channels: int, p50: float, p99: float,
               seed: int = 0) -> measure_mod.Measurements:
    """Reads drawn from memsim's own tier model: c streams reading back to back, a request
    waiting its turn when more than `channels` are out, transfers sharing the aggregate."""
    rng = np.random.default_rng(seed)
    sigma = np.log(p99 / p50) / 2.3263
    sizes, conc, secs, started, stream = [], [], [], [], []
    for c in (1, 2, 4, 8, 16, 32):
        for size in (4 * KiB, 64 * KiB, MiB, 16 * MiB, 64 * MiB):
            n = 400 if c == 1 else 4 * c  # many single reads: p99 needs them
            lat = p50 * np.exp(sigma * rng.standard_normal(n))
            k = min(c, channels)
            t = (lat + size / min(bandwidth, aggregate / k)) * max(1.0, c / channels)
            owner = np.arange(n) % c
            begin = np.zeros(n)
            for j in range(c):
                mine = owner == j
                begin[mine] = np.concatenate([[0.0], np.cumsum(t[mine])[:-1]])
            sizes.append(np.full(n, size))
            conc.append(np.full(n, c))
            secs.append(t)
            started.append(begin)
            stream.append(owner)
    return measure_mod.Measurements(
        url="synthetic", mode="model", sizes=np.concatenate(sizes),
        concurrency=np.concatenate(conc), seconds=np.concatenate(secs),
        started=np.concatenate(started), stream=np.concatenate(stream))


@pytest.mark.parametrize("rule", ["iops", "fit"])
def test_fit_recovers_the_parameters_of_memsims_own_model(rule):
    """Independent of any device: reads drawn from the model itself give its parameters back."""
    truth = {"bandwidth": 500e6, "aggregate": 2e9, "channels": 8, "p50": 1e-3, "p99": 1.5e-3}
    fit = fit_mod.fit(_synthetic(**truth), rule)
    assert fit.bandwidth == pytest.approx(truth["bandwidth"], rel=0.02)
    assert fit.aggregate_bandwidth == pytest.approx(truth["aggregate"], rel=0.02)
    assert fit.concurrency == truth["channels"]
    assert fit.latency_p50_s == pytest.approx(truth["p50"], rel=0.10)
    assert fit.latency_p99_s == pytest.approx(truth["p99"], rel=0.25)
    assert fit.residual_all < 0.10


# ------------------------------------------------------------------ a local directory
def _sourced(text: str) -> None:
    """Each line with a number in its value, outside the calibration record, has a comment
    on it or right above it (the rule shipped profiles follow)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "calibration:":
            indent = len(line) - len(line.lstrip())
            j = i + 1
            while j < len(lines) and len(lines[j]) - len(lines[j].lstrip()) > indent:
                lines[j] = ""
                j += 1
    for i, line in enumerate(lines):
        code = line.split("#", 1)[0]
        if ":" not in code:
            continue
        key, value = (part.strip() for part in code.split(":", 1))
        key = key.lstrip("- ")
        if key in {"name", "description", "source", "store"} or not re.search(r"\d", value):
            continue
        above = lines[i - 1].strip() if i else ""
        assert "#" in line or above.startswith("#"), f"line {i + 1} has no source: {line}"


def test_quick_local_calibration_writes_a_sourced_profile_and_a_plot(run, tmp_path):
    target = tmp_path / "disk"
    out, png = tmp_path / "p.yaml", tmp_path / "p.png"
    result = run(f"disk=file://{target}", "ram=memory://calibrate-test", "--quick",
                 "--samples", "4", "--out", str(out), "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout and "fit: bandwidth" in result.stdout
    profile = memsim.load_profile(out)
    assert profile.tier_names == ["ram", "disk"]  # RAM first, as profiles list tiers
    disk = profile.tier("disk")
    assert disk.store == f"file://{target}" and disk.kind == "flash"
    assert disk.bandwidth > 0 and disk.latency.quantile(0.5) > 0 and disk.concurrency >= 1
    record = disk.calibration
    assert record["cold_mode"] in {"o_direct", "fadvise"}
    assert record["sizes_bytes"] == [4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB]
    assert record["concurrencies"] == [1, 4] and record["reads"] > 0
    assert {"concurrency_1", "all_points"} <= set(record["residuals"])
    assert len(record["points"]) == 10 and record["host"] == socket.gethostname()
    text = out.read_text()
    assert "# measured by memsim calibrate on" in text
    _sourced(text)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not target.exists()  # made for the test file, removed with it
    assert open_store("memory://calibrate-test").data == {}
    forget("calibrate-test")


def test_python_api_and_json(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    result = calibrate({"d": f"file://{target}"}, quick=True, samples=3, kinds={"d": "disk"})
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]  # others' files stay
    assert result.profile.tier("d").kind == "disk"
    assert result.tiers["d"].measurements.reads == result.plan.total_reads
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert data["tiers"]["d"]["fit"]["bandwidth_bytes_per_s"] > 0
    saved = result.save(tmp_path / "x.yaml")
    assert memsim.load_profile(saved).tier("d") == result.profile.tier("d")
    assert any("no RAM tier" in n for n in result.notes)


def test_calibrate_works_inside_a_running_event_loop():
    """Notebooks run an event loop; calibrate must still work from a cell."""
    import asyncio

    async def cell():
        return calibrate({"ram": "memory://calibrate-loop"}, quick=True, samples=3)

    result = asyncio.run(cell())
    assert result.profile.tier("ram").kind == "ram"
    forget("calibrate-loop")


# ------------------------------------------------------------------ fio beside memsim
@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (apt-get install "
                    "fio); the cross-check needs it")
def test_fio_figures_beside_memsim(run, tmp_path):
    target = tmp_path / "fio"
    result = run(f"disk=file://{target}", "--fio", "--quick", "--sizes", "4KiB,1MiB",
                 "--concurrency", "1,2", "--samples", "4", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = data["tiers"]["disk"]["fio_vs_memsim"]
    assert {(r["size_bytes"], r["concurrency"]) for r in rows} == {
        (4 * KiB, 1), (4 * KiB, 2), (MiB, 1), (MiB, 2)}
    assert all(r["fio_p50_s"] > 0 and r["fio_bytes_per_s"] > 0 for r in rows)
    assert not target.exists()
    text = run(f"disk=file://{target}", "--fio", "--quick", "--sizes", "4KiB,64KiB",
               "--concurrency", "1", "--samples", "3")
    assert text.exit_code == 0 and "fio (psync, " in text.stdout and "fio p50" in text.stdout
    assert not target.exists()


def test_fio_missing_is_said_clearly(run, tmp_path, monkeypatch):
    monkeypatch.setattr("memsim.calibrate.fio.shutil.which", lambda name: None)
    target = tmp_path / "d"
    _one_clear_line(run(f"disk=file://{target}", "--fio", "--quick"), 2, "fio is not installed")
    assert not target.exists()


# ------------------------------------------------------------------ bad input, nothing left
def test_unreachable_s3_endpoint(run, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run(f"cloud=s3://memsim/x?endpoint=http://127.0.0.1:{port}", "--quick")
    _one_clear_line(result, 5, "cannot reach")


def test_unwritable_directory(run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_clear_line(run(f"disk=file://{blocker}/sub", "--quick"), 5, "not a directory")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        _one_clear_line(run(f"disk=file://{locked}", "--quick"), 5, "permission denied")
        assert list(locked.iterdir()) == []


def test_too_little_free_space(run, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(measure_mod.shutil, "disk_usage",
                        lambda path: usage._replace(free=1 * MiB))
    target = tmp_path / "d"
    _one_clear_line(run(f"disk=file://{target}", "--quick"), 5, "not enough free space")
    assert not target.exists()


def _interrupt_after(monkeypatch, reads: int) -> None:
    """Ctrl-C in the middle of the measuring loop, after `reads` timed reads."""
    real = measure_mod.timed_read
    count = [0]

    async def flaky(*args, **kwargs):
        count[0] += 1
        if count[0] > reads:
            raise KeyboardInterrupt
        return await real(*args, **kwargs)

    monkeypatch.setattr(measure_mod, "timed_read", flaky)


def test_ctrl_c_leaves_nothing_behind(run, tmp_path, monkeypatch):
    target = tmp_path / "new" / "dir"
    _interrupt_after(monkeypatch, 20)
    result = run(f"disk=file://{target}", "--quick")
    _one_clear_line(result, 130, "interrupted")
    assert list(tmp_path.iterdir()) == []  # the file and both directories made for it
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(KeyboardInterrupt):
        calibrate({"disk": f"file://{kept}"}, quick=True)
    assert kept.is_dir() and list(kept.iterdir()) == []


@pytest.mark.parametrize(("args", "field", "words"), [
    (["disk"], "tiers", "expected TIER=URL"),
    (["disk=ftp://host/x"], "tiers.disk", "not supported"),
    (["a=file://DIR", "b=file://DIR/"], "tiers", "share the store"),
    (["disk=file://DIR", "--kind", "disk=tape"], "kind", "unknown tier kind"),
    (["disk=file://DIR", "--kind", "other=disk"], "kind", "not measured"),
    (["disk=file://DIR", "--concurrency", "2,4"], "concurrency", "must include 1"),
    (["disk=file://DIR", "--sizes", "4K,1M"], "sizes", "4KiB"),
    (["disk=file://DIR", "--samples", "1"], "samples", "at least 2"),
    (["disk=file://DIR", "--max-size", "1 KiB"], "max-size", "no request size"),
    ([], "tiers", "at least one tier"),
])
def test_bad_arguments(run, tmp_path, args, field, words):
    target = tmp_path / "d"
    result = run(*(a.replace("DIR", str(target)) for a in args))
    _one_clear_line(result, 2, words)
    assert f"field '{field}'" in result.stderr
    assert not target.exists()


# ------------------------------------------------------------------ on the bank's own blocks
def test_calibrate_on_bank_recovers_a_known_service_time(tmp_path, monkeypatch):
    """Every read of the disk tier made to take 4 ms more (inside the reading thread, as a
    slow device would): the refitted latency's median is at least that (a sleep is a floor no
    load can lower; a busy machine only adds to it, so the upper bounds are generous); other
    tiers are untouched; only the disk tier's bank objects are read."""
    import time as time_mod

    from memsim.calibrate.onbank import calibrate_on_bank, default_tiers
    from memsim.errors import InputError
    from memsim.materialize import materialize
    from memsim.stores.local import LocalByteStore

    forget()
    bank = memsim.bank_from_dict({"name": "b", "branching": 4, "levels": [0, 4, 1],
                                  "anchor": {"name": "a", "layers": 1, "d_model": 512,
                                             "d_ff": 1, "heads": 1, "head_dim": 1}})
    prof = memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
         "concurrency": 2, "store": f"file://{tmp_path}/flash"},
        {"name": "disk", "kind": "disk", "bandwidth": "10 GB/s", "latency": "1 ms",
         "concurrency": 1, "store": f"file://{tmp_path}/disk"}]})
    lay = memsim.layout_from_dict({"name": "l", "placement": {2: "flash", 3: "disk"}})
    materialize(prof, bank, lay)
    assert default_tiers(prof, bank, lay) == ["flash", "disk"]
    keys: list[str] = []
    original = LocalByteStore._pread

    def slow(self, key, start, length):
        keys.append(f"{self.url}/{key}")
        time_mod.sleep(0.004)
        return original(self, key, start, length)

    monkeypatch.setattr(LocalByteStore, "_pread", slow)
    new, done = calibrate_on_bank(prof, bank, lay, ["disk"], samples=60)
    disk = new.tier("disk")
    assert 0.004 <= disk.latency.quantile(0.5) < 0.05
    assert 0 < disk.request_overhead < 0.05
    assert done["disk"].reads == 60 and 0 < done["disk"].utilization < 1
    assert disk.calibration["on_bank"]["bank"] == "b"
    assert "recalibrated on bank b" in disk.source
    assert new.tier("flash") == prof.tier("flash") and disk.bandwidth == 10e9
    blocks = [k for k in keys if "/L2/c/" in k or "/L3/c/" in k]  # (others: metadata)
    assert len(blocks) >= 60 and all(k.startswith(f"file://{tmp_path}/disk/L3/c/")
                                     for k in blocks)
    with pytest.raises(InputError, match="unknown tier 'tape'"):
        calibrate_on_bank(prof, bank, lay, ["tape"])
    with pytest.raises(InputError, match="holds no level"):
        calibrate_on_bank(prof.with_tier("ram", store=f"file://{tmp_path}/r"), bank, lay,
                          ["ram"], samples=4)


def test_plot_draws_the_measured_tiers_only(tmp_path):
    """A profile from calibrate gains a RAM tier when none was measured; the plot draws the
    tiers that were (it once looked the added RAM tier up among the measurements)."""
    result = calibrate({"d": f"file://{tmp_path}/d"}, quick=True, samples=3,
                       kinds={"d": "disk"})
    assert "ram" not in result.tiers
    png = result.plot(tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
