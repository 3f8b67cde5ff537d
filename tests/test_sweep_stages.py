"""A sweep point's stages (memsim.sweep.stages): the row is what the public API gives for
the same options, errors become rows (never raised), and rows are deterministic."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import memsim.sweep.stages as stages
from memsim import resources, yamlio
from memsim.bank import bank_from_dict
from memsim.errors import InfeasibleError
from memsim.estimate import estimate
from memsim.layout import layout_from_dict
from memsim.optimize import Policy, optimize, optimize_blocks
from memsim.optimize.goal import make_goal
from memsim.profile import profile_from_dict
from memsim.simulate import simulate
from memsim.sweep.columns import FIXED, VOLATILE
from memsim.sweep.point import EstimateStage, OptimizeOptions, Point, SimulateStage, Stages
from memsim.workload import workload_at_rate, workload_from_dict

QUERIES = 2000
SAMPLES = 2000


def _doc(name: str, kind: str) -> dict[str, Any]:
    return yamlio.load(resources.resolve(name, kind)).data


def _inputs(**changes: Any) -> dict[str, Any]:
    """Bank C2 on the shipped phone under zipf-topic at 2/s, least p99: the shipped
    phone-ram-flash sweep's base, with a small estimate and simulate stage."""
    inputs = {"profile": _doc("phone", "device_profiles"), "bank": _doc("C2", "banks"),
              "workload": _doc("zipf-topic", "workloads"), "layout": None, "rate": 2.0,
              "optimize": OptimizeOptions(objective="p99", scenarios=16).model_dump(),
              "stages": Stages(estimate=EstimateStage(samples=SAMPLES, seed=1),
                               simulate=SimulateStage(queries=QUERIES, seed=2)).model_dump()}
    inputs.update(changes)
    return inputs


def _point(inputs: dict[str, Any], index: int = 3) -> Point:
    return Point(index=index, axes={"profile.tiers.ram.capacity": "8 GB"}, inputs=inputs,
                 source="phone.yaml")


@pytest.fixture(scope="module")
def loaded_row() -> dict[str, Any]:
    return stages.run_point(_point(_inputs()))


def test_a_loaded_point_is_the_api_called_directly(loaded_row: dict[str, Any]) -> None:
    p = profile_from_dict(_doc("phone", "device_profiles"))
    b = bank_from_dict(_doc("C2", "banks"))
    wl = workload_at_rate(workload_from_dict(_doc("zipf-topic", "workloads")), 2.0)
    goal = make_goal(p, b, wl, objective="p99")
    result = optimize(p, b, scenarios=16, workload=wl, goal=goal)
    sim = simulate(p, b, result.layout, wl, queries=QUERIES, seed=2)
    fig = result.figures
    assert fig is not None and goal.loaded
    row = loaded_row
    assert row["status"] == "ok" and row["error"] is None and row["failed_stage"] is None
    assert row["est_source"] == "load model"  # under a rate: the optimizer's load model
    assert row["max_utilization"] == max(fig.utilization.values())
    assert (row["est_mean_s"], row["est_p50_s"], row["est_p99_s"]) == (
        fig.mean_s, fig.quantile_s["p50"], fig.quantile_s["p99"])
    assert row["cost_usd_month"] == fig.cost_usd_month
    assert row["energy_j_per_query"] == fig.energy_j_per_query
    assert row["objective"] == "time:p99" and row["objective_value"] == fig.quantile_s["p99"]
    assert row["placement"] == " ".join(f"{d}:{t}" for d, t in
                                        sorted(result.layout.placement.items()))
    assert row["rate"] == 2.0
    ci = sim.fetch_time_ci_s
    assert row["sim_queries"] == sim.queries
    assert (row["sim_mean_s"], row["sim_p99_s"]) == (sim.fetch_time_s["mean"],
                                                     sim.fetch_time_s["p99"])
    assert [row["sim_p99_lo_s"], row["sim_p99_hi_s"]] == (ci["p99"] or [None, None])
    assert row["sim_stable"] is (not sim.unstable)
    assert row["sim_max_utilization"] == max(sim.utilization.values())
    assert sim.energy is not None and row["sim_energy_j_per_query"] == sim.energy.j_per_query
    assert row["confirmed"] is None and row["wall_s"] > 0
    assert row["profile.tiers.ram.capacity"] == "8 GB" and row["index"] == 3
    assert set(FIXED) <= set(row)


