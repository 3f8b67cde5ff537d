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
from collections.abc import Iterator
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


@pytest.fixture(scope="session", autouse=True)
def _no_files_left_in_the_temp_dir() -> Iterator[None]:
    """Fail loudly at the end of the session if the temporary directory gained memsim files
    (anything a test writes belongs under its tmp_path)."""
    tmp = Path(tempfile.gettempdir())
    before = memsim_temp_files(tmp)
    yield
    gained = memsim_temp_files(tmp) - before
    if gained:  # another session's files come and go on a shared machine: look again
        time.sleep(1.0)
        gained = sorted(gained & memsim_temp_files(tmp))
    if gained:
        pytest.fail(f"the test session left {len(gained)} memsim file(s) in {tmp}: "
                    f"{', '.join(gained[:10])}; tests must write under tmp_path",
                    pytrace=False)


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
