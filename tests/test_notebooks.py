"""Execute every notebook in notebooks/ and fail on any cell error.

The notebooks are documentation with `assert`s in them (e.g. the paper's published fetch times),
so running them keeps the examples honest. They are stored without outputs; the executed copy
stays in memory. Each kernel's temporary directory is the test's own, and whatever a notebook
puts there must be gone when it ends.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The kernel inherits this environment: draw plots without a display, and keep its
    # temporary files (tempfile.mkdtemp) under tmp_path.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("memsim"))
    assert not left, f"{path.name} left {left} in its temporary directory"
