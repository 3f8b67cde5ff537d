"""The queueing-delay model (memsim/queueing.py) against independent things: closed forms,
a published Erlang C value, the M/M/c birth-death chain, hand computations, sampled
moments, and two short simulator runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_simulate_theory import SERVICE, _profile, _run

import memsim
from memsim import queueing
from memsim.errors import InputError
from memsim.latency import ConstantLatency, EmpiricalLatency, ExponentialLatency, LognormalLatency
from memsim.workload import workload_from_dict


def _log_erlang_c(c: int, a: float) -> float:
    """Erlang C from its textbook sum, in log space (independent of the recursion)."""
    logs = [k * math.log(a) - math.lgamma(k + 1) for k in range(c)]
    top = c * math.log(a) - math.lgamma(c + 1) - math.log(1 - a / c)
    m = max(*logs, top)
    below = sum(math.exp(x - m) for x in logs)
    return math.exp(top - m) / (below + math.exp(top - m))


def _mmc_wait(c: int, lam: float, mean: float) -> float:
    """Exact M/M/c mean wait in queue from the birth-death chain's stationary law."""
    a = lam * mean
    n = np.arange(c + 4000)
    logp = np.where(n <= c, n * math.log(a) - np.array([math.lgamma(k + 1) for k in n]),
                    c * math.log(a) - math.lgamma(c + 1) + (n - c) * math.log(a / c))
    p = np.exp(logp - logp.max())
    p /= p.sum()
    return float(np.sum(np.maximum(n - c, 0) * p)) / lam


def test_erlang_c_closed_forms_and_table():
    for rho in (0.1, 0.5, 0.9):
        assert queueing.erlang_c(1, rho) == pytest.approx(rho, rel=1e-12)
        assert queueing.erlang_c(2, 2 * rho) == pytest.approx(2 * rho**2 / (1 + rho), rel=1e-12)
    assert queueing.erlang_c(10, 8.0) == pytest.approx(0.4092, abs=5e-4)  # Erlang C tables
    assert queueing.erlang_c(3, 3.0) == 1.0 and queueing.erlang_c(3, 5.0) == 1.0
    assert queueing.erlang_c(4, 0.0) == 0.0


def test_erlang_c_monotone_and_stable_for_many_servers():
    loads = np.linspace(0.0, 7.99, 60)
    values = [queueing.erlang_c(8, a) for a in loads]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert queueing.erlang_c(9, 6.0) < queueing.erlang_c(8, 6.0)  # more servers, less waiting
    for c, a in ((2048, 2000.0), (2048, 1500.0), (4096, 4050.0)):
        got = queueing.erlang_c(c, a)
        assert 0.0 < got < 1.0
        assert got == pytest.approx(_log_erlang_c(c, a), rel=1e-9)


def test_wait_factors_and_link_slowdown():
    assert queueing.channel_wait_factor(1, 0.5) == pytest.approx(1.0)
    assert queueing.channel_wait_factor(4, 1.0) == math.inf
    assert queueing.link_slowdown(0.75) == pytest.approx(3.0)
    assert queueing.link_slowdown(1.0) == math.inf
    # A link of K whole streams is M/M/K; fractional K lies between its neighbours.
    assert queueing.link_slowdown(0.6, 3.0) == pytest.approx(queueing.channel_wait_factor(3, 0.6))
    mid = queueing.link_slowdown(0.6, 2.5)
    assert queueing.link_slowdown(0.6, 3.0) < mid < queueing.link_slowdown(0.6, 2.0)
    assert queueing.link_slowdown(0.6, math.inf) == 0.0
    # The continuous Erlang B at a fractional start: 1/B(x, a) = e^a a^-x Gamma(x + 1, a).
    from scipy.special import gamma, gammaincc

    for a in (0.05, 0.7, 3.0, 20.0):
        x = 0.47
        exact = 1 / (math.exp(a) * a**-x * gamma(x + 1) * gammaincc(x + 1, a))
        b2 = exact
        for k in (1, 2):  # on to x + 2 by the recursion
            b2 = a * b2 / (x + k + a * b2)
        assert queueing.erlang_b(x + 2, a) == pytest.approx(b2, rel=1e-3)


