"""What a run produced: logs, metric series, confusion matrices, its best epoch."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from services.api.auth import RunsReader
from services.api.deps import Store
from services.api.errors import ApiError, NotFound, problem_responses
from services.api.models import (
    BestEpoch,
    ConfusionMatrixOut,
    DatatureConfusionMatrixOut,
    EpochLog,
    IterationLog,
    LogEntry,
    MetricSeries,
    RunConfigOut,
    RunLogs,
)
from services.api.routes.runs import RunId, existing_run
from services.api.views import best_epoch, confusion_matrix_out, datature_confusion_matrix, default_mode, metric_series

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=problem_responses(403, 404))
MetricName = Annotated[str, Query(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
MAX_ITERATION_LOGS = 10_000


@router.get("/{run_id}/logs")
async def get_run_logs(
    run_id: RunId,
    caller: RunsReader,
    store: Store,
    kind: Annotated[Literal["all", "epoch", "iteration"], Query(description="which logs")] = "all",
) -> RunLogs:
    """Epoch logs (losses, learning rate, COCO metrics) and iteration logs as timestamped events in time order."""
    await existing_run(store, caller.project, run_id)
    items: list[LogEntry] = []
    if kind in ("all", "epoch"):
        items += [EpochLog.model_validate(doc) for doc in await store.epochs_of(run_id)]
    if kind in ("all", "iteration"):
        items += [IterationLog.model_validate(doc) for doc in await store.iterations_of(run_id, MAX_ITERATION_LOGS)]
    items.sort(key=lambda entry: entry.logged_at)
    return RunLogs(run_id=run_id, items=items)


@router.get("/{run_id}/metrics")
async def get_metric_series(
    run_id: RunId,
    caller: RunsReader,
    store: Store,
    name: Annotated[list[str] | None, Query(max_length=50, description="only these series (repeatable)")] = None,
) -> MetricSeries:
    """Per-epoch series for charts: loss, each loss term, learning rate and each COCO metric."""
    await existing_run(store, caller.project, run_id)
    return metric_series(run_id, await store.epochs_of(run_id), set(name) if name else None)


@router.get("/{run_id}/best-epoch")
async def get_best_epoch(
    run_id: RunId,
    caller: RunsReader,
    store: Store,
    metric: MetricName = "bbox_mAP",
    mode: Annotated[Literal["max", "min"] | None, Query(description="default: min for losses, else max")] = None,
) -> BestEpoch:
    """The epoch with the best value of a metric (default bbox_mAP, highest)."""
    await existing_run(store, caller.project, run_id)
    best = best_epoch(run_id, await store.epochs_of(run_id), metric, mode or default_mode(metric))
    if best is None:
        raise NotFound(f"epoch with metric {metric!r} in run", run_id)
    return best


@router.get("/{run_id}/confusion-matrix")
async def get_confusion_matrix(
    run_id: RunId,
    caller: RunsReader,
    store: Store,
    epoch: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    layout: Annotated[Literal["matrix", "datature"], Query(
        alias="format", description="rows and columns, or Datature's per-column JSON")] = "matrix",
) -> ConfusionMatrixOut | DatatureConfusionMatrixOut:
    """The confusion matrix of one evaluation (the latest unless `epoch` is given)."""
    run = await existing_run(store, caller.project, run_id)
    if not run["spec"].get("matrix", True):
        raise ApiError(404, f"run {run_id} was started with matrix=false: its evaluations compute no confusion "
                            "matrix")
    doc = await store.confusion_matrix(run_id, epoch)
    if doc is None:
        raise NotFound("confusion matrix for run", run_id if epoch is None else f"{run_id} epoch {epoch}")
    return datature_confusion_matrix(doc) if layout == "datature" else confusion_matrix_out(doc)


@router.get("/{run_id}/config")
async def get_run_config(run_id: RunId, caller: RunsReader, store: Store) -> RunConfigOut:
    """The MMEngine config the run's latest attempt trained with, to reproduce it."""
    run = await existing_run(store, caller.project, run_id)
    if not run.get("config"):
        raise NotFound("generated config (the run has not started) for run", run_id)
    return RunConfigOut(run_id=run_id, attempt=int(run.get("attempt", 0)), config=run["config"])
