"""How well does the simulator predict real reads on this machine? Calibrate, then validate,
several times over, and print the errors of every run.

For each tier kind asked for (--tiers):

* ``warm``: a local directory read through the page cache;
* ``cold``: the same read with O_DIRECT (the device itself);
* ``cloud``: S3 behind memsim's delay proxy (20 ms each way, 100 MB/s per connection), the
  emulator in its own process (`LocalS3Process`).

a round is: `memsim.calibrate.calibrate` the tier (a scratch object; the latency measured at the
bank's block size, under load, one channel for local tiers), write a one-level bank on the tier
(--block-mib blocks for local tiers, 98 kB for the cloud), then `memsim.validate.validate` a
Poisson workload at --util of the tier's saturation rate, --seeds times. Every validation
prints its median error, p99 error, demerit and any diagnostic (a device that changed speed).
The summary gives, per tier, the median of |median error| and of the demerit over all runs,
and how many runs met the issue's targets (|median error| <= 10% and demerit <= 10%).

Nothing here asserts: these are the figures behind the README's validation section. Timing on
a shared two-core virtual machine is noisy; the load average is printed with the figures.

    python benchmarks/bench_validate.py --tiers warm,cloud --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401 - sets thread-pool sizes before numpy is imported
import numpy as np

import memsim
from memsim.calibrate import calibrate
from memsim.materialize import materialize
from memsim.validate import DEMERIT_TARGET, MEDIAN_TARGET, validate

WIDE = {"name": "wide", "layers": 1, "d_model": 8192, "d_ff": 1, "heads": 1, "head_dim": 1}


def _bank(block_mib: float, cloud: bool) -> memsim.Bank:
    if cloud:  # 16 blocks of 98 kB
        return memsim.bank_from_dict({"name": "cloud", "branching": 4, "levels": [0, 2],
                                      "anchor": WIDE})
    units = max(1, round(block_mib * (1 << 20) / 49152))  # WIDE: one unit is 48 KiB
    return memsim.bank_from_dict({"name": "local", "branching": 4, "levels": [0, units],
                                  "anchor": WIDE})


def _calibrate(kind: str, url: str, nbytes: int, samples: int) -> memsim.Tier:
    if kind == "cloud":
        result = calibrate({"t": url}, sizes=[4096, 65536, 262144, 1 << 20],
                           concurrencies=[1, 2], samples=6, object_size=2 << 20,
                           latency_sizes=[nbytes], latency_samples=samples,
                           kinds={"t": "cloud"})
    else:
        result = calibrate({"t": url}, sizes=[65536, 1 << 20], concurrencies=[1], samples=8,
                           latency_sizes=[nbytes], latency_samples=samples,
                           cold=kind == "cold", kinds={"t": "disk"})
    return result.profile.tier("t")


def _round(kind: str, work: Path, args: argparse.Namespace, index: int,
           endpoint: str | None) -> list[dict[str, object]]:
    cloud = kind == "cloud"
    bank = _bank(args.block_mib, cloud)
    nbytes = bank.level(2).block_bytes
    calib_url = f"s3://memsim/calib-{index}" if cloud else f"file://{work}/calib"
    bank_url = f"s3://memsim/bank-{index}" if cloud else f"file://{work}/bank"
    tier = _calibrate(kind, calib_url, nbytes, args.latency_samples)
    prof = memsim.profile_from_dict({"name": f"calibrated-{kind}", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {**tier.model_dump(mode="json", exclude_none=True, exclude={"calibration"}),
         "name": kind, "store": bank_url}]})
    lay = memsim.layout_from_dict({"name": "one-level", "placement": {2: kind}})
    materialize(prof, bank, lay)
    rate, _ = memsim.saturation_rate(prof, bank, lay)
    rows = []
    for seed in range(args.seeds):
        wl = memsim.workload_from_dict({"name": "moderate", "arrivals": {
            "kind": "poisson", "rate": args.util * rate}})
        result = validate(prof, bank, lay, wl, queries=args.queries, seed=seed,
                          cold=kind != "warm", recalibrate=args.recalibrate)
        c = result.per_tier[kind]
        rows.append({"kind": kind, "round": index, "seed": seed,
                     "util": result.simulated.utilization[kind], "p50": c.p50_error,
                     "p99": c.p99_error, "demerit": c.demerit, "real_p50": c.real_p50_s,
                     "sim_p50": c.sim_p50_s, "notes": result.diagnostics,
                     "concurrency": tier.concurrency, "block": nbytes})
        r = rows[-1]
        served = result.real.service_times.get(kind)
        modelled = (result.recalibrated[kind].service_p50_s if kind in result.recalibrated
                    else None)
        speed = ""
        if served is not None and served.size and modelled:
            # the device's own drift: its median service while replaying vs when calibrated
            r["drift"] = float(np.median(served)) / modelled - 1
            speed = f" (service p50 {r['drift']:+.0%} against its calibration)"
        print(f"{kind:5} round {index} seed {seed}: utilisation {r['util']:.2f}, real p50 "
              f"{memsim.format_time(c.real_p50_s)}, sim {memsim.format_time(c.sim_p50_s)}: "
              f"median error {c.p50_error:+.1%}, p99 error {c.p99_error:+.1%}, demerit "
              f"{c.demerit:.1%}{speed}"
              + "".join(f"\n      note: {d}" for d in result.diagnostics), flush=True)
        if args.verbose:
            parts = []
            for label, run in (("real", result.real), ("sim", result.simulated)):
                t = run.per_tier[kind]
                parts.append(f"{label} service {memsim.format_time(t['time_s'] - t['wait_s'])} "
                             f"wait {memsim.format_time(t['wait_s'])}")
            print("      mean per request: " + "; ".join(parts), flush=True)
    if not cloud:
        shutil.rmtree(work / "bank", ignore_errors=True)
    memsim.stores.forget()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiers", default="warm,cold,cloud",
                        help="Comma-separated: warm, cold, cloud [default: all three].")
    parser.add_argument("--rounds", type=int, default=3, help="Calibrations per tier.")
    parser.add_argument("--seeds", type=int, default=2, help="Validations per calibration.")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--util", type=float, default=0.45,
                        help="Offered load, a fraction of the tier's saturation rate.")
    parser.add_argument("--block-mib", type=float, default=15.0,
                        help="Block size of the local banks (MiB).")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--recalibrate", action="store_true",
                        help="validate(recalibrate=True): refit latency and overhead on the "
                        "bank's own blocks before each validation.")
    parser.add_argument("--verbose", action="store_true",
                        help="Also print each run's mean service and wait, real and simulated.")
    parser.add_argument("--dir", default=None, help="Scratch directory (a disk filesystem).")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.tiers.split(",") if k.strip()]
    unknown = set(kinds) - {"warm", "cold", "cloud"}
    if unknown:
        parser.error(f"unknown tier kind(s): {', '.join(sorted(unknown))}")
    flag = " --recalibrate" if args.recalibrate else ""
    print(f"bench_validate{flag}: load average {_common.format_load(_common.load_average())}, "
          f"{os.cpu_count()} CPUs, {args.rounds} rounds x {args.seeds} seeds, "
          f"{args.queries} queries at {args.util:.2f} of saturation", flush=True)
    work = Path(tempfile.mkdtemp(prefix="memsim-bench-validate-", dir=args.dir))
    cloud = None
    rows: list[dict[str, object]] = []
    started = time.perf_counter()
    try:
        if "cloud" in kinds:
            from memsim.emulate import LocalS3Process

            cloud = LocalS3Process(delay=0.020, bandwidth=100e6).start()
            os.environ.update(cloud.env())
        for kind in kinds:
            for index in range(args.rounds):
                rows += _round(kind, work, args, index, cloud.endpoint if cloud else None)
    finally:
        if cloud is not None:
            cloud.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nsummary ({time.perf_counter() - started:.0f} s, load average "
          f"{_common.format_load(_common.load_average())}):")
    for kind in kinds:
        mine = [r for r in rows if r["kind"] == kind]
        p50 = np.abs([r["p50"] for r in mine])
        dem = np.array([r["demerit"] for r in mine])
        met = sum(1 for a, d in zip(p50, dem, strict=True)
                  if a <= MEDIAN_TARGET and d <= DEMERIT_TARGET)
        noted = sum(1 for r in mine if r["notes"])
        print(f"  {kind:5}: |median error| median {np.median(p50):.1%} (range "
              f"{p50.min():.1%}..{p50.max():.1%}), demerit median {np.median(dem):.1%} (range "
              f"{dem.min():.1%}..{dem.max():.1%}); {met}/{len(mine)} runs meet both targets; "
              f"{noted} with a diagnostic")


if __name__ == "__main__":
    main()
