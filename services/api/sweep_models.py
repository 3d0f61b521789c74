"""What the sweeps API answers."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.sweeps import SweepSpec


class SweepBest(BaseModel):
    run_id: str
    value: float
    epoch: int


class TrialStop(BaseModel):
    rung: int = Field(description="the rung's index, from 0")
    epoch: int
    value: float | None
    message: str


class TrialOut(BaseModel):
    run_id: str
    name: str
    status: str
    parameters: dict[str, Any] = Field(description="the searched fields' values of this trial")
    epochs_completed: int
    best_value: float | None = Field(description="the best value of the sweep's metric this trial logged")
    best_epoch: int | None
    stopped: TrialStop | None = Field(None, description="where ASHA stopped it, and why")
    message: str | None = None


class SweepOut(BaseModel):
    id: str
    name: str
    project: str
    status: Literal["running", "completed", "killed"]
    spec: SweepSpec
    metric: str
    mode: Literal["max", "min"]
    rung_epochs: list[int] = Field(description="ASHA: the epochs at which trials are compared")
    trials: list[TrialOut]
    best: SweepBest | None = Field(description="the trial with the best metric so far")
    created_at: datetime
    completed_at: datetime | None = None


class SweepList(BaseModel):
    items: list[SweepOut]
