"""Generated bad input across every file format and command option: memsim must answer each
with exit 0 or one clear line (exit 2-6), never a traceback, a hang or a leaked credential.

`make_case(rng)` builds one input: mutated profile, bank, layout (the policy: placement,
resident levels, cache) and workload YAML, a mutated Parquet trace, and a command line whose
option values are mutated too (huge, negative, NaN, unicode, empty, wrong types, credentials in
URLs), plus YAML-level attacks (deep nesting, alias bombs, tags, control characters, bad
encodings). The suite runs a sample in seconds; `benchmarks/fuzz_inputs.py` runs the same
generator at full size and prints counts per failure class.
"""

from __future__ import annotations

import copy
import os
import random
import re
import signal
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

SECRET = "FuZzS3cr3t/Key+Qx9v"  # a distinctive fake secret: it must never be printed
ACCESS_KEY = "AKIAFUZZFAKEKEY0001"
LEAKY_URLS = [f"s3://{ACCESS_KEY}:{SECRET}@bucket/prefix", f"ftp://u:{SECRET}@host/x",
              f"memory://{ACCESS_KEY}:{SECRET}@name", f"file://u:{SECRET}@localhost/d",
              f"http://{ACCESS_KEY}:{SECRET}@127.0.0.1:9/b", f"s3://bucket/p?endpoint=http://"
              f"u:{SECRET}@h:9000"]
OK_CODES = {0, 2, 3, 4, 5, 6}

# ----------------------------------------------------------------------------- base inputs

PROFILE: dict[str, Any] = {
    "name": "fuzz", "description": "fuzzed profile",
    "tiers": [
        {"name": "ram", "kind": "ram", "capacity": "16 GB", "bandwidth": "20 GB/s",
         "latency": "100 ns", "concurrency": 8},
        {"name": "flash", "kind": "flash", "capacity": "64 GB", "bandwidth": "4 GB/s",
         "latency": {"p50": "80 us", "p99": "400 us"}, "concurrency": 4},
        {"name": "disk", "kind": "disk", "capacity": "1 TB", "bandwidth": "1 GB/s",
         "aggregate_bandwidth": "1 GB/s", "latency": "1 ms", "concurrency": 2,
         "request_overhead": "50 us", "max_request_size": "16 MB"},
        {"name": "cloud", "kind": "cloud", "capacity": "unlimited", "bandwidth": "250 MB/s",
         "aggregate_bandwidth": "1 GB/s", "latency": {"p50": "30 ms", "p99": "200 ms"},
         "concurrency": 16, "store": "s3://bucket/bank",
         "cost": {"storage_usd_per_gb_month": 0.023, "usd_per_1000_requests": 0.0004}},
    ],
}
BANK: dict[str, Any] = {"name": "fuzzbank", "branching": 16, "levels": [0, 1024, 256, 64],
                        "memory_type": "ffn", "anchor": "410M", "dtype": "bf16"}
LAYOUT: dict[str, Any] = {"name": "fuzzlayout", "fetch": "parallel",
                          "placement": {2: "flash", 3: "disk", 4: "cloud"}, "resident": [2],
                          "cache": {"budget": "2 GB", "policy": "lru", "levels": [3, 4]},
                          "prefetch": {"policy": "children", "max_inflight": 4,
                                       "max_bytes": "64 MB", "lookahead": 1},
                          "blocked": [{"level": 2, "block": 3}], "chunking": {4: 16}}
WORKLOADS: list[dict[str, Any]] = [
    {"name": "w", "arrivals": {"kind": "poisson", "rate": "20/s"},
     "routing": {"kind": "zipf", "s": 1.0, "seed": 1}, "locality": {"p": 0.9}},
    {"name": "w", "arrivals": {"kind": "closed", "clients": 4, "think": "5 ms"},
     "routing": "uniform"},
    {"name": "w", "arrivals": {"kind": "onoff", "on_rate": "100/s", "off_rate": "5/s",
                               "on": "2 s", "off": "8 s"}, "routing": "zipf"},
    {"name": "w", "arrivals": {"kind": "schedule", "steps": [{"rate": "10/s", "duration": "1 s"},
                                                           {"rate": "50/s", "duration": "2 s"}]},
     "routing": {"kind": "empirical", "file": "counts.parquet"}},
]

