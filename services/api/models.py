"""Request and response bodies of the HTTP API."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from shared.specs import RunSpec, Strict


class DatasetRegistration(Strict):
    """A COCO dataset on storage every trainer can read; relative paths are under `path`."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    path: str = Field(description="absolute path of the dataset's root directory")
    train_annotations: str = "annotations/train.json"
    train_images: str = "images/train"
    val_annotations: str = "annotations/val.json"
    val_images: str = "images/val"


class SplitOut(BaseModel):
    annotations: str
    images: str
    image_count: int
    box_count: int
    boxes_per_class: dict[str, int]


class DatasetOut(BaseModel):
    id: str
    name: str
    root: str
    classes: list[str]
    train: SplitOut
    val: SplitOut
    created_at: datetime


class Progress(BaseModel):
    epoch: int
    total_epochs: int
    percent: float


class RunOut(BaseModel):
    id: str
    name: str
    project: str
    status: str
    message: str | None = None
    pending_reason: str | None = None
    spec: RunSpec
    trainer_id: str | None = None
    attempt: int
    device: str | None = None
    progress: Progress
    queue_position: int | None = Field(None, description="place among runs waiting for the same accelerators")
    latest_metrics: dict[str, float] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_s: float | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)


class RunList(BaseModel):
    items: list[RunOut]


class EpochLog(BaseModel):
    epoch: int
    attempt: int
    total_epochs: int
    loss: float
    losses: dict[str, float]
    learning_rate: float
    epoch_time_s: float
    metrics: dict[str, float]
    logged_at: datetime


class EpochLogs(BaseModel):
    run_id: str
    items: list[EpochLog]


class ConfusionMatrixOut(BaseModel):
    run_id: str
    epoch: int
    classes: list[str] = Field(description="ground-truth rows and predicted columns; the last is Background")
    matrix: list[list[int]]
    score_threshold: float
    iou_threshold: float


class ArchitectureOut(BaseModel):
    id: str
    family: str
    backbone: str
    single_stage: bool
    description: str


RunSpecIn = RunSpec


class TrainerRun(BaseModel):
    run_id: str
    status: str
    attempt: int


class TrainerOut(BaseModel):
    id: str
    host: str
    health: str = Field(description="online, silent (missed heartbeats) or lost")
    accelerators: list[dict[str, Any]]
    capacity: int
    free: int
    draining: bool
    version: str | None
    last_seen: datetime
    runs: list[TrainerRun]