def _tier(latency, concurrency: int = 1, bandwidth: float = 1e18, **extra) -> memsim.Tier:
    return memsim.profile_from_dict({"name": "t", "tiers": [
        {"name": "ram", "kind": "ram", "bandwidth": "10 GB/s"},
        {"name": "dev", "kind": "other", "latency": latency, "concurrency": concurrency,
         "bandwidth": bandwidth, **extra}]}).tier("dev")


@pytest.mark.parametrize(("c", "rho"), [(1, 0.3), (1, 0.8), (4, 0.5), (16, 0.9)])
def test_mean_wait_is_mmc_for_exponential_service(c, rho):
    tier = _tier({"distribution": "exponential", "mean": SERVICE}, concurrency=c)
    demand = queueing.block_demand(tier, 1)
    lam = rho * c / SERVICE
    rho_c, rho_l = queueing.tier_load(tier, [(1.0, demand)], lam)
    assert rho_c == pytest.approx(rho)
    wait = queueing.mean_wait(tier, rho_c, rho_l, [(1.0, demand)], arrival_scv=1.0)
    assert wait == pytest.approx(_mmc_wait(c, lam, SERVICE), rel=1e-6)


@pytest.mark.parametrize(("latency", "concurrency"), [
    ({"distribution": "exponential", "mean": SERVICE}, 2),  # M/M/2
    ({"p50": SERVICE * 0.8, "p99": SERVICE * 4}, 1),  # M/G/1: the lognormal's second moment
])
def test_model_matches_the_simulator_at_half_load(latency, concurrency):
    profile = _profile(latency, concurrency=concurrency)
    tier = profile.tier("dev")
    demand = queueing.block_demand(tier, 3)  # the one-level bank's 3-byte block
    lam = 0.5 * concurrency / demand.channel_s
    rho_c, rho_l = queueing.tier_load(tier, [(1.0, demand)], lam)
    model = demand.channel_s + queueing.mean_wait(tier, rho_c, rho_l, [(1.0, demand)])
    result = _run(profile, lam, 20_000, seed=3)
    # 5%: with cs^2 = 1 in place of the lognormal's 0.62 the model would be 10% off
    assert result.mean_s == pytest.approx(model, rel=0.05), (result.mean_s, model)
    # channel_s is what the simulator counts as channel busy time
    busy = result.per_tier["dev"]["channel_utilization"]
    assert busy == pytest.approx(rho_c, rel=0.05)


def test_load_matches_the_simulators_analytic_load():
    """queueing.tier_load's bottleneck equals memsim.simulate.tier_load on every tier."""
    profile = memsim.load_profile("laptop")
    bank = memsim.bank_from_dict({"name": "b", "branching": 4, "levels": [64, 16],
                                  "memory_type": "ffn", "anchor": "160M", "dtype": "bf16"})
    for tier in profile.tiers:
        layout = memsim.layout_from_dict({"placement": {1: tier.name, 2: tier.name}})
        demands = [(1.0, queueing.block_demand(tier, lv.block_bytes))
                   for lv in bank.active_levels]
        ours = max(queueing.tier_load(tier, demands, 3.0))
        theirs = memsim.simulate.tier_load(profile, bank, layout, 3.0)[tier.name]
        assert ours == pytest.approx(theirs, rel=1e-12)


