"""The command line's shell: a start that imports only what a command needs, a help table
that matches the commands, and every click usage error as one line.

Start-up speed itself is measured by benchmarks/bench_startup.py; these tests check the
machinery (which modules a start imports), which does not depend on how busy the machine is.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import click
import pytest
from scipy import stats

from memsim.cli import COMMANDS, click_message, load_command, main
from memsim.latency import LognormalLatency, normal_ppf

HEAVY = ("scipy", "pyarrow", "simpy", "zarr", "pulp", "numpy", "matplotlib", "pydantic",
         "highspy", "yaml")


def _modules_after(args: list[str], before: str = "") -> tuple[int, set[str], str]:
    """Run `memsim ARGS` in a fresh interpreter; its exit code, modules loaded, stderr."""
    code = (
        "import json, sys\n"
        f"{before}\n"
        "from memsim.cli import main\n"
        "try:\n"
        f"    main({args!r}, prog_name='memsim')\n"
        "except SystemExit as exc:\n"
        "    code = exc.code or 0\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    *lines, last = proc.stderr.strip().splitlines()
    data = json.loads(last)
    return data["code"], set(data["modules"]), "\n".join(lines)


def _loaded(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


# ---------------------------------------------------------------- what a start imports
def test_help_imports_no_heavy_package():
    code, modules, _ = _modules_after(["--help"])
    assert code == 0
    for package in HEAVY:
        assert not _loaded(modules, package), f"memsim --help imported {package}"
    # nor any command's module: the command list comes from the table
    assert not [m for m in modules
                if m.startswith("memsim.") and m not in ("memsim.cli", "memsim.errors")]


def test_import_memsim_is_lazy():
    code = ("import sys, memsim\n"
            "print(sorted(m for m in sys.modules if m.startswith(('memsim', 'numpy'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "['memsim']"


def test_optimize_leaves_out_what_it_does_not_use():
    code, modules, stderr = _modules_after(["optimize"])
    assert code == 0, stderr
    assert _loaded(modules, "memsim.optimize")  # it did run the optimizer
    for package in ("scipy.stats", "pyarrow", "simpy", "zarr", "matplotlib"):
        assert not _loaded(modules, package), f"memsim optimize imported {package}"


def test_profile_show_leaves_out_the_engines():
    code, modules, stderr = _modules_after(["profile", "show", "phone"])
    assert code == 0, stderr
    for package in ("scipy", "pyarrow", "simpy", "zarr", "pulp", "highspy", "matplotlib"):
        assert not _loaded(modules, package), f"memsim profile show imported {package}"


# ---------------------------------------------------------------- the help table
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_table_entry_is_the_commands_short_help(name):
    command = load_command(name)
    assert command.name == name
    assert COMMANDS[name][1] == command.get_short_help_str(limit=10**6)


def test_help_lists_the_table_as_click_would(cli):
    """The lazy listing is the one click prints when it loads every command."""
    ctx = click.Context(main, info_name="memsim")
    eager = click.Group(name="memsim", commands={n: load_command(n) for n in COMMANDS},
                        context_settings=main.context_settings)
    expected = click.HelpFormatter(width=100)
    eager.format_commands(click.Context(eager, info_name="memsim"), expected)
    got = click.HelpFormatter(width=100)
    main.format_commands(ctx, got)
    assert got.getvalue() == expected.getvalue()
    result = cli("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"\n  {name} " in result.stdout


def test_every_command_still_runs_help(cli):
    for name in COMMANDS:
        result = cli(name, "--help")
        assert result.exit_code == 0 and "Usage: memsim " + name in result.stdout


# ---------------------------------------------------------------- one-line usage errors
@pytest.mark.parametrize(("args", "expected"), [
    (["optimize", "--scenarios", "0"], "option '--scenarios': 0 is not in the range 1<=x<="),
    (["optimize", "--fetch", "both"],
     "option '--fetch': 'both' is not one of 'parallel', 'sequential'"),
    (["simulate", "--layout", "paper-flat", "--queries", "many"], "option '--queries': "),
    (["profile", "show"], "missing argument 'PROFILE' (usage: memsim profile show "),
    (["estimate"], "missing option '--layout'"),
    (["schema", "tape"], "argument 'KIND': 'tape' is not one of 'bank', "),
    (["optimize", "--scenarois", "3"],
     "option '--scenarois': no such option (did you mean '--scenarios'?)"),
    (["optimize", "--profile"], "option '--profile': requires an argument"),
    (["optimise"], "no such command 'optimise' (did you mean 'optimize'?)"),
    (["profile", "shwo", "phone"], "no such command 'profile shwo' (did you mean 'profile show'?)"),
    (["profile", "show", "phone", "extra"], "got unexpected extra argument (extra)"),
    (["--bogus"], "option '--bogus': no such option"),
])
def test_usage_errors_are_click_message(cli, args, expected):
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("memsim: error: " + expected), lines[0]


def test_usage_errors_do_not_echo_credentials(cli):
    url = "s3://AKIAEXAMPLE:hunter2secret@bucket/x"
    result = cli("simulate", "--layout", "paper-flat", "--queries", url)
    assert result.exit_code == 2
    assert "hunter2secret" not in result.output and "AKIAEXAMPLE" not in result.output
    assert result.stderr.startswith("memsim: error: option '--queries': 's3://***@bucket/x'")


def test_a_value_click_cannot_convert_is_a_usage_error(cli):
    """click.Path stats its value: a NUL byte raises ValueError inside click's parsing."""
    result = cli("optimize", "--out", "a\0b")
    assert result.exit_code == 2
    assert result.stderr == "memsim: error: option '--out': embedded null byte\n"


