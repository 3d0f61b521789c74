"""Hyperparameter sweeps: create one (its trials are runs), follow it, kill it."""

from typing import Annotated, Any

from fastapi import APIRouter, status
from fastapi import Path as PathParam

from services.api.auth import RunsReader, RunsWriter
from services.api.deps import Bus, Store, SubjectNames
from services.api.errors import Conflict, NotFound, problem_responses
from services.api.run_creation import checked_base_model, checked_dataset, run_document
from services.api.sweep_models import SweepBest, SweepList, SweepOut, TrialOut, TrialStop
from services.api.sweep_trials import trial_specs
from shared.bus import REQUEST_PUBLISH_RETRY_S, publish_event
from shared.events import RunCreated, new_id, utcnow
from shared.specs import ObjectId
from shared.sweeps import SweepCreated, SweepKillRequested, SweepSpec, best_epoch_value, better

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], responses=problem_responses(403))
SweepId = Annotated[ObjectId, PathParam(description="the sweep's id")]


def sweep_out(doc: dict[str, Any], runs: dict[str, dict[str, Any]]) -> SweepOut:
    spec = SweepSpec.model_validate(doc["spec"])
    values: dict[str, dict[str, float | None]] = doc.get("values", {})
    stopped: dict[str, dict[str, Any]] = doc.get("stopped", {})
    trials, best = [], None
    for run_id in doc["trial_run_ids"]:
        run = runs.get(run_id)
        if run is None:
            continue  # removed by a person
        value, epoch = best_epoch_value(values.get(run_id, {}), spec.direction)
        if value is not None and epoch is not None and (best is None or better(spec.direction, value, best.value)):
            best = SweepBest(run_id=run_id, value=value, epoch=epoch)
        trials.append(TrialOut(
            run_id=run_id, name=run["name"], status=run["status"], parameters=run["sweep"]["parameters"],
            epochs_completed=int(run.get("epochs_completed") or max(
                (int(k[1:]) for k in values.get(run_id, {})), default=0)),
            best_value=value, best_epoch=epoch,
            stopped=TrialStop.model_validate(stopped[run_id]) if run_id in stopped else None,
            message=run.get("message"),
        ))
    if doc.get("best"):
        best = SweepBest.model_validate(doc["best"])  # the scheduler's verdict once the sweep ended
    return SweepOut(id=doc["_id"], name=doc["name"], project=doc["project"], status=doc["status"], spec=spec,
                    metric=spec.metric, mode=spec.direction, rung_epochs=spec.searcher.rung_epochs(),
                    trials=trials, best=best, created_at=doc["created_at"], completed_at=doc.get("completed_at"))


async def _trial_runs(store: Store, project: str, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    fields = {"name": 1, "status": 1, "sweep": 1, "epochs_completed": 1, "message": 1}
    return await store.runs_by_ids(project, run_ids, fields)


async def existing_sweep(store: Store, project: str, sweep_id: str) -> dict[str, Any]:
    doc = await store.sweeps.find_one({"_id": sweep_id, "project": project})
    if doc is None:
        raise NotFound("sweep", sweep_id)
    return doc


@router.post("", status_code=status.HTTP_201_CREATED, responses=problem_responses(400, 413))
async def start_sweep(spec: SweepSpec, caller: RunsWriter, store: Store, bus: Bus,
                      subjects: SubjectNames) -> SweepOut:
    """Start a sweep: its trials are runs, queued at once; at most `max_concurrent` train together."""
    trials = trial_specs(spec)
    dataset = await checked_dataset(store, caller.project, trials[0][1].dataset_id)
    sweep_id = new_id()
    rungs = spec.searcher.rung_epochs()
    docs = []
    for index, (parameters, trial) in enumerate(trials):
        base_model = await checked_base_model(store, caller.project, trial)
        docs.append(run_document(caller.project, trial, dataset, base_model, caller.key_id, sweep={
            "id": sweep_id, "index": index, "parameters": parameters, "max_concurrent": spec.max_concurrent,
            "rung_epochs": rungs}))
    now = utcnow()
    sweep = {"_id": sweep_id, "project": caller.project, "name": spec.name, "spec": spec.model_dump(mode="json"),
             "status": "running", "trial_run_ids": [d["_id"] for d in docs], "created_at": now,
             "updated_at": now, "created_by": caller.key_id}
    # The sweep first: trials stored without it would be runs of an unknown sweep.
    await store.sweeps.insert_one(sweep)
    for doc in docs:
        await store.insert_run(doc)
    # A lost run.created is recovered by the scheduler's periodic pass (runs left `created`).
    for doc in docs:
        await publish_event(bus, subjects, subjects.run_created,
                            RunCreated(run_id=doc["_id"], project=caller.project, spec=doc["spec"]),
                            dedup_key=f"{doc['_id']}:created",
                        retry_for_s=REQUEST_PUBLISH_RETRY_S)
    await publish_event(bus, subjects, subjects.sweep_created,
                        SweepCreated(sweep_id=sweep_id, project=caller.project, name=spec.name,
                                     trial_run_ids=sweep["trial_run_ids"]),
                        dedup_key=f"{sweep_id}:created",
                        retry_for_s=REQUEST_PUBLISH_RETRY_S)
    return sweep_out(sweep, {d["_id"]: d for d in docs})


# A project runs a handful of sweeps; the list shows the newest this many.
LISTED_SWEEPS = 100


@router.get("")
async def list_sweeps(caller: RunsReader, store: Store) -> SweepList:
    """The project's newest 100 sweeps, newest first."""
    docs = await store.sweeps.find({"project": caller.project}).sort(
        [("created_at", -1), ("_id", -1)]).limit(LISTED_SWEEPS).to_list()
    run_ids = [rid for doc in docs for rid in doc["trial_run_ids"]]
    runs = await _trial_runs(store, caller.project, run_ids)
    return SweepList(items=[sweep_out(doc, runs) for doc in docs])


@router.get("/{sweep_id}", responses=problem_responses(404))
async def get_sweep(sweep_id: SweepId, caller: RunsReader, store: Store) -> SweepOut:
    """A sweep: its trials with their parameters, status and best metric, and the best trial so far."""
    doc = await existing_sweep(store, caller.project, sweep_id)
    return sweep_out(doc, await _trial_runs(store, caller.project, doc["trial_run_ids"]))


@router.post("/{sweep_id}/kill", status_code=status.HTTP_202_ACCEPTED, responses=problem_responses(404, 409))
async def kill_sweep(sweep_id: SweepId, caller: RunsWriter, store: Store, bus: Bus,
                     subjects: SubjectNames) -> SweepOut:
    """Stop a sweep: its trials still queued or training end `terminated`; finished ones are kept."""
    doc = await existing_sweep(store, caller.project, sweep_id)
    if doc["status"] != "running":
        raise Conflict(f"sweep {sweep_id} already ended {doc['status']}")
    # Each request is its own event: a second kill is never deduplicated away.
    await publish_event(bus, subjects, subjects.sweep_kill_requested,
                        SweepKillRequested(sweep_id=sweep_id, project=caller.project, requested_by=caller.key_id),
                        dedup_key=f"{sweep_id}:kill:{new_id()}",
                        retry_for_s=REQUEST_PUBLISH_RETRY_S)
    return sweep_out(doc, await _trial_runs(store, caller.project, doc["trial_run_ids"]))
