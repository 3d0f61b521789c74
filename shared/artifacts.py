"""Checkpoints, trained weights and preview images in a NATS JetStream object store.

Every trainer already reaches NATS, so an object stored here is readable by any
trainer on any machine: a run interrupted on one machine resumes on another,
and a model trained anywhere can start a fine-tune anywhere. A trainer's local
disk is only a cache of it (`ArtifactCache`). The bucket is replicated like the
event stream in a NATS cluster; nothing here needs MongoDB.

Names are paths, one place spells them:
    runs/<run>/checkpoints/attempt_<a>/epoch_<n>.pth     MMEngine checkpoints (resume)
    runs/<run>/checkpoints/attempt_<a>/manifest.json     what that attempt keeps, the run's best
    runs/<run>/previews/epoch_<n>/<image>.png
    runs/<run>/predictions/epoch_<n>.bbox.json           an evaluation's predictions (COCO results)
    models/<model>.pth                       a registered model's weights
    datasets/<dataset>/archive               an uploaded dataset (tar, tar.gz or zip), as sent
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nats.js.api import ObjectInfo, ObjectMeta, ObjectMetaOptions, StorageType
from nats.js.errors import BadRequestError, NotFoundError, ObjectDeletedError, ObjectNotFoundError
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, Field

from shared.bus import retry_while_leaderless
from shared.events import BestCheckpoint
from shared.settings import stream_replicas
from shared.subjects import Subjects

if TYPE_CHECKING:
    from faststream.nats import NatsBroker
    from nats.aio.client import Client
    from nats.js.object_store import ObjectStore

log = logging.getLogger(__name__)

# Under NATS's default 1 MiB max_payload with room for headers: a 100 MB
# checkpoint is 200 publishes rather than the default chunk size's 800.
CHUNK_BYTES = 512 * 1024
MANIFEST = "manifest.json"


TRANSFER_SECONDS = Histogram(
    "trainyard_artifact_transfer_seconds", "Time to store or fetch one object of the artifact store",
    ["operation", "kind"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
TRANSFER_BYTES = Counter(
    "trainyard_artifact_bytes_total", "Bytes stored into or fetched from the artifact store", ["operation", "kind"],
)
KINDS = ("checkpoint", "manifest", "model", "preview", "predictions", "dataset", "other")
for _operation in ("store", "fetch"):
    for _kind in KINDS:  # exported from the start, so dashboards and alerts see zeros, not gaps
        TRANSFER_SECONDS.labels(_operation, _kind)
        TRANSFER_BYTES.labels(_operation, _kind)


def kind_of(name: str) -> str:
    if name.startswith("models/"):
        return "model"
    if name.startswith("datasets/"):
        return "dataset"
    if "/previews/" in name:
        return "preview"
    if "/predictions/" in name:
        return "predictions"
    if name.endswith(MANIFEST):
        return "manifest"
    return "checkpoint" if "/checkpoints/" in name else "other"


def _measured(operation: str, name: str, began: float, size: int) -> None:
    """Record one transfer that succeeded: its time (since `began`) and its bytes."""
    labels = (operation, kind_of(name))
    TRANSFER_SECONDS.labels(*labels).observe(time.perf_counter() - began)
    TRANSFER_BYTES.labels(*labels).inc(size)


class ArtifactNotFound(LookupError):
    """No object of that name in the store."""


def run_prefix(run_id: str) -> str:
    """Everything stored for one run (checkpoints, previews): removing the run deletes it all."""
    return f"runs/{run_id}/"


def checkpoint_prefix(run_id: str) -> str:
    return f"{run_prefix(run_id)}checkpoints/"


def attempt_prefix(run_id: str, attempt: int) -> str:
    # Each attempt writes only under its own prefix: a superseded attempt that is
    # still running (a partitioned trainer) can never replace or delete another's.
    return f"{checkpoint_prefix(run_id)}attempt_{attempt}/"


def checkpoint_name(run_id: str, attempt: int, epoch: int) -> str:
    return f"{attempt_prefix(run_id, attempt)}epoch_{epoch}.pth"


def manifest_name(run_id: str, attempt: int) -> str:
    return f"{attempt_prefix(run_id, attempt)}{MANIFEST}"


def preview_name(run_id: str, epoch: int, image_id: int) -> str:
    return f"{run_prefix(run_id)}previews/epoch_{epoch}/{image_id}.png"


def predictions_name(run_id: str, epoch: int) -> str:
    return f"{run_prefix(run_id)}predictions/epoch_{epoch}.bbox.json"


def model_weights_name(model_id: str) -> str:
    return f"models/{model_id}.pth"


def dataset_archive_name(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/archive"


@dataclass(frozen=True)
class StoredObject:
    name: str
    size: int
    digest: str  # "SHA-256=<base64url>", as NATS records it
    modified: str


class CheckpointManifest(BaseModel):
    """What one attempt of a run keeps in the store. Written after the objects it
    names are stored and before any it drops are deleted, so it never names a
    missing object (a crash in between leaves an orphan, never a hole)."""

    attempt: int
    epochs: list[int] = Field(default_factory=list, description="this attempt's stored epochs, ascending")
    best: BestCheckpoint | None = Field(None, description="the run's best so far (maybe an earlier attempt's)")

    @property
    def latest(self) -> int | None:
        return self.epochs[-1] if self.epochs else None

    def keeping(self, epoch: int, keep: int, own_best: str | None) -> tuple[CheckpointManifest, list[int]]:
        """The manifest with `epoch` stored, the newest `keep` and the best kept; and the epochs dropped.
        `own_best` is the best's object name when this attempt stored it."""
        epochs = sorted({*self.epochs, epoch})
        kept = set(epochs[-keep:])
        if self.best is not None and self.best.name == own_best:
            kept.add(self.best.epoch)
        dropped = [e for e in epochs if e not in kept]
        return self.model_copy(update={"epochs": sorted(kept)}), dropped


