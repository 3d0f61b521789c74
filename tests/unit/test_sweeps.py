"""Sweep specs, trial drawing and ASHA's decisions: pure logic."""

import math
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.api.errors import Unprocessable
from services.api.sweep_trials import trial_parameters, trial_specs
from services.scheduler.asha import RungArrival, decide
from services.scheduler.sweeps import best_trial
from shared.sweeps import Searcher, SweepSpec

DATASET = "0" * 32
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def sweep(**fields: object) -> SweepSpec:
    spec = {"name": "lr", "base": {"dataset_id": DATASET, "architecture": "rtmdet-tiny"},
            "space": {"learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-1}},
            "searcher": {"name": "asha", "reduction_factor": 4, "first_rung_epochs": 1, "max_epochs": 4},
            **fields}
    return SweepSpec.model_validate(spec)


def test_rungs_are_first_rung_times_eta_powers_below_max_epochs() -> None:
    assert Searcher(name="asha", reduction_factor=3, first_rung_epochs=1, max_epochs=27).rung_epochs() == [1, 3, 9]
    assert Searcher(name="asha", reduction_factor=2, first_rung_epochs=2, max_epochs=9).rung_epochs() == [2, 4, 8]
    assert Searcher(name="random").rung_epochs() == []


def test_log_uniform_trials_are_reproducible_and_inside_the_range() -> None:
    first, again = trial_parameters(sweep(trials=8, seed=3)), trial_parameters(sweep(trials=8, seed=3))
    assert first == again and len(first) == 8
    rates = [t["learning_rate"] for t in first]
    assert all(1e-4 <= r <= 1e-1 for r in rates) and len(set(rates)) == 8
    assert trial_parameters(sweep(trials=8, seed=4)) != first


def test_grid_is_the_product_of_each_parameters_points() -> None:
    spec = sweep(searcher={"name": "grid"}, trials=100, space={
        "learning_rate": {"type": "log_uniform", "low": 1e-3, "high": 1e-1, "grid_points": 3},
        "batch_size": {"type": "choice", "values": [2, 4]}})
    points = trial_parameters(spec)
    assert len(points) == 6
    assert sorted({round(p["learning_rate"], 9) for p in points}) == [0.001, 0.01, 0.1]


def test_asha_trials_train_for_max_epochs_and_are_named_after_the_sweep() -> None:
    trials = trial_specs(sweep(trials=3))
    assert [t.name for _, t in trials] == ["lr-01", "lr-02", "lr-03"]
    assert {t.epochs for _, t in trials} == {4}
    assert [t.learning_rate for _, t in trials] == [p["learning_rate"] for p, _ in trials]


def test_a_trial_that_is_not_a_valid_run_names_the_searched_field() -> None:
    with pytest.raises(Unprocessable) as error:
        trial_specs(sweep(space={"learning_rate": {"type": "log_uniform", "low": 20.0, "high": 50.0}}))
    assert "space.learning_rate" in error.value.detail and "trial 1" in error.value.detail


@pytest.mark.parametrize(("fields", "expected"), [
    ({"space": {"name": {"type": "choice", "values": ["a"]}}}, "space.name: not a searchable"),
    ({"space": {"learning_rate": {"type": "uniform", "low": 0.5, "high": 0.1}}}, "low 0.5 is above high 0.1"),
    ({"searcher": {"name": "asha", "first_rung_epochs": 4, "max_epochs": 4}}, "leaves no rung"),
    ({"searcher": {"name": "asha"}}, "searcher.max_epochs"),
    ({"base": {"dataset_id": DATASET, "architecture": "rtmdet-tiny", "evaluation_interval": 2}},
     "base.evaluation_interval"),
    ({"space": {"learning_rate": {"type": "log_uniform", "low": 1e-3, "high": math.inf}}}, "finite"),
])
def test_invalid_sweeps_say_what_is_wrong(fields: dict[str, object], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        sweep(**fields)


def arrivals(*values: float | None) -> list[RungArrival]:
    return [RungArrival(f"t{i}", v, T0 + timedelta(seconds=i)) for i, v in enumerate(values)]


def test_asha_keeps_the_top_fraction_of_the_trials_that_reached_the_rung_before() -> None:
    rung = arrivals(0.5, 0.4, 0.6, 0.1, 0.7, 0.2, 0.3, 0.8)
    outcomes = [decide(rung, f"t{i}", 4, "max").proceed for i in range(8)]
    # t0 alone: kept. t1..t3: one of 2-3 kept, only a new best. t4: best of 5 (keep 1). t7: best of 8 (keep 2).
    assert outcomes == [True, False, True, False, True, False, False, True]
    # The decision of a trial does not change when later trials arrive (it is taken on arrival).
    assert decide(rung[:3], "t2", 4, "max") == decide(rung, "t2", 4, "max")


def test_asha_ties_go_to_the_earlier_trial_and_undefined_ranks_last() -> None:
    rung = arrivals(0.0, 0.0, None, 0.0, 0.1)
    # t1 ties t0 (earlier wins); t3 ties two earlier trials, keep 2 of 4; t4 is the best.
    assert [decide(rung, f"t{i}", 2, "max").proceed for i in range(5)] == [True, False, False, False, True]
    assert decide(arrivals(0.3, 0.2), "t1", 2, "min").proceed


def test_best_trial_is_the_best_value_any_trial_logged() -> None:
    values: dict[str, dict[str, float | None]] = {"a": {"e1": 0.1, "e4": 0.3}, "b": {"e1": 0.2}, "c": {"e1": None}}
    assert best_trial(values, ["a", "b", "c"], "max") == ("a", 0.3, 4)
    assert best_trial(values, ["a", "b", "c"], "min") == ("a", 0.1, 1)
    assert best_trial({"c": {"e1": None}}, ["c"], "max") is None
