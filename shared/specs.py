"""Run and dataset specs: what a user asks for, validated once at the edge."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.catalogue import ARCHITECTURES

AcceleratorName = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,31}$", examples=["CPU", "GPU_H100"])]
ObjectId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="a 32-hex-digit id")]


class Strict(BaseModel):
    # strict: `"epochs": true` or `"3"` is refused rather than read as 1 or 3 (a float still takes an int).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AcceleratorRequest(Strict):
    name: AcceleratorName = "CPU"
    count: Annotated[int, Field(
        ge=1, le=16, description="accelerators on one trainer; more than one trains with distributed data parallel",
    )] = 1


# Metrics a checkpoint strategy or a limit may name: each evaluation reports them
# (docs/architecture.md, "COCO metrics"); val_loss is lower-is-better, the rest higher.
TrackedMetric = Literal[
    "bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l",
    "bbox_AR_1", "bbox_AR_10", "bbox_AR_100", "bbox_AR_s", "bbox_AR_m", "bbox_AR_l",
    "precision_50", "recall_50", "val_loss",
]
LOWER_IS_BETTER = frozenset({"val_loss"})


class CheckpointPolicy(Strict):
    """Which checkpoints a run saves and keeps. Every `interval` epochs one is saved; of those
    the latest are always kept (at least two: resuming may need the epoch before the last);
    `best` also keeps the best epoch by `metric`, `lowest_val_loss` the epoch of lowest
    validation loss, whether or not it falls on the interval."""

    strategy: Literal["latest", "best", "lowest_val_loss"] = "latest"
    metric: TrackedMetric = "bbox_mAP"
    keep: Annotated[int, Field(ge=1, le=100, description="latest epoch checkpoints kept (at least 2 are)")] = 2
    interval: Annotated[int, Field(
        ge=1, le=1000,
        description="save a checkpoint every N epochs; the last epoch, an epoch a limit or patience stops the "
                    "run at, and (with `best`/`lowest_val_loss`) each new best epoch are saved too. A run "
                    "resumed after a fault continues from its latest saved checkpoint, so with N > 1 up to "
                    "N-1 epochs are trained again. More than the run's epochs is allowed: then only the last "
                    "(and new bests) are saved",
    )] = 1


class StopLimit(Strict):
    """Stop the run (successfully) at the first evaluation where `metric` reaches `value`
    (>= for higher-is-better metrics, <= for val_loss)."""

    metric: TrackedMetric = "bbox_mAP"
    value: Annotated[float, Field(allow_inf_nan=False)]


class RunSpec(Strict):
    """What to train: validated before anything is stored.

    `patience` watches the checkpoint strategy's metric: `checkpoint.metric`, or
    val_loss for `lowest_val_loss`.
    """

    name: Annotated[str, Field(min_length=1, max_length=200)]
    dataset_id: ObjectId
    architecture: str = Field(description="an id from GET /v1/architectures")
    init: Literal["random"] = "random"
    epochs: Annotated[int, Field(ge=1, le=1000)] = 12
    batch_size: Annotated[int, Field(
        ge=1, le=256,
        description="images per iteration and process: with accelerator.count > 1 (distributed data parallel, "
                    "one process per accelerator) the effective batch is batch_size x count",
    )] = 4
    input_size: Annotated[int, Field(ge=32, le=2048, multiple_of=32)] = 128
    learning_rate: Annotated[float | None, Field(gt=0, le=10, allow_inf_nan=False)] = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    accelerator: AcceleratorRequest = AcceleratorRequest()
    priority: Annotated[int, Field(ge=-100, le=100, description="higher is placed first")] = 0
    max_attempts: Annotated[int, Field(ge=1, le=20, description="attempts before the run ends aborted")] = 3
    on_reset: Literal["rerun", "fail"] = Field(
        "rerun", description="when its trainer is lost: retry from the latest checkpoint, or fail"
    )
    execution_timeout_s: Annotated[int, Field(ge=10, le=7 * 24 * 3600)] = 3600
    optimizer: Literal["sgd", "adamw"] | None = Field(
        None, description="the optimizer; None: the architecture's stock one (GET /v1/architectures)"
    )
    num_frozen_stages: Annotated[int, Field(ge=0, le=4, description="backbone stages kept frozen (0: none)")] = 0
    evaluation_interval: Annotated[
        int, Field(ge=1, le=1000, description="evaluate every N epochs (and always the last one)")
    ] = 1
    workers: Annotated[int, Field(ge=0, le=32, description="data loader worker processes")] = 0
    checkpoint: CheckpointPolicy = CheckpointPolicy()
    limit: StopLimit | None = None
    patience: Annotated[
        int | None,
        Field(ge=1, le=1000, description="stop when checkpoint.metric has not improved for this many evaluations"),
    ] = None
    log_interval: Annotated[
        int, Field(ge=1, le=100_000, description="log the training losses every N iterations")
    ] = 10
    base_model_id: ObjectId | None = Field(
        None, description="a trained model of the registry to start from (transfer learning); None: random init"
    )
    matrix: bool = Field(
        True, description="compute and store a confusion matrix at each evaluation (Datature's `matrix`)"
    )
    preview: bool = Field(
        False, description="render evaluation previews: at each evaluation the same validation images with their "
                           "ground-truth and predicted boxes, as PNG (GET /v1/runs/{id}/previews)"
    )
    preview_images: Annotated[int, Field(ge=1, le=16, description="validation images rendered when `preview`")] = 4

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            known = ", ".join(sorted(ARCHITECTURES))
            raise ValueError(f"unknown architecture {value!r}; known: {known}")
        return value

    @model_validator(mode="after")
    def _frozen_stages_exist(self) -> "RunSpec":
        stages = ARCHITECTURES[self.architecture].backbone_stages
        if self.num_frozen_stages > stages:
            raise ValueError(
                f"num_frozen_stages {self.num_frozen_stages}: {self.architecture}'s backbone has {stages} stages"
            )
        return self

    @property
    def watched_metric(self) -> str:
        """The metric `patience` and the best checkpoint follow."""
        return "val_loss" if self.checkpoint.strategy == "lowest_val_loss" else self.checkpoint.metric

    @property
    def needs_val_loss(self) -> bool:
        return "val_loss" in {self.watched_metric, self.limit.metric if self.limit else None}


class DatasetSplit(Strict):
    annotations: str = Field(description="absolute path of the COCO annotation JSON")
    images: str = Field(description="absolute path of the image directory")


class DatasetLayout(Strict):
    """Where a registered dataset's files are; every trainer must see the same paths.

    An uploaded dataset is an archive in the artifact store instead (`archive`): its paths
    are then relative to where a trainer unpacks it (services/trainer/datasets.py)."""

    root: str
    train: DatasetSplit
    val: DatasetSplit
    classes: list[str]
    archive: str | None = Field(default=None, description="artifact store object of an uploaded dataset")