SWEEP: dict[str, Any] = {
    "name": "fuzzsweep",
    "base": {"profile": "profile.yaml", "bank": "bank.yaml", "workload": "workload.yaml",
             "optimize": {"scenarios": 2, "slo": ["p99 <= 1 s"]}},
    "axes": {"profile.tiers.flash.bandwidth": ["2 GB/s", "4 GB/s"],
             "workload.rate": {"from": 1, "to": 2, "steps": 1}},
    "sample": "grid",
    "stages": {"estimate": {"samples": 100}, "simulate": {"queries": 100, "seed": 1}},
}

# ----------------------------------------------------------------------------- nasty values

# Raw YAML text for one value (inserted verbatim into the dumped document).
NASTY_YAML = [
    "9" * 5000, "-" + "9" * 50, "1e1000000", "1e-1000000", ".nan", ".inf", "-.inf", "-1", "0",
    "''", "null", "~", "[]", "{}", "true", "'1e1000000 MB/s'", "'1e400 GB'", "'-5 GB'",
    "'NaN ms'", "'inf GB/s'", "'80 parsecs'", "'💥 GB'", "'\u202e1 GB'", "'１０ GB'",
    "'" + "x" * 20_000 + "'", "!!python/object:os.system 'echo pwned'",
    "!!python/object/apply:os.system ['true']", "!custom 3", "!!binary aGVsbG8=",
    "!!set {a, b}", "2**64", str(2**63), str(-(2**63)), "1.5", "'1.5'", "0x10", "0o17",
    "2024-01-01", "[1, [2, [3]]]", "{a: 1}", "'L0'", "'L99'", "'2,2'", "99", "-3",
    "'s3://bucket'", "'/etc/passwd'", "'a\\0b'", "\"\\x07bell\"", "'ftp://x'",
    *[f"'{u}'" for u in LEAKY_URLS],
]
# Option values: strings as a user would type them.
NASTY_OPTIONS = [
    "-1", "0", "1e400", "1e1000000", "9" * 5000, "nan", "inf", "-inf", "", " ", "💥", "\u202e",
    "１２", "1,2,3,99", "L0", "2,2", "0:0", "99:99999999999999999999", "-1:-1", "1:", ":",
    "a\0b", "x" * 5000, "1e1000000 MB", "-5 GB", "unlimited", "3.7", "1_000", "0x10",
    *LEAKY_URLS, f"ram={LEAKY_URLS[0]}",
]


@dataclass
class Case:
    """One generated input: files to write, then the command line (with {dir} for paths)."""

    kind: str
    files: dict[str, bytes] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    trace: dict[str, Any] | None = None  # columns for a Parquet trace, written by the runner
    counts: dict[str, Any] | None = None  # columns for a routing counts Parquet file
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.kind}: {' '.join(self.args)[:300]} [{'; '.join(self.notes)[:300]}]"


class _Raw(str):
    """A value to insert as raw YAML text."""


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*prefix, i))


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _typo(name: str, rng: random.Random) -> str:
    if len(name) < 2:
        return name + "x"
    i = rng.randrange(len(name))
    op = rng.randrange(3)
    if op == 0:
        return name[:i] + name[i + 1:]
    if op == 1:
        return name[:i] + rng.choice(string.ascii_lowercase) + name[i:]
    return name[:i] + name[i:][::-1][:1] + name[i + 1:] + "_"


def mutate(data: Any, rng: random.Random, notes: list[str], raws: list[str]) -> Any:
    """`data` with 1-3 random mutations: a nasty value, a deleted or misspelt key, a wrong
    type, a duplicated list item, or a credential in a store URL."""
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent, key = _get(data, path[:-1]), path[-1]
        op = rng.randrange(7)
        if op <= 2:
            raw = rng.choice(NASTY_YAML)
            raws.append(raw)
            parent[key] = _Raw(f"__RAW{len(raws) - 1}__")
            notes.append(f"{path}={raw[:40]!r}")
        elif op == 3 and isinstance(parent, dict):
            del parent[key]
            notes.append(f"del {path}")
        elif op == 4 and isinstance(parent, dict) and isinstance(key, str):
            parent[_typo(key, rng)] = parent.pop(key)
            notes.append(f"typo {path}")
        elif op == 5:
            parent[key] = [parent[key]] if rng.random() < 0.5 else {"value": parent[key]}
            notes.append(f"wrap {path}")
        elif op == 6 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
            notes.append(f"dup {path}")
        else:
            raws.append(f"'{rng.choice(LEAKY_URLS)}'")
            parent[key] = _Raw(f"__RAW{len(raws) - 1}__")
            notes.append(f"{path}=leaky url")
    return data


