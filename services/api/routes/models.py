import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import fastapi
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from services.api.auth import ModelsPublisher, ModelsReader
from services.api.deps import ArtifactStore, Store
from services.api.errors import Gone, NotFound, problem_responses
from services.api.models import BestEpochOut, ModelList, ModelOut, ModelRunOut
from shared.artifacts import ArtifactNotFound
from shared.specs import ObjectId

router = APIRouter(prefix="/v1/models", tags=["models"], responses=problem_responses(403, 404))
ModelId = Annotated[ObjectId, fastapi.Path(description="the model's id")]
# A lineage longer than this is cut: a chain of fine-tunes is not a loop, but is bounded anyway.
MAX_LINEAGE = 50


# Run ids per `$in`: SecantusDB's cost grows faster than the list (measured on the loaded 2-core
# machine: one query for 500 ids took about 4x as long as ten queries of 50).
STATUS_CHUNK = 50


async def _run_statuses(store: Store, project: str, run_ids: list[str]) -> dict[str, str]:
    """The status of each run still there, a few queries for a whole listing (it made one full run
    read per model: 500 for the models page, whose live stream reads the listing every second)."""
    statuses: dict[str, str] = {}
    for start in range(0, len(run_ids), STATUS_CHUNK):
        found = await store.runs_by_ids(project, run_ids[start:start + STATUS_CHUNK], {"status": 1})
        statuses.update({run_id: str(doc["status"]) for run_id, doc in found.items()})
    return statuses


async def _model_out(store: Store, project: str, doc: dict[str, Any]) -> ModelOut:
    return _model_of(doc, await _run_statuses(store, project, [doc["run_id"]]))


def _model_of(doc: dict[str, Any], statuses: dict[str, str]) -> ModelOut:
    return ModelOut(
        id=doc["_id"], project=doc["project"], architecture=doc["architecture"], classes=doc["classes"],
        run=ModelRunOut(id=doc["run_id"], name=doc.get("run_name"), status=statuses.get(doc["run_id"])),
        checkpoint=doc["checkpoint"], epochs=doc.get("epochs", 0), best_epoch=doc.get("best_epoch"),
        best_metrics=doc.get("best_metrics", {}), base_model_id=doc.get("base_model_id"),
        published=bool(doc.get("published")), created_at=doc["created_at"],
    )


async def _existing_model(store: Store, project: str, model_id: str) -> dict[str, Any]:
    doc = await store.model(project, model_id)
    if doc is None:
        raise NotFound("model", model_id)
    return doc


@router.get("")
async def list_models(
    caller: ModelsReader, store: Store,
    published: Annotated[bool | None, Query(description="only published (true) or unpublished (false)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ModelList:
    """Trained models of the caller's project with their runs, newest first."""
    docs = await store.models_of(caller.project, published, limit)
    statuses = await _run_statuses(store, caller.project, list({doc["run_id"] for doc in docs}))
    return ModelList(items=[_model_of(doc, statuses) for doc in docs])


@router.get("/{model_id}")
async def get_model(model_id: ModelId, caller: ModelsReader, store: Store) -> ModelOut:
    """One trained model: architecture, classes, run, checkpoint, best epoch, lineage."""
    return await _model_out(store, caller.project, await _existing_model(store, caller.project, model_id))


async def _set_published(store: Store, project: str, model_id: str, published: bool) -> ModelOut:
    doc = await store.set_published(project, model_id, published)
    if doc is None:
        raise NotFound("model", model_id)
    return await _model_out(store, project, doc)


@router.post("/{model_id}/publish")
async def publish_model(model_id: ModelId, caller: ModelsPublisher, store: Store) -> ModelOut:
    """Mark a model published (visible as a deliverable of the project)."""
    return await _set_published(store, caller.project, model_id, True)


@router.post("/{model_id}/unpublish")
async def unpublish_model(model_id: ModelId, caller: ModelsPublisher, store: Store) -> ModelOut:
    """Withdraw a model's publication."""
    return await _set_published(store, caller.project, model_id, False)


@router.get("/{model_id}/best-epoch")
async def get_best_epoch(
    model_id: ModelId, caller: ModelsReader, store: Store,
    metric: Annotated[str, Query(pattern=r"^[A-Za-z0-9_/.-]{1,64}$")] = "bbox_mAP",
) -> BestEpochOut:
    """The epoch of the model's run with the highest `metric` (GetBestEpochForTrainedModel)."""
    doc = await _existing_model(store, caller.project, model_id)
    best = await store.best_epoch_by(doc["run_id"], metric)
    if best is None:
        raise NotFound(f"epoch with metric {metric!r} for model", model_id)
    return BestEpochOut(model_id=model_id, metric=metric, epoch=best["epoch"], value=best["metrics"][metric],
                        metrics=best["metrics"], losses=best.get("losses", {}))


@router.get("/{model_id}/lineage")
async def get_lineage(model_id: ModelId, caller: ModelsReader, store: Store) -> ModelList:
    """The model and the models it was fine-tuned from, newest first."""
    chain = [await _existing_model(store, caller.project, model_id)]
    while (base := chain[-1].get("base_model_id")) and len(chain) < MAX_LINEAGE:
        doc = await store.model(caller.project, base)
        if doc is None:
            break
        chain.append(doc)
    statuses = await _run_statuses(store, caller.project, list({doc["run_id"] for doc in chain}))
    return ModelList(items=[_model_of(doc, statuses) for doc in chain])


@router.get(
    "/{model_id}/weights",
    response_class=FileResponse,
    responses={**problem_responses(410), 200: {"content": {"application/octet-stream": {}},
                     "description": "a PyTorch file: {'state_dict': ..., 'meta': {...}}"}},
)
async def download_weights(model_id: ModelId, caller: ModelsReader, store: Store,
                           artifacts: ArtifactStore) -> FileResponse:
    """The model's trained weights (a PyTorch state_dict, no optimizer state), for use outside trainyard."""
    doc = await _existing_model(store, caller.project, model_id)
    spool = Path(tempfile.mkdtemp(prefix="trainyard-weights-"))
    local = spool / f"{model_id}.pth"
    try:
        await artifacts.download(doc["checkpoint"], local)
    except ArtifactNotFound:
        shutil.rmtree(spool, ignore_errors=True)
        raise Gone(f"model {model_id}: its weights {doc['checkpoint']} are no longer in the artifact store") from None
    return FileResponse(local, media_type="application/octet-stream", filename=f"{model_id}.pth",
                        background=BackgroundTask(shutil.rmtree, spool, ignore_errors=True))
