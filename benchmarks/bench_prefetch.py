"""Does prefetch help on the emulated cloud, and does the simulator predict the client with it?

Issue 14's target: with prefetch on a workload with locality, the client's hit ratio and mean
fetch time equal the simulator's on the same trace within the validate targets (10%) on the
emulated cloud tier, and prefetch lowers the mean fetch time there, measured both ways (real
reads and simulation).

Setup: the cloud is S3 behind memsim's delay proxy (20 ms each way, 100 MB/s per connection),
the emulator in its own process (`LocalS3Process`), calibrated first as `bench_validate.py`
does. The bank has two non-empty levels of 98 kB blocks (16 and 64 blocks, 4-ary), both in
the cloud; the layout has a RAM cache of --cache-blocks blocks. The workload is Poisson at
--util of the cloud's saturation rate, Zipf routing, and topic locality p=--locality (a query
keeps the previous query's level-2 block). For each seed, `memsim.validate` runs the same
queries three ways: no prefetch, and the client's `children` prefetch (the hottest children of
the served path, by the workload's routing popularity; --inflight reads in flight at most),
and `trace` prefetch (the next query's blocks). Each validation is the client serving real
reads (`replay` drives `ServedBank.afetch`) against the simulator modelling the same prefetch.

Printed per run: the real and simulated mean fetch time, cache hit ratio and prefetch hit
ratio with their errors, and PASS/MISS against the 10% target; then, per policy, the mean with
prefetch over the mean without, real and simulated. Nothing asserts. Timing on a shared
two-core virtual machine is noisy; the load average is printed with the figures.

    python benchmarks/bench_prefetch.py [--seeds 2] [--queries 400] [--util 0.3] [--recalibrate]
"""

from __future__ import annotations

import argparse
import os
import time

import _common  # noqa: F401 - sets thread-pool sizes before numpy is imported
import numpy as np
from bench_validate import WIDE, _calibrate

import memsim
from memsim.client.prefetch import PrefetchConfig
from memsim.materialize import materialize
from memsim.simulate import plan_queries
from memsim.validate import MEDIAN_TARGET, validate

POLICIES = ("none", "children", "trace")


def _setup(args: argparse.Namespace) -> tuple[memsim.Profile, memsim.Bank, memsim.Layout,
                                               float]:
    bank = memsim.bank_from_dict({"name": "cloud2", "branching": 4, "levels": [0, 2, 2],
                                  "anchor": WIDE})
    nbytes = bank.level(2).block_bytes
    tier = _calibrate("cloud", "s3://memsim/calib-prefetch", nbytes, args.latency_samples)
    prof = memsim.profile_from_dict({"name": "calibrated-cloud", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {**tier.model_dump(mode="json", exclude_none=True, exclude={"calibration"}),
         "name": "cloud", "store": "s3://memsim/bank-prefetch"}]})
    lay = memsim.layout_from_dict({
        "name": "cloud-cached", "placement": {2: "cloud", 3: "cloud"},
        "cache": {"budget": args.cache_blocks * nbytes, "policy": "lru"}})
    materialize(prof, bank, lay)
    plain = memsim.layout_from_dict({"name": "cloud", "placement": {2: "cloud", 3: "cloud"}})
    rate, _ = memsim.saturation_rate(prof, bank, plain)
    return prof, bank, lay, rate


def _config(policy: str, args: argparse.Namespace, wl: memsim.Workload, paths: np.ndarray
            ) -> PrefetchConfig | None:
    if policy == "none":
        return None
    if policy == "trace":
        return PrefetchConfig("trace", max_inflight=args.inflight, max_bytes=64 << 20,
                              trace=paths)
    return PrefetchConfig("children", max_inflight=args.inflight, max_bytes=64 << 20,
                          workload=wl)


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--util", type=float, default=0.3,
                        help="Offered load without cache, a fraction of saturation.")
    parser.add_argument("--locality", type=float, default=0.8)
    parser.add_argument("--cache-blocks", type=int, default=12)
    parser.add_argument("--inflight", type=int, default=4)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--recalibrate", action="store_true",
                        help="validate(recalibrate=True): refit the cloud's latency on the "
                        "bank's own blocks before each validation.")
    args = parser.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if set(policies) - set(POLICIES) or "none" not in policies:
        parser.error(f"--policies: a subset of {', '.join(POLICIES)} including none")
    print(f"bench_prefetch: load average {_common.format_load(_common.load_average())}, "
          f"{os.cpu_count()} CPUs, {args.seeds} seeds x {args.queries} queries, "
          f"locality {args.locality}, cache {args.cache_blocks} blocks, "
          f"{args.inflight} prefetch reads in flight", flush=True)
    from memsim.emulate import LocalS3Process

    cloud = LocalS3Process(delay=0.020, bandwidth=100e6).start()
    os.environ.update(cloud.env())
    started = time.perf_counter()
    means: dict[str, list[tuple[float, float]]] = {p: [] for p in policies}
    met = {p: 0 for p in policies}
    try:
        prof, bank, lay, rate = _setup(args)
        print(f"cloud saturation {rate:.1f} queries/s without cache; offered "
              f"{args.util * rate:.1f}/s", flush=True)
        for seed in range(args.seeds):
            wl = memsim.workload_from_dict({
                "name": "topics", "arrivals": {"kind": "poisson", "rate": args.util * rate},
                "routing": {"kind": "zipf", "s": 1.0}, "locality": {"p": args.locality}})
            plan = plan_queries(bank, wl, None, args.queries, seed, 0.1)
            paths = np.stack([plan.paths(i) for i in range(args.queries)])
            for policy in policies:
                result = validate(prof, bank, lay, wl, queries=args.queries, seed=seed,
                                  prefetch=_config(policy, args, wl, paths),
                                  recalibrate=args.recalibrate)
                r = result.ratios
                mean = r["mean fetch time"]
                means[policy].append((mean.real, mean.sim))
                checked = [k for k in ("mean fetch time", "cache hit ratio",
                                       "prefetch hit ratio") if k in r]
                ok = all(abs(r[k].error) <= MEDIAN_TARGET for k in checked)
                met[policy] += ok
                cells = []
                for k in checked:
                    real, sim = (memsim.format_time(r[k].real), memsim.format_time(r[k].sim)) \
                        if k.startswith("mean") else (_ratio(r[k].real), _ratio(r[k].sim))
                    cells.append(f"{k} {real} real / {sim} sim ({r[k].error:+.1%})")
                print(f"seed {seed} {policy:8}: " + "; ".join(cells)
                      + f"  {'PASS' if ok else 'MISS'}", flush=True)
    finally:
        cloud.stop()
    print(f"\nsummary ({time.perf_counter() - started:.0f} s, load average "
          f"{_common.format_load(_common.load_average())}; target: every figure within "
          f"{MEDIAN_TARGET:.0%}):")
    base = np.array(means["none"])
    for policy in policies:
        m = np.array(means[policy])
        line = f"  {policy:8}: {met[policy]}/{len(m)} runs within the target"
        if policy != "none":
            real, sim = m[:, 0] / base[:, 0], m[:, 1] / base[:, 1]
            line += (f"; mean with prefetch / without: real {np.median(real):.2f}x "
                     f"(range {real.min():.2f}-{real.max():.2f}), simulated "
                     f"{np.median(sim):.2f}x (range {sim.min():.2f}-{sim.max():.2f})")
        print(line)


if __name__ == "__main__":
    main()
