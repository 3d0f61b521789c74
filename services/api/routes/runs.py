from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi import Path as PathParam

from services.api.auth import RunsReader, RunsWriter
from services.api.deps import ArtifactStore, Bus, Store, SubjectNames
from services.api.errors import Conflict, NotFound, Unprocessable, problem_responses
from services.api.listing import RunSort, page_of_runs, runs_of_sweep
from services.api.models import RunList, RunOut
from services.api.pagination import InvalidCursor
from services.api.run_creation import checked_base_model, checked_dataset, new_run
from services.api.views import run_out
from shared.artifacts import run_prefix
from shared.bus import REQUEST_PUBLISH_RETRY_S, publish_event
from shared.events import RunCreated, RunKillRequested, RunRemoved, RunRerunRequested, new_id, utcnow
from shared.run_document import RunDocument, RunSummary
from shared.specs import ObjectId, RunSpec
from shared.status import TERMINAL_STATUSES, RunStatus

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=problem_responses(403))
RunId = Annotated[ObjectId, PathParam(description="the run's id")]
SearchText = Annotated[str, Query(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$",
                                  description="part of the run's name (any case), or the start of its id")]
# A successful run's model is registered by the metrics service from an event of its own,
# which may still be on its way when the run shows `success`: removing the run first would
# leave the registration without the run's project. A run without a model after this long
# never gets one (its attempt kept no checkpoint).
MODEL_REGISTRATION_GRACE = timedelta(seconds=60)
CursorParam = Annotated[str, Query(min_length=1, max_length=1000, description="`next_cursor` of the previous page")]


async def existing_run(store: Store, project: str, run_id: str) -> RunDocument:
    """The run with this id in the caller's project; 404 for ids of other projects, as for unknown ones."""
    doc = await store.run(project, run_id)
    if doc is None:
        raise NotFound("run", run_id)
    return doc


@router.post("", status_code=status.HTTP_201_CREATED, responses=problem_responses(400, 413))
async def start_run(spec: RunSpec, caller: RunsWriter, store: Store, bus: Bus, subjects: SubjectNames) -> RunOut:
    """Create a training run; the scheduler queues and places it."""
    dataset = await checked_dataset(store, caller.project, spec.dataset_id)
    base_model = await checked_base_model(store, caller.project, spec)
    run = new_run(caller.project, spec, dataset, base_model, caller.key_id)
    await store.insert_run(run.document())
    # If this publish is lost, the scheduler still finds the run in `created` and queues it.
    await publish_event(bus, subjects, subjects.run_created,
                        RunCreated(run_id=run.id, project=caller.project, spec=spec),
                        dedup_key=f"{run.id}:created",
                        retry_for_s=REQUEST_PUBLISH_RETRY_S)
    return run_out(run, None, run.created_at)


@router.get("", response_model=RunList)
async def list_runs(
    caller: RunsReader,
    store: Store,
    status_filter: Annotated[RunStatus | None, Query(alias="status", description="only runs in this status")] = None,
    search: SearchText | None = None,
    sort: Annotated[RunSort, Query(description="newest first (`-created_at`), oldest first, or by status "
                                               "in lifecycle order (newest first within a status)")] = "-created_at",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: CursorParam | None = None,
    sweep_id: Annotated[ObjectId | None, Query(description="only the trials of this sweep (one page: a sweep "
                                                           "has at most 200)")] = None,
) -> Response:
    """The project's runs, a page at a time; follow `next_cursor` for the next page."""
    try:
        if sweep_id is not None:
            page = await runs_of_sweep(store, caller.project, sweep_id, status=status_filter, sort=sort,
                                       limit=limit, cursor=cursor)
        else:
            page = await page_of_runs(store, caller.project, status=status_filter, search=search, sort=sort,
                                      limit=limit, cursor=cursor, now=utcnow())
    except InvalidCursor as error:
        raise Unprocessable(f"cursor: {error}", [{"field": "query.cursor", "message": str(error)}]) from error
    runs = [RunSummary.model_validate(doc) for doc in page.items]
    latest = await store.latest_epochs([run.id for run in runs])
    now = utcnow()
    body = RunList(items=[run_out(run, latest.get(run.id), now) for run in runs], next_cursor=page.next_cursor)
    # Serialized here, once: given the model, FastAPI would dump it and validate it again against
    # `response_model` before serializing, a third of a page's time building 50 items from models
    # that are valid by construction.
    return Response(body.model_dump_json(), media_type="application/json")