def test_block_demand_by_hand():
    """10 MB on a tier splitting at 4 MB: parts 4, 4, 2 MB on 2 channels, 1 GB/s per stream,
    1.5 GB/s in all; lognormal latency plus 0.5 ms overhead."""
    tier = _tier({"p50": "1 ms", "p99": "5 ms"}, concurrency=2, bandwidth="1 GB/s",
                 aggregate_bandwidth="1.5 GB/s", max_request_size="4 MB",
                 request_overhead="0.5 ms")
    d = queueing.block_demand(tier, 10_000_000)
    sigma = math.log(5) / 2.3263478740408408
    m1, m2 = 1e-3 * math.exp(sigma**2 / 2), 1e-6 * math.exp(2 * sigma**2)
    fixed = [0.5e-3 + 4e-3, 0.5e-3 + 4e-3, 0.5e-3 + 2e-3]
    assert d.requests == 3 and d.bytes == 10e6
    assert d.channel_s == pytest.approx(sum(m1 + f for f in fixed))
    assert d.channel_sq_s2 == pytest.approx(sum(m2 + 2 * f * m1 + f * f for f in fixed))
    assert d.channel_var_s2 == pytest.approx(3 * (m2 - m1 * m1))  # three latency draws
    # Idle transfer: two 4 MB parts share 1.5 GB/s (0.75 GB/s each, 5.333 ms), then the
    # 2 MB part alone at the stream's 1 GB/s (2 ms).
    assert d.transfer_s == pytest.approx(4e6 / 0.75e9 + 2e-3)


def test_second_moments():
    assert ConstantLatency(value=0.02).second_moment() == pytest.approx(4e-4)
    assert ExponentialLatency(mean=0.01).second_moment() == pytest.approx(2e-4)
    lognormal = LognormalLatency(p50=0.05, p99=0.25)
    draws = lognormal.sample(np.random.default_rng(5), 400_000)
    assert lognormal.second_moment() == pytest.approx(float((draws**2).mean()), rel=0.03)
    # Uniform on [1, 3] ms between p0 and p100: E[X^2] = (1 + 3 + 9) / 3 ms^2.
    uniform = EmpiricalLatency(quantiles={"min": "1 ms", "max": "3 ms"})
    assert uniform.second_moment() == pytest.approx(13 / 3 * 1e-6)
    table = EmpiricalLatency(quantiles={"p10": "1 ms", "p50": "2 ms", "p99": "10 ms"})
    draws = table.sample(np.random.default_rng(6), 400_000)
    assert table.second_moment() == pytest.approx(float((draws**2).mean()), rel=0.01)


def test_batches_raise_the_request_variability():
    """Two one-part blocks per query on one channel (M^X/D/1, X = 2): the batch's wait is
    E[S] g(rho) (E[X^2]/E[X] + cs^2) / 2 with cs^2 = 0, twice a lone block's."""
    tier = _tier(SERVICE)
    d = queueing.block_demand(tier, 1)
    one, _ = queueing.wait_scales(tier, [(1.0, d)])
    two, _ = queueing.wait_scales(tier, [(2.0, d)])
    assert one == pytest.approx(SERVICE / 2) and two == pytest.approx(SERVICE)
    seq, _ = queueing.wait_scales(tier, [(2.0, d)], fetch="sequential")
    assert seq == pytest.approx(SERVICE / 2)


def test_a_mixed_batch_on_one_channel_is_exact():
    """Two blocks of different sizes per query on one channel (lognormal latency): every
    block waits the work found ahead, E[V] = lambda E[B^2] / (2 (1 - rho)) (M^X/G/1), with
    B = S1 + S2 the batch's work, by hand from the latency's moments."""
    tier = _tier({"p50": "2 ms", "p99": "9 ms"}, bandwidth="1 GB/s")
    s1, s2 = queueing.block_demand(tier, 4_000_000), queueing.block_demand(tier, 1_000_000)
    sigma = math.log(4.5) / 2.3263478740408408
    m1, m2 = 2e-3 * math.exp(sigma**2 / 2), 4e-6 * math.exp(2 * sigma**2)
    e1, e2 = m1 + 4e-3, m1 + 1e-3
    square = 2 * (m2 - m1 * m1) + (e1 + e2) ** 2
    lam = 0.6 / (e1 + e2)
    rho_c, rho_l = queueing.tier_load(tier, [(1.0, s1), (1.0, s2)], lam)
    assert rho_c == pytest.approx(0.6)
    exact = lam * square / (2 * (1 - 0.6))
    assert queueing.mean_wait(tier, rho_c, rho_l, [(1.0, s1), (1.0, s2)]) == pytest.approx(exact)
    assert queueing.query_wait(tier, rho_c, rho_l, [(1.0, s1), (1.0, s2)]) == pytest.approx(exact)


