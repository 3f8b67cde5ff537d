"""Shared fixtures: the paper's profile and bank, and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import memsim
from memsim.cli import main

ROOT = Path(__file__).resolve().parents[1]


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