def to_yaml(data: Any, raws: list[str]) -> str:
    text = yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True, width=4096)
    for i, raw in enumerate(raws):
        text = text.replace(f"__RAW{i}__", raw)
    return text


def _plain(data: Any) -> Any:
    if isinstance(data, _Raw):
        return str(data)
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def attack_text(text: str, rng: random.Random, notes: list[str]) -> bytes:
    """YAML-level attacks on a whole document."""
    op = rng.randrange(11)
    if op == 0:
        depth = rng.choice([70, 1000, 20_000])
        notes.append(f"deep nesting {depth}")
        return (text + "deep: " + "[" * depth + "]" * depth + "\n").encode()
    if op == 1:
        lines = ["bomb0: &b0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"bomb{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 10) + "]" for i in range(1, 9)]
        notes.append("alias bomb")
        return (text + "\n".join(lines) + "\n").encode()
    if op == 2:
        notes.append("tag")
        return ("evil: !!python/object/apply:os.system ['true']\n" + text).encode()
    if op == 3:
        pos = rng.randrange(len(text) + 1)
        char = chr(rng.choice([0, 1, 7, 8, 0x1B, 0x7F, 0xFFFE, 0xD800 - 1]))
        notes.append(f"control char U+{ord(char):04X} at {pos}")
        return (text[:pos] + char + text[pos:]).encode("utf-8", "surrogatepass")
    if op == 4:
        raw = text.encode()
        pos = rng.randrange(len(raw) + 1)
        notes.append(f"bad utf-8 at {pos}")
        return raw[:pos] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]) + raw[pos:]
    if op == 5:
        raw = text.encode()
        cut = rng.randrange(len(raw) + 1)
        notes.append(f"truncated at {cut}")
        return raw[:cut]
    if op == 6:
        notes.append("huge scalar")
        return (text + "huge: " + "y" * rng.choice([20_000, 2_000_000]) + "\n").encode()
    if op == 7:
        notes.append("duplicate key / bad indentation")
        lines = text.splitlines()
        i = rng.randrange(len(lines)) if lines else 0
        return "\n".join([*lines[:i + 1], *lines[i:i + 1], "\t  x: : :", *lines[i + 1:]]).encode()
    if op == 8:
        notes.append("not a mapping")
        return rng.choice([b"- a\n- b\n", b"just text\n", b"42\n", b"", b"---\n...\n",
                           b"\xef\xbb\xbfname: bom\n", b"a: 1\n---\nb: 2\n"])
    return text.encode()


def _trace_columns(rng: random.Random, notes: list[str]) -> dict[str, Any]:
    import numpy as np

    n = rng.choice([0, 1, 5, 50])
    arrival = np.sort(np.random.default_rng(rng.randrange(2**32)).random(n)) * 10
    cols: dict[str, Any] = {"query_id": np.arange(n, dtype=np.int64), "arrival_s": arrival}
    for depth in range(1, 5):
        cols[f"block_L{depth}"] = np.random.default_rng(depth).integers(0, 16**depth, n)
    op = rng.randrange(12)  # 6..11: a valid trace
    if op == 0 and n:
        cols["arrival_s"] = cols["arrival_s"].copy()
        cols["arrival_s"][0] = rng.choice([float("nan"), float("inf"), -1.0, 1e308])
        notes.append("trace: bad arrival")
    elif op == 1 and n:
        cols["block_L4"] = cols["block_L4"].copy()
        cols["block_L4"][-1] = rng.choice([-1, 2**62, 16**4])
        notes.append("trace: block out of range")
    elif op == 2:
        del cols[rng.choice(list(cols))]
        notes.append("trace: column missing")
    elif op == 3:
        cols["block_L3"] = [str(x) for x in cols["block_L3"]]
        notes.append("trace: strings")
    elif op == 4 and n > 1:
        cols["arrival_s"] = cols["arrival_s"][::-1].copy()
        notes.append("trace: decreasing arrivals")
    elif op == 5:
        notes.append("trace: not parquet")
        return {"__bytes__": rng.choice([b"", b"PAR1", b"not parquet at all", b"PAR1\0\0PAR1"])}
    return cols


