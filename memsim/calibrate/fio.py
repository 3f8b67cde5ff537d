"""Cross-check with fio: the same file, request sizes and concurrency, read by fio itself.

fio reads memsim's test file (read-only, so it never writes or lays out anything) with
`--rw=randread`, 4 KiB-aligned random offsets, `--direct=1` where memsim read with O_DIRECT,
and, by default, the `psync` engine with one thread per stream: the mechanism memsim's local
store uses (threads calling preadv), so the difference between the two is memsim's software
path (event loop and thread pool). `--ioengine=libaio` with `--iodepth` instead measures the
device with one submitting thread. fio's `clat` percentiles and `bw_bytes` come from its JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memsim.errors import InputError, StoreError

ENGINES = ("psync", "libaio")
MISSING = ("fio is not installed: --fio needs it on the PATH (Debian/Ubuntu: "
           "apt-get install fio)")


@dataclass(frozen=True)
class FioPoint:
    """fio's figures at one (size, concurrency) point."""

    size: int
    concurrency: int
    engine: str
    direct: bool
    ios: int
    bw_bytes: float
    iops: float
    clat_p50_s: float
    clat_p99_s: float

    def to_json(self) -> dict[str, Any]:
        return {"size_bytes": self.size, "concurrency": self.concurrency,
                "engine": self.engine, "direct": self.direct, "ios": self.ios,
                "bw_bytes_per_s": self.bw_bytes, "iops": self.iops,
                "clat_p50_s": self.clat_p50_s, "clat_p99_s": self.clat_p99_s}


def fio_binary() -> str:
    """The fio executable, or an InputError saying how to get it."""
    path = shutil.which("fio")
    if path is None:
        raise InputError(MISSING, field="fio")
    return path


def command(fio: str, file: Path, size: int, concurrency: int, object_size: int, *,
            engine: str, direct: bool, runtime_s: float) -> list[str]:
    """The fio command line of one point."""
    if engine not in ENGINES:
        raise InputError(f"unknown fio engine {engine!r} (use {' or '.join(ENGINES)})",
                         field="fio-engine")
    name = str(file).replace(":", "\\:")  # fio separates several files with ':'
    args = [fio, "--name=memsim-calibrate", f"--filename={name}", "--readonly",
            "--rw=randread", f"--bs={size}", "--blockalign=4k", f"--size={object_size}",
            f"--direct={int(direct)}", f"--ioengine={engine}", "--norandommap",
            "--randrepeat=0", f"--runtime={max(1, round(runtime_s * 1000))}ms", "--time_based",
            "--percentile_list=50:99", "--group_reporting", "--output-format=json"]
    if engine == "psync":
        args += [f"--numjobs={concurrency}", "--thread"]
    else:
        args += [f"--iodepth={concurrency}", "--numjobs=1"]
    return args


def parse(text: str, size: int, concurrency: int, engine: str, direct: bool) -> FioPoint:
    """fio's JSON output (possibly after warning lines) as a FioPoint."""
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else None
        read = data["jobs"][0]["read"]
        pct = read["clat_ns"]["percentile"]
        p50 = next(v for k, v in pct.items() if float(k) == 50.0)
        p99 = next(v for k, v in pct.items() if float(k) == 99.0)
        return FioPoint(size=size, concurrency=concurrency, engine=engine, direct=direct,
                        ios=int(read["total_ios"]), bw_bytes=float(read["bw_bytes"]),
                        iops=float(read["iops"]), clat_p50_s=p50 * 1e-9, clat_p99_s=p99 * 1e-9)
    except (TypeError, ValueError, KeyError, IndexError, StopIteration):
        raise StoreError("could not read fio's JSON output (fio 3.x expected)") from None


def run(file: Path, sizes: list[int], concurrencies: list[int], object_size: int, *,
        engine: str = "psync", direct: bool = True, runtime_s: float = 1.0,
        timeout_s: float = 120.0) -> list[FioPoint]:
    """fio at every (size, concurrency) point on `file`, which it only reads."""
    fio = fio_binary()
    out = []
    # fio runs in a scratch directory of its own, removed afterwards, so nothing it might
    # write (it writes nothing with --readonly) is left in the user's directory
    with tempfile.TemporaryDirectory(prefix="memsim-fio-") as scratch:
        for c in concurrencies:
            for size in sizes:
                args = command(fio, file, size, c, object_size, engine=engine, direct=direct,
                               runtime_s=runtime_s)
                try:
                    proc = subprocess.run(args, cwd=scratch, capture_output=True, text=True,
                                          timeout=timeout_s, check=False)
                except subprocess.TimeoutExpired:
                    raise StoreError(f"fio did not finish within {timeout_s:g} s on {file.parent}"
                                     ) from None
                if proc.returncode != 0:
                    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines()
                             if ln.strip()]
                    reason = lines[-1].strip() if lines else f"exit status {proc.returncode}"
                    raise StoreError(f"fio failed on {file.parent} (--bs={size}, "
                                     f"{c} at once): {reason}")
                out.append(parse(proc.stdout, size, c, engine, direct))
    return out
