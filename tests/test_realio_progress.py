"""Progress of the real-I/O commands: SI byte units on the bar, one tick per finished query."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
from click.testing import CliRunner
from realio_helpers import ANCHOR, fresh_memory, local_profile  # noqa: F401 (fixtures)

import memsim
from memsim.cli import main
from memsim.cli import realio as cli_realio
from memsim.materialize import materialize
from memsim.replay import replay
from memsim.stores import forget

BANK = memsim.bank_from_dict({"name": "tiny", "branching": 4, "levels": [4, 2, 1],
                              "anchor": ANCHOR})
LAYOUT = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "flash", 3: "disk"},
                                  "chunking": {3: 16}})
WORKLOAD = {"name": "w", "arrivals": {"kind": "poisson", "rate": "500/s"}}


profile = local_profile


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_byte_bar_speaks_si_units_like_the_summary(monkeypatch):
    """Before: unit_divisor=1024 showed GiB-sized counts labelled "G" and rates in "MB/s" that
    were MiB/s, beside a summary in GB."""
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    total, advance, close = cli_realio._bytes_bar("materialize")
    total(5_000_000_000)
    advance(2_000_000_000)
    close()
    out = term.getvalue()
    assert "2.00GB/5.00GB" in out  # 10^9 bytes per GB, with the unit on the counts
    assert "GiB" not in out and "MiB" not in out and "4.66" not in out
    assert cli_realio.BYTES_BAR["unit_divisor"] == 1000


def test_byte_bar_stays_silent_off_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    total, advance, close = cli_realio._bytes_bar("verify")
    total(100)
    advance(100)
    close()
    assert sys.stderr.getvalue() == ""


def test_replay_ticks_once_per_finished_query(tmp_path):
    forget()
    prof = profile(tmp_path)
    materialize(prof, BANK, LAYOUT)
    ticks: list[int] = []
    wl = memsim.workload_from_dict(WORKLOAD)
    result = replay(prof, BANK, LAYOUT, wl, queries=40, check_rate=0.0, progress=ticks.append)
    assert ticks == [1] * 40  # warm-up included: the bar ends at its total
    assert result.queries == 36
    forget()


def test_cli_replay_bar_total_is_the_trace_length(tmp_path, monkeypatch):
    """Before: the bar's total was --queries even when the trace held fewer queries."""
    forget()
    prof = profile(tmp_path / "s")
    (tmp_path / "p.yaml").write_text(json.dumps(prof.model_dump(mode="json",
                                                                exclude_none=True)))
    (tmp_path / "b.yaml").write_text(json.dumps(BANK.model_dump(mode="json")))
    LAYOUT.save(tmp_path / "l.yaml")
    materialize(prof, BANK, LAYOUT)
    arrivals = np.arange(30) * 0.002
    paths = np.zeros((30, 3), dtype=np.int64)
    memsim.write_trace(tmp_path / "t.parquet", arrivals, paths)
    seen: dict[str, list[int]] = {"total": [], "ticks": []}

    def fake_bar(total: int):
        seen["total"].append(total)
        return seen["ticks"].append, lambda: None

    monkeypatch.setattr("memsim.simulate.progress_bar", fake_bar)
    out = CliRunner().invoke(main, ["replay", "--layout", str(tmp_path / "l.yaml"),
                                    "--profile", str(tmp_path / "p.yaml"), "--bank",
                                    str(tmp_path / "b.yaml"), "--trace",
                                    str(tmp_path / "t.parquet"), "--queries", "1000",
                                    "--json"])
    assert out.exit_code == 0, out.output
    assert seen["total"] == [30] and seen["ticks"] == [1] * 30
    forget()
