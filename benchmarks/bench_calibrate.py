"""How close does `calibrate` come to a cloud whose delay and bandwidth are known? The emulated
cloud (moto behind memsim's delay proxy, 20 ms each way, 100 MB/s per connection) is
calibrated --rounds times; each round prints the fitted bandwidth and latency median beside
the emulator's settings, and the round trip of a small read through moto alone and through the
proxy at a small delay (the emulator's own share of a read).

Nothing here asserts: the figures are this machine's timing (the test suite checks the
machinery: tests/test_calibrate.py). The load average is printed with them.

    python benchmarks/bench_calibrate.py --rounds 3
"""

from __future__ import annotations

import argparse
import os

import _common  # noqa: F401 - sets thread-pool sizes before numpy is imported

from memsim.calibrate import calibrate
from memsim.emulate import LocalS3

KiB, MiB = 1 << 10, 1 << 20
DELAY, BANDWIDTH = 0.02, 100e6
OBJECT = 5 * MiB  # moto slows with the object's size, so every run reads one of this size


def _small_read_s(url: str) -> float:
    """Median time of a single 4 KiB read, measured by calibrate itself."""
    result = calibrate({"cloud": url}, sizes=[4 * KiB, 16 * KiB], concurrencies=[1],
                       samples=16, object_size=OBJECT, latency_samples=16, gap_ratio=0.25,
                       load=0)
    return next(p.p50_s for p in result.tiers["cloud"].points if p.size == 4 * KiB)


def main() -> None:
    """Calibrate the emulated cloud and print the fit against the emulator's settings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with LocalS3(delay=DELAY, bandwidth=BANDWIDTH) as s3:
        os.environ.update(s3.env())
        print(f"load average {os.getloadavg()[0]:.2f}; emulator: {DELAY * 1e3:g} ms each way, "
              f"{BANDWIDTH / 1e6:g} MB/s")
        for r in range(args.rounds):
            direct = _small_read_s(f"s3://memsim/calib?endpoint={s3.direct_endpoint}")
            s3.proxy.configure(delay=0.002)
            try:
                emulator = _small_read_s("s3://memsim/calib") - 2 * 0.002
            finally:
                s3.proxy.configure(delay=DELAY)
            result = calibrate({"cloud": "s3://memsim/calib"},
                               sizes=[4 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB],
                               concurrencies=[1, 2], samples=10, object_size=OBJECT,
                               latency_samples=20, gap_ratio=0.25)
            fit = result.tiers["cloud"].fit
            known = 2 * DELAY + emulator
            print(f"round {r}: bandwidth {fit.bandwidth / 1e6:.1f} MB/s "
                  f"({fit.bandwidth / BANDWIDTH - 1:+.1%}); latency p50 "
                  f"{fit.latency_p50_s * 1e3:.2f} ms vs 2 x delay + emulator "
                  f"{known * 1e3:.2f} ms ({fit.latency_p50_s / known - 1:+.1%}), + moto alone "
                  f"{(2 * DELAY + direct) * 1e3:.2f} ms; residual {fit.residual_c1:.3f}")


if __name__ == "__main__":
    main()
