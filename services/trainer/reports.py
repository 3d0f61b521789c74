"""The narrow channel between the trainer service and its training child.

The parent writes a TrainingJob as JSON to a file; the child writes one
ChildReport per line to an inherited pipe. Nothing else crosses. A
distributed run has one child per rank, all on the same pipe: rank 0 writes
every report, the other ranks only their failure.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.events import BaseModelRef, ConfusionMatrix, FiniteFloat, IterationLog
from shared.specs import DatasetLayout, RunSpec

# In an attempt's work dir: the job the trainer writes for the child, the child's
# log (stdout and stderr of every rank), and the MMEngine config it trained with.
JOB_FILE = "job.json"
LOG_FILE = "train.log"
CONFIG_FILE = "config.py"
# The trainer's links to reported epochs' checkpoints that wait for their upload (services/trainer/checkpoints.py).
QUEUED_DIR = "storing"


class TrainingJob(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    attempt: int
    spec: RunSpec
    dataset: DatasetLayout
    work_dir: str
    device: Literal["cpu", "cuda"]
    # Torch threads of each process.
    threads: int = 1
    # Processes (distributed data parallel ranks, one per accelerator); each
    # trains on spec.batch_size images per iteration.
    world_size: int = Field(1, ge=1)
    # A checkpoint of an earlier attempt of this run: training continues from it
    # (epoch, optimizer, schedule), so epoch numbers go on where they stopped.
    resume_from: str | None = None
    # Weights to start from (transfer learning); ignored when resuming.
    base_model: BaseModelRef | None = None
    # A sweep trial under ASHA: the epochs after which it waits for the scheduler's rung decision.
    decision_epochs: list[int] = Field(default_factory=list)


class StartedReport(BaseModel):
    kind: Literal["started"] = "started"
    device: str
    world_size: int = 1
    # Transfer learning: the base model loaded, and the keys left at their fresh
    # initialisation because their shapes differ (the head, when the class count does).
    base_model_id: str | None = None
    reinitialised: list[str] = Field(default_factory=list)


class PreviewFile(BaseModel):
    """One evaluation preview the child wrote (a PNG under the work dir)."""

    image_id: int
    file_name: str = Field(description="the validation image's file name")
    path: str


class EpochReport(BaseModel):
    kind: Literal["epoch"] = "epoch"
    epoch: int
    total_epochs: int
    losses: dict[str, FiniteFloat]
    loss: FiniteFloat
    learning_rate: FiniteFloat
    epoch_time_s: FiniteFloat
    # None: undefined for this evaluation (COCOeval's -1; services/trainer/coco_eval.py).
    metrics: dict[str, FiniteFloat | None] = Field(default_factory=dict)
    confusion_matrix: ConfusionMatrix | None = None
    # The evaluation's predictions, COCO results JSON under the work dir.
    predictions: str | None = None
    # spec.preview: the evaluation's preview PNGs, and the score from which predictions are drawn.
    previews: list[PreviewFile] = Field(default_factory=list)
    preview_score_threshold: float | None = None


class IterationsReport(BaseModel):
    kind: Literal["iterations"] = "iterations"
    steps: list[IterationLog]


class FailedReport(BaseModel):
    kind: Literal["failed"] = "failed"
    message: str


class FinishedReport(BaseModel):
    kind: Literal["finished"] = "finished"
    checkpoint: str | None = None
    # The best epoch's checkpoint, when the spec's checkpoint strategy keeps one.
    best_checkpoint: str | None = None


class DrainedReport(BaseModel):
    """Training stopped early because the trainer drains: `epoch` was the last one reported."""

    kind: Literal["drained"] = "drained"
    epoch: int


ChildReport = Annotated[
    StartedReport | EpochReport | IterationsReport | FailedReport | FinishedReport | DrainedReport,
    Field(discriminator="kind"),
]
child_report_adapter: TypeAdapter[ChildReport] = TypeAdapter(ChildReport)
