"""Shared fixtures: the paper's profile and bank, a CLI runner, and a guard that fails the
session if a test left memsim files in the system's temporary directory (tests use
tmp_path; a failed notebook run once left 241 MB there).

Hypothesis runs derandomized (the same examples every run, no example database), so the
suite's verdict does not depend on the run; `HYPOTHESIS_PROFILE=explore` draws fresh
examples to look for new failures."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import settings
from realio_helpers import clean_s3, s3  # noqa: F401 (fixtures for every test file)

import memsim
from memsim.cli import main

ROOT = Path(__file__).resolve().parents[1]

settings.register_profile("suite", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


def memsim_temp_files(tmp: Path) -> set[str]:
    """Names in `tmp` that memsim or its tests create (memsim-*, .memsim*, *memsim*)."""
    try:
        return {p.name for p in tmp.iterdir() if "memsim" in p.name.lower()}
    except OSError:
        return set()


def _worker(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker (the suite runs on two)."""
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _worker(session.config):
        session.config.stash[_TMP_BEFORE] = memsim_temp_files(Path(tempfile.gettempdir()))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if the temporary directory gained memsim files (anything a test writes
    belongs under its tmp_path). Checked once, by the controlling process, after every
    worker has finished (a worker would see the other's files in flight)."""
    if _worker(session.config) or _TMP_BEFORE not in session.config.stash:
        return
    tmp = Path(tempfile.gettempdir())
    gained = memsim_temp_files(tmp) - session.config.stash[_TMP_BEFORE]
    if gained:  # another session's files come and go on a shared machine: look again
        time.sleep(1.0)
        gained &= memsim_temp_files(tmp)
    if gained:
        names = sorted(gained)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (f"the test session left {len(names)} memsim file(s) in {tmp}: "
                   f"{', '.join(names[:10])}; tests must write under tmp_path")
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_TMP_BEFORE = pytest.StashKey[set]()


@pytest.fixture(scope="session")
def paper_profile() -> memsim.Profile:
    return memsim.load_profile("paper-hypothetical")


@pytest.fixture(scope="session")
def paper_bank() -> memsim.Bank:
    return memsim.load_bank("paper-storage-example")


@pytest.fixture
def cli():
    """Run the memsim CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, list(args), catch_exceptions=False)

    return run
