"""Request and response bodies of the HTTP API."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.apikeys import Scope
from shared.catalogue import TunableParameter
from shared.events import BestCheckpoint, StoredCheckpoint
from shared.specs import RunSpec, Strict

Cursor = Annotated[str | None, Field(description="pass as `cursor` to get the next page; null on the last page")]


class DatasetRegistration(Strict):
    """A COCO dataset on storage every trainer can read; relative paths are under `path`."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    path: Annotated[str, Field(min_length=1, max_length=4096, description="absolute path of the dataset's root")]
    train_annotations: Annotated[str, Field(min_length=1, max_length=4096)] = "annotations/train.json"
    train_images: Annotated[str, Field(min_length=1, max_length=4096)] = "images/train"
    val_annotations: Annotated[str, Field(min_length=1, max_length=4096)] = "annotations/val.json"
    val_images: Annotated[str, Field(min_length=1, max_length=4096)] = "images/val"


class SplitOut(BaseModel):
    annotations: str
    images: str
    image_count: int
    box_count: int
    boxes_per_class: dict[str, int]


class DatasetOut(BaseModel):
    id: str
    name: str
    project: str
    root: str = Field(description="the server path; for an upload, relative to where a trainer unpacks it")
    archive: str | None = Field(None, description="an uploaded dataset's archive in the artifact store")
    classes: list[str]
    train: SplitOut
    val: SplitOut
    created_at: datetime


class DatasetList(BaseModel):
    items: list[DatasetOut]
    next_cursor: Cursor = None


class Progress(BaseModel):
    epoch: int = Field(description="epochs finished")
    total_epochs: int
    percent: float


class BestMetric(BaseModel):
    """A run's best value of one metric so far, as its listing shows it."""

    metric: str = Field(description="bbox_mAP")
    value: float
    epoch: int
    attempt: int | None = Field(None, description="the attempt that logged that epoch")


class StatusChange(BaseModel):
    """One entry of a run's status history, oldest first."""

    model_config = ConfigDict(extra="allow")

    status: str
    at: datetime
    message: str | None = None
    attempt: int | None = None


class RunOut(BaseModel):
    id: str
    name: str
    project: str
    status: str
    overview: str = Field(description="one line a person reads: what the run is doing and why")
    message: str | None = Field(default=None, description="why it waits, or how it ended")
    pending_reason: str | None = None
    spec: RunSpec
    trainer_id: str | None = None
    attempt: int = Field(description="attempts started so far (1 after the first assignment)")
    device: str | None = None
    progress: Progress
    queue_position: int | None = Field(
        None, description="place among runs waiting for the same accelerators, in the order the scheduler "
                          "takes them (priority, with waiting time counted as priority: aging)")
    latest_metrics: dict[str, float | None] = Field(
        default_factory=dict, description="the latest epoch's COCO metrics; null: undefined for that evaluation")
    best: BestMetric | None = Field(
        None, description="the highest bbox_mAP among the run's stored epochs and the epoch it came from; null "
                          "until an evaluation defines it")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_s: float | None = Field(default=None, description="training time so far, or in all once finished")
    history: list[StatusChange] = Field(default_factory=list)


class RunList(BaseModel):
    items: list[RunOut]
    next_cursor: Cursor = None


class EpochLog(BaseModel):
    kind: Literal["epoch"] = "epoch"
    epoch: int
    attempt: int
    total_epochs: int
    loss: float
    losses: dict[str, float]
    learning_rate: float
    epoch_time_s: float
    metrics: dict[str, float | None] = Field(description=(
        "COCO bbox metrics: every one for an evaluated epoch (none between evaluations); null where COCO's "
        "is undefined (-1: no ground truth of that size or class, crowd-only ground truth)"))
    logged_at: datetime