def _counts_columns(rng: random.Random, notes: list[str]) -> dict[str, Any]:
    import numpy as np

    cols: dict[str, Any] = {"level": np.array([2, 3, 4, 4]), "block": np.array([0, 5, 7, 9]),
                            "count": np.array([3.0, 1.0, 2.0, 1.0])}
    op = rng.randrange(5)
    if op == 0:
        cols["count"] = np.array([rng.choice([float("nan"), -1.0, float("inf")]), 1, 1, 1])
        notes.append("counts: bad count")
    elif op == 1:
        cols["block"] = np.array([0, -1, 2**62, 9])
        notes.append("counts: bad block")
    elif op == 2:
        cols["level"] = np.array([0, 9, 99, -1])
        notes.append("counts: bad level")
    elif op == 3:
        del cols["count"]
        notes.append("counts: missing column")
    return cols


def _file(kind: str, base: Any, rng: random.Random, notes: list[str],
          mutate_prob: float) -> bytes:
    raws: list[str] = []
    data = mutate(base, rng, notes, raws) if rng.random() < mutate_prob else copy.deepcopy(base)
    text = to_yaml(data, raws)
    if rng.random() < mutate_prob / 3:
        return attack_text(text, rng, notes)
    return text.encode("utf-8", "surrogatepass")


# Values click itself converts (INT, FLOAT ranges): click's own usage error echoes the value, so
# the suite leaves credentials out of them until that message is scrubbed (see
# test_click_usage_errors_do_not_echo_credentials); the full-size run keeps them.
TYPED = {"--samples", "--seed", "--scenarios", "--buckets", "--time-limit", "--gap",
         "--queries", "--warmup", "--verify-queries", "--budget"}
NASTY_TYPED_SUITE = [v for v in NASTY_OPTIONS if v not in LEAKY_URLS and "://" not in v]
_FULL = False  # set by make_case


def _opt(rng: random.Random, good: Callable[[], str], notes: list[str], name: str,
         p_bad: float = 0.2) -> str:
    if rng.random() < p_bad:
        pool = NASTY_TYPED_SUITE if name in TYPED and not _FULL else NASTY_OPTIONS
        value = rng.choice(pool)
        notes.append(f"{name}={value[:30]!r}")
        return value
    return good()


