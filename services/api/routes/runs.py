from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi import Path as PathParam

from services.api.deps import Bus, Store, SubjectNames
from services.api.errors import ApiError, NotFound, Unprocessable
from services.api.models import ConfusionMatrixOut, EpochLog, EpochLogs, Progress, RunList, RunOut
from shared.bus import publish_event
from shared.events import RunCreated, RunKillRequested, RunRerunRequested, new_id, utcnow
from shared.specs import ObjectId, RunSpec
from shared.status import RunStatus
from shared.telemetry import run_trace_context

router = APIRouter(prefix="/v1/runs", tags=["runs"])
RunId = Annotated[ObjectId, PathParam(description="the run's id")]
DEFAULT_PROJECT = "default"


def _run_out(doc: dict[str, Any], latest: dict[str, Any] | None, queue_position: int | None = None) -> RunOut:
    total = int(doc["spec"]["epochs"])
    epoch = int(latest["epoch"]) if latest else 0
    started, completed = doc.get("started_at"), doc.get("completed_at")
    duration = (completed or utcnow()) - started if started else None
    return RunOut(
        id=doc["_id"], name=doc["name"], project=doc["project"], status=doc["status"],
        message=doc.get("message"), pending_reason=doc.get("pending_reason"), spec=RunSpec.model_validate(doc["spec"]),
        trainer_id=doc.get("trainer_id"), attempt=doc.get("attempt", 0), device=doc.get("device"),
        progress=Progress(epoch=epoch, total_epochs=total, percent=round(100.0 * epoch / total, 1)),
        queue_position=queue_position,
        latest_metrics=(latest or {}).get("metrics", {}),
        created_at=doc["created_at"], updated_at=doc["updated_at"], started_at=started, completed_at=completed,
        duration_s=duration.total_seconds() if duration is not None else None,
        history=doc.get("history", []),
    )


async def _existing_run(store: Store, run_id: str) -> dict[str, Any]:
    doc = await store.run(run_id)
    if doc is None:
        raise NotFound("run", run_id)
    return doc


@router.post("", status_code=status.HTTP_201_CREATED)
async def start_run(spec: RunSpec, store: Store, bus: Bus, subjects: SubjectNames) -> RunOut:
    """Create a training run; the scheduler queues and places it."""
    dataset = await store.dataset(spec.dataset_id)
    if dataset is None:
        raise Unprocessable(f"dataset_id: no dataset with id {spec.dataset_id!r}",
                            [{"field": "dataset_id", "message": "no such dataset", "value": spec.dataset_id}])
    now = utcnow()
    doc: dict[str, Any] = {
        "_id": new_id(), "project": DEFAULT_PROJECT, "name": spec.name, "spec": spec.model_dump(mode="json"),
        "dataset": dataset["layout"], "status": str(RunStatus.CREATED), "attempt": 0, "trainer_id": None,
        "pending_reason": None, "message": None, "created_at": now, "updated_at": now,
        "history": [{"status": str(RunStatus.CREATED), "at": now, "message": None, "attempt": None}],
    }
    # The scheduler continues this request's trace whenever it handles the run.
    doc["trace_context"] = run_trace_context(doc["_id"])
    await store.insert_run(doc)
    # If this publish is lost, the scheduler still finds the run in `created` and queues it.
    await publish_event(bus, subjects, subjects.run_created,
                        RunCreated(run_id=doc["_id"], project=DEFAULT_PROJECT, spec=spec),
                        dedup_key=f"{doc['_id']}:created")
    return _run_out(doc, None)


@router.get("")
async def list_runs(
    store: Store,
    status_filter: Annotated[RunStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunList:
    """Runs, newest first, optionally of one status."""
    docs = await store.list_runs(str(status_filter) if status_filter else None, limit)
    return RunList(items=[_run_out(doc, await store.latest_epoch(doc["_id"])) for doc in docs])


@router.get("/{run_id}")
async def get_run(run_id: RunId, store: Store) -> RunOut:
    """A run's status, progress, latest metrics and history."""
    doc = await _existing_run(store, run_id)
    queued = doc["status"] == RunStatus.PENDING and doc.get("trainer_id") is None
    position = await store.queue_position(doc) if queued else None
    return _run_out(doc, await store.latest_epoch(run_id), position)


@router.post("/{run_id}/kill", status_code=status.HTTP_202_ACCEPTED)
async def kill_run(run_id: RunId, store: Store, bus: Bus, subjects: SubjectNames) -> RunOut:
    """Stop a run: a queued run ends `terminated` at once, a training one when its trainer stops it."""
    doc = await _existing_run(store, run_id)
    if doc["status"] in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.ABORTED, RunStatus.TERMINATED):
        raise ApiError(409, "Conflict", f"run {run_id} already ended {doc['status']}")
    await publish_event(bus, subjects, subjects.run_kill_requested, RunKillRequested(run_id=run_id),
                        dedup_key=f"{run_id}:kill:{doc.get('attempt', 0)}")
    return _run_out(doc, await store.latest_epoch(run_id))


@router.post("/{run_id}/rerun", status_code=status.HTTP_202_ACCEPTED)
async def rerun_run(run_id: RunId, store: Store, bus: Bus, subjects: SubjectNames) -> RunOut:
    """Run again a run that failed, was aborted or terminated; it resumes from its latest checkpoint."""
    doc = await _existing_run(store, run_id)
    if doc["status"] not in (RunStatus.FAILED, RunStatus.ABORTED, RunStatus.TERMINATED):
        raise ApiError(409, "Conflict", f"run {run_id} is {doc['status']}: only failed, aborted or "
                                        "terminated runs can be rerun")
    await publish_event(bus, subjects, subjects.run_rerun_requested, RunRerunRequested(run_id=run_id),
                        dedup_key=f"{run_id}:rerun:{doc.get('attempt', 0)}")
    return _run_out(doc, await store.latest_epoch(run_id))


@router.get("/{run_id}/logs")
async def get_run_logs(run_id: RunId, store: Store) -> EpochLogs:
    """Per-epoch logs in epoch order: losses, learning rate, COCO metrics."""
    await _existing_run(store, run_id)
    return EpochLogs(run_id=run_id, items=[EpochLog.model_validate(d) for d in await store.epochs_of(run_id)])


@router.get("/{run_id}/confusion-matrix")
async def get_confusion_matrix(
    run_id: RunId, store: Store, epoch: Annotated[int | None, Query(ge=1)] = None
) -> ConfusionMatrixOut:
    """The confusion matrix of one evaluation (the latest unless `epoch` is given)."""
    await _existing_run(store, run_id)
    doc = await store.confusion_matrix(run_id, epoch)
    if doc is None:
        raise NotFound("confusion matrix for run", run_id if epoch is None else f"{run_id} epoch {epoch}")
    return ConfusionMatrixOut.model_validate(doc)
