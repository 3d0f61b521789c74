"""The artifact store on the real NATS server: what trainers resume from and fine-tune from."""

import asyncio
import gc
import os
import re
import time
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from prometheus_client import REGISTRY

from shared.artifacts import (
    ArtifactCache,
    ArtifactNotFound,
    Artifacts,
    CheckpointManifest,
    checkpoint_name,
    checkpoint_prefix,
    file_digest,
)
from shared.events import BestCheckpoint
from shared.subjects import Subjects


async def test_a_file_round_trips_with_its_digest(bus: tuple[NatsBroker, Subjects], tmp_path: Path) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    stored_before = REGISTRY.get_sample_value("trainyard_artifact_bytes_total",
                                              {"operation": "store", "kind": "checkpoint"}) or 0.0
    source = tmp_path / "epoch_3.pth"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several chunks and a partial one
    began = time.monotonic()
    stored = await artifacts.upload_file(checkpoint_name("r1", 1, 3), source)
    uploaded = time.monotonic() - began
    assert stored.size == source.stat().st_size
    assert stored.digest == file_digest(source)

    copy = tmp_path / "elsewhere" / "epoch_3.pth"
    began = time.monotonic()
    await artifacts.download(checkpoint_name("r1", 1, 3), copy)
    downloaded = time.monotonic() - began
    assert copy.read_bytes() == source.read_bytes()
    assert not list(copy.parent.glob(".*partial"))
    # Operators see it: bytes and time per operation and kind (deploy/grafana, trainers dashboard).
    assert REGISTRY.get_sample_value("trainyard_artifact_bytes_total",
                                     {"operation": "store", "kind": "checkpoint"}) == stored_before + stored.size
    assert (REGISTRY.get_sample_value("trainyard_artifact_transfer_seconds_count",
                                      {"operation": "fetch", "kind": "checkpoint"}) or 0) >= 1
    print(f"3 MB: upload {uploaded * 1000:.0f} ms, download {downloaded * 1000:.0f} ms")


async def test_a_missing_object_is_named_and_leaves_no_file(bus: tuple[NatsBroker, Subjects],
                                                            tmp_path: Path) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    with pytest.raises(ArtifactNotFound, match=re.escape("runs/nope/checkpoints/attempt_1/epoch_1.pth")):
        await artifacts.download(checkpoint_name("nope", 1, 1), tmp_path / "dest" / "x.pth")
    assert list((tmp_path / "dest").iterdir()) == []
    assert await artifacts.delete("runs/nope/anything") is False
    assert (await artifacts.manifest("nope", 1)) == CheckpointManifest(attempt=1)


@pytest.fixture
async def cached(bus: tuple[NatsBroker, Subjects], tmp_path: Path) -> tuple[Artifacts, ArtifactCache]:
    """The artifact store on the real server, and a trainer's local cache of it."""
    artifacts = await Artifacts.open(*bus)
    return artifacts, ArtifactCache(tmp_path / "cache", artifacts)


async def test_the_cache_downloads_once_and_again_when_the_object_changes(
    cached: tuple[Artifacts, ArtifactCache]
) -> None:
    artifacts, cache = cached
    await artifacts.upload_bytes("models/m1.pth", b"first weights")
    path = await cache.fetch("models/m1.pth")
    assert path.read_bytes() == b"first weights"
    modified = path.stat().st_mtime_ns
    assert (await cache.fetch("models/m1.pth")).stat().st_mtime_ns == modified  # no second download

    await artifacts.upload_bytes("models/m1.pth", b"replaced weights")
    assert (await cache.fetch("models/m1.pth")).read_bytes() == b"replaced weights"


async def test_the_cache_keeps_no_lock_for_objects_fetched_and_done(
    cached: tuple[Artifacts, ArtifactCache]
) -> None:
    artifacts, cache = cached
    names = [f"models/m{n}.pth" for n in range(5)]
    for name in names:
        await artifacts.upload_bytes(name, name.encode())
    # Two fetches of each at once: the second waits on the first's lock and finds the copy made.
    paths = await asyncio.gather(*(cache.fetch(name) for name in names + names))
    assert [path.read_bytes() for path in paths] == [name.encode() for name in names + names]
    gc.collect()
    assert len(cache._locks) == 0


async def test_deleting_a_prefix_removes_only_that_run(bus: tuple[NatsBroker, Subjects]) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    for run in ("a", "b"):
        for epoch in (1, 2):
            await artifacts.upload_bytes(checkpoint_name(run, 1, epoch), f"{run}{epoch}".encode())
    assert await artifacts.delete_prefix("runs/a/") == 2
    assert await artifacts.names(checkpoint_prefix("a")) == []
    assert await artifacts.names(checkpoint_prefix("b")) == [checkpoint_name("b", 1, 1), checkpoint_name("b", 1, 2)]
    with pytest.raises(ArtifactNotFound):
        await artifacts.read(checkpoint_name("a", 1, 1))


def test_the_manifest_keeps_the_newest_and_its_own_best() -> None:
    best = BestCheckpoint(epoch=1, metric="bbox_mAP", value=0.4, name=checkpoint_name("r", 2, 1))
    manifest = CheckpointManifest(attempt=2, epochs=[1, 2, 3], best=best)
    kept, dropped = manifest.keeping(4, keep=2, own_best=best.name)
    assert kept.epochs == [1, 3, 4] and dropped == [2]
    assert kept.latest == 4 and kept.best == best
    # A best an earlier attempt stored is not this attempt's to keep (or to delete).
    kept, dropped = manifest.keeping(4, keep=2, own_best=None)
    assert kept.epochs == [3, 4] and dropped == [1, 2] and kept.best == best
    kept, dropped = CheckpointManifest(attempt=1).keeping(1, keep=2, own_best=None)
    assert kept.epochs == [1] and dropped == []