def test_query_scales_on_a_shared_link():
    """Parallel: the batch's whole bytes go through a one-stream link; sequential: each
    block's own transfer, added."""
    tier = _tier(0.0, concurrency=8, bandwidth="1 GB/s")
    big, small = queueing.block_demand(tier, 3_000_000), queueing.block_demand(tier, 1_000_000)
    _, b = queueing.wait_scales(tier, [(1.0, big), (1.0, small)])
    assert b == pytest.approx(2e-3)  # per block: the mean transfer
    _, b = queueing.query_scales(tier, [(1.0, big), (1.0, small)])
    assert b == pytest.approx(4e-3)
    _, b = queueing.query_scales(tier, [(1.0, big), (1.0, small)], fetch="sequential")
    assert b == pytest.approx(4e-3)
    free = _tier(0.0, concurrency=2, bandwidth="1 GB/s", aggregate_bandwidth="2 GB/s")
    assert queueing.link_streams(free) == math.inf
    assert queueing.wait_scales(free, [(1.0, queueing.block_demand(free, 10**6))])[1] == 0.0


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 512), ceiling=st.floats(0.05, 0.97), pieces=st.integers(1, 12),
       streams=st.one_of(st.none(), st.floats(1.0, 40.0)),
       points=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20))
def test_chords_bound_the_curve(c, ceiling, pieces, streams, points):
    f = ((lambda r: queueing.channel_wait_factor(c, r)) if streams is None
         else (lambda r: queueing.link_slowdown(r, streams)))
    lines = queueing.chords(f, ceiling, pieces)
    assert len(lines) == pieces

    def top(r: float) -> float:
        return max(a + b * r for a, b in lines)

    breaks = [ceiling * (1 - (1 - k / pieces) ** 2) for k in range(pieces + 1)]
    for r in breaks:
        assert top(r) == pytest.approx(f(r), rel=1e-7, abs=1e-12)
    for u in points:
        r = u * ceiling
        assert top(r) >= f(r) * (1 - 1e-9) - 1e-12


def test_chords_refuse_an_infinite_ceiling():
    with pytest.raises(InputError, match="below 1"):
        queueing.chords(queueing.link_slowdown, 1.0)


def test_arrival_scv():
    poisson = workload_from_dict({"arrivals": {"kind": "poisson", "rate": 50}})
    assert queueing.arrival_scv(None) == 1.0 and queueing.arrival_scv(poisson) == 1.0
    flat = workload_from_dict({"arrivals": {"kind": "onoff", "rate_on": 20, "rate_off": 20,
                                            "mean_on": "1 s", "mean_off": "3 s"}})
    assert queueing.arrival_scv(flat) == pytest.approx(1.0)
    # Interrupted Poisson (rate_off 0): hyperexponential gaps, SCV 1 + 2 l a / (a + b)^2
    # with a = 1/mean_on, b = 1/mean_off (Fischer and Meier-Hellstern 1993).
    ipp = workload_from_dict({"arrivals": {"kind": "onoff", "rate_on": 40, "mean_on": "0.5 s",
                                           "mean_off": "2 s"}})
    a, b = 2.0, 0.5
    assert queueing.arrival_scv(ipp) == pytest.approx(1 + 2 * 40 * a / (a + b) ** 2)
    mmpp = workload_from_dict({"arrivals": {"kind": "onoff", "rate_on": 40, "rate_off": 5,
                                            "mean_on": "0.5 s", "mean_off": "2 s"}})
    gaps = np.diff(mmpp.arrivals.arrival_times(300_000, np.random.default_rng(7)))
    assert queueing.arrival_scv(mmpp) == pytest.approx(gaps.var() / gaps.mean() ** 2, rel=0.05)
    closed = workload_from_dict({"arrivals": {"kind": "closed", "clients": 4}})
    assert queueing.arrival_scv(closed) == 1.0
