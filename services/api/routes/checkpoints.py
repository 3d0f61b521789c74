"""A run's stored checkpoints: what a rerun resumes from and what its model was taken from."""

from fastapi import APIRouter

from services.api.auth import RunsReader
from services.api.deps import ArtifactStore, Store
from services.api.errors import problem_responses
from services.api.models import CheckpointOut, RunCheckpoints
from services.api.routes.runs import RunId, existing_run
from shared.artifacts import ArtifactNotFound, checkpoint_name

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=problem_responses(403, 404))


@router.get("/{run_id}/checkpoints")
async def get_run_checkpoints(run_id: RunId, caller: RunsReader, store: Store,
                              artifacts: ArtifactStore) -> RunCheckpoints:
    """The checkpoints the artifact store keeps for the run, each attempt's newest few and the
    best, oldest first; `resume_from` is the one a rerun continues from."""
    run = await existing_run(store, caller.project, run_id)
    resume = run.checkpoint
    items: list[CheckpointOut] = []
    best = None
    for attempt in range(1, run.attempt + 1):
        manifest = await artifacts.manifest(run_id, attempt)
        best = manifest.best or best
        for epoch in manifest.epochs:
            try:
                stored = await artifacts.info(checkpoint_name(run_id, attempt, epoch))
            except ArtifactNotFound:
                continue  # dropped between reading the manifest and now
            items.append(CheckpointOut(attempt=attempt, epoch=epoch, name=stored.name, size_bytes=stored.size,
                                       digest=stored.digest, stored_at=stored.modified, best=False))
    if resume is not None and resume.best is not None:
        best = resume.best  # the current attempt's view, as the scheduler recorded it
    items = [item.model_copy(update={"best": best is not None and item.name == best.name}) for item in items]
    return RunCheckpoints(run_id=run_id, items=items, best=best, resume_from=resume)