def make_case(rng: random.Random, *, full: bool = False) -> Case:
    """One random input. `full` allows the work options their full range (absurd values too
    are then tried at full size), else they stay small so that the suite runs in seconds."""
    global _FULL
    _FULL = full
    notes: list[str] = []
    kind = rng.choice(["profile", "bank", "layout", "workload", "estimate", "optimize",
                       "optimize", "simulate", "simulate", "schema", "sweep"])
    target = {"profile": 0.9, "bank": 0.9, "layout": 0.9, "workload": 0.9}
    # one file is the target of most mutations; with "none", only the options are mutated
    which = rng.choice(["profile", "bank", "layout", "workload", "none", "none"])
    files = {
        "profile.yaml": _file("profile", PROFILE, rng, notes,
                              target["profile"] if which == "profile" else 0.05),
        "bank.yaml": _file("bank", BANK, rng, notes, target["bank"] if which == "bank" else 0.05),
        "layout.yaml": _file("layout", LAYOUT, rng, notes,
                             target["layout"] if which == "layout" else 0.05),
        "workload.yaml": _file("workload", rng.choice(WORKLOADS), rng, notes,
                               target["workload"] if which == "workload" else 0.05),
    }
    case = Case(kind=kind, files=files, notes=notes)
    if rng.random() < 0.5:
        case.trace = _trace_columns(rng, notes)
    case.counts = _counts_columns(rng, notes)
    d = "{dir}"
    queries = (lambda: str(rng.choice([50, 200, 1000, 20_000]))) if full else (
        lambda: str(rng.choice([20, 50, 200])))
    if kind in ("profile", "bank", "layout", "workload"):
        sub = rng.choice(["validate", "show", "show-json"]) if kind != "workload" else "validate"
        if kind == "workload" and rng.random() < 0.3:
            sub = "list"
        args = [kind, sub.replace("-json", "")]
        if sub != "list":
            args.append(f"{d}/{kind}.yaml" if rng.random() < 0.9 else rng.choice(
                NASTY_OPTIONS + ["paper-hypothetical", "A2", "paper-flat", "zipf-topic"]))
        if sub == "show-json":
            args.append("--json")
        case.args = args
    elif kind == "schema":
        case.args = ["schema", rng.choice(["profile", "bank", "layout", "workload", "sweep",
                                           "nope"])]
    elif kind == "sweep":
        case.files["sweep.yaml"] = _file("sweep", SWEEP, rng, notes,
                                         0.9 if rng.random() < 0.6 else 0.05)
        args = ["sweep", f"{d}/sweep.yaml"]
        if rng.random() < 0.5:
            args.append("--dry-run")
        else:
            args += ["--workers", "0", "--out", f"{d}/r.parquet"]
        if rng.random() < 0.4:
            args += ["--confirm", _opt(rng, lambda: rng.choice(["pareto", "top:1", "top:3"]),
                                       notes, "--confirm")]
        if rng.random() < 0.3:
            args += ["--confirm-metrics", _opt(rng, lambda: rng.choice(
                ["p99,cost", "mean,energy", "cost,p99"]), notes, "--confirm-metrics")]
        case.args = args
    elif kind == "estimate":
        args = ["estimate", "--profile", f"{d}/profile.yaml", "--bank", f"{d}/bank.yaml",
                "--layout", f"{d}/layout.yaml"]
        if rng.random() < 0.85:  # the layout blocks a subtree: estimate needs a workload
            args += ["--workload", f"{d}/workload.yaml"]
        if rng.random() < 0.5:
            args += ["--samples", _opt(rng, lambda: str(rng.choice([10, 1000])), notes,
                                       "--samples")]
        if rng.random() < 0.3:
            args += ["--seed", _opt(rng, lambda: str(rng.randrange(100)), notes, "--seed")]
        case.args = args
    elif kind == "optimize":
        args = ["optimize", "--profile", f"{d}/profile.yaml", "--bank", f"{d}/bank.yaml"]
        if rng.random() < 0.4:
            args += ["--resident", _opt(rng, lambda: rng.choice(["2", "2,3", "3,4"]), notes,
                                        "--resident")]
        if rng.random() < 0.3:
            args += ["--resident-budget", _opt(rng, lambda: rng.choice(["100 MB", "1 GB"]),
                                               notes, "--resident-budget")]
        if rng.random() < 0.3:
            args += ["--scenarios", _opt(rng, lambda: str(rng.choice([1, 4, 8])), notes,
                                         "--scenarios")]
        if rng.random() < 0.3:
            args += ["--fetch", rng.choice(["parallel", "sequential", "both"])]
        if rng.random() < 0.3:
            args += ["--granularity", "bucket", "--buckets",
                     _opt(rng, lambda: str(rng.choice([2, 8, 16])), notes, "--buckets")]
            if case.trace is not None and rng.random() < 0.5:
                args += ["--trace", f"{d}/trace.parquet"]
            elif rng.random() < 0.7:
                args += ["--workload", f"{d}/workload.yaml"]
        elif rng.random() < 0.3:
            args += ["--workload", f"{d}/workload.yaml"]
        if rng.random() < 0.2:
            args += ["--budget", _opt(rng, lambda: rng.choice(["100", "1e6"]), notes, "--budget")]
        if rng.random() < 0.2:  # the goal: a load, targets, what to minimise
            args += ["--rate", _opt(rng, lambda: rng.choice(["5/s", "40/s", "0.5"]), notes,
                                    "--rate")]
        if rng.random() < 0.15:
            args += ["--slo", _opt(rng, lambda: rng.choice(["p99 <= 50 ms", "mean <= 1 s"]),
                                   notes, "--slo")]
        if rng.random() < 0.15:
            args += ["--objective", _opt(rng, lambda: rng.choice(["p99", "cvar:0.9"]), notes,
                                         "--objective")]
        if rng.random() < 0.15:
            args += ["--minimize", rng.choice(["time", "cost", "energy", "speed"])]
        if rng.random() < 0.1:
            args += ["--energy-budget", _opt(rng, lambda: rng.choice(["50 mJ", "1 J"]), notes,
                                             "--energy-budget")]
        if rng.random() < 0.1:
            args += ["--max-utilization", _opt(rng, lambda: rng.choice(["0.5", "0.9"]), notes,
                                               "--max-utilization")]
        if rng.random() < 0.2:
            args += [rng.choice(["--private", "--blocked"]),
                     _opt(rng, lambda: rng.choice(["1:3", "2:7"]), notes, "--private")]
        if rng.random() < 0.15:
            args += ["--time-limit", _opt(rng, lambda: rng.choice(["0.5", "5"]), notes,
                                          "--time-limit")]
        if rng.random() < 0.15:
            args += ["--gap", _opt(rng, lambda: rng.choice(["0.01", "0"]), notes, "--gap")]
        if rng.random() < 0.1:
            args += ["--verify", "--verify-queries", queries()]
        if rng.random() < 0.3:
            args += ["--out", _opt(rng, lambda: f"{d}/out.yaml", notes, "--out", 0.2)]
        if rng.random() < 0.5:
            args.append("--json")
        case.args = args
    else:
        args = ["simulate", "--profile", f"{d}/profile.yaml", "--bank", f"{d}/bank.yaml",
                "--layout", f"{d}/layout.yaml", "--queries",
                _opt(rng, queries, notes, "--queries", 0.15)]
        if case.trace is not None and rng.random() < 0.4:
            args += ["--trace", f"{d}/trace.parquet"]
        else:
            args += ["--workload", f"{d}/workload.yaml"]
        if rng.random() < 0.3:
            args += ["--cache-budget", _opt(rng, lambda: rng.choice(["1 GB", "900 GB"]), notes,
                                            "--cache-budget")]
        if rng.random() < 0.2:
            args += ["--warmup", _opt(rng, lambda: rng.choice(["0", "0.1", "0.5"]), notes,
                                      "--warmup")]
        if rng.random() < 0.2:
            args += ["--seed", _opt(rng, lambda: str(rng.randrange(100)), notes, "--seed")]
        if rng.random() < 0.2:
            args += ["--trace-out", _opt(rng, lambda: f"{d}/out.parquet", notes, "--trace-out",
                                         0.2)]
        if rng.random() < 0.5:
            args.append("--json")
        case.args = args
    return case


