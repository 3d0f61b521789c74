"""Events on the bus: facts in the past tense, versioned, each with its own id.

Consumers ignore fields they do not know (forward compatible); a producer only
adds optional fields within a schema_version.
"""

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field

from shared.specs import DatasetLayout, RunSpec
from shared.status import RunStatus

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid4().hex


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = 1
    event_id: str = Field(default_factory=new_id)
    occurred_at: datetime = Field(default_factory=utcnow)


class RunEvent(Event):
    run_id: str


class RunCreated(RunEvent):
    project: str
    spec: RunSpec


class BaseModelRef(BaseModel):
    """The registered model a run starts from (spec.base_model_id), as the trainer needs it."""

    model_config = ConfigDict(frozen=True)

    id: str
    checkpoint: str = Field(description="its weights: an object name in the artifact store (models/<id>.pth)")
    classes: list[str]


class BestCheckpoint(BaseModel):
    """The run's best epoch so far by the checkpoint strategy's metric, and where it is stored."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    metric: str
    value: FiniteFloat
    name: str = Field(description="object name in the artifact store")


class StoredCheckpoint(BaseModel):
    """A checkpoint in the artifact store (runs/<run>/checkpoints/attempt_<a>/epoch_<n>.pth)."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    epoch: int
    name: str
    best: BestCheckpoint | None = Field(None, description="the run's best epoch so far, when the strategy keeps one")


class CheckpointSaved(RunEvent):
    """A trainer stored the checkpoint of a reported epoch. The scheduler records the newest
    one of the run's current attempt: what the next attempt resumes from. A superseded
    attempt's checkpoints are never recorded, so no attempt resumes from epochs the run
    never accepted."""

    attempt: Annotated[int, Field(ge=1)]
    trainer_id: str
    checkpoint: StoredCheckpoint


class RunAssigned(RunEvent):
    """The scheduler gave an attempt of a run to one trainer."""

    attempt: Annotated[int, Field(ge=1)]
    trainer_id: str
    spec: RunSpec
    dataset: DatasetLayout
    # Filled from the models collection when spec.base_model_id is set.
    base_model: BaseModelRef | None = None
    # The newest checkpoint of the run's earlier attempts (checkpoint.saved): training continues from it.
    resume_from: StoredCheckpoint | None = None
    # A sweep trial under ASHA: after these epochs the child waits for run.rung_decided.
    decision_epochs: list[int] = Field(default_factory=list)


class RunAccepted(RunEvent):
    """A trainer took an assignment: the scheduler stops waiting to retry it elsewhere."""

    attempt: Annotated[int, Field(ge=1)]
    trainer_id: str
    instance: str = Field("", description="the accepting trainer process (TrainerHeartbeat.instance)")


class RunStopRequested(RunEvent):
    """The scheduler asks a trainer to stop an attempt, and says how it ends."""

    attempt: Annotated[int, Field(ge=1)]
    trainer_id: str
    status: Literal[RunStatus.TERMINATED, RunStatus.ABORTED]
    message: str


class RunReleased(RunEvent):
    """A draining trainer stopped an attempt after its last checkpoint and hands the run back."""

    attempt: Annotated[int, Field(ge=1)]
    trainer_id: str
    reason: str


class RunStarted(RunEvent):
    attempt: Annotated[int, Field(ge=1)]
    trainer_id: str
    device: str
    world_size: Annotated[int, Field(ge=1, description="training processes (data parallel ranks)")] = 1
    config: str | None = Field(None, description="the generated MMEngine config (Python), to reproduce the run")


class ConfusionMatrix(BaseModel):
    """Rows are ground truth, columns predictions; the last class is Background."""

    model_config = ConfigDict(frozen=True)

    classes: list[str]
    matrix: list[list[int]]
    score_threshold: float
    iou_threshold: float


class PreviewImage(BaseModel):
    """One evaluation preview: a validation image with its ground-truth and predicted boxes, as PNG."""

    model_config = ConfigDict(frozen=True)

    image_id: int = Field(description="the image's id in the validation annotations")
    file_name: str = Field(description="the validation image's file name")
    object_name: str = Field(description="the PNG's name in the artifact store")


