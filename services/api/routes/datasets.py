import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi import Path as PathParam

from services.api.dataset_validation import SplitSummary, validate_dataset
from services.api.deps import Store
from services.api.errors import NotFound, Unprocessable
from services.api.models import DatasetOut, DatasetRegistration, SplitOut
from shared.events import new_id, utcnow
from shared.specs import DatasetLayout, DatasetSplit, ObjectId

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def _split_out(split: dict[str, Any]) -> SplitOut:
    return SplitOut.model_validate(split)


def _dataset_out(doc: dict[str, Any]) -> DatasetOut:
    return DatasetOut(
        id=doc["_id"], name=doc["name"], root=doc["layout"]["root"], classes=doc["layout"]["classes"],
        train=_split_out(doc["train"]), val=_split_out(doc["val"]), created_at=doc["created_at"],
    )


def _split_doc(split: DatasetSplit, summary: SplitSummary) -> dict[str, Any]:
    return {"annotations": split.annotations, "images": split.images, "image_count": summary.images,
            "box_count": summary.boxes, "boxes_per_class": summary.boxes_per_class}


@router.post("", status_code=status.HTTP_201_CREATED)
async def register_dataset(body: DatasetRegistration, store: Store) -> DatasetOut:
    """Validate a COCO dataset on disk and register it."""
    root = Path(body.path)
    if not root.is_absolute():
        raise Unprocessable(f"path: {body.path!r} must be absolute (every trainer reads the same path)",
                            [{"field": "path", "message": "must be an absolute path", "value": body.path}])
    if not await asyncio.to_thread(root.is_dir):
        raise Unprocessable(f"path: directory {body.path} does not exist",
                            [{"field": "path", "message": "directory does not exist", "value": body.path}])
    train = DatasetSplit(annotations=str(root / body.train_annotations), images=str(root / body.train_images))
    val = DatasetSplit(annotations=str(root / body.val_annotations), images=str(root / body.val_images))
    # Reading every image header is disk-bound: keep it off the event loop.
    report = await asyncio.to_thread(
        validate_dataset, Path(train.annotations), Path(train.images), Path(val.annotations), Path(val.images)
    )
    if report.problems:
        first = report.problems[0]
        more = f" (and {len(report.problems) - 1} more problems)" if len(report.problems) > 1 else ""
        raise Unprocessable(f"{first.file}: {first.message}{more}", [p.as_dict() for p in report.problems])
    layout = DatasetLayout(root=str(root), train=train, val=val, classes=report.classes)
    doc = {
        "_id": new_id(), "name": body.name, "layout": layout.model_dump(), "created_at": utcnow(),
        "train": _split_doc(train, report.train), "val": _split_doc(val, report.val),
    }
    await store.insert_dataset(doc)
    return _dataset_out(doc)


@router.get("")
async def list_datasets(store: Store, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[DatasetOut]:
    """Registered datasets, newest first."""
    return [_dataset_out(doc) for doc in await store.list_datasets(limit)]


@router.get("/{dataset_id}")
async def get_dataset(dataset_id: Annotated[ObjectId, PathParam()], store: Store) -> DatasetOut:
    """One dataset with its image and box counts per class and split."""
    doc = await store.dataset(dataset_id)
    if doc is None:
        raise NotFound("dataset", dataset_id)
    return _dataset_out(doc)