def test_a_bug_is_not_taken_for_a_usage_error():
    """A ValueError outside the conversion of a value is not turned into bad input."""
    group = type(main)(name="t")

    @group.command("boom")
    def boom() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        group.main(["boom"], standalone_mode=False)


def test_one_line_even_for_a_multi_line_message():
    error = click.UsageError("first line\n  second line.")
    assert click_message(error) == "first line second line"
    assert "\n" not in click_message(click.BadParameter("a\nb", param_hint="'--x'"))


def test_errors_pass_through_when_not_standalone():
    """Callers that run main(standalone_mode=False) still get an exception to catch."""
    with pytest.raises(click.ClickException) as info:
        main(["optimize", "--fetch", "both"], standalone_mode=False)
    assert info.value.exit_code == 2
    assert isinstance(info.value.__cause__, click.BadParameter)


# ---------------------------------------------------------------- numbers kept
@pytest.mark.parametrize("q", [1e-12, 1e-6, 0.01, 0.3, 0.5, 0.9, 0.99, 0.999, 1 - 1e-9])
def test_normal_quantile_matches_scipy(q):
    assert normal_ppf(q) == pytest.approx(float(stats.norm.ppf(q)), rel=1e-13, abs=1e-13)


def test_normal_quantile_edges_as_scipy():
    assert normal_ppf(0.0) == -math.inf and normal_ppf(1.0) == math.inf
    assert math.isnan(normal_ppf(1.5)) and math.isnan(normal_ppf(-0.1))
    assert math.isnan(normal_ppf(math.nan))


def test_lognormal_quantiles():
    lat = LognormalLatency(p50=0.01, p99=0.05)
    assert lat.quantile(0.5) == pytest.approx(0.01, rel=1e-12)
    assert lat.quantile(0.99) == pytest.approx(0.05, rel=1e-12)
    assert lat.quantile(0.0) == 0.0 and lat.quantile(1.0) == math.inf
    # a degenerate lognormal (p99 == p50) is the constant at every probability, ends included
    flat = LognormalLatency(p50=0.01, p99=0.01)
    assert flat.quantile(0.0) == flat.quantile(1.0) == 0.01
