"""The code stays ruff-clean (ruff is part of the test extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--quiet", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_temp_dir_guard_sees_memsim_files(tmp_path: Path) -> None:
    """conftest's session guard counts what memsim and its tests create, nothing else."""
    from conftest import memsim_temp_files

    (tmp_path / "memsim-calibration-x").mkdir()
    (tmp_path / ".memsim-readme.tmp").write_text("")
    (tmp_path / "other").write_text("")
    assert memsim_temp_files(tmp_path) == {"memsim-calibration-x", ".memsim-readme.tmp"}
    assert memsim_temp_files(tmp_path / "missing") == set()
