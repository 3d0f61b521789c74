import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi import Path as PathParam

from services.api.auth import DatasetsReader, DatasetsWriter
from services.api.dataset_validation import (
    DatasetLimits,
    SplitSummary,
    fingerprint,
    inside,
    layout_paths,
    validate_dataset,
)
from services.api.deps import Store
from services.api.errors import NotFound, Unprocessable, problem_responses
from services.api.listing import page_of_datasets
from services.api.models import DatasetList, DatasetOut, DatasetRegistration
from services.api.pagination import InvalidCursor
from services.api.views import dataset_out
from shared.events import new_id, utcnow
from shared.settings import ApiSettings
from shared.specs import DatasetLayout, DatasetSplit, ObjectId

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=problem_responses(403))


def _split_doc(split: DatasetSplit, summary: SplitSummary) -> dict[str, Any]:
    return {"annotations": split.annotations, "images": split.images, "image_count": summary.images,
            "box_count": summary.boxes, "boxes_per_class": summary.boxes_per_class}


def _has_nul(*paths: str) -> bool:
    return any("\x00" in p for p in paths)


def _confine(root: Path, settings: ApiSettings, body: DatasetRegistration) -> None:
    """The dataset's root lies under a configured dataset root, and its four paths under it.

    Checked before anything is looked at on disk, and answered the same whether or not
    the path exists: the error tells nothing about the server's files outside the roots."""
    roots = settings.dataset_root_paths
    if not any(inside(root, Path(allowed)) for allowed in roots):
        where = ", ".join(roots) if roots else "none are configured"
        raise Unprocessable(
            f"path: {body.path!r} is not inside a dataset root of this server (TRAINYARD_DATASET_ROOTS: {where})",
            [{"field": "path", "message": "not inside a dataset root", "value": body.path}])
    for field in ("train_annotations", "train_images", "val_annotations", "val_images"):
        value = getattr(body, field)
        if not inside(root / value, root):
            raise Unprocessable(f"{field}: {value!r} resolves outside the dataset's path {body.path}",
                                [{"field": field, "message": "resolves outside path", "value": value}])


def _limits(settings: ApiSettings) -> DatasetLimits:
    return DatasetLimits(max_annotation_bytes=settings.max_annotation_bytes, max_json_depth=settings.max_json_depth,
                         max_images=settings.max_images, max_image_pixels=settings.max_image_pixels)


@router.post("", status_code=status.HTTP_201_CREATED, responses=problem_responses(400, 413))
async def register_dataset(body: DatasetRegistration, caller: DatasetsWriter, store: Store,
                           request: Request) -> DatasetOut:
    """Validate a COCO dataset on disk, under one of the server's dataset roots, and register it
    in the key's project."""
    settings: ApiSettings = request.app.state.settings
    if _has_nul(body.path, body.train_annotations, body.train_images, body.val_annotations, body.val_images):
        raise Unprocessable("paths must not contain NUL characters",
                            [{"field": "path", "message": "contains a NUL character"}])
    root = Path(body.path)
    if not root.is_absolute():
        raise Unprocessable(f"path: {body.path!r} must be absolute (every trainer reads the same path)",
                            [{"field": "path", "message": "must be an absolute path", "value": body.path}])
    await asyncio.to_thread(_confine, root, settings, body)
    if not await asyncio.to_thread(root.is_dir):
        raise Unprocessable(f"path: directory {body.path} does not exist",
                            [{"field": "path", "message": "directory does not exist", "value": body.path}])
    train = DatasetSplit(annotations=str(root / body.train_annotations), images=str(root / body.train_images))
    val = DatasetSplit(annotations=str(root / body.val_annotations), images=str(root / body.val_images))
    # Reading every image header is disk-bound: keep it off the event loop.
    report = await asyncio.to_thread(
        validate_dataset, Path(train.annotations), Path(train.images), Path(val.annotations), Path(val.images),
        root, _limits(settings),
    )
    if report.problems:
        first = report.problems[0]
        more = f" (and {report.problem_count - 1} more problems)" if report.problem_count > 1 else ""
        raise Unprocessable(f"{first.file}: {first.message}{more}", [p.as_dict() for p in report.problems])
    layout = DatasetLayout(root=str(root), train=train, val=val, classes=report.classes)
    # Recorded so that starting a run can tell cheaply whether the files changed since.
    prints = await asyncio.to_thread(fingerprint, layout_paths(layout.model_dump()))
    doc = {
        "_id": new_id(), "project": caller.project, "name": body.name, "layout": layout.model_dump(),
        "fingerprint": prints,
        "created_at": utcnow(), "created_by": caller.key_id,
        "train": _split_doc(train, report.train), "val": _split_doc(val, report.val),
    }
    await store.insert_dataset(doc)
    return dataset_out(doc)


@router.get("")
async def list_datasets(
    caller: DatasetsReader,
    store: Store,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
) -> DatasetList:
    """The project's datasets, newest first, a page at a time."""
    try:
        page = await page_of_datasets(store, caller.project, limit=limit, cursor=cursor, now=utcnow())
    except InvalidCursor as error:
        raise Unprocessable(f"cursor: {error}", [{"field": "query.cursor", "message": str(error)}]) from error
    return DatasetList(items=[dataset_out(doc) for doc in page.items], next_cursor=page.next_cursor)


@router.get("/{dataset_id}", responses=problem_responses(404))
async def get_dataset(dataset_id: Annotated[ObjectId, PathParam()], caller: DatasetsReader, store: Store) -> DatasetOut:
    """One dataset with its image and box counts per class and split."""
    doc = await store.dataset(caller.project, dataset_id)
    if doc is None:
        raise NotFound("dataset", dataset_id)
    return dataset_out(doc)
