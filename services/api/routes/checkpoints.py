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
    """The checkpoints the artifact store keeps for the run (the newest few and the best),
    oldest first; a rerun resumes from the newest."""
    await existing_run(store, caller.project, run_id)
    manifest = await artifacts.manifest(run_id)
    items = []
    for epoch in manifest.epochs:
        try:
            stored = await artifacts.info(checkpoint_name(run_id, epoch))
        except ArtifactNotFound:
            continue  # dropped between reading the manifest and now
        items.append(CheckpointOut(
            epoch=epoch, name=stored.name, size_bytes=stored.size, digest=stored.digest,
            stored_at=stored.modified, best=manifest.best is not None and manifest.best.epoch == epoch,
        ))
    return RunCheckpoints(run_id=run_id, items=items, best=manifest.best, resume_epoch=manifest.latest)
