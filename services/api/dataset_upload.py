"""A dataset sent as an archive (POST /v1/datasets with a tar, tar.gz or zip body).

The body is streamed to a temporary file, never held in memory, and refused (413)
once it passes TRAINYARD_MAX_UPLOAD_BYTES. The archive is then unpacked into a
temporary directory by shared/dataset_archives.py (no member outside it, no
links or devices, at most TRAINYARD_MAX_UNPACKED_BYTES) and validated as a
dataset registered by path is (services/api/dataset_validation.py, the same
limits). Only then is it accepted: the route stores the archive as sent in the
artifact store, which every trainer reaches, and records the dataset.
"""

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.types import Scope

from services.api.dataset_validation import DatasetLimits, DatasetReport, Problem, validate_dataset
from services.api.errors import ApiError, Unprocessable
from shared.dataset_archives import (
    ARCHIVE_MEDIA_TYPES,
    ArchiveRefused,
    UnpackLimits,
    media_type,
    remove_tree,
    unpack_archive,
)
from shared.settings import ApiSettings
from shared.specs import DatasetLayout, DatasetSplit

UPLOAD_PATH = "/v1/datasets"
# Where an archive's dataset files are, relative to its top (or to its one top-level directory).
TRAIN_ANNOTATIONS, TRAIN_IMAGES = "annotations/train.json", "images/train"
VAL_ANNOTATIONS, VAL_IMAGES = "annotations/val.json", "images/val"


def is_dataset_upload(scope: Scope) -> bool:
    """An upload is limited by TRAINYARD_MAX_UPLOAD_BYTES here, not by the body limit of every request."""
    if scope.get("method") != "POST" or scope.get("path", "").rstrip("/") != UPLOAD_PATH:
        return False
    content_type = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
    return media_type(content_type) in ARCHIVE_MEDIA_TYPES


def is_archive_request(request: Request) -> bool:
    return media_type(request.headers.get("content-type")) in ARCHIVE_MEDIA_TYPES


class UploadTooLarge(ApiError):
    def __init__(self, size: int, limit: int, complete: bool) -> None:
        said = f"{size} bytes" if complete else f"more than {limit} bytes"
        super().__init__(413, f"upload is {said}, over the limit of {limit} bytes (TRAINYARD_MAX_UPLOAD_BYTES)",
                         [{"field": "body", "message": f"over the upload limit of {limit} bytes"}])


@dataclass(frozen=True)
class AcceptedUpload:
    """An archive that unpacked and validated: ready to be stored and recorded."""

    archive: Path
    size: int
    layout: DatasetLayout  # relative paths; `archive` is set by whoever stores it
    report: DatasetReport


async def _spool(request: Request, dest: Path, limit: int) -> int:
    received = 0
    with dest.open("wb") as out:
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise UploadTooLarge(received, limit, complete=False)
                out.write(chunk)
        except ClientDisconnect:  # the sender's doing, not a server error
            raise ApiError(400, f"upload broke off after {received} bytes",
                           [{"field": "body", "message": "the connection closed before the body's end"}]) from None
    return received


def _work_dir(upload_dir: str) -> str:
    if upload_dir:
        Path(upload_dir).mkdir(parents=True, exist_ok=True)  # on a fresh volume
    return tempfile.mkdtemp(prefix="trainyard-upload-", dir=upload_dir or None)


def _top(files: Path) -> str:
    """"." when the dataset is at the archive's top; a directory's name when the archive holds only it."""
    if (files / "annotations").exists():
        return "."
    entries = list(files.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "annotations").exists():
        return entries[0].name
    return "."


def _member_names(problem: Problem, files: Path) -> dict[str, Any]:
    """A problem as the uploader knows it: by member path in the archive, not by temporary path."""
    prefix = str(files) + "/"
    said = problem.as_dict()
    for key in ("file", "message"):
        if isinstance(said.get(key), str):
            said[key] = said[key].replace(prefix, "").replace(str(files), "the archive")
    return said


def _unpack_and_validate(archive: Path, files: Path, settings: ApiSettings) -> tuple[str, DatasetReport]:
    unpack_archive(archive, files, UnpackLimits(max_unpacked_bytes=settings.max_unpacked_bytes))
    top = _top(files)
    root = files / top
    limits = DatasetLimits(max_annotation_bytes=settings.max_annotation_bytes, max_json_depth=settings.max_json_depth,
                           max_images=settings.max_images, max_image_pixels=settings.max_image_pixels)
    report = validate_dataset(root / TRAIN_ANNOTATIONS, root / TRAIN_IMAGES, root / VAL_ANNOTATIONS,
                              root / VAL_IMAGES, root, limits)
    return top, report


def _relative(top: str, path: str) -> str:
    return path if top == "." else f"{top}/{path}"


@asynccontextmanager
async def received_upload(request: Request, settings: ApiSettings) -> AsyncIterator[AcceptedUpload]:
    """The request's archive, spooled, unpacked and validated; every temporary file goes at exit."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(int(declared), limit, complete=True)  # refused before a byte is read
    work = Path(await asyncio.to_thread(_work_dir, settings.upload_dir))
    try:
        archive, files = work / "archive", work / "files"
        size = await _spool(request, archive, limit)
        try:
            top, report = await asyncio.to_thread(_unpack_and_validate, archive, files, settings)
        except ArchiveRefused as refused:
            raise Unprocessable(f"archive: {refused.message}" if not refused.member
                                else f"archive member {refused.member!r}: {refused.message}",
                                [{"field": "body", "message": refused.message, "member": refused.member}]) from None
        if report.problems:
            said = [_member_names(p, files / top) for p in report.problems]
            more = f" (and {report.problem_count - 1} more problems)" if report.problem_count > 1 else ""
            raise Unprocessable(f"{said[0]['file']}: {said[0]['message']}{more}", said)
        layout = DatasetLayout(
            root=top,
            train=DatasetSplit(annotations=_relative(top, TRAIN_ANNOTATIONS), images=_relative(top, TRAIN_IMAGES)),
            val=DatasetSplit(annotations=_relative(top, VAL_ANNOTATIONS), images=_relative(top, VAL_IMAGES)),
            classes=report.classes,
        )
        yield AcceptedUpload(archive=archive, size=size, layout=layout, report=report)
    finally:
        await asyncio.to_thread(remove_tree, work)
