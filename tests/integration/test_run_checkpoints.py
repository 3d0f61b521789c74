"""A run's checkpoints in the artifact store: the policy's newest K and the best, the model's weights."""

from pathlib import Path

import pytest
import torch
from faststream.nats import NatsBroker

from services.trainer.checkpoints import RunCheckpoints, improves
from shared.artifacts import ArtifactCache, Artifacts, BestCheckpoint, checkpoint_name, checkpoint_prefix
from shared.specs import RunSpec
from shared.subjects import Subjects


def spec(**checkpoint: object) -> RunSpec:
    return RunSpec.model_validate({"name": "c", "dataset_id": "0" * 32, "architecture": "rtmdet-tiny",
                                   "checkpoint": checkpoint})


def write_checkpoint(work_dir: Path, epoch: int) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.full((2,), float(epoch))}, "optimizer": {"lr": 0.1},
                "meta": {"epoch": epoch}}, work_dir / f"epoch_{epoch}.pth")


def test_improves_follows_the_watched_metric_and_its_direction() -> None:
    best = spec(strategy="best", metric="bbox_mAP")
    assert improves(best, 1, {"bbox_mAP": 0.2}, None) == BestCheckpoint(epoch=1, metric="bbox_mAP", value=0.2)
    earlier = BestCheckpoint(epoch=1, metric="bbox_mAP", value=0.2)
    assert improves(best, 2, {"bbox_mAP": 0.2}, earlier) is None  # a tie keeps the earlier epoch
    assert improves(best, 2, {"bbox_mAP": 0.3}, earlier) is not None
    assert improves(best, 2, {}, earlier) is None  # no evaluation this epoch
    lowest = spec(strategy="lowest_val_loss")
    loss = BestCheckpoint(epoch=1, metric="val_loss", value=1.0)
    assert improves(lowest, 2, {"val_loss": 0.9}, loss) == BestCheckpoint(epoch=2, metric="val_loss", value=0.9)
    assert improves(lowest, 2, {"val_loss": 1.1}, loss) is None
    assert improves(spec(strategy="latest"), 1, {"bbox_mAP": 0.9}, None) is None


async def test_the_store_keeps_the_newest_and_the_best_and_the_model_gets_the_best(
    bus: tuple[NatsBroker, Subjects], tmp_path: Path
) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    cache = ArtifactCache(tmp_path / "cache", artifacts)
    run = RunCheckpoints("run1", spec(strategy="best", metric="bbox_mAP", keep=2), cache)
    work = tmp_path / "attempt-1"
    for epoch, score in [(1, 0.1), (2, 0.5), (3, 0.3), (4, 0.4)]:
        write_checkpoint(work, epoch)
        await run.store_epoch(epoch, {"bbox_mAP": score}, work)

    manifest = await artifacts.manifest("run1")
    assert manifest.epochs == [2, 3, 4] and manifest.best == BestCheckpoint(epoch=2, metric="bbox_mAP", value=0.5)
    assert await artifacts.names(checkpoint_prefix("run1")) == [
        *(checkpoint_name("run1", e) for e in (2, 3, 4)), "runs/run1/checkpoints/manifest.json"]

    # A later attempt elsewhere: nothing on its disk, it resumes from the newest stored epoch.
    elsewhere = RunCheckpoints("run1", run.spec, ArtifactCache(tmp_path / "other-cache", artifacts))
    resume = await elsewhere.resume_point()
    assert resume is not None and resume.is_relative_to(tmp_path / "other-cache")
    assert torch.load(resume, weights_only=False)["meta"]["epoch"] == 4

    # The model is the best epoch's weights, fetched from the store when this disk no longer has them.
    for path in work.glob("*.pth"):
        path.unlink()
    stored = await run.store_model_weights("m1", work)
    assert stored == ("models/m1.pth", 2)
    weights = torch.load(await cache.fetch("models/m1.pth"), weights_only=False)
    assert set(weights) == {"state_dict", "meta"} and weights["meta"]["run_id"] == "run1"
    assert weights["state_dict"]["w"].tolist() == [2.0, 2.0]


async def test_a_run_without_stored_checkpoints_starts_fresh(bus: tuple[NatsBroker, Subjects],
                                                             tmp_path: Path) -> None:
    broker, subjects = bus
    run = RunCheckpoints("new", spec(), ArtifactCache(tmp_path, await Artifacts.open(broker, subjects)))
    assert await run.resume_point() is None
    assert await run.store_model_weights("m", tmp_path) is None


@pytest.mark.parametrize("keep", [1, 3])
async def test_latest_keeps_at_least_two(bus: tuple[NatsBroker, Subjects], tmp_path: Path, keep: int) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    run = RunCheckpoints(f"k{keep}", spec(keep=keep), ArtifactCache(tmp_path / "cache", artifacts))
    for epoch in range(1, 6):
        write_checkpoint(tmp_path / "w", epoch)
        await run.store_epoch(epoch, {}, tmp_path / "w")
    assert (await artifacts.manifest(f"k{keep}")).epochs == list(range(6 - max(2, keep), 6))
    assert run.final_epoch() == 5
