"""Hyperparameter sweeps: a base run spec, a search space over its fields, a searcher.

A sweep's trials are ordinary runs (their documents carry `sweep`); the api
draws every trial's parameters when the sweep is created, the scheduler owns
the sweep from then on (ASHA's rung decisions, its best trial, its end).
"""

import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from shared.events import Event, FiniteFloat, RunEvent
from shared.specs import LOWER_IS_BETTER, RunSpec, Strict, TrackedMetric

FiniteNumber = Annotated[float, Field(allow_inf_nan=False)]


class LogUniform(Strict):
    """A float drawn uniformly on a log scale in [low, high] (learning rates)."""

    type: Literal["log_uniform"]
    low: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    high: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    grid_points: Annotated[int, Field(ge=1, le=100, description="values of a grid search")] = 3


class Uniform(Strict):
    """A float drawn uniformly in [low, high]."""

    type: Literal["uniform"]
    low: FiniteNumber
    high: FiniteNumber
    grid_points: Annotated[int, Field(ge=1, le=100, description="values of a grid search")] = 3


class IntRange(Strict):
    """An integer in [low, high], both included (frozen stages, input size with `step` 32)."""

    type: Literal["int"]
    low: int
    high: int
    step: Annotated[int, Field(ge=1)] = 1


class Choice(Strict):
    """One of the listed values (batch size, architecture, optimizer)."""

    type: Literal["choice"]
    values: Annotated[list[Any], Field(min_length=1, max_length=100)]


Parameter = Annotated[LogUniform | Uniform | IntRange | Choice, Field(discriminator="type")]

# Fields a search space may not vary: identity, data, and what the searcher itself sets.
NOT_SEARCHABLE = frozenset({"name", "dataset_id", "epochs", "base_model_id"})
SEARCHABLE = sorted(set(RunSpec.model_fields) - NOT_SEARCHABLE)


class Searcher(Strict):
    """`grid` and `random` train every trial for the base spec's epochs; `asha` (asynchronous
    successive halving, as Determined runs it) starts every trial for `max_epochs` and at each
    rung (`first_rung_epochs` x `reduction_factor`^k epochs) lets a trial continue only if it is
    in the top 1/`reduction_factor` of the trials that have reached that rung."""

    name: Literal["grid", "random", "asha"] = "asha"
    reduction_factor: Annotated[int, Field(ge=2, le=16, description="ASHA's eta")] = 4
    first_rung_epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    max_epochs: Annotated[int | None, Field(ge=1, le=1000, description="ASHA: the most epochs a trial trains")] = None

    def rung_epochs(self) -> list[int]:
        """The epochs at which ASHA decides (none for grid and random): every rung below max_epochs."""
        if self.name != "asha" or self.max_epochs is None:
            return []
        rungs, epochs = [], self.first_rung_epochs
        while epochs < self.max_epochs:
            rungs.append(epochs)
            epochs *= self.reduction_factor
        return rungs


class SweepSpec(Strict):
    """What to search: validated before anything is stored; each trial's spec is validated as a run's."""

    name: Annotated[str, Field(min_length=1, max_length=180, pattern=r"^[^\x00-\x1f\x7f]+$")]
    base: dict[str, Any] = Field(description="a run spec (POST /v1/runs) without `name`; trials override "
                                             "the searched fields, and ASHA sets `epochs` to max_epochs")
    space: Annotated[dict[str, Parameter], Field(min_length=1, max_length=20, description=(
        "run-spec field -> how to draw it; fields: " + ", ".join(SEARCHABLE)))]
    searcher: Searcher = Searcher()
    metric: TrackedMetric = "bbox_mAP_50"
    mode: Literal["max", "min"] | None = Field(None, description="None: min for val_loss, else max")
    trials: Annotated[int, Field(ge=1, le=200, description="trials to train (grid: at most this many points)")] = 8
    max_concurrent: Annotated[int, Field(ge=1, le=100, description="trials training at once")] = 2
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0

    @model_validator(mode="after")
    def _consistent(self) -> "SweepSpec":
        for field, parameter in self.space.items():
            if field not in SEARCHABLE:
                raise ValueError(f"space.{field}: not a searchable run-spec field; searchable: "
                                 + ", ".join(SEARCHABLE))
            if isinstance(parameter, LogUniform | Uniform | IntRange) and parameter.low > parameter.high:
                raise ValueError(f"space.{field}: low {parameter.low} is above high {parameter.high}")
        if "name" in self.base:
            raise ValueError("base.name: trials are named after the sweep; leave it out")
        if self.searcher.name == "asha":
            if self.searcher.max_epochs is None:
                raise ValueError("searcher.max_epochs: ASHA needs the most epochs a trial may train")
            if not self.searcher.rung_epochs():
                raise ValueError(f"searcher.first_rung_epochs: {self.searcher.first_rung_epochs} leaves no rung "
                                 f"below max_epochs {self.searcher.max_epochs}")
            if int(self.base.get("evaluation_interval", 1)) != 1:
                raise ValueError("base.evaluation_interval: ASHA compares trials at every rung, so trials "
                                 "evaluate every epoch (1)")
        return self

    @property
    def direction(self) -> Literal["max", "min"]:
        return self.mode or ("min" if self.metric in LOWER_IS_BETTER else "max")


def better(direction: str, value: float, than: float) -> bool:
    return value < than if direction == "min" else value > than


def best_epoch_value(values: dict[str, float | None], direction: str) -> tuple[float | None, int | None]:
    """(value, epoch) of a trial's best metric among its epochs' values (keys `e<epoch>`); ties go to the earlier."""
    best: tuple[float | None, int | None] = (None, None)
    for key, value in sorted(values.items(), key=lambda kv: int(kv[0][1:])):
        if value is not None and (best[0] is None or better(direction, value, best[0])):
            best = (value, int(key[1:]))
    return best


def trial_budget(max_concurrent: int, trials: int) -> int:
    return max(1, min(max_concurrent, trials))


def log_uniform_grid(low: float, high: float, points: int) -> list[float]:
    if points == 1:
        return [math.sqrt(low * high)]
    step = (math.log(high) - math.log(low)) / (points - 1)
    return [math.exp(math.log(low) + i * step) for i in range(points)]


class SweepEvent(Event):
    sweep_id: str
    project: str


class SweepCreated(SweepEvent):
    """A user started a sweep; its trials are runs announced with run.created."""

    name: str
    trial_run_ids: list[str]


class SweepKillRequested(SweepEvent):
    """A user killed a sweep: the scheduler kills its trials that have not ended."""

    requested_by: str | None = None


class SweepTrialStopped(SweepEvent):
    """ASHA stopped a trial at a rung: it ends successfully there, its epochs, checkpoints and model kept."""

    run_id: str
    rung: int = Field(description="the rung's index, from 0")
    epoch: int
    value: FiniteFloat | None
    message: str


class SweepCompleted(SweepEvent):
    """Every trial of the sweep ended (or the sweep was killed)."""

    status: Literal["completed", "killed"]
    best_run_id: str | None
    best_value: FiniteFloat | None


class RunRungDecided(RunEvent):
    """The scheduler's ASHA decision for a trial that reported a rung's epoch (run.rung_decided.<trainer>):
    the training child waits for it at that epoch, then continues or ends the run successfully there."""

    attempt: Annotated[int, Field(ge=1)]
    trainer_id: str
    epoch: Annotated[int, Field(ge=1)]
    proceed: bool
    message: str
