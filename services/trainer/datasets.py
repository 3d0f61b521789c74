"""An uploaded dataset, fetched from the artifact store and unpacked on this machine before training.

A dataset registered by server path reaches the child as it is. An uploaded one is
an archive in the artifact store (DatasetLayout.archive) with paths relative to
where it is unpacked: here, `<cache>/datasets/<id>/files/`, once per machine. An
archive is stored once under its dataset's own id and never replaced, so files
unpacked from it (recorded with its digest) are used again by every later run;
several trainers sharing a work root race safely, each unpacking beside the
target and renaming into place (the first wins). The archive is unpacked as the
API unpacked it to validate it (shared/dataset_archives.py): nothing outside the
target, no links or devices.
"""

import asyncio
import logging
import os
import uuid
from pathlib import Path

from shared.artifacts import ArtifactCache, ArtifactNotFound
from shared.dataset_archives import ArchiveRefused, UnpackLimits, remove_tree, unpack_archive
from shared.specs import DatasetLayout, DatasetSplit

log = logging.getLogger(__name__)
DIGEST_FILE = ".archive-digest"
# Two runs of one dataset starting together on this trainer fetch it once.
_LOCKS: dict[str, asyncio.Lock] = {}


class DatasetUnavailable(RuntimeError):
    """The run's uploaded dataset could not be brought to this machine; the message says why."""


def _unpack(archive: Path, target: Path, digest: str) -> None:
    staging = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        unpack_archive(archive, staging, UnpackLimits())
        (staging / DIGEST_FILE).write_text(digest)
        try:
            staging.rename(target)
        except OSError:
            if not _current(target, digest):  # not another trainer's copy of the same archive
                raise
    finally:
        remove_tree(staging)


def _current(target: Path, digest: str) -> bool:
    marker = target / DIGEST_FILE
    return marker.is_file() and marker.read_text() == digest


async def _bring(name: str, target: Path, cache: ArtifactCache) -> None:
    info = await cache.artifacts.info(name)
    if await asyncio.to_thread(_current, target, info.digest):
        return
    await asyncio.to_thread(remove_tree, target)  # a copy of an unfinished or another archive
    archive = cache.path(name).with_name(f"archive.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        stored = await cache.artifacts.download(name, archive)
        await asyncio.to_thread(_unpack, archive, target, stored.digest or info.digest)
    finally:
        archive.unlink(missing_ok=True)
    log.info("unpacked dataset %s (%.1f MB archive) into %s", name, stored.size / 1e6, target)


async def local_dataset(layout: DatasetLayout, cache: ArtifactCache) -> DatasetLayout:
    """The layout with paths on this machine: as it is for a server path, unpacked for an upload."""
    if layout.archive is None:
        return layout
    name = layout.archive
    target = cache.path(name).with_name("files")
    try:
        async with _LOCKS.setdefault(name, asyncio.Lock()):
            await _bring(name, target, cache)
    except ArtifactNotFound:
        raise DatasetUnavailable(f"uploaded dataset {name} is not in the artifact store") from None
    except (ArchiveRefused, OSError) as error:
        raise DatasetUnavailable(f"uploaded dataset {name} could not be unpacked here: {error}") from None

    def here(path: str) -> str:
        return str(target / path)

    return DatasetLayout(
        root=here(layout.root),
        train=DatasetSplit(annotations=here(layout.train.annotations), images=here(layout.train.images)),
        val=DatasetSplit(annotations=here(layout.val.annotations), images=here(layout.val.images)),
        classes=layout.classes,
    )
