import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from services.api.auth import DatasetsReader, DatasetsWriter
from services.api.dataset_upload import AcceptedUpload, is_archive_request, received_upload
from services.api.dataset_validation import (
    DatasetLimits,
    SplitSummary,
    fingerprint,
    inside,
    layout_paths,
    validate_dataset,
)
from services.api.deps import ArtifactStore, Store
from services.api.errors import NotFound, Unprocessable, problem_responses
from services.api.listing import page_of_datasets
from services.api.models import DatasetList, DatasetOut, DatasetRegistration
from services.api.pagination import InvalidCursor
from services.api.views import dataset_out
from shared.artifacts import Artifacts, dataset_archive_name
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


_ARCHIVE_BODY = {"schema": {"type": "string", "format": "binary"}}
_REGISTER_OPENAPI: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": DatasetRegistration.model_json_schema()},
    # An upload: the dataset's files travel with the request (services/api/dataset_upload.py).
    "application/x-tar": _ARCHIVE_BODY, "application/gzip": _ARCHIVE_BODY, "application/zip": _ARCHIVE_BODY,
}}}
UploadName = Annotated[str | None, Query(
    min_length=1, max_length=200,
    description="with an archive body: the dataset's name (required then; JSON bodies carry their own)")]


async def _registration(request: Request) -> DatasetRegistration:
    """The JSON body, read here rather than by FastAPI: it would read an archive body whole too."""
    try:
        return DatasetRegistration.model_validate_json(await request.body())
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]) from None


@router.post("", status_code=status.HTTP_201_CREATED, responses=problem_responses(400, 413),
             openapi_extra=_REGISTER_OPENAPI)
async def register_dataset(caller: DatasetsWriter, store: Store, artifacts: ArtifactStore,
                           request: Request, name: UploadName = None) -> DatasetOut:
    """Register a COCO dataset in the key's project, in one of two ways.

    **By server path** (`application/json`, a `DatasetRegistration`): files on storage the API and
    every trainer read, under one of the server's dataset roots.

    **By upload** (`application/x-tar`, `application/gzip` or `application/zip` body, `?name=`): an
    archive holding `annotations/train.json`, `annotations/val.json`, `images/train/`, `images/val/`
    (at its top or in its one top-level directory). It is streamed to disk (413 over
    `TRAINYARD_MAX_UPLOAD_BYTES`), unpacked with every member checked (422 naming a member that is
    absolute, has `..`, is a link or a device, or passes `TRAINYARD_MAX_UNPACKED_BYTES`), validated
    with the same limits as a path, and only then stored in the artifact store trainers fetch it from."""
    if is_archive_request(request):
        if name is None:
            raise Unprocessable("name: an uploaded dataset needs ?name=",
                                [{"field": "query.name", "message": "required with an archive body"}])
        async with received_upload(request, request.app.state.settings) as upload:
            return await _record_upload(name, upload, caller, store, artifacts)
    return await _register_path(await _registration(request), caller, store, request)


async def _record_upload(name: str, upload: AcceptedUpload, caller: DatasetsWriter, store: Store,
                         artifacts: Artifacts) -> DatasetOut:
    dataset_id = new_id()
    object_name = dataset_archive_name(dataset_id)
    await artifacts.upload_file(object_name, upload.archive, description=f"dataset {name!r} of {caller.project}")
    layout = upload.layout.model_copy(update={"archive": object_name})
    doc = {
        "_id": dataset_id, "project": caller.project, "name": name, "layout": layout.model_dump(),
        "fingerprint": None, "archive_bytes": upload.size,
        "created_at": utcnow(), "created_by": caller.key_id,
        "train": _split_doc(layout.train, upload.report.train), "val": _split_doc(layout.val, upload.report.val),
    }
    try:
        await store.insert_dataset(doc)
    except BaseException:
        await artifacts.delete(object_name)  # nothing stored for a dataset that was not recorded
        raise
    return dataset_out(doc)


async def _register_path(body: DatasetRegistration, caller: DatasetsWriter, store: Store,
                         request: Request) -> DatasetOut:
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
