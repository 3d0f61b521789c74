"""What the sweeps API answers (GET /v1/sweeps/{id}), as the client returns it."""

from datetime import datetime
from typing import Any, Literal, TypedDict


class SweepBest(TypedDict):
    run_id: str
    value: float
    epoch: int


class TrialStop(TypedDict):
    rung: int
    epoch: int
    value: float | None
    message: str


class TrialOut(TypedDict):
    run_id: str
    name: str
    status: str
    parameters: dict[str, Any]
    epochs_completed: int
    best_value: float | None
    best_epoch: int | None
    stopped: TrialStop | None
    message: str | None


class Sweep(TypedDict):
    id: str
    name: str
    project: str
    status: Literal["running", "completed", "killed"]
    spec: dict[str, Any]  # the SweepSpec as sent (base, space, searcher, metric, ...)
    metric: str
    mode: Literal["max", "min"]
    rung_epochs: list[int]
    trials: list[TrialOut]
    best: SweepBest | None
    created_at: datetime
    completed_at: datetime | None


class SweepList(TypedDict):
    items: list[Sweep]