class EpochLogged(RunEvent):
    attempt: Annotated[int, Field(ge=1)]
    epoch: Annotated[int, Field(ge=1)]
    total_epochs: Annotated[int, Field(ge=1)]
    losses: dict[str, FiniteFloat] = Field(description="mean of each loss the model reports over the epoch")
    loss: FiniteFloat = Field(description="mean total training loss over the epoch")
    learning_rate: FiniteFloat
    epoch_time_s: FiniteFloat
    metrics: dict[str, FiniteFloat | None] = Field(
        default_factory=dict,
        description="COCO bbox metrics (bbox_mAP, bbox_mAP_50, ..., bbox_AR_100, AP/<class>, precision_50, ...): "
                    "every one for an evaluated epoch, null where COCO's is undefined (-1); none between evaluations",
    )
    confusion_matrix: ConfusionMatrix | None = None
    predictions: str | None = Field(
        None, description="the evaluation's predictions (COCO results JSON) in the artifact store, stored before "
                          "the event"
    )
    previews: list[PreviewImage] = Field(
        default_factory=list, description="the evaluation's previews (spec.preview), stored before the event"
    )
    preview_score_threshold: FiniteFloat | None = Field(
        None, description="predictions at or above this score are drawn on the previews"
    )


class IterationLog(BaseModel):
    """The training losses of one iteration (every spec.log_interval iterations)."""

    model_config = ConfigDict(frozen=True)

    step: Annotated[int, Field(ge=1, description="iteration number over the whole run, from 1")]
    epoch: Annotated[int, Field(ge=1)]
    loss: FiniteFloat = Field(description="total training loss of the iteration")
    losses: dict[str, FiniteFloat] = Field(description="each loss the model reports")
    learning_rate: FiniteFloat


class IterationsLogged(RunEvent):
    """A batch of iteration logs of one attempt, in step order."""

    attempt: Annotated[int, Field(ge=1)]
    steps: Annotated[list[IterationLog], Field(min_length=1)]


class RunCompleted(RunEvent):
    """The one terminal event of an attempt; it carries the final status."""

    attempt: Annotated[int, Field(ge=1)]
    trainer_id: str
    status: Literal[RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.ABORTED, RunStatus.TERMINATED]
    message: str | None = None
    epochs_completed: int = 0


class RunStatusChanged(RunEvent):
    """The scheduler moved a run to another status (every transition, terminal ones too)."""

    status: RunStatus
    previous_status: RunStatus | None = None
    attempt: int = 0
    message: str | None = None
    trainer_id: str | None = None


class RunKillRequested(RunEvent):
    """A user asked to stop a run; the scheduler ends it or tells its trainer."""

    requested_by: str | None = None


class ModelRegistered(RunEvent):
    """A successful run produced a trained model: its weights, classes and lineage."""

    model_id: str
    attempt: Annotated[int, Field(ge=1)]
    trainer_id: str
    architecture: str
    classes: list[str]
    checkpoint: str = Field(description="the weights: an object name in the artifact store (models/<id>.pth)")
    epochs_completed: int
    base_model_id: str | None = None


class RunRerunRequested(RunEvent):
    """A user asked to run again a run that did not succeed."""

    requested_by: str | None = None


class RunRemoved(RunEvent):
    """A user removed a finished run: the api deletes its document and its stored artifacts (checkpoints,
    previews), the metrics service its epoch and iteration logs and confusion matrices. A registered
    model of the run stays in the registry."""

    project: str
    status: Literal[RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.ABORTED, RunStatus.TERMINATED] = Field(
        description="how the run had ended"
    )
    requested_by: str | None = None


class Accelerator(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    count: int
    memory_mb: int | None = None


class RunningAttempt(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    attempt: int


class TrainerHeartbeat(Event):
    trainer_id: str
    instance: str = Field("", description="this trainer process; a restarted trainer has a new one, "
                                          "and the attempts its previous process accepted are gone")
    host: str
    accelerators: list[Accelerator]
    running: list[RunningAttempt] = Field(default_factory=list)
    free: int = Field(0, description="accelerators not in use")
    version: str
    draining: bool = False


class DeadLetter(Event):
    """A message a consumer set aside: kept for people, never retried."""

    subject: str
    consumer: str
    reason: Literal["undecodable", "refused"] = Field(
        "undecodable", description="undecodable: not the subscriber's event; refused: a well-formed event the "
                                   "consumer must not act on (a report from a trainer not holding the run)")
    error: str = Field(description="what was wrong, for people")
    payload: str = Field(description="the message body (up to 64 KiB, invalid UTF-8 replaced)")
