"""Prefetch in the simulator: prefetch=None is today's run exactly; with a budget that never
binds and an idle load, its (issued, hits, wasted) equal a brute-force replay of the policy
over an independent LRU and the client's own counters on a memory-store bank; a tier gives a
freed channel to queued demand before a queued prefetch; prefetch lowers the mean fetch time
on a trace with locality and a small cache."""

from __future__ import annotations

import numpy as np
import pytest
from realio_helpers import fresh_memory  # noqa: F401 (an autouse fixture)
from tiny_bank import ANCHOR, BANK

import memsim
from memsim.client.bank import open_bank
from memsim.client.prefetch import PrefetchConfig, make_policy
from memsim.errors import InputError
from memsim.materialize import materialize
from memsim.simulate import simulate
from memsim.simulate.tiers import TierServer

# blocks: level 1 12 KiB (4 of them), level 2 6 KiB (16), level 3 3 KiB (64), bf16
SIZES = {lv.depth: lv.block_bytes for lv in BANK.active_levels}
PROFILE_DICT = {"name": "pp", "tiers": [
    {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"},
    {"name": "flash", "kind": "flash", "bandwidth": "1 GB/s", "latency": "100 us",
     "concurrency": 4, "max_request_size": "4 KiB", "store": "memory://pp-flash"},
    {"name": "disk", "kind": "disk", "bandwidth": "100 MB/s", "latency": "5 ms",
     "concurrency": 2, "store": "memory://pp-disk"},
]}
PROFILE = memsim.profile_from_dict(PROFILE_DICT)


def layout(budget: int | None = 30000, prefetch: dict | None = None) -> memsim.Layout:
    extra = {"cache": {"budget": budget, "policy": "lru"}} if budget else {}
    if prefetch is not None:
        extra["prefetch"] = prefetch
    return memsim.layout_from_dict({"name": "l", "placement": {1: "flash", 2: "flash",
                                                               3: "disk"},
                                    "chunking": {3: 16}, **extra})


def local_trace(n: int, seed: int, spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """n queries `spacing` s apart whose leaves mostly stay near the previous one."""
    rng = np.random.default_rng(seed)
    leaves = [int(rng.integers(0, 64))]
    for _ in range(n - 1):
        step = int(rng.integers(-2, 3)) if rng.random() < 0.8 else int(rng.integers(0, 64))
        leaves.append((leaves[-1] + step) % 64)
    leaf = np.array(leaves)
    return np.arange(n) * spacing, np.stack([leaf // 16, leaf // 4, leaf], axis=1)


def run(lay: memsim.Layout, trace: tuple[np.ndarray, np.ndarray],
        prefetch: PrefetchConfig | None, **kwargs: object) -> memsim.SimulationResult:
    return simulate(PROFILE, BANK, lay, trace=trace, queries=len(trace[0]), warmup=0.0,
                    seed=3, prefetch=prefetch, **kwargs)


def comparable(result: memsim.SimulationResult) -> dict:
    out = result.to_json()
    out.pop("trace_out")
    return out


def config(policy: str, paths: np.ndarray, max_bytes: int) -> PrefetchConfig:
    return PrefetchConfig(policy, max_inflight=64, max_bytes=max_bytes,
                          trace=paths if policy == "trace" else None)


def brute_force(paths: np.ndarray, budget: int, cfg: PrefetchConfig) -> tuple[int, int, int]:
    """The counters from their definitions, every prefetch done before the next query: an LRU
    list of `budget` bytes; per query its blocks looked up in level order (a prefetched block
    found unused is a hit; one evicted unused is wasted); then the policy's candidates not
    held, in order, within max_bytes of unused prefetched blocks, admitted one by one."""
    policy = make_policy(cfg, BANK)
    lru: list[tuple[int, int]] = []
    unused: set[tuple[int, int]] = set()
    issued = hits = wasted = 0

    def admit(key: tuple[int, int]) -> None:
        nonlocal wasted
        while sum(SIZES[d] for d, _ in lru) + SIZES[key[0]] > budget:
            gone = lru.pop(0)
            if gone in unused:
                unused.discard(gone)
                wasted += 1
        lru.append(key)

    for path in paths.tolist():
        keys = list(zip((1, 2, 3), path, strict=True))
        for key in keys:
            if key in lru:
                lru.remove(key)
                lru.append(key)
                if key in unused:
                    unused.discard(key)
                    hits += 1
            else:
                admit(key)
        room = cfg.max_bytes - sum(SIZES[d] for d, _ in unused)
        chosen: list[tuple[int, int]] = []
        for key in policy.step([keys]):
            if key in lru or key in chosen or SIZES[key[0]] > room:
                continue
            chosen.append(key)
            room -= SIZES[key[0]]
        for key in chosen:
            admit(key)
            unused.add(key)
            issued += 1
    return issued, hits, wasted


def counters(stats: object) -> tuple[int, int, int]:
    return stats.prefetch_issued, stats.prefetch_hits, stats.prefetch_wasted  # type: ignore


def test_no_prefetch_is_todays_run_exactly():
    workload = memsim.workload_from_dict({"arrivals": {"kind": "poisson", "rate": "200/s"},
                                          "locality": {"p": 0.6}})
    kwargs = {"queries": 300, "seed": 5, "warmup": 0.2}
    today = simulate(PROFILE, BANK, layout(), workload, **kwargs)
    assert comparable(simulate(PROFILE, BANK, layout(), workload, prefetch=None, **kwargs)) \
        == comparable(today)
    none = PrefetchConfig("none")
    assert comparable(simulate(PROFILE, BANK, layout(), workload, prefetch=none, **kwargs)) \
        == comparable(today)
    assert counters(today.served) == (0, 0, 0)
    assert "prefetch_issued" not in today.served.to_json()  # the JSON of before, exactly


@pytest.mark.parametrize("policy,max_bytes", [("trace", 10**6), ("trace", 9000),
                                              ("children", 20000)])
def test_counters_equal_a_brute_force_replay_and_the_client(policy, max_bytes):
    lay = layout(30000)
    trace = local_trace(40, seed=4)
    cfg = config(policy, trace[1], max_bytes)
    expected = brute_force(trace[1], 30000, cfg)
    assert expected[0] > 0 and expected[1] > 0  # the test can fail
    result = run(lay, trace, cfg)
    assert counters(result.served) == expected
    assert result.served.to_json()["prefetch_hits"] == expected[1]
    materialize(PROFILE, BANK, lay)
    with open_bank(lay, profile=PROFILE, bank=BANK, prefetch=cfg) as served:
        for path in trace[1]:
            served.fetch(path)
            served.wait_prefetches()
        client = served.stats
        assert counters(client) == expected
        simulated = result.served.to_json()
        for key in ("reads", "requests", "bytes", "cache_hits", "cache_misses", "fetches"):
            assert getattr(client, key) == simulated[key], key


def test_demand_takes_a_freed_channel_before_a_queued_prefetch():
    """One channel, 1 ms per read: demand A holds it; prefetch P1, P2 then demand D queue.
    A freed channel goes to D first, then P1, then P2 (FIFO within each class)."""
    import simpy

    tier = memsim.profile_from_dict({"name": "one", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"},
        {"name": "disk", "kind": "disk", "bandwidth": "1 GB/s", "latency": "1 ms",
         "concurrency": 1}]}).tier("disk")
    env = simpy.Environment()
    server = TierServer(env, tier, np.random.default_rng(0))
    done: list[tuple[str, float]] = []

    def note(name: str):
        return lambda: done.append((name, env.now))

    server.fetch(0, note("A"))
    server.fetch(0, note("P1"), prefetch=True)
    server.fetch(0, note("P2"), prefetch=True)
    server.fetch(0, note("D"))
    env.run()
    assert [name for name, _ in done] == ["A", "D", "P1", "P2"]
    assert [t for _, t in done] == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3])
    assert server.requests == 4  # prefetch requests are the tier's requests too


def test_prefetch_lowers_the_mean_fetch_time_with_locality():
    """A cache of 24 KiB holds about one path (21 KiB), so without prefetch most leaves
    (5 ms disk reads) miss; queries 20 ms apart leave time for the next query's blocks, which
    the trace policy reads ahead: nearly every lookup then finds its block in RAM."""
    lay = layout(24 * 1024)
    trace = local_trace(200, seed=9, spacing=20e-3)
    without = run(lay, trace, None)
    cfg = PrefetchConfig("trace", max_inflight=4, max_bytes=24 * 1024, trace=trace[1])
    with_ = run(lay, trace, cfg)
    issued, hits, wasted = counters(with_.served)
    assert hits > 0.8 * (len(trace[0]) - 1) and issued >= hits
    assert with_.served.reads < without.served.reads  # demand reads saved
    assert with_.fetch_time_s["mean"] < 0.5 * without.fetch_time_s["mean"]
    # the prefetch reads are the tiers' requests: more requests, not fewer
    assert sum(with_.served.requests.values()) >= sum(without.served.requests.values())


def test_prefetch_needs_a_cache():
    trace = local_trace(4, seed=0)
    with pytest.raises(InputError) as info:
        run(layout(None), trace, PrefetchConfig("trace", trace=trace[1]))
    assert info.value.field == "prefetch"


def _cli_files(tmp_path, layouts: dict[str, memsim.Layout]) -> tuple[tuple, list[str]]:
    """A 40-query trace, the profile and bank files, and `layouts` by file name, for the
    command's tests: (the trace, the files' arguments)."""
    import yaml

    from memsim.trace import write_trace

    trace = local_trace(40, seed=2, spacing=20e-3)
    write_trace(tmp_path / "q.parquet", *trace)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(PROFILE_DICT))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"name": "tiny", "branching": 4,
                                                     "levels": [4, 2, 1], "anchor": ANCHOR}))
    for name, lay in layouts.items():
        (tmp_path / name).write_text(lay.to_yaml())
    return trace, ["--profile", str(tmp_path / "p.yaml"), "--bank", str(tmp_path / "b.yaml"),
                   "--trace", str(tmp_path / "q.parquet"), "--warmup", "0"]


