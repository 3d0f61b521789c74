"""An attempt's checkpoints in the artifact store: the policy's newest K and the best, the model's weights."""

from pathlib import Path

import pytest
import torch
from faststream.nats import NatsBroker

from services.trainer.checkpoints import RunCheckpoints, improves
from services.trainer.reports import QUEUED_DIR
from services.trainer.weights import weights_path
from shared.artifacts import ArtifactCache, Artifacts, attempt_prefix, checkpoint_name, manifest_name
from shared.events import BestCheckpoint, StoredCheckpoint
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
    first = improves(best, 1, "n1", {"bbox_mAP": 0.2}, None)
    assert first == BestCheckpoint(epoch=1, metric="bbox_mAP", value=0.2, name="n1")
    assert improves(best, 2, "n2", {"bbox_mAP": 0.2}, first) is None  # a tie keeps the earlier epoch
    assert improves(best, 2, "n2", {"bbox_mAP": 0.3}, first) is not None
    assert improves(best, 2, "n2", {}, first) is None  # no evaluation this epoch
    lowest = spec(strategy="lowest_val_loss")
    loss = BestCheckpoint(epoch=1, metric="val_loss", value=1.0, name="n1")
    assert improves(lowest, 2, "n2", {"val_loss": 0.9}, loss) == BestCheckpoint(
        epoch=2, metric="val_loss", value=0.9, name="n2")
    assert improves(lowest, 2, "n2", {"val_loss": 1.1}, loss) is None
    assert improves(spec(strategy="latest"), 1, "n1", {"bbox_mAP": 0.9}, None) is None


async def test_attempts_keep_their_newest_and_the_best_and_the_model_gets_the_best(
    bus: tuple[NatsBroker, Subjects], tmp_path: Path
) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    policy = spec(strategy="best", metric="bbox_mAP", keep=2)
    first = RunCheckpoints("run1", 1, policy, ArtifactCache(tmp_path / "cache-1", artifacts))
    work = tmp_path / "attempt-1"
    stored = None
    for epoch, score in [(1, 0.1), (2, 0.5), (3, 0.3), (4, 0.4)]:
        write_checkpoint(work, epoch)
        stored = await first.store_epoch(epoch, {"bbox_mAP": score}, work)
    assert stored is not None and stored.epoch == 4 and stored.name == checkpoint_name("run1", 1, 4)
    best_of_first = BestCheckpoint(epoch=2, metric="bbox_mAP", value=0.5, name=checkpoint_name("run1", 1, 2))
    assert stored.best == best_of_first
    manifest = await artifacts.manifest("run1", 1)
    assert manifest.epochs == [2, 3, 4] and manifest.best == best_of_first
    assert await artifacts.names(attempt_prefix("run1", 1)) == [
        *(checkpoint_name("run1", 1, e) for e in (2, 3, 4)), manifest_name("run1", 1)]

    # Attempt 2 elsewhere: nothing on its disk; it resumes from what attempt 1 recorded
    # and writes only under its own prefix, never touching attempt 1's objects.
    second = RunCheckpoints("run1", 2, policy, ArtifactCache(tmp_path / "cache-2", artifacts), resume_from=stored)
    resume = await second.resume_point()
    assert resume is not None and resume.is_relative_to(tmp_path / "cache-2")
    assert torch.load(resume, weights_only=False)["meta"]["epoch"] == 4
    work2 = tmp_path / "attempt-2"
    for epoch, score in [(5, 0.45), (6, 0.2), (7, 0.3)]:
        write_checkpoint(work2, epoch)
        await second.store_epoch(epoch, {"bbox_mAP": score}, work2)
    assert (await artifacts.manifest("run1", 2)).epochs == [6, 7]
    assert (await artifacts.manifest("run1", 2)).best == best_of_first
    assert len(await artifacts.names(attempt_prefix("run1", 1))) == 4

    # The model is the run's best epoch, from attempt 1, fetched from the store.
    assert await second.store_model_weights("m1", work2) == ("models/m1.pth", 2)
    weights = torch.load(await ArtifactCache(tmp_path / "c3", artifacts).fetch("models/m1.pth"), weights_only=False)
    assert set(weights) == {"state_dict", "meta"} and weights["meta"] == {"epoch": 2, "run_id": "run1"}
    assert weights["state_dict"]["w"].tolist() == [2.0, 2.0]


async def test_a_run_without_stored_checkpoints_starts_fresh(bus: tuple[NatsBroker, Subjects],
                                                             tmp_path: Path) -> None:
    broker, subjects = bus
    run = RunCheckpoints("new", 1, spec(), ArtifactCache(tmp_path, await Artifacts.open(broker, subjects)))
    assert await run.resume_point() is None
    assert await run.store_model_weights("m", tmp_path) is None


