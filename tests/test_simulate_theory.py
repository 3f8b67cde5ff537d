"""The simulator against queueing theory: M/M/1, M/D/1, M/M/c (Erlang C) and M/G/1
processor sharing, at loads 0.5 and 0.8, one seed for all (chosen before looking at results).
Run lengths are set so the 99% batch-means interval is about +-2..3% at load 0.8 (longer
runs, to +-1%, are in benchmarks/bench_simulator.py; the suite must stay short).

Each model is one level on one tier, reached by Poisson arrivals: the service time is the
tier's latency (exponential or constant) with a negligible transfer, or, for processor
sharing, a transfer on a link shared by everything in flight.
"""

from __future__ import annotations

import math

import pytest

import memsim
from memsim.simulate import simulate
from memsim.workload import workload_from_dict

BANK = memsim.bank_from_dict({"name": "one-level", "levels": [1], "branching": 2,
                              "dtype": "int8", "anchor": {"layers": 1, "d_model": 1, "d_ff": 1,
                                                          "heads": 1, "head_dim": 1,
                                                          "params": 1}})
BLOCK = BANK.level(1).block_bytes  # 3 bytes
LAYOUT = memsim.layout_from_dict({"placement": {1: "dev"}})
SERVICE = 0.010  # mean service time, seconds


def _profile(latency, concurrency: int = 1, bandwidth: float = 1e18) -> memsim.Profile:
    return memsim.profile_from_dict({"name": "queue", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s", "capacity": "1 GB"},
        {"name": "dev", "kind": "other", "latency": latency, "concurrency": concurrency,
         "bandwidth": bandwidth},
    ]})


def _run(profile: memsim.Profile, rate: float, queries: int, seed: int):
    workload = workload_from_dict({"arrivals": {"kind": "poisson", "rate": rate}})
    return simulate(profile, BANK, LAYOUT, workload, queries=queries, seed=seed, warmup=0.05)


def erlang_c(c: int, a: float) -> float:
    """Probability of waiting in M/M/c with offered load a = lambda / mu (Erlang C)."""
    rho = a / c
    top = a**c / math.factorial(c) / (1 - rho)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def _check(result, expected: float) -> None:
    """Within 3.5% of theory, and theory inside the run's own 99% batch-means interval."""
    mean = result.fetch_time_s["mean"]
    low, high = result.fetch_stats.interval("mean", level=0.99)
    assert abs(mean - expected) <= 0.035 * expected, (mean, expected)
    assert low <= expected <= high, (low, high, expected)
    assert not result.unstable  # a stable queue's batch means wander but do not climb


@pytest.mark.parametrize(("rho", "queries", "seed"), [(0.5, 200_000, 1), (0.8, 500_000, 1)])
def test_mm1(rho, queries, seed):
    mu = 1 / SERVICE
    result = _run(_profile({"distribution": "exponential", "mean": SERVICE}), rho * mu,
                  queries, seed)
    _check(result, 1 / (mu - rho * mu))


@pytest.mark.parametrize(("rho", "queries", "seed"), [(0.5, 100_000, 1), (0.8, 200_000, 1)])
def test_md1(rho, queries, seed):
    mu = 1 / SERVICE
    result = _run(_profile(SERVICE), rho * mu, queries, seed)
    _check(result, SERVICE + rho / (2 * mu * (1 - rho)))


@pytest.mark.parametrize(("rho", "c", "queries", "seed"),
                         [(0.5, 3, 150_000, 1), (0.8, 4, 350_000, 1)])
def test_mmc_erlang_c(rho, c, queries, seed):
    mu = 1 / SERVICE
    lam = rho * c * mu
    result = _run(_profile({"distribution": "exponential", "mean": SERVICE}, concurrency=c),
                  lam, queries, seed)
    _check(result, erlang_c(c, lam / mu) / (c * mu - lam) + 1 / mu)


@pytest.mark.parametrize(("rho", "queries", "seed"), [(0.5, 150_000, 1), (0.8, 270_000, 1)])
def test_mg1_processor_sharing(rho, queries, seed):
    """A link shared equally by all transfers in flight: mean sojourn E[S] / (1 - rho)."""
    bandwidth = BLOCK / SERVICE  # a lone transfer takes SERVICE seconds
    profile = _profile(0.0, concurrency=100_000, bandwidth=bandwidth)
    result = _run(profile, rho / SERVICE, queries, seed)
    _check(result, SERVICE / (1 - rho))
    assert result.utilization["dev"] == pytest.approx(rho, rel=0.03)