# ----------------------------------------------------------------------------- running

def write_case(case: Case, folder: Path) -> list[str]:
    """Write the case's files into `folder`; the command line with its paths filled in."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, data in case.files.items():
        (folder / name).write_bytes(data)
    for name, cols in (("trace.parquet", case.trace), ("counts.parquet", case.counts)):
        if cols is None:
            continue
        if "__bytes__" in cols:
            (folder / name).write_bytes(cols["__bytes__"])
        else:
            pq.write_table(pa.table(cols), folder / name)
    return [a.replace("{dir}", str(folder)) for a in case.args]


class Hang(BaseException):
    """Raised by the alarm when one input runs past its time bound (not an Exception, so the
    CLI's error shell does not turn it into an exit code)."""


@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_LOCATED = re.compile(r":\d+: |field '[^']+'|option '?--[\w-]+|argument '?[A-Za-z_]+|"
                      r"missing option|no such (command|option)|command '")


_NAMES_FILE = re.compile(r"^(\S+|'[^']*'|\"[^\"]*\")(:\d+)?: ")  # "FILE: no such file"


@dataclass
class Outcome:
    code: int | None
    stdout: str
    stderr: str
    hang: bool = False
    exception: str = ""

    def problems(self, folder: str) -> list[str]:
        """Failure classes this outcome falls in (empty: fine)."""
        out = []
        text = self.stdout + self.stderr
        if self.hang:
            out.append("hang")
        if self.exception or "Traceback (most recent call last)" in text or self.code == 1:
            out.append("traceback")
        if self.code == 70:
            out.append("exit 70")
        elif self.code is not None and self.code not in OK_CODES:
            out.append(f"exit {self.code}")
        if SECRET in text or ACCESS_KEY in text:
            out.append("leak")
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("memsim: error:")]
        stray = [line for line in lines if not line.startswith(("memsim: error:",
                                                                "memsim: warning:"))]
        if len(errors) > 1 or stray:
            out.append("multi-line message")
        for line in errors:
            rest = line.removeprefix("memsim: error: ")
            names_file = rest.startswith(folder) or _NAMES_FILE.match(rest)
            if not (_LOCATED.search(line) or names_file):
                out.append("message without a location")
        if self.code not in (0, None) and not errors and not self.hang:
            out.append("error without a message")
        return out


