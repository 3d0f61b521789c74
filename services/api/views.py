"""Stored documents turned into response bodies: pure functions, no I/O."""

import math
from datetime import datetime, timedelta
from typing import Any, Literal

from services.api.models import (
    ApiKeyOut,
    BestEpoch,
    CellCount,
    ConfusionColumn,
    ConfusionMatrixOut,
    DatasetOut,
    DatatureConfusionMatrixOut,
    EpochLog,
    MetricSeries,
    Progress,
    RunOut,
    SplitOut,
    StatusChange,
)
from shared.run_document import HistoryEntry, RunSummary
from shared.status import RunStatus

Doc = dict[str, Any]


def _duration_text(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def run_overview(status: str, progress: Progress, trainer_id: str | None, message: str | None,
                 duration_s: float | None) -> str:
    """One line a person reads in a table: what the run does now, or how it ended."""
    done = f"{progress.epoch}/{progress.total_epochs} epochs"
    took = f" in {_duration_text(duration_s)}" if duration_s is not None else ""
    match status:
        case RunStatus.CREATED:
            return "created; waiting for the scheduler"
        case RunStatus.PENDING:
            return f"queued: {message}" if message else "queued"
        case RunStatus.IN_PROGRESS:
            return f"training on {trainer_id}: {done} ({progress.percent:g}%)"
        case RunStatus.RERUN:
            return f"retrying: {message}" if message else "retrying"
        case RunStatus.SUCCESS:
            return f"finished: {done}{took}"
        case RunStatus.TERMINATED:
            return f"killed after {done}" + (f": {message}" if message else "")
        case _:
            return f"{status} after {done}" + (f": {message}" if message else "")


def run_out(run: RunSummary, latest_epoch: Doc | None, now: datetime, queue_position: int | None = None) -> RunOut:
    total = run.spec.epochs
    epoch = int(latest_epoch["epoch"]) if latest_epoch else 0
    progress = Progress(epoch=epoch, total_epochs=total, percent=round(100.0 * min(epoch, total) / total, 1))
    started, completed = run.started_at, run.completed_at
    duration: timedelta | None = (completed or now) - started if started else None
    duration_s = max(0.0, duration.total_seconds()) if duration is not None else None
    status = str(run.status)
    message = run.pending_reason if run.status == RunStatus.PENDING else run.message
    return RunOut(
        id=run.id, name=run.name, project=run.project, status=status,
        overview=run_overview(status, progress, run.trainer_id, message, duration_s),
        message=message, pending_reason=run.pending_reason, spec=run.spec,
        trainer_id=run.trainer_id, attempt=run.attempt, device=run.device,
        progress=progress, queue_position=queue_position, latest_metrics=(latest_epoch or {}).get("metrics", {}),
        best=(latest_epoch or {}).get("best"),
        created_at=run.created_at, updated_at=run.updated_at, started_at=started, completed_at=completed,
        duration_s=duration_s, history=[status_change(entry) for entry in run.history],
    )


def status_change(entry: HistoryEntry) -> StatusChange:
    return StatusChange(status=str(entry.status), at=entry.at, message=entry.message, attempt=entry.attempt)


def dataset_out(doc: Doc) -> DatasetOut:
    return DatasetOut(
        id=doc["_id"], name=doc["name"], project=doc["project"], root=doc["layout"]["root"],
        archive=doc["layout"].get("archive"),
        classes=doc["layout"]["classes"], train=SplitOut.model_validate(doc["train"]),
        val=SplitOut.model_validate(doc["val"]), created_at=doc["created_at"],
    )


def api_key_out(doc: Doc) -> ApiKeyOut:
    return ApiKeyOut(id=doc["_id"], name=doc["name"], project=doc["project"], scopes=doc["scopes"],
                     created_at=doc["created_at"], created_by=doc["created_by"], revoked_at=doc.get("revoked_at"))


def metric_series(run_id: str, epochs: list[Doc], names: set[str] | None) -> MetricSeries:
    """Loss, each loss term, learning rate and each COCO metric as one list per name, aligned by epoch."""
    rows: list[dict[str, float]] = []
    for doc in epochs:
        row = {"loss": doc["loss"], "learning_rate": doc["learning_rate"], "epoch_time_s": doc["epoch_time_s"]}
        row |= {name: value for name, value in doc.get("losses", {}).items() if name != "loss"}
        row |= doc.get("metrics", {})
        rows.append(row)
    available = sorted({name for row in rows for name in row})
    chosen = [name for name in available if names is None or name in names]
    return MetricSeries(
        run_id=run_id,
        epochs=[int(doc["epoch"]) for doc in epochs],
        series={name: [row.get(name) for row in rows] for name in chosen},
    )


def default_mode(metric: str) -> Literal["max", "min"]:
    """Losses are best low; everything else (mAP, recall, ...) best high."""
    return "min" if "loss" in metric else "max"


def _metric_value(epoch: Doc, metric: str) -> Any:
    if metric == "loss":
        return epoch.get("loss")
    if metric in epoch.get("metrics", {}):
        return epoch["metrics"][metric]
    return epoch.get("losses", {}).get(metric)


def best_epoch(run_id: str, epochs: list[Doc], metric: str, mode: Literal["max", "min"]) -> BestEpoch | None:
    """The epoch with the best value of `metric` (the earliest on a tie), or None if no epoch has it."""
    scored: list[tuple[float, Doc]] = []
    for doc in epochs:
        value = _metric_value(doc, metric)
        if isinstance(value, int | float) and math.isfinite(value):
            scored.append((float(value), doc))
    if not scored:
        return None
    pick = max if mode == "max" else min
    value, doc = pick(scored, key=lambda pair: pair[0])
    return BestEpoch(run_id=run_id, metric=metric, mode=mode, value=value, epoch=EpochLog.model_validate(doc))


def confusion_matrix_out(doc: Doc) -> ConfusionMatrixOut:
    return ConfusionMatrixOut.model_validate(doc)


def datature_confusion_matrix(doc: Doc) -> DatatureConfusionMatrixOut:
    """Columns are predicted classes; each lists, per ground-truth class, how many boxes landed there."""
    classes: list[str] = doc["classes"]
    matrix: list[list[int]] = doc["matrix"]
    rows = list(zip(classes, matrix, strict=True))
    columns = [
        ConfusionColumn(id=predicted, data=[CellCount(x=truth, y=row[col]) for truth, row in rows])
        for col, predicted in enumerate(classes)
    ]
    return DatatureConfusionMatrixOut(run_id=doc["run_id"], epoch=doc["epoch"], score_threshold=doc["score_threshold"],
                                      iou_threshold=doc["iou_threshold"], data=columns)
