"""A trainer brings an uploaded dataset from the artifact store once per machine, and unpacks it safely."""

import asyncio
import io
import tarfile
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from prometheus_client import REGISTRY

from services.trainer.datasets import DatasetUnavailable, local_dataset
from shared.artifacts import ArtifactCache, Artifacts, dataset_archive_name
from shared.specs import DatasetLayout, DatasetSplit
from shared.subjects import Subjects
from trainyard.synth import write_synthetic_coco
from trainyard_client.packing import pack_directory


def stored_layout(dataset_id: str, root: str = ".") -> DatasetLayout:
    def at(path: str) -> str:
        return path if root == "." else f"{root}/{path}"

    return DatasetLayout(root=root, classes=["circle", "square", "triangle"],
                         train=DatasetSplit(annotations=at("annotations/train.json"), images=at("images/train")),
                         val=DatasetSplit(annotations=at("annotations/val.json"), images=at("images/val")),
                         archive=dataset_archive_name(dataset_id))


def contents(layout: DatasetLayout) -> tuple[bytes, list[str]]:
    """The train annotations and image names a layout points at."""
    return Path(layout.train.annotations).read_bytes(), sorted(p.name for p in Path(layout.train.images).iterdir())


def fetched_bytes() -> float:
    return REGISTRY.get_sample_value("trainyard_artifact_bytes_total",
                                     {"operation": "fetch", "kind": "dataset"}) or 0.0


async def test_an_uploaded_dataset_is_unpacked_once_and_its_paths_point_there(
    bus: tuple[NatsBroker, Subjects], tmp_path: Path
) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    files = write_synthetic_coco(tmp_path / "source", train_images=3, val_images=1, size=64)
    archive = tmp_path / "sent.tar"
    body = pack_directory(files.root)
    archive.write_bytes(b"".join(body.chunks()))
    assert archive.stat().st_size == body.size  # the announced length is the tar's
    await artifacts.upload_file(dataset_archive_name("d1"), archive)
    cache = ArtifactCache(tmp_path / "cache", artifacts)

    before = fetched_bytes()
    # Two runs starting together on one trainer: one download, one unpacked copy.
    first, second = await asyncio.gather(local_dataset(stored_layout("d1"), cache),
                                         local_dataset(stored_layout("d1"), cache))
    assert first == second and first.archive is None
    assert fetched_bytes() - before == body.size
    assert first.root == str(tmp_path / "cache" / "datasets" / "d1" / "files")
    assert contents(first) == contents(files.layout())
    await local_dataset(stored_layout("d1"), cache)
    assert fetched_bytes() - before == body.size  # a later run uses the unpacked copy

    # A layout by server path reaches the child as it is.
    assert await local_dataset(files.layout(), cache) == files.layout()


async def test_a_missing_or_unsafe_archive_is_named(bus: tuple[NatsBroker, Subjects], tmp_path: Path) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    cache = ArtifactCache(tmp_path / "cache", artifacts)
    with pytest.raises(DatasetUnavailable, match="datasets/gone/archive is not in the artifact store"):
        await local_dataset(stored_layout("gone"), cache)
    sneaky = io.BytesIO()
    with tarfile.open(fileobj=sneaky, mode="w") as tar:
        info = tarfile.TarInfo("../../escaped")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"oops"))
    await artifacts.upload_bytes(dataset_archive_name("sneaky"), sneaky.getvalue())
    with pytest.raises(DatasetUnavailable, match=r"'\.\.' \(it would be written outside"):
        await local_dataset(stored_layout("sneaky"), cache)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "cache" / "escaped").exists()
    assert not (tmp_path / "cache" / "datasets" / "sneaky" / "files").exists()