@pytest.mark.parametrize("keep", [1, 3])
async def test_latest_keeps_at_least_two(bus: tuple[NatsBroker, Subjects], tmp_path: Path, keep: int) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    run = RunCheckpoints(f"k{keep}", 1, spec(keep=keep), ArtifactCache(tmp_path / "cache", artifacts))
    for epoch in range(1, 6):
        write_checkpoint(tmp_path / "w", epoch)
        await run.store_epoch(epoch, {"bbox_mAP": 0.1 * epoch}, tmp_path / "w")
    assert (await artifacts.manifest(f"k{keep}", 1)).epochs == list(range(6 - max(2, keep), 6))
    assert run.final_checkpoint() == (checkpoint_name(f"k{keep}", 1, 5), 5)


async def test_queued_epochs_are_stored_in_order_after_the_child_dropped_its_copy(
    bus: tuple[NatsBroker, Subjects], tmp_path: Path
) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    run = RunCheckpoints("q1", 1, spec(keep=2), ArtifactCache(tmp_path / "cache", artifacts))
    work = tmp_path / "w"
    announced: list[tuple[int, list[int]]] = []

    async def announce(stored: StoredCheckpoint) -> None:
        # Announced only once whole: the object and the manifest naming it are in the store.
        manifest = await artifacts.manifest("q1", 1)
        assert (await artifacts.info(stored.name)).size > 0 and stored.epoch in manifest.epochs
        announced.append((stored.epoch, manifest.epochs))

    for epoch in (1, 2):
        write_checkpoint(work, epoch)
        run.queue_epoch(epoch, {"bbox_mAP": 0.1}, work, announce)
        # As MMEngine's max_keep_ckpts does: the child's own copy may go before the upload.
        (work / f"epoch_{epoch}.pth").unlink()
    await run.settled()
    assert announced == [(1, [1]), (2, [1, 2])]
    assert torch.load(await ArtifactCache(tmp_path / "c2", artifacts).fetch(checkpoint_name("q1", 1, 2)),
                      weights_only=False)["meta"]["epoch"] == 2
    assert list((work / QUEUED_DIR).iterdir()) == []  # the links go once stored


async def test_an_epoch_the_policy_would_drop_at_once_is_never_uploaded(
    bus: tuple[NatsBroker, Subjects], tmp_path: Path
) -> None:
    """Five epochs queued faster than they upload: keep 2 stores the newest two; `best` also the
    best epoch, wherever it is in the queue, and not the ones it beats."""
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    work = tmp_path / "w"
    for strategy, scores, expected in [("latest", [0.1] * 5, [4, 5]),
                                       ("best", [0.1, 0.2, 0.9, 0.3, 0.4], [3, 4, 5])]:
        run_id = f"d-{strategy}"
        run = RunCheckpoints(run_id, 1, spec(strategy=strategy, keep=2), ArtifactCache(tmp_path / run_id, artifacts))
        announced: list[int] = []

        async def announce(stored: StoredCheckpoint, into: list[int] = announced) -> None:
            into.append(stored.epoch)

        for epoch, score in enumerate(scores, start=1):
            write_checkpoint(work, epoch)
            run.queue_epoch(epoch, {"bbox_mAP": score}, work, announce)
        await run.settled()
        assert announced == expected, strategy
        assert (await artifacts.manifest(run_id, 1)).epochs == expected


async def test_weights_of_the_childs_epoch_are_uploaded_as_written(
    bus: tuple[NatsBroker, Subjects], tmp_path: Path
) -> None:
    """The child wrote the final epoch's weights: the trainer uploads that file, converting nothing."""
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    run = RunCheckpoints("w1", 1, spec(), ArtifactCache(tmp_path / "cache", artifacts))
    work = tmp_path / "w"
    write_checkpoint(work, 1)
    await run.store_epoch(1, {}, work)
    weights_path(work, 1).write_bytes(b"the child's weights")
    assert await run.store_model_weights("m2", work) == ("models/m2.pth", 1)
    assert await artifacts.read("models/m2.pth") == b"the child's weights"


async def test_epochs_off_the_interval_are_skipped_and_a_stop_saved_after_its_report_is_stored(
    bus: tuple[NatsBroker, Subjects], tmp_path: Path
) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    run = RunCheckpoints("i1", 1, spec(interval=2, keep=10), ArtifactCache(tmp_path / "cache", artifacts))
    work = tmp_path / "w"
    announced: list[int] = []

    async def announce(stored: StoredCheckpoint) -> None:
        announced.append(stored.epoch)

    # Epoch 1 saved no checkpoint (off the interval); 2 did; 3 none when reported.
    for epoch in (1, 2, 3):
        if epoch == 2:
            write_checkpoint(work, epoch)
        run.queue_epoch(epoch, {"bbox_mAP": 0.1}, work, announce)
    run.queue_saved_late(work, announce)  # nothing saved since: nothing more to store
    await run.settled()
    assert announced == [2]
    # A drain (or a rung's stop) after epoch 3: the child saves it after its report.
    write_checkpoint(work, 3)
    run.queue_saved_late(work, announce)
    run.queue_saved_late(work, announce)  # once only
    await run.settled()
    assert announced == [2, 3] and (await artifacts.manifest("i1", 1)).epochs == [2, 3]