class IterationLog(BaseModel):
    """Losses at one training step, every `log_interval` steps (Datature's `{step, totalLoss}`)."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["iteration"] = "iteration"
    epoch: int
    step: int = Field(description="iteration over the whole run, from 1")
    attempt: int | None = None
    loss: float | None = None
    losses: dict[str, float] = Field(default_factory=dict)
    learning_rate: float | None = None
    logged_at: datetime


LogEntry = Annotated[EpochLog | IterationLog, Field(discriminator="kind")]


class RunLogs(BaseModel):
    run_id: str
    items: list[LogEntry] = Field(description="timestamped log events in time order")


class MetricSeries(BaseModel):
    """Per-epoch series for charts: every list lines up with `epochs`; null where an epoch lacks the value."""

    run_id: str
    epochs: list[int]
    series: dict[str, list[float | None]]


class BestEpoch(BaseModel):
    run_id: str
    metric: str
    mode: Literal["max", "min"]
    value: float
    epoch: EpochLog


class ConfusionMatrixOut(BaseModel):
    format: Literal["matrix"] = "matrix"
    run_id: str
    epoch: int
    classes: list[str] = Field(description="ground-truth rows and predicted columns; the last is Background")
    matrix: list[list[int]]
    score_threshold: float
    iou_threshold: float


class CellCount(BaseModel):
    x: str = Field(description="the ground-truth class")
    y: int = Field(description="boxes of that ground truth predicted as this column's class")


class ConfusionColumn(BaseModel):
    id: str = Field(description="the predicted class")
    data: list[CellCount]


class DatatureConfusionMatrixOut(BaseModel):
    """Datature Nexus' per-column shape: one entry per predicted class, its counts per ground truth."""

    format: Literal["datature"] = "datature"
    run_id: str
    epoch: int
    score_threshold: float
    iou_threshold: float
    data: list[ConfusionColumn]


class PreviewImageOut(BaseModel):
    image_id: int = Field(description="the image's id in the validation annotations")
    file_name: str = Field(description="the validation image's file name")
    url: str = Field(description="path of the PNG under the API (GET it with the same key)")


class EpochPreviews(BaseModel):
    epoch: int
    attempt: int
    images: list[PreviewImageOut]


class RunPreviews(BaseModel):
    """A run's evaluation previews (spec.preview): per evaluated epoch, the same validation images
    drawn with their ground-truth boxes and the predicted boxes scoring at least `score_threshold`."""

    run_id: str
    score_threshold: float | None = Field(description="predictions at or above this score are drawn")
    items: list[EpochPreviews] = Field(description="evaluated epochs, oldest first")


class ArchitectureOut(BaseModel):
    id: str
    family: str
    backbone: str
    single_stage: bool
    description: str
    optimizer: str = Field(description="the stock recipe's optimizer, used unless the spec names one")
    backbone_stages: int = Field(description="stages num_frozen_stages may freeze")
    parameters: list[TunableParameter] = Field(description="run spec fields to tune, with defaults and ranges")


class RunConfigOut(BaseModel):
    run_id: str
    attempt: int
    config: str = Field(description="the generated MMEngine config (Python) the attempt trained with")


class ApiKeyRequest(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    # Not strict: scope names arrive as strings, and the enum takes them by value.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(Scope))]


class ApiKeyOut(BaseModel):
    id: str
    name: str
    project: str
    scopes: list[str]
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None


class CreatedApiKey(ApiKeyOut):
    key: str = Field(description="the key itself: shown this once, only its hash is stored")


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]


class WhoAmI(BaseModel):
    key_id: str
    project: str
    scopes: list[str]


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


class CheckpointOut(BaseModel):
    attempt: int
    epoch: int
    name: str = Field(description="object name in the artifact store")
    size_bytes: int
    digest: str = Field(description="SHA-256 of the bytes, as the store records it")
    stored_at: str
    best: bool = Field(description="the best epoch by the run's checkpoint metric")


class RunCheckpoints(BaseModel):
    run_id: str
    items: list[CheckpointOut]
    best: BestCheckpoint | None = Field(description="null unless the strategy keeps a best checkpoint")
    resume_from: StoredCheckpoint | None = Field(
        description="the newest checkpoint the run recorded: what its next attempt continues from")


class ModelRunOut(BaseModel):
    id: str
    name: str | None
    status: str | None


class ModelOut(BaseModel):
    id: str
    project: str
    architecture: str
    classes: list[str]
    run: ModelRunOut
    checkpoint: str = Field(description="the weights in the artifact store; download: GET /v1/models/{id}/weights")
    epochs: int
    best_epoch: int | None = Field(description="the epoch with the highest bbox_mAP")
    best_metrics: dict[str, float | None]
    base_model_id: str | None = Field(description="the model this one was fine-tuned from")
    published: bool
    created_at: datetime


class ModelList(BaseModel):
    items: list[ModelOut]


class BestEpochOut(BaseModel):
    model_id: str
    metric: str
    epoch: int
    value: float
    metrics: dict[str, float | None]
    losses: dict[str, float]
