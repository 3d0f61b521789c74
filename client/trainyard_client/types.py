"""What the API answers, as TypedDicts of its JSON.

Each mirrors one response model of the API's OpenAPI document (services/api/models.py);
tests/unit/test_client_types.py compares them field by field with the document the
API serves, so a renamed or retyped field fails there rather than in a user's code.
Timestamps are ISO 8601 strings, as on the wire.
"""

from typing import Literal, TypedDict


class Progress(TypedDict):
    epoch: int
    total_epochs: int
    percent: float


class BestMetric(TypedDict):
    metric: str
    value: float
    epoch: int
    attempt: int | None


class StatusChange(TypedDict):
    status: str
    at: str
    message: str | None
    attempt: int | None


class AcceleratorRequest(TypedDict):
    name: str
    count: int


class CheckpointPolicy(TypedDict):
    strategy: Literal["latest", "best", "lowest_val_loss"]
    metric: str
    keep: int
    interval: int


class StopLimit(TypedDict):
    metric: str
    value: float


class RunSpec(TypedDict):
    """A run's spec as stored (every field present). To start a run, any subset of
    these fields with `name`, `dataset_id` and `architecture` will do."""

    name: str
    dataset_id: str
    architecture: str
    init: Literal["random"]
    epochs: int
    batch_size: int
    input_size: int
    learning_rate: float | None
    seed: int
    accelerator: AcceleratorRequest
    priority: int
    max_attempts: int
    on_reset: Literal["rerun", "fail"]
    execution_timeout_s: int
    optimizer: Literal["sgd", "adamw"] | None
    num_frozen_stages: int
    evaluation_interval: int
    workers: int
    checkpoint: CheckpointPolicy
    limit: StopLimit | None
    patience: int | None
    log_interval: int
    base_model_id: str | None
    matrix: bool
    preview: bool
    preview_images: int


class Run(TypedDict):
    id: str
    name: str
    project: str
    status: str
    overview: str
    message: str | None
    pending_reason: str | None
    spec: RunSpec
    trainer_id: str | None
    attempt: int
    device: str | None
    progress: Progress
    queue_position: int | None
    latest_metrics: dict[str, float | None]
    best: BestMetric | None
    created_at: str
    updated_at: str
    started_at: str | None
    completed_at: str | None
    duration_s: float | None
    history: list[StatusChange]


class RunPage(TypedDict):
    items: list[Run]
    next_cursor: str | None


class SplitSummary(TypedDict):
    annotations: str
    images: str
    image_count: int
    box_count: int
    boxes_per_class: dict[str, int]


class Dataset(TypedDict):
    id: str
    name: str
    project: str
    root: str
    archive: str | None
    classes: list[str]
    train: SplitSummary
    val: SplitSummary
    created_at: str


class DatasetPage(TypedDict):
    items: list[Dataset]
    next_cursor: str | None


class EpochLog(TypedDict):
    kind: Literal["epoch"]
    epoch: int
    attempt: int
    total_epochs: int
    loss: float
    losses: dict[str, float]
    learning_rate: float
    epoch_time_s: float
    # null where an evaluation leaves a metric undefined (no box of that size, say).
    metrics: dict[str, float | None]
    logged_at: str


class IterationLog(TypedDict):
    kind: Literal["iteration"]
    epoch: int
    step: int
    attempt: int | None
    loss: float | None
    losses: dict[str, float]
    learning_rate: float | None
    logged_at: str


LogEntry = EpochLog | IterationLog


class RunLogs(TypedDict):
    run_id: str
    items: list[LogEntry]


class MetricSeries(TypedDict):
    run_id: str
    epochs: list[int]
    series: dict[str, list[float | None]]


class BestEpoch(TypedDict):
    run_id: str
    metric: str
    mode: Literal["max", "min"]
    value: float
    epoch: EpochLog


class ConfusionMatrix(TypedDict):
    format: Literal["matrix"]
    run_id: str
    epoch: int
    classes: list[str]
    matrix: list[list[int]]
    score_threshold: float
    iou_threshold: float


class CellCount(TypedDict):
    x: str
    y: int


class ConfusionColumn(TypedDict):
    id: str
    data: list[CellCount]


class DatatureConfusionMatrix(TypedDict):
    format: Literal["datature"]
    run_id: str
    epoch: int
    score_threshold: float
    iou_threshold: float
    data: list[ConfusionColumn]


class PreviewImage(TypedDict):
    image_id: int
    file_name: str
    url: str


class EpochPreviews(TypedDict):
    epoch: int
    attempt: int
    images: list[PreviewImage]


class RunPreviews(TypedDict):
    run_id: str
    score_threshold: float | None
    items: list[EpochPreviews]


class Prediction(TypedDict):
    """One detection of an evaluation, in COCO results format (what pycocotools' `COCO.loadRes` reads)."""

    image_id: int
    category_id: int
    bbox: list[float]
    score: float


class RunConfig(TypedDict):
    run_id: str
    attempt: int
    config: str


class TunableParameter(TypedDict):
    name: str
    type: Literal["int", "float", "str"]
    default: int | float | str | None
    minimum: float | None
    maximum: float | None
    choices: list[str] | None
    description: str


class Architecture(TypedDict):
    id: str
    family: str
    backbone: str
    single_stage: bool
    description: str
    optimizer: str
    backbone_stages: int
    parameters: list[TunableParameter]


class Accelerator(TypedDict, total=False):
    name: str
    count: int
    memory_mb: int | None


class TrainerRun(TypedDict):
    run_id: str
    status: str
    attempt: int


class Trainer(TypedDict):
    id: str
    host: str
    health: str
    accelerators: list[Accelerator]
    capacity: int
    free: int
    draining: bool
    version: str | None
    last_seen: str
    runs: list[TrainerRun]


class BestCheckpoint(TypedDict):
    epoch: int
    metric: str
    value: float
    name: str


class StoredCheckpoint(TypedDict):
    attempt: int
    epoch: int
    name: str
    best: BestCheckpoint | None


class Checkpoint(TypedDict):
    attempt: int
    epoch: int
    name: str
    size_bytes: int
    digest: str
    stored_at: str
    best: bool


class RunCheckpoints(TypedDict):
    run_id: str
    items: list[Checkpoint]
    best: BestCheckpoint | None
    resume_from: StoredCheckpoint | None


class ModelRun(TypedDict):
    id: str
    name: str | None
    status: str | None


class Model(TypedDict):
    id: str
    project: str
    architecture: str
    classes: list[str]
    run: ModelRun
    checkpoint: str
    epochs: int
    best_epoch: int | None
    best_metrics: dict[str, float | None]
    base_model_id: str | None
    published: bool
    created_at: str


class ModelPage(TypedDict):
    items: list[Model]


class ModelBestEpoch(TypedDict):
    model_id: str
    metric: str
    epoch: int
    value: float
    metrics: dict[str, float]
    losses: dict[str, float]


class ApiKey(TypedDict):
    id: str
    name: str
    project: str
    scopes: list[str]
    created_at: str
    created_by: str
    revoked_at: str | None


class CreatedApiKey(ApiKey):
    key: str


class ApiKeyPage(TypedDict):
    items: list[ApiKey]


class WhoAmI(TypedDict):
    key_id: str
    project: str
    scopes: list[str]