def test_cli_prefetch_options(cli, tmp_path):
    import json

    trace, files = _cli_files(tmp_path, {"l.yaml": layout(24 * 1024)})
    args = ["simulate", *files, "--layout", str(tmp_path / "l.yaml")]
    plain = cli(*args)
    assert plain.exit_code == 0, plain.stderr
    assert "prefetch (" not in plain.stdout
    on = cli(*args, "--prefetch", "trace", "--prefetch-inflight", "2",
             "--prefetch-bytes", "20 KiB")
    assert on.exit_code == 0, on.stderr
    assert "prefetch (trace, 2 in flight, 20.48 kB unused at most, 1 ahead):" in on.stdout
    data = json.loads(cli(*args, "--prefetch", "trace", "--json").stdout)
    cfg = PrefetchConfig("trace", trace=trace[1])
    assert data["served"]["prefetch_issued"] == run(layout(24 * 1024), trace, cfg
                                                    ).served.prefetch_issued > 0
    bad = cli(*args, "--prefetch", "children", "--prefetch-bytes", "lots")
    assert bad.exit_code != 0 and "prefetch-bytes" in bad.stderr


# ----------------------------------------------------------------------------- the layout's

def test_the_layouts_section_is_the_default_and_an_argument_overrides_it():
    """simulate(prefetch="layout") runs the section's policy, with the trace's paths for
    the trace policy: the run of the same PrefetchConfig given explicitly; None (or an
    explicit config) replaces the section, and the run is then the one without it."""
    trace = local_trace(60, seed=6, spacing=5e-3)
    section = {"policy": "trace", "max_inflight": 2, "max_bytes": "12 KiB", "lookahead": 2}
    lay = layout(24 * 1024, section)
    explicit = PrefetchConfig("trace", max_inflight=2, max_bytes=12 * 1024, lookahead=2,
                              trace=trace[1])
    by_default = run(lay, trace, "layout")
    assert comparable(by_default) == comparable(run(layout(24 * 1024), trace, explicit))
    assert by_default.served.prefetch_issued > 0 and by_default.prefetch == {
        "policy": "trace", "max_inflight": 2, "max_bytes": 12 * 1024, "lookahead": 2}
    assert comparable(simulate(PROFILE, BANK, lay, trace=trace, queries=60, warmup=0.0,
                               seed=3)) == comparable(by_default)
    plain = comparable(run(layout(24 * 1024), trace, None))
    assert comparable(run(lay, trace, None)) == plain and "prefetch" not in plain
    assert comparable(run(lay, trace, PrefetchConfig("none"))) == plain
    other = PrefetchConfig("children", max_inflight=8)
    assert comparable(run(lay, trace, other)) == comparable(run(layout(24 * 1024), trace, other))
    with pytest.raises(InputError) as info:
        run(lay, trace, "children")
    assert info.value.field == "prefetch"