def run_case(case: Case, folder: Path, invoke: Callable[[list[str]], Any],
             seconds: float = 10.0) -> Outcome:
    """Write `case` into `folder` and run it through `invoke` (click's CliRunner.invoke on
    memsim's main) within `seconds`."""
    args = write_case(case, folder)
    here = os.getcwd()
    os.chdir(folder)  # a relative --out or --trace-out lands in `folder`, nowhere else
    try:
        with time_bound(seconds):
            result = invoke(args)
    except Hang:
        return Outcome(None, "", "", hang=True)
    finally:
        os.chdir(here)
    exception = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exception = f"{type(result.exception).__name__}: {str(result.exception)[:200]}"
    return Outcome(result.exit_code, result.stdout, result.stderr, exception=exception)


# ----------------------------------------------------------------------------- the suite

def _invoker() -> Callable[[list[str]], Any]:
    from click.testing import CliRunner

    from memsim.cli import main

    runner = CliRunner()
    return lambda args: runner.invoke(main, args, catch_exceptions=True)


def test_generator_covers_every_format_and_command():
    rng = random.Random(0)
    cases = [make_case(rng) for _ in range(300)]
    kinds = {c.kind for c in cases}
    assert kinds == {"profile", "bank", "layout", "workload", "estimate", "optimize",
                     "simulate", "schema", "sweep"}
    notes = " ".join(n for c in cases for n in c.notes)
    for attack in ("deep nesting", "alias bomb", "tag", "control char", "bad utf-8",
                   "leaky url", "trace:", "counts:", "typo", "huge scalar"):
        assert attack in notes, attack


def test_outcome_classes_catch_what_they_name():
    folder = "/tmp/x"
    assert Outcome(1, "", "Traceback (most recent call last):\n").problems(folder)[0] == (
        "traceback")
    assert "leak" in Outcome(2, "", f"memsim: error: f.yaml:1: bad {SECRET}\n").problems(folder)
    assert "multi-line message" in Outcome(2, "", "memsim: error: a:1: x\nmore\n").problems(
        folder)
    assert "message without a location" in Outcome(2, "", "memsim: error: bad\n").problems(
        folder)
    assert Outcome(2, "", "memsim: error: f.yaml:3: field 'a': bad\n").problems(folder) == []
    assert Outcome(None, "", "", hang=True).problems(folder) == ["hang"]


def _fuzz_seeds(n: int) -> list[int]:
    return list(range(n))


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(min_value=0, max_value=2**32 - 1))
    def test_generated_inputs_give_one_clear_line(seed, tmp_path_factory):
        """exit 0 or 2-6, at most one error line naming where, no traceback, no secret,
        within 10 s: for a hypothesis-chosen sample of the generator's inputs."""
        case = make_case(random.Random(seed))
        folder = tmp_path_factory.mktemp("fuzz")
        outcome = run_case(case, folder, _invoker())
        problems = outcome.problems(str(folder))
        assert not problems, (problems, case.describe(), outcome.code, outcome.stderr[-600:],
                              outcome.exception)
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


@pytest.mark.parametrize("option", ["--queries", "--seed", "--warmup"])
def test_click_usage_errors_do_not_echo_credentials(option, tmp_path):
    outcome = run_case(Case(kind="simulate", args=["simulate", "--layout", "paper-flat",
                                                   "--workload", "zipf-topic", option,
                                                   LEAKY_URLS[0]]), tmp_path, _invoker())
    assert outcome.code == 2 and "leak" not in outcome.problems(str(tmp_path))


@pytest.mark.parametrize("args", [["optimize", "--out", "a\0b"],
                                  ["simulate", "--layout", "paper-flat", "--workload",
                                   "zipf-topic", "--queries", "20", "--trace-out", "a\0b"]])
def test_nul_in_a_path_option_is_a_usage_error(args, tmp_path):
    outcome = run_case(Case(kind=args[0], args=args), tmp_path, _invoker())
    assert outcome.problems(str(tmp_path)) == [] and outcome.code == 2
