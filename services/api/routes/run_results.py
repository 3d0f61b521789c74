"""What a run produced: logs, metric series, confusion matrices, its best epoch."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi import Path as PathParam

from services.api.auth import RunsReader
from services.api.deps import ArtifactStore, Store
from services.api.errors import ApiError, Gone, NotFound, problem_responses
from services.api.models import (
    BestEpoch,
    ConfusionMatrixOut,
    DatatureConfusionMatrixOut,
    EpochLog,
    EpochPreviews,
    IterationLog,
    LogEntry,
    MetricSeries,
    PreviewImageOut,
    RunConfigOut,
    RunLogs,
    RunPreviews,
)
from services.api.routes.runs import RunId, existing_run
from services.api.views import best_epoch, confusion_matrix_out, datature_confusion_matrix, default_mode, metric_series
from shared.artifacts import ArtifactNotFound
from shared.run_document import RunDocument

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=problem_responses(403, 404))
MetricName = Annotated[str, Query(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
MAX_ITERATION_LOGS = 10_000
EpochNumber = Annotated[int, PathParam(ge=1, le=100_000, description="an evaluated epoch")]
# COCO results format, what pycocotools' COCO.loadRes reads (inline: the document has no component for it).
COCO_RESULTS_SCHEMA: dict[str, Any] = {"type": "array", "items": {
    "type": "object", "required": ["image_id", "category_id", "bbox", "score"],
    "properties": {
        "image_id": {"type": "integer", "description": "the image's id in the validation annotations"},
        "category_id": {"type": "integer", "description": "the predicted category's id in the annotations"},
        "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                 "description": "[x, y, width, height] in pixels"},
        "score": {"type": "number"},
    },
}}
ImageId = Annotated[int, PathParam(ge=0, le=2**62, description="the image's id in the validation annotations")]


@router.get("/{run_id}/logs")
async def get_run_logs(
    run_id: RunId,
    caller: RunsReader,
    store: Store,
    kind: Annotated[Literal["all", "epoch", "iteration"], Query(description="which logs")] = "all",
    after_step: Annotated[int | None, Query(ge=0, le=2**62, description=(
        f"only iteration logs after this step (and no epoch logs): a follower's newest; each answer holds at "
        f"most {MAX_ITERATION_LOGS} iteration logs, the first after it"))] = None,
) -> RunLogs:
    """Epoch logs (losses, learning rate, COCO metrics) and iteration logs as timestamped events in time order."""
    await existing_run(store, caller.project, run_id)
    items: list[LogEntry] = []
    if kind in ("all", "epoch") and after_step is None:
        items += [EpochLog.model_validate(doc) for doc in await store.epochs_of(run_id)]
    if kind in ("all", "iteration"):
        items += [IterationLog.model_validate(doc)
                  for doc in await store.iterations_of(run_id, MAX_ITERATION_LOGS, after_step=after_step)]
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
    if not run.spec.matrix:
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
    if not run.config:
        raise NotFound("generated config (the run has not started) for run", run_id)
    return RunConfigOut(run_id=run_id, attempt=run.attempt, config=run.config)


def _with_previews(run: RunDocument) -> None:
    if not run.spec.preview:
        raise ApiError(404, f"run {run.id} was started with preview=false: its evaluations render no previews")


def preview_url(run_id: str, epoch: int, image_id: int) -> str:
    return f"/v1/runs/{run_id}/previews/{epoch}/{image_id}"


@router.get("/{run_id}/previews")
async def list_previews(
    run_id: RunId,
    caller: RunsReader,
    store: Store,
    epoch: Annotated[int | None, Query(ge=1, le=100_000, description="only this epoch")] = None,
) -> RunPreviews:
    """The run's evaluation previews: per evaluated epoch, the images and where to get each PNG."""
    run = await existing_run(store, caller.project, run_id)
    _with_previews(run)
    docs = await store.previews_of(run_id, epoch)
    items = [
        EpochPreviews(epoch=doc["epoch"], attempt=int(doc.get("attempt", 0)), images=[
            PreviewImageOut(image_id=image["image_id"], file_name=image["file_name"],
                            url=preview_url(run_id, doc["epoch"], image["image_id"]))
            for image in doc["previews"]
        ])
        for doc in docs
    ]
    threshold = next((doc.get("preview_score_threshold") for doc in reversed(docs)), None)
    return RunPreviews(run_id=run_id, score_threshold=threshold, items=items)


@router.get(
    "/{run_id}/previews/{epoch}/{image_id}",
    response_class=Response,
    responses={**problem_responses(410), 200: {"content": {"image/png": {"schema": {"type": "string",
                                                                                   "format": "binary"}}},
                                               "description": "the preview, a PNG"}},
)
async def get_preview_image(run_id: RunId, epoch: EpochNumber, image_id: ImageId, caller: RunsReader, store: Store,
                            artifacts: ArtifactStore) -> Response:
    """One evaluation preview as PNG: the validation image with its ground truth and predicted boxes."""
    run = await existing_run(store, caller.project, run_id)
    _with_previews(run)
    docs = await store.previews_of(run_id, epoch)
    image = next((image for doc in docs for image in doc["previews"] if image["image_id"] == image_id), None)
    if image is None:
        raise NotFound("preview in run", f"{run_id} epoch {epoch} image {image_id}")
    try:
        png = await artifacts.read(image["object_name"])
    except ArtifactNotFound:
        raise Gone(f"run {run_id}: preview {image['object_name']} is no longer in the artifact store") from None
    return Response(content=png, media_type="image/png")


@router.get(
    "/{run_id}/predictions",
    response_class=Response,
    responses={**problem_responses(410), 200: {
        "content": {"application/json": {"schema": COCO_RESULTS_SCHEMA}},
        "description": "the evaluation's predictions, a COCO results JSON list"}},
)
async def get_predictions(
    run_id: RunId, caller: RunsReader, store: Store, artifacts: ArtifactStore,
    epoch: Annotated[int | None, Query(ge=1, le=100_000, description="an evaluated epoch; default the latest")] = None,
) -> Response:
    """One evaluation's predictions in COCO results format (`{image_id, category_id, bbox: [x, y, w, h], score}`),
    exactly what its metrics were computed from: pycocotools' `COCOeval` on them against the validation
    annotations gives the same numbers (docs/architecture.md, "COCO metrics")."""
    await existing_run(store, caller.project, run_id)
    stored = await store.predictions_of(run_id)
    if not stored:
        raise ApiError(404, f"run {run_id} has no predictions: none of its epochs has been evaluated yet")
    chosen = max(stored) if epoch is None else epoch
    if chosen not in stored:
        raise ApiError(404, f"run {run_id} has no predictions for epoch {epoch}: evaluated epochs with "
                            f"predictions are {sorted(stored)}")
    try:
        data = await artifacts.read(stored[chosen])
    except ArtifactNotFound:
        raise Gone(f"run {run_id}: predictions {stored[chosen]} are no longer in the artifact store") from None
    return Response(content=data, media_type="application/json", headers={"X-Trainyard-Epoch": str(chosen)})