def test_the_layouts_children_and_trace_policies_on_a_workload():
    """A workload run: children scores from the workload's routing; the trace policy
    follows the run's own drawn paths (those `trace_out` records, for the seed)."""
    workload = memsim.workload_from_dict({"arrivals": {"kind": "poisson", "rate": "100/s"},
                                          "routing": {"kind": "zipf", "s": 1.2, "seed": 2},
                                          "locality": {"p": 0.7}})
    kwargs = {"queries": 150, "seed": 4, "warmup": 0.1}
    children = simulate(PROFILE, BANK, layout(20000, {"policy": "children"}), workload,
                        **kwargs)
    assert comparable(children) == comparable(simulate(
        PROFILE, BANK, layout(20000), workload,
        prefetch=PrefetchConfig("children", workload=workload), **kwargs))
    assert children.served.prefetch_issued > 0

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        simulate(PROFILE, BANK, layout(20000), workload, trace_out=f"{tmp}/t.parquet",
                 prefetch=None, **kwargs)
        drawn = memsim.read_trace(f"{tmp}/t.parquet", BANK)[1]
    follows = simulate(PROFILE, BANK, layout(20000, {"policy": "trace"}), workload, **kwargs)
    assert comparable(follows) == comparable(simulate(
        PROFILE, BANK, layout(20000), workload, prefetch=PrefetchConfig("trace", trace=drawn),
        **kwargs))
    assert follows.served.prefetch_hits > 0


