"""The CLI end to end: JSON outputs, written layouts, and one clear line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

import memsim

GOOD_TIERS = """name: mine
tiers:
  - name: ram
    kind: ram
    capacity: 16 GB
    bandwidth: 20 GB/s
  - name: disk
    kind: disk
    capacity: 2 TB
    bandwidth: 1 GB/s
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_optimize_defaults_json(cli):
    result = cli("optimize", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "optimal"
    assert data["placement"] == {"2": "flash", "3": "disk", "4": "cloud"}
    assert data["objective_s"] == pytest.approx(0.0377, rel=0.005)
    assert data["baseline_s"] >= data["objective_s"]
    assert set(data["fetch_time_s"]) == {"mean", "p50", "p95", "p99"}


def test_optimize_human_output(cli):
    result = cli("optimize")
    assert result.exit_code == 0
    assert "37.75 ms" in result.stdout and "flash" in result.stdout


def test_optimize_out_then_estimate_agrees(cli, tmp_path):
    out = tmp_path / "layouts" / "mine.yaml"
    opt = cli("optimize", "--profile", "laptop", "--out", str(out), "--json")
    assert opt.exit_code == 0, opt.output
    chosen = json.loads(opt.stdout)
    est = cli("estimate", "--layout", str(out), "--json")
    assert est.exit_code == 0, est.output
    data = json.loads(est.stdout)
    assert data["fetch_time_s"]["mean"] == pytest.approx(chosen["fetch_time_s"]["mean"])
    assert {k: v["tier"] for k, v in data["per_level"].items()} == chosen["placement"]
    assert out.read_text().startswith("# Chosen by: memsim optimize")


@pytest.mark.parametrize(("layout", "published"), [
    ("paper-hierarchical", 0.0377), ("paper-flat", 0.1982), ("paper-flat-resident-upper", 0.0472),
])
def test_estimate_json_reproduces_paper(cli, layout, published):
    result = cli("estimate", "--layout", layout, "--json")
    data = json.loads(result.stdout)
    assert data["fetch_time_s"]["mean"] == pytest.approx(published, rel=0.005)
    assert set(data) >= {"fetch_time_s", "per_level", "per_tier"}
    assert all({"tier", "bytes", "time_s"} <= set(v) for v in data["per_level"].values())


def test_bank_show_matches_paper(cli):
    result = cli("bank", "show", "A2")
    assert result.exit_code == 0
    assert "18.06M" in result.stdout and "4.624B" in result.stdout


def test_profile_commands(cli):
    assert cli("profile", "list").exit_code == 0
    shown = cli("profile", "show", "phone", "--json")
    assert json.loads(shown.stdout)["tiers"][0]["kind"] == "ram"
    schema = json.loads(cli("schema", "profile").stdout)
    assert "tiers" in schema["properties"]
    root = Path(__file__).resolve().parents[1] / "device_profiles"
    files = sorted(str(p) for p in root.glob("*.yaml"))
    ok = cli("profile", "validate", *files)
    assert ok.exit_code == 0 and ok.stdout.count(": ok") == len(files)


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("name: x\ntiers:\n  - name: ram\n    kind: ram\n    bandwidth: [4 GB/s\n", 6, None),
        (GOOD_TIERS + "    colour: blue\n", 11, "tiers[1].colour"),
        (GOOD_TIERS.replace("1 GB/s", "1 GBps"), 10, "tiers[1].bandwidth"),
        (GOOD_TIERS.replace("1 GB/s", "0 GB/s"), 10, "tiers[1].bandwidth"),
        (GOOD_TIERS.replace("1 GB/s", "-1 GB/s"), 10, "tiers[1].bandwidth"),
        (GOOD_TIERS.replace("1 GB/s", ".nan"), 10, "tiers[1].bandwidth"),
        (GOOD_TIERS.replace("2 TB", "2 TBytes"), 9, "tiers[1].capacity"),
    ],
)
def test_bad_profile_one_line_error(cli, tmp_path, text, line, field):
    path = _write(tmp_path, "bad.yaml", text)
    result = cli("optimize", "--profile", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"memsim: error: {path}:{line}")
    if field:
        assert f"field '{field}'" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("placement", "line", "words"),
    [("{2: flash, 3: tape, 4: cloud}", 3, "unknown tier 'tape'"),
     ("{2: flash, 3: disk, 4: cloud, 9: disk}", 3, "level 9 is not in bank")],
)
def test_bad_layout(cli, tmp_path, placement, line, words):
    path = _write(tmp_path, "lay.yaml", f"bank: paper-storage-example\nprofile: "
                  f"paper-hypothetical\nplacement: {placement}\n")
    result = cli("estimate", "--layout", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"memsim: error: {path}:{line}: field 'placement")
    assert words in result.stderr