def file_digest(path: Path) -> str:
    """The digest NATS records for an object with these bytes."""
    sha = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            sha.update(block)
    return "SHA-256=" + base64.urlsafe_b64encode(sha.digest()).decode()


def bucket_name(subjects: Subjects) -> str:
    return f"{subjects.stream}_ARTIFACTS"


class Artifacts:
    """The object store, in the terms the services use."""

    def __init__(self, store: ObjectStore, connection: Client | None = None) -> None:
        self.store = store
        self.connection = connection

    def reconnects(self) -> int:
        """How often this process's NATS connection broke and was made again (0 without one)."""
        return int(self.connection.stats["reconnects"]) if self.connection is not None else 0

    @classmethod
    async def open(cls, broker: NatsBroker, subjects: Subjects, replicas: int | None = None) -> Artifacts:
        """Declared by whoever comes first; the same config again is a no-op. A bucket that
        exists with another replica count is scaled to `replicas` (TRAINYARD_NATS_REPLICAS)."""
        replicas = replicas or stream_replicas()
        bucket = bucket_name(subjects)
        try:
            store = await broker.object_storage(bucket, storage=StorageType.FILE, replicas=replicas)
        except BadRequestError:  # "stream name already in use with a different configuration"
            await _scale_bucket(broker, bucket, replicas)
            store = await broker.object_storage(bucket, declare=False)
        return cls(store, broker.connection)

    async def upload_file(self, name: str, path: Path, description: str | None = None) -> StoredObject:
        began = time.perf_counter()

        async def put() -> ObjectInfo:
            with path.open("rb") as stream:
                return await self.store.put(name, stream, meta=self._meta(name, description))

        # A put replaces the object whole: one cut short by a leader election is simply done again.
        stored = _stored(await retry_while_leaderless(put, f"storing {name}"))
        _measured("store", name, began, stored.size)
        return stored

    async def upload_bytes(self, name: str, data: bytes, description: str | None = None) -> StoredObject:
        began = time.perf_counter()

        async def put() -> ObjectInfo:
            return await self.store.put(name, data, meta=self._meta(name, description))

        stored = _stored(await retry_while_leaderless(put, f"storing {name}"))
        _measured("store", name, began, stored.size)
        return stored

    async def info(self, name: str) -> StoredObject:
        try:
            return _stored(await self.store.get_info(name))
        except (ObjectNotFoundError, ObjectDeletedError, NotFoundError):
            raise ArtifactNotFound(name) from None

    async def read(self, name: str) -> bytes:
        began = time.perf_counter()
        try:
            result = await self.store.get(name)
        except (ObjectNotFoundError, ObjectDeletedError, NotFoundError):
            raise ArtifactNotFound(name) from None
        data = bytes(result.data or b"")
        _measured("fetch", name, began, len(data))
        return data

    async def download(self, name: str, dest: Path) -> StoredObject:
        """Write the object to `dest` whole or not at all (a partial file never has its name)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        try:
            began = time.perf_counter()
            with partial.open("wb") as stream:
                result = await self.store.get(name, writeinto=stream)  # checks the digest at the end
                _measured("fetch", name, began, stream.tell())
            partial.replace(dest)
        except (ObjectNotFoundError, ObjectDeletedError, NotFoundError):
            raise ArtifactNotFound(name) from None
        finally:
            partial.unlink(missing_ok=True)
        return _stored(result.info)

    async def delete(self, name: str) -> bool:
        try:
            await self.store.delete(name)
        except (ObjectNotFoundError, ObjectDeletedError, NotFoundError):
            return False
        return True

    async def names(self, prefix: str) -> list[str]:
        """Every stored object under `prefix`. Scans the bucket's metadata: for
        listings a user asks for and clean-ups, not for hot paths (those read a manifest)."""
        try:
            infos = await self.store.list(ignore_deletes=True)
        except NotFoundError:
            return []
        return sorted(info.name for info in infos if info.name.startswith(prefix) and not info.deleted)

    async def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        for name in await self.names(prefix):
            deleted += await self.delete(name)
        return deleted

    async def manifest(self, run_id: str, attempt: int) -> CheckpointManifest:
        try:
            return CheckpointManifest.model_validate_json(await self.read(manifest_name(run_id, attempt)))
        except ArtifactNotFound:
            return CheckpointManifest(attempt=attempt)

    async def write_manifest(self, run_id: str, manifest: CheckpointManifest) -> None:
        await self.upload_bytes(manifest_name(run_id, manifest.attempt), manifest.model_dump_json().encode())

    @staticmethod
    def _meta(name: str, description: str | None) -> ObjectMeta:
        return ObjectMeta(name=name, description=description, options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES))


async def _scale_bucket(broker: NatsBroker, bucket: str, replicas: int) -> None:
    """Give an existing bucket's stream (`OBJ_<bucket>`) another replica count. A process
    without permission to update streams (a trainer) logs it and uses the bucket as it is."""
    js = broker.connection.jetstream()
    info = await js.stream_info(f"OBJ_{bucket}")
    if (info.config.num_replicas or 1) == replicas:
        return
    info.config.num_replicas = replicas
    try:
        await js.update_stream(info.config)
    except Exception as error:
        log.warning("could not scale the artifact store %s to %d replicas: %s", bucket, replicas, error)


def _stored(info: object) -> StoredObject:
    return StoredObject(
        name=getattr(info, "name", ""),
        size=getattr(info, "size", None) or 0,
        digest=getattr(info, "digest", None) or "",
        modified=getattr(info, "mtime", None) or "",
    )


class ArtifactCache:
    """A trainer's local copies of stored objects, under `root/<name>`.

    A copy is used again while the object's digest is unchanged (recorded beside
    it): a model fine-tuned from many times is downloaded once per machine.
    """

    def __init__(self, root: Path, artifacts: Artifacts) -> None:
        self.root = root
        self.artifacts = artifacts
        # One lock per object being fetched, so two fetches of one name download it once; weakly
        # held, so a long-lived trainer keeps no lock for each object it ever fetched.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def path(self, name: str) -> Path:
        return self.root / name

    async def fetch(self, name: str) -> Path:
        """A local path holding the object's current bytes; downloads when needed."""
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        async with lock:
            info = await self.artifacts.info(name)
            target = self.path(name)
            marker = _digest_file(target)
            if target.is_file() and marker.is_file() and marker.read_text() == info.digest:
                return target
            stored = await self.artifacts.download(name, target)
            marker.write_text(stored.digest or info.digest)
            log.info("fetched %s (%.1f MB) into the local cache", name, stored.size / 1e6)
            return target


def _digest_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.digest")


def describe_checkpoint(epoch: int, metrics: Mapping[str, float | None]) -> str:
    """An object's description: the epoch and what it scored, readable in `nats object ls`."""
    return json.dumps({"epoch": epoch, "metrics": metrics}, sort_keys=True)
