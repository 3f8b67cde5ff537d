"""What the real-I/O test files share: a tiny anchor, a three-tier local profile, and
fixtures for the emulated cloud and for memory stores that start empty."""

from __future__ import annotations

from pathlib import Path

import pytest

import memsim
from memsim.emulate import Faults, LocalS3
from memsim.stores import forget

ANCHOR = {"name": "tiny", "layers": 1, "d_model": 512, "d_ff": 1, "heads": 1, "head_dim": 1}


def local_profile(root: Path) -> memsim.Profile:
    """RAM, a flash directory and a disk directory under `root`."""
    return memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"},
        {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
         "concurrency": 4, "store": f"file://{root}/flash"},
        {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms",
         "concurrency": 2, "store": f"file://{root}/disk"},
    ]})


@pytest.fixture(autouse=True)
def fresh_memory():
    """memory:// stores start and end each test empty."""
    forget()
    yield
    forget()


@pytest.fixture(scope="module")
def s3():
    """The emulated cloud for one test file, its credentials in the environment."""
    with LocalS3() as server, pytest.MonkeyPatch.context() as env:
        for key, value in server.env().items():
            env.setenv(key, value)
        yield server


@pytest.fixture
def clean_s3(s3):
    """The emulated cloud without delay, pacing, faults or logged requests."""
    s3.proxy.configure(delay=0.0, bandwidth=None, faults=Faults())
    s3.proxy.clear_log()
    return s3