def test_bank_larger_than_all_capacity(cli, tmp_path):
    path = _write(tmp_path, "small.yaml", GOOD_TIERS.replace("2 TB", "100 GB"))
    result = cli("optimize", "--profile", path)
    assert result.exit_code == 3
    assert "short by" in result.stderr and path in result.stderr


@pytest.mark.parametrize("args", [
    ["optimize", "--profile", "/no/such/profile.yaml"],
    ["optimize", "--bank", "Z9"],
    ["optimize", "--resident", "2", "--resident-budget", "lots"],
    ["optimize", "--resident", "two"],
    ["estimate", "--layout", "nowhere"],
])
def test_bad_arguments(cli, args):
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith("memsim: error:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_failed_out_leaves_no_file(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli("optimize", "--out", str(blocker / "layout.yaml"))
    assert result.exit_code == 2
    assert "cannot write" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_installed_console_script_has_no_traceback(tmp_path):
    """Through a real process: stderr is one line, stdout empty, exit non-zero."""
    path = _write(tmp_path, "bad.yaml", GOOD_TIERS.replace("1 GB/s", "fast"))
    proc = subprocess.run([sys.executable, "-m", "memsim.cli", "optimize", "--profile", path,
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    ok = subprocess.run([sys.executable, "-m", "memsim.cli", "optimize", "--json"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["status"] == "optimal"  # no solver banner on stdout


def test_api_and_cli_agree(cli):
    data = json.loads(cli("optimize", "--profile", "workstation", "--json").stdout)
    result = memsim.optimize(memsim.load_profile("workstation"),
                             memsim.load_bank("paper-storage-example"))
    assert data["objective_s"] == pytest.approx(result.objective_s)


def test_estimate_warns_when_a_layout_overfills_a_tier(cli, tmp_path):
    path = _write(tmp_path, "lay.yaml", "bank: paper-storage-example\nprofile: "
                  "paper-hypothetical\nplacement: {2: flash, 3: flash, 4: cloud}\n")
    result = cli("estimate", "--layout", path, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert len(data["capacity_warnings"]) == 1 and "'flash'" in data["capacity_warnings"][0]
    assert "memsim: warning: tier 'flash' holds 64 GB" in result.stderr


def test_layout_written_for_profile_file_is_usable_alone(cli, tmp_path):
    profile = _write(tmp_path, "dev.yaml", GOOD_TIERS.replace("16 GB", "16 GB").replace(
        "2 TB", "1 TB") + "  - name: cloud\n    kind: cloud\n    bandwidth: 100 MB/s\n")
    out = tmp_path / "out" / "chosen.yaml"
    assert cli("optimize", "--profile", profile, "--out", str(out)).exit_code == 0
    est = cli("estimate", "--layout", str(out), "--json")
    assert est.exit_code == 0, est.stderr
    assert json.loads(est.stdout)["profile"] == "mine"


# ----------------------------------------------------------------------------- issue 11

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYFAKEKEY"


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("memsim: error:")]
    assert len(lines) == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    return lines[0]


def test_workload_validate(cli, tmp_path):
    good = _write(tmp_path, "w.yaml", "arrivals: {kind: poisson, rate: 20/s}\nrouting: zipf\n")
    bad = _write(tmp_path, "bad.yaml", "arrivals: {kind: poisson, rat: 20/s}\n")
    result = cli("workload", "validate", good)
    assert result.exit_code == 0 and result.stdout.startswith(f"{good}: ok (arrivals poisson")
    result = cli("workload", "validate", good, bad)
    assert result.exit_code == 2 and f"{good}: ok" in result.stdout
    assert _one_error_line(result).startswith(f"memsim: error: {bad}:1: field 'arrivals.rat': "
                                              "unknown field 'rat'; did you mean 'rate'?")


def test_layout_show_text_and_json(cli):
    result = cli("layout", "show", "paper-flat-resident-upper")
    assert result.exit_code == 0, result.output
    assert "profile: paper-hypothetical" in result.stdout and "bank: paper-storage-example" in (
        result.stdout)
    assert "L2     disk  yes" in result.stdout and "cache: none" in result.stdout
    data = json.loads(cli("layout", "show", "paper-hierarchical", "--json").stdout)
    assert [(lv["depth"], lv["tier"], lv["resident"]) for lv in data["levels"]] == [
        (2, "flash", False), (3, "disk", False), (4, "cloud", False)]
    assert data["profile"] == "paper-hypothetical" and data["cache"] is None


def test_layout_and_bank_validate(cli, tmp_path):
    root = Path(memsim.__file__).resolve().parents[1]
    result = cli("layout", "validate", str(root / "layouts" / "paper-hierarchical.yaml"))
    assert result.exit_code == 0 and "ok (L2: flash, L3: disk, L4: cloud)" in result.stdout
    bad = _write(tmp_path, "l.yaml", "profile: paper-hypothetical\nbank: paper-storage-example\n"
                 "placement: {2: flash, 3: disk, 4: tape}\n")
    result = cli("layout", "validate", bad)
    assert result.exit_code == 2 and "unknown tier 'tape'" in _one_error_line(result)
    result = cli("bank", "validate", str(root / "memsim" / "presets" / "banks" / "A2.yaml"))
    assert result.exit_code == 0 and "ok (3 levels, branching 16" in result.stdout


def test_profile_validate_warns_on_tier_order_and_refuses_no_ram(cli, tmp_path):
    order = _write(tmp_path, "o.yaml", GOOD_TIERS + "  - {name: fl, kind: flash, bandwidth: "
                   "7 GB/s, latency: 60 us}\n")
    result = cli("profile", "validate", order)
    assert result.exit_code == 0 and f"{order}: ok" in result.stdout
    assert result.stderr.startswith(f"memsim: warning: {order}:11: field 'tiers[2]': tier 'fl' "
                                    "is faster than 'disk'")
    noram = _write(tmp_path, "n.yaml", "name: x\ntiers:\n  - {name: d, kind: disk, bandwidth: "
                   "1 GB/s}\n")
    result = cli("profile", "validate", noram)
    assert result.exit_code == 2 and "no tier of kind ram" in _one_error_line(result)


@pytest.mark.parametrize("scheme", ["s3", "ftp"])
def test_credentials_in_a_store_are_never_echoed(cli, tmp_path, scheme):
    text = GOOD_TIERS.replace("    bandwidth: 1 GB/s\n", "    bandwidth: 1 GB/s\n"
                              f"    store: {scheme}://AKIAFAKE:{SECRET}@host/bucket\n")
    profile = _write(tmp_path, "leak.yaml", text)
    runs = [("profile", "validate", profile), ("profile", "show", profile, "--json"),
            ("estimate", "--profile", profile, "--layout", "paper-flat"),
            ("optimize", "--profile", profile),
            ("simulate", "--profile", profile, "--layout", "paper-flat", "--queries", "200",
              "--workload", "zipf-topic")]
    for args in runs:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert SECRET not in result.output and "AKIAFAKE" not in result.output
        assert "field 'tiers[1].store': store URL must not contain credentials" in (
            _one_error_line(result))


def test_error_shell_and_json_scrub_userinfo(cli):
    from memsim.cli.common import emit_json, handle_errors
    from memsim.errors import StoreError

    @click.command()
    @handle_errors
    def leaky() -> None:
        raise StoreError(f"cannot reach s3://AKIAFAKE:{SECRET}@host/b\nsecond line")

    @click.command()
    def dumps() -> None:
        emit_json({"store": f"http://u:{SECRET}@h:9000/"})

    from click.testing import CliRunner

    result = CliRunner().invoke(leaky, [])
    assert result.exit_code == 5 and SECRET not in result.output
    assert result.stderr == "memsim: error: cannot reach s3://***@host/b second line\n"
    result = CliRunner().invoke(dumps, [])
    assert SECRET not in result.output and json.loads(result.stdout)["store"] == (
        "http://***@h:9000/")


@pytest.mark.parametrize("group", ["profile", "bank", "layout", "workload"])
def test_validate_paths_the_os_refuses_are_one_line(cli, group, tmp_path):
    for ref in ("a\0b", "x" * 5000, str(tmp_path)):
        result = cli(group, "validate", ref)
        assert result.exit_code == 2 and _one_error_line(result)


@pytest.mark.parametrize("args", [
    ("optimize", "--scenarios", "1", "--out"),
    ("simulate", "--layout", "paper-flat", "--workload", "zipf-topic", "--queries", "200",
     "--trace-out"),
])
def test_output_options_refuse_urls_without_echoing_credentials(cli, tmp_path, monkeypatch,
                                                                 args):
    monkeypatch.chdir(tmp_path)
    result = cli(*args, f"s3://AKIAFAKE:{SECRET}@bucket/x.yaml")
    assert result.exit_code == 2
    assert SECRET not in result.output and "AKIAFAKE" not in result.output
    line = _one_error_line(result)
    assert f"option '{args[-1]}'" in line and "not a URL" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field", ["name", "description", "source"])
def test_no_string_field_of_any_file_may_hold_credentials(cli, tmp_path, field):
    fields = {"name": "b", "description": "d", "source": "s"}
    fields[field] = f"see s3://AKIAFAKE:{SECRET}@h/x"
    text = "".join(f"{k}: '{v}'\n" for k, v in fields.items()) + "branching: 4\nlevels: [2, 1]\n"
    line = list(fields).index(field) + 1
    result = cli("bank", "show", _write(tmp_path, "b.yaml", text))
    assert result.exit_code == 2, result.output
    assert SECRET not in result.output and "AKIAFAKE" not in result.output
    assert f":{line}: field '{field}': a URL in a file must not contain credentials" in (
        _one_error_line(result))
