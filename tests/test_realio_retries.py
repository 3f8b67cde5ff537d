"""Every S3 request kind is retried with counted backoff; the proxy's request log is bounded."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from realio_helpers import fresh_memory  # noqa: F401 (an autouse fixture)

import memsim
from memsim.cli import main
from memsim.emulate import Faults
from memsim.emulate.proxy import DelayProxy
from memsim.materialize import materialize
from memsim.materialize.verify import verify

ANCHOR = {"name": "tiny", "layers": 1, "d_model": 512, "d_ff": 1, "heads": 1, "head_dim": 1}
BANK = memsim.bank_from_dict({"name": "tiny", "branching": 4, "levels": [4, 2, 1],
                              "anchor": ANCHOR})
LAYOUT = memsim.layout_from_dict({"name": "l", "placement": {1: "ram", 2: "cloud", 3: "cloud"},
                                  "chunking": {3: 16}})


@pytest.fixture(autouse=True)
def _clean(clean_s3):
    """Every test here starts on an emulated cloud without faults or logged requests."""


def profile(prefix: str) -> memsim.Profile:
    return memsim.profile_from_dict({"name": "p", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "cloud", "kind": "cloud", "bandwidth": "100 MB/s", "latency": "20 ms",
         "concurrency": 8, "store": f"s3://memsim/{prefix}?timeout=2s"},
    ]})


def _is_list(record) -> bool:
    return record.method == "GET" and "list-type=2" in record.path


def test_materialize_survives_twenty_percent_faults_five_runs_of_five(s3):
    """Before: LIST (and the write probe's PUT/DELETE, and zarr's PUTs on a reset) were not
    retried, and most runs at a 20% fault rate exited 5."""
    faulted_lists = 0
    for seed in range(5):
        s3.proxy.configure(faults=Faults(rate=0.2, kinds=("503", "reset"), seed=seed))
        s3.proxy.clear_log()
        prof = profile(f"faults20-{seed}")
        result = materialize(prof, BANK, LAYOUT)
        log, counts = s3.proxy.requests, s3.proxy.counts
        faults = counts.get("503", 0) + counts.get("reset", 0)
        assert faults > 0
        # every failed request that reached memsim was retried once and counted; none other
        assert 0 < result.retries["cloud"] <= faults
        errors = result.request_errors["cloud"]
        assert sum(errors.values()) == result.retries["cloud"]
        # named as what they were (a debug dump's "retry_timeout" once made resets timeouts)
        assert set(errors) <= {"http_503", "connection"} and errors.get("http_503", 0) > 0
        faulted_lists += sum(1 for r in log if _is_list(r) and r.outcome != "forwarded")
        assert result.tiers["cloud"].bytes_written == sum(lv.bytes for lv in BANK.active_levels
                                                          if lv.depth > 1)
        s3.proxy.configure(faults=Faults())
        assert verify(prof, BANK, LAYOUT).ok
    assert faulted_lists > 0  # LIST requests were among those failed, and survived


def test_cli_materialize_reports_its_retries(s3, tmp_path):
    prof = profile("cli-retries")
    (tmp_path / "p.yaml").write_text(json.dumps(prof.model_dump(mode="json",
                                                                exclude_none=True)))
    (tmp_path / "b.yaml").write_text(json.dumps(BANK.model_dump(mode="json")))
    LAYOUT.save(tmp_path / "l.yaml")
    s3.proxy.configure(faults=Faults(rate=0.2, kinds=("503",), seed=1))
    args = ["materialize", "--layout", str(tmp_path / "l.yaml"), "--profile",
            str(tmp_path / "p.yaml"), "--bank", str(tmp_path / "b.yaml")]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    retried = s3.proxy.counts.get("503", 0)
    assert retried > 0 and f"retries: cloud {retried}" in out.output
    s3.proxy.configure(faults=Faults())
    out = CliRunner().invoke(main, [*args, "--json"])
    doc = json.loads(out.stdout)  # stdout only: a warning of a loaded machine goes to stderr
    assert out.exit_code == 0 and doc["retries"] == {} and doc["bytes_written"] == 0


def test_a_refused_write_is_not_retried(s3):
    """A conditional PUT that finds the object there (412) is an answer, not a fault: zarr
    asks for it when it makes sure a group exists, and retrying it cost seconds per array."""
    from memsim.aio import run_sync
    from memsim.stores import open_store

    store = open_store("s3://memsim/refused")
    try:
        zstore = store.zarr_store()
        from zarr.core.buffer import default_buffer_prototype

        buf = default_buffer_prototype().buffer.from_bytes(b"{}")
        run_sync(zstore.set_if_not_exists("k", buf))
        run_sync(zstore.set_if_not_exists("k", buf))  # already there: quietly kept
        assert store.counters.retries == 0
        assert run_sync(zstore.exists("k")) and not run_sync(zstore.exists("nope"))
        assert run_sync(zstore.get("nope", default_buffer_prototype())) is None
        assert store.counters.retries == 0
    finally:
        store.close()


def test_proxy_request_log_is_bounded_and_counts_what_it_drops():
    proxy = DelayProxy("http://127.0.0.1:9", log_limit=3)  # never started: log only
    for i in range(5):
        proxy._decide("GET", f"/b/k{i}", None, float(i))
    assert [r.path for r in proxy.requests] == ["/b/k2", "/b/k3", "/b/k4"]
    assert proxy.dropped == 2 and proxy.counts == {"forwarded": 5}
    records, seen = proxy.requests_since(3)
    assert [r.path for r in records] == ["/b/k3", "/b/k4"] and seen == 5
    records, seen = proxy.requests_since(0)  # older than the log holds: what is kept
    assert len(records) == 3 and seen == 5
    proxy.clear_log()
    assert proxy.requests == [] and proxy.dropped == 0 and proxy.counts == {}
    with pytest.raises(ValueError, match="log_limit"):
        DelayProxy("http://127.0.0.1:9", log_limit=0)