def test_an_idle_point_takes_the_estimator_and_a_light_simulation() -> None:
    inputs = _inputs(workload=None, rate=None,  # estimate seed = optimize seed: its estimate
                     optimize=OptimizeOptions(scenarios=16).model_dump(),
                     stages=Stages(estimate=EstimateStage(samples=SAMPLES, seed=0),
                                   simulate=SimulateStage(queries=QUERIES)).model_dump())
    row = stages.run_point(_point(inputs))
    p = profile_from_dict(_doc("phone", "device_profiles"))
    b = bank_from_dict(_doc("C2", "banks"))
    result = optimize(p, b, scenarios=16)
    est = estimate(p, b, result.layout, samples=SAMPLES, seed=0)
    assert row["status"] == "ok" and row["est_source"] == "estimator"
    assert row["rate"] is None and row["max_utilization"] is None
    assert row["objective"] == "time:mean" and row["objective_value"] == result.objective_s
    assert (row["est_mean_s"], row["est_p99_s"]) == (est.fetch_time_s["mean"],
                                                     est.fetch_time_s["p99"])
    assert est.energy is not None and row["energy_j_per_query"] == est.energy.dynamic_j_per_query
    assert row["cost_usd_month"] == 0.0  # nothing on the paid cloud tier
    assert row["sim_queries"] == QUERIES - QUERIES // 10  # warm-up left out


def test_a_closed_loop_carries_its_planned_rate() -> None:
    row = stages.run_point(_point(_inputs(workload=_doc("closed-8", "workloads"), rate=None),
                                  ))
    assert row["status"] == "ok", row["error"]
    assert row["est_source"] == "load model" and row["rate"] is not None and row["rate"] > 0
    assert row["max_utilization"] <= 0.8 + 1e-9
    assert row["sim_queries"] == QUERIES - QUERIES // 10


def test_an_impossible_slo_is_an_infeasible_row_with_the_solvers_message() -> None:
    opts = OptimizeOptions(objective="p99", scenarios=16, slo=["p99 <= 1 us"])
    row = stages.run_point(_point(_inputs(optimize=opts.model_dump())))
    p = profile_from_dict(_doc("phone", "device_profiles"))
    b = bank_from_dict(_doc("C2", "banks"))
    wl = workload_at_rate(workload_from_dict(_doc("zipf-topic", "workloads")), 2.0)
    with pytest.raises(InfeasibleError) as info:
        optimize(p, b, scenarios=16, workload=wl,
                 goal=make_goal(p, b, wl, objective="p99", slos=["p99 <= 1 us"]))
    assert row["status"] == "infeasible" and row["failed_stage"] == "optimize"
    assert row["error"] == str(info.value)
    assert row["placement"] is None and row["sim_queries"] is None


def test_an_invalid_profile_is_a_failed_row_naming_the_point_and_field() -> None:
    profile = _doc("phone", "device_profiles")
    profile["tiers"][1] = {**profile["tiers"][1], "bandwidth": "fast"}
    row = stages.run_point(_point(_inputs(profile=profile)))
    assert row["status"] == "failed" and row["failed_stage"] == "optimize"
    assert "phone.yaml#point-3" in row["error"] and "bandwidth" in row["error"]
    assert "fast" in row["error"] and "\n" not in row["error"]


def _layout_inputs(**changes: Any) -> dict[str, Any]:
    """A hand-written layout of C2 on the phone, idle (no optimize stage), level 2
    resident and level 3 in the (paid) cloud."""
    layout = {"name": "by-hand", "placement": {1: "ram", 2: "flash", 3: "cloud"},
              "resident": [2]}
    inputs = _inputs(workload=None, rate=None, layout=layout,
                     optimize=OptimizeOptions().model_dump(),
                     stages=Stages(estimate=EstimateStage(samples=SAMPLES, seed=1)).model_dump())
    inputs.update(changes)
    return inputs