@router.get("/{run_id}", responses=problem_responses(404))
async def get_run(run_id: RunId, caller: RunsReader, store: Store) -> RunOut:
    """A run's status overview, progress, duration, trainer, attempts, latest metrics and history."""
    run = await existing_run(store, caller.project, run_id)
    queued = run.status == RunStatus.PENDING and run.trainer_id is None
    position = await store.queue_position(run) if queued else None
    return run_out(run, await store.latest_epoch(run_id), utcnow(), position)


@router.post("/{run_id}/kill", status_code=status.HTTP_202_ACCEPTED, responses=problem_responses(404, 409))
async def kill_run(run_id: RunId, caller: RunsWriter, store: Store, bus: Bus, subjects: SubjectNames) -> RunOut:
    """Stop a run: a queued run ends `terminated` at once, a training one when its trainer stops it."""
    run = await existing_run(store, caller.project, run_id)
    rerun_at, ended_at = run.rerun_requested_at, run.completed_at
    rerun_on_its_way = rerun_at is not None and (ended_at is None or rerun_at > ended_at)
    if run.status in TERMINAL_STATUSES and not rerun_on_its_way:
        raise Conflict(f"run {run_id} already ended {run.status}")
    # An ended run with a rerun accepted but not yet applied is killed too: the scheduler lets
    # the later kill win over the earlier rerun, whichever it handles first.
    await publish_event(bus, subjects, subjects.run_kill_requested,
                        RunKillRequested(run_id=run_id, requested_by=caller.key_id),
                        # Each request its own event: a second kill is never deduplicated away.
                        dedup_key=f"{run_id}:kill:{new_id()}",
                        retry_for_s=REQUEST_PUBLISH_RETRY_S)
    return run_out(run, await store.latest_epoch(run_id), utcnow())


@router.post("/{run_id}/rerun", status_code=status.HTTP_202_ACCEPTED, responses=problem_responses(404, 409))
async def rerun_run(run_id: RunId, caller: RunsWriter, store: Store, bus: Bus, subjects: SubjectNames) -> RunOut:
    """Run again a run that failed, was aborted or terminated; it resumes from its latest checkpoint."""
    run = await existing_run(store, caller.project, run_id)
    if run.status not in (RunStatus.FAILED, RunStatus.ABORTED, RunStatus.TERMINATED):
        raise Conflict(f"run {run_id} is {run.status}: only failed, aborted or terminated runs can be rerun")
    request = RunRerunRequested(run_id=run_id, requested_by=caller.key_id)
    # A request marker, not a status (the scheduler owns those): a kill arriving before the
    # scheduler has applied the rerun is accepted, not refused as "already ended".
    await store.mark_rerun_requested(run_id, request.occurred_at)
    await publish_event(bus, subjects, subjects.run_rerun_requested, request,
                        dedup_key=f"{run_id}:rerun:{new_id()}",
                        retry_for_s=REQUEST_PUBLISH_RETRY_S)
    return run_out(run, await store.latest_epoch(run_id), utcnow())


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses=problem_responses(404, 409))
async def remove_run(run_id: RunId, caller: RunsWriter, store: Store, bus: Bus, subjects: SubjectNames,
                     artifacts: ArtifactStore) -> Response:
    """Remove a finished run and everything stored for it; a model it produced stays in the registry."""
    run = await existing_run(store, caller.project, run_id)
    if run.status not in TERMINAL_STATUSES:
        raise Conflict(f"run {run_id} is {run.status}: only a finished run can be removed; kill it first "
                       f"(POST /v1/runs/{run_id}/kill) and remove it once it has ended")
    completed = run.completed_at
    if (run.status == RunStatus.SUCCESS and await store.model_of_run(run_id) is None
            and completed is not None and utcnow() - completed < MODEL_REGISTRATION_GRACE):
        raise Conflict(f"run {run_id} just succeeded and its trained model is still being registered; "
                       "try again in a few seconds", headers={"Retry-After": "5"})
    # The document goes last: until then a failure (NATS or the artifact store unreachable)
    # leaves the run in place, and the caller may simply try again. The metrics service
    # acts on the event only once the document is gone.
    await publish_event(bus, subjects, subjects.run_removed,
                        RunRemoved(run_id=run_id, project=caller.project, status=run.status,
                                   requested_by=caller.key_id),
                        retry_for_s=REQUEST_PUBLISH_RETRY_S)
    await artifacts.delete_prefix(run_prefix(run_id))  # checkpoints and previews; models/<id> stays
    if not await store.remove_finished_run(caller.project, run_id):
        now = await store.run(caller.project, run_id)
        if now is None:
            raise NotFound("run", run_id)  # a concurrent DELETE removed it
        raise Conflict(f"run {run_id} became {now.status} while it was being removed; it was not removed")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