def test_a_layout_prefetch_without_a_cache_names_the_field():
    lay = memsim.layout_from_dict({"name": "l", "placement": {1: "flash", 2: "flash",
                                                              3: "disk"},
                                   "prefetch": {"policy": "children"}}, file="l.yaml")
    with pytest.raises(InputError) as info:
        run(lay, local_trace(4, seed=0), "layout")
    assert info.value.field == "prefetch" and info.value.file == "l.yaml"
    # an explicit None replaces the section: the layout is then fine
    assert run(lay, local_trace(4, seed=0), None).served.prefetch_issued == 0


def test_cli_applies_the_layouts_section_and_the_options_change_it(cli, tmp_path):
    import json

    trace, files = _cli_files(tmp_path, {
        "plain.yaml": layout(24 * 1024),
        "l.yaml": layout(24 * 1024, {"policy": "trace", "max_inflight": 3,
                                     "max_bytes": "9 KiB"})})
    base = ["simulate", *files, "--seed", "3", "--json"]

    def data(name: str, *args: str) -> dict:
        out = cli(*base, "--layout", str(tmp_path / name), *args)
        assert out.exit_code == 0, out.stderr
        got = json.loads(out.stdout)
        got.pop("layout")
        return got

    def expected(cfg: PrefetchConfig | None) -> dict:
        return json.loads(json.dumps(comparable(run(layout(24 * 1024), trace, cfg))))

    section = data("l.yaml")
    assert section["prefetch"] == {"policy": "trace", "max_inflight": 3, "max_bytes": 9216,
                                   "lookahead": 1}
    cfg = PrefetchConfig("trace", max_inflight=3, max_bytes=9216, trace=trace[1])
    want = expected(cfg)
    assert section["served"]["prefetch_issued"] > 0
    assert {k: v for k, v in section.items() if k in want} == want
    # --prefetch none: the run without the section, byte for byte
    assert data("l.yaml", "--prefetch", "none") == data("plain.yaml")
    changed = data("l.yaml", "--prefetch-inflight", "1", "--prefetch-bytes", "64 KiB")
    assert changed["prefetch"] == {"policy": "trace", "max_inflight": 1, "max_bytes": 65536,
                                   "lookahead": 1}
    children = data("l.yaml", "--prefetch", "children")
    assert children["prefetch"]["policy"] == "children"
    assert children["prefetch"]["max_inflight"] == 3  # the section's budget is kept
    for args, words in [(["--prefetch-inflight", "2"], "--prefetch-inflight is a prefetch "
                         "budget")]:
        out = cli(*base, "--layout", str(tmp_path / "plain.yaml"), *args)
        assert out.exit_code == 2 and words in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    (tmp_path / "nocache.yaml").write_text(
        "placement: {1: flash, 2: flash, 3: disk}\nprefetch: {policy: children}\n")
    out = cli(*base, "--layout", str(tmp_path / "nocache.yaml"))
    assert out.exit_code == 2 and out.stderr.startswith(
        f"memsim: error: {tmp_path / 'nocache.yaml'}:2: field 'prefetch': ")
    out = cli(*base, "--layout", str(tmp_path / "nocache.yaml"), "--prefetch", "none")
    assert out.exit_code == 0, out.stderr