def test_a_given_layout_skips_optimize(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_optimizer(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the optimizer ran")

    monkeypatch.setattr("memsim.optimize.optimize", no_optimizer)
    monkeypatch.setattr("memsim.optimize.optimize_blocks", no_optimizer)
    row = stages.run_point(_point(_layout_inputs()))
    p = profile_from_dict(_doc("phone", "device_profiles"))
    b = bank_from_dict(_doc("C2", "banks"))
    layout = layout_from_dict(_layout_inputs()["layout"])
    est = estimate(p, b, layout, samples=SAMPLES, seed=1)
    assert row["status"] == "ok", row["error"]
    assert row["placement"] == "1:ram 2:flash* 3:cloud"  # resident marked
    assert row["objective"] is None and row["objective_value"] is None
    assert row["est_source"] == "estimator"
    switching = est.switch_fetch_time_s  # no workload: every query switches (as optimize)
    assert switching is not None
    assert (row["est_mean_s"], row["est_p99_s"]) == (switching["mean"], switching["p99"])
    assert row["cost_usd_month"] == pytest.approx(0.023 * b.level(3).bytes / 1e9)
    assert row["cost_usd_month"] > 0 and row["max_utilization"] is None
    assert row["sim_queries"] is None  # no simulate stage


def test_a_bug_in_a_stage_is_a_failed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("boom\nat line 2")

    monkeypatch.setattr(stages, "estimate", broken)
    row = stages.run_point(_point(_layout_inputs()))
    assert row["status"] == "failed" and row["failed_stage"] == "estimate"
    assert row["error"] == "ValueError: boom at line 2"
    assert row["placement"] == "1:ram 2:flash* 3:cloud"  # what ran before the bug is kept


def test_rows_pickle_and_repeat_exactly(loaded_row: dict[str, Any]) -> None:
    again = stages.run_batch([_point(_inputs())])
    assert len(again) == 1
    same = {k: v for k, v in again[0].items() if k not in VOLATILE}
    assert same == {k: v for k, v in loaded_row.items() if k not in VOLATILE}
    assert pickle.loads(pickle.dumps(loaded_row)) == loaded_row
    assert all(type(v) in (str, int, float, bool, type(None)) for v in loaded_row.values())
    screened = stages.run_point(_point(_inputs()), simulate=False)
    assert screened["sim_queries"] is None and screened["sim_stable"] is None
    assert screened["est_p99_s"] == loaded_row["est_p99_s"]


def test_bucket_granularity_places_blocks_by_share() -> None:
    opts = OptimizeOptions(granularity="bucket", buckets=8)
    inputs = _inputs(optimize=opts.model_dump(),
                     stages=Stages(estimate=EstimateStage(samples=SAMPLES)).model_dump())
    row = stages.run_point(_point(inputs))
    p = profile_from_dict(_doc("phone", "device_profiles"))
    b = bank_from_dict(_doc("C2", "banks"))
    wl = workload_at_rate(workload_from_dict(_doc("zipf-topic", "workloads")), 2.0)
    goal = make_goal(p, b, wl)
    policy = Policy(rate=goal.rate or 0.0, max_utilization=goal.max_utilization,
                    arrival_scv=goal.arrival_scv)
    result = optimize_blocks(p, b, wl, buckets=8, policy=policy, samples=SAMPLES)
    assert row["status"] == "ok", row["error"]
    assert row["objective"] == "time:mean" and row["objective_value"] == result.objective_s
    assert row["cost_usd_month"] == result.monthly_cost_usd
    assert result.utilization and row["max_utilization"] == max(result.utilization.values())
    assert row["est_source"] == "estimator"
    est = estimate(p, b, result.layout, samples=SAMPLES, workload=wl)
    assert row["est_mean_s"] == est.fetch_time_s["mean"]
    shares = {part.split(":")[0]: part.split(":")[1] for part in row["placement"].split()}
    split = [d for d, counts in result.tier_blocks.items() if len(counts) > 1]
    assert split and all("=" in shares[str(d)] and shares[str(d)].endswith("%") for d in split)


def test_bucket_only_options_at_level_granularity_fail_by_name() -> None:
    opts = OptimizeOptions(blocked=["1:0"])
    row = stages.run_point(_point(_inputs(optimize=opts.model_dump())))
    assert row["status"] == "failed" and "optimize.blocked" in row["error"]
