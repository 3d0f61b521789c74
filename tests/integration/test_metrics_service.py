"""The metrics service against real NATS (JetStream) and the local MongoDB-wire server."""

import asyncio
import time

from faststream.nats import NatsBroker
from pymongo import AsyncMongoClient

from shared.bus import publish_event
from shared.events import ConfusionMatrix, EpochLogged, IterationLog, IterationsLogged
from shared.subjects import Subjects
from trainyard.localstack import LocalStack

TRAINER = "trainer-a"


async def insert_run(stack: LocalStack, run_id: str, *, attempt: int = 1, trainer_id: str = TRAINER,
                     epochs: int = 3) -> None:
    """The run document the scheduler keeps: which trainer holds which attempt, and the run's epochs."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.mongo_url)
    try:
        await client[stack.mongo_db].runs.insert_one(
            {"_id": run_id, "attempt": attempt, "trainer_id": trainer_id, "spec": {"epochs": epochs}})
    finally:
        await client.close()


def epoch(n: int, loss: float = 1.0) -> EpochLogged:
    return EpochLogged(
        run_id="run-1", attempt=1, epoch=n, total_epochs=3, losses={"loss_cls": loss, "loss_bbox": 0.5},
        loss=loss + 0.5, learning_rate=0.01, epoch_time_s=2.0, metrics={"bbox_mAP_50": 0.25},
        confusion_matrix=ConfusionMatrix(classes=["a", "Background"], matrix=[[1, 0], [2, 0]],
                                         score_threshold=0.3, iou_threshold=0.5),
    )


async def wait_for_count(stack: LocalStack, collection: str, query: dict[str, object], count: int) -> int:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.mongo_url)
    try:
        deadline = time.monotonic() + 20
        found = 0
        while time.monotonic() < deadline:
            found = await client[stack.mongo_db][collection].count_documents(query)
            if found >= count:
                break
            await asyncio.sleep(0.1)
        return found
    finally:
        await client.close()


async def test_redelivered_epoch_is_stored_once(stack: LocalStack, bus: tuple[NatsBroker, Subjects]) -> None:
    stack.start_service("metrics")
    broker, subjects = bus
    await insert_run(stack, "run-1")
    first = epoch(1, loss=1.0)
    # Distinct message ids get past the stream's de-duplication: the consumer
    # sees the same epoch twice, as after a redelivery, the second with other values.
    await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), first, dedup_key="delivery-1")
    assert await wait_for_count(stack, "epochs", {"run_id": "run-1"}, 1) == 1
    await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), first, dedup_key="delivery-2")
    await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), epoch(1, loss=9.0), dedup_key="delivery-3")
    await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), epoch(2), dedup_key="delivery-4")

    assert await wait_for_count(stack, "epochs", {"run_id": "run-1"}, 2) == 2
    await asyncio.sleep(0.5)  # give a wrongly stored duplicate the chance to appear
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.mongo_url)
    db = client[stack.mongo_db]
    docs = await db.epochs.find({"run_id": "run-1"}).sort("epoch", 1).to_list()
    assert [d["epoch"] for d in docs] == [1, 2]
    assert docs[0]["loss"] == 1.5 and docs[0]["event_id"] == first.event_id
    assert await db.confusion_matrices.count_documents({"run_id": "run-1"}) == 2
    await client.close()


async def test_later_attempt_replaces_an_epoch_and_superseded_attempts_are_ignored(
    stack: LocalStack, bus: tuple[NatsBroker, Subjects]
) -> None:
    stack.start_service("metrics")
    broker, subjects = bus
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.mongo_url)
    db = client[stack.mongo_db]
    await insert_run(stack, "run-1", attempt=2)

    def at(attempt: int, n: int, loss: float) -> EpochLogged:
        return epoch(n, loss).model_copy(update={"attempt": attempt})

    await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(2, 1, 2.0))
    assert await wait_for_count(stack, "epochs", {"run_id": "run-1", "attempt": 2}, 1) == 1
    # Attempt 1's trainer was presumed lost and comes back: its epochs are refused (dead-lettered).
    await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(1, 1, 7.0))
    await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(1, 2, 7.0))
    # Attempt 3 resumed from an earlier checkpoint and logs epoch 1 again: it wins.
    await db.runs.update_one({"_id": "run-1"}, {"$set": {"attempt": 3}})
    await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(3, 1, 3.0))
    await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(3, 2, 3.0))
    assert await wait_for_count(stack, "epochs", {"run_id": "run-1", "attempt": 3}, 2) == 2
    await asyncio.sleep(0.3)
    docs = await db.epochs.find({"run_id": "run-1"}).sort("epoch", 1).to_list()
    assert [(d["epoch"], d["attempt"], d["loss"]) for d in docs] == [(1, 3, 3.5), (2, 3, 3.5)]
    await client.close()


def iterations(*steps: int, attempt: int = 1, loss: float = 1.0) -> IterationsLogged:
    return IterationsLogged(run_id="run-it", attempt=attempt, steps=[
        IterationLog(step=s, epoch=1, loss=loss, losses={"loss_cls": loss}, learning_rate=0.01) for s in steps
    ])


async def test_iteration_logs_are_stored_once_per_step(stack: LocalStack, bus: tuple[NatsBroker, Subjects]) -> None:
    stack.start_service("metrics")
    broker, subjects = bus
    await insert_run(stack, "run-it")
    await publish_event(broker, subjects, subjects.iterations_logged(TRAINER), iterations(10, 20), dedup_key="d1")
    assert await wait_for_count(stack, "iterations", {"run_id": "run-it"}, 2) == 2
    # A redelivery (other values, same attempt) changes nothing; new steps are added.
    await publish_event(broker, subjects, subjects.iterations_logged(TRAINER), iterations(10, 20, loss=9.0),
                        dedup_key="d2")
    await publish_event(broker, subjects, subjects.iterations_logged(TRAINER), iterations(20, 30), dedup_key="d3")
    assert await wait_for_count(stack, "iterations", {"run_id": "run-it"}, 3) == 3
    await asyncio.sleep(0.5)
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.mongo_url)
    docs = await client[stack.mongo_db].iterations.find({"run_id": "run-it"}).sort("step", 1).to_list()
    assert [(d["step"], d["loss"]) for d in docs] == [(10, 1.0), (20, 1.0), (30, 1.0)]
    await client.close()


async def test_an_undefined_metric_never_wins_the_best_epoch(stack: LocalStack) -> None:
    from services.api.store import ApiStore
    from services.metrics.store import MetricsStore

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.mongo_url)
    try:
        db = client[stack.mongo_db]
        metrics_store, api_store = MetricsStore(db), ApiStore(db)
        # bbox_mAP_l undefined (null) in epochs 1 and 3, 0.0 in epoch 2; absent between evaluations (epoch 4).
        values: list[float | None] = [None, 0.0, None]
        await db.epochs.insert_many([{"run_id": "nulls", "epoch": n, "metrics": {"bbox_mAP": 0.1 * n,
                                                                               "bbox_mAP_l": value}}
                                     for n, value in enumerate(values, start=1)]
                                    + [{"run_id": "nulls", "epoch": 4, "metrics": {}}])
        await db.epochs.insert_many([{"run_id": "all-null", "epoch": n, "metrics": {"bbox_mAP_l": None}}
                                     for n in (1, 2)])
        for store in (metrics_store.best_epoch, api_store.best_epoch_by):
            best = await store("nulls", "bbox_mAP_l")
            assert best is not None and best["epoch"] == 2, store
            assert await store("all-null", "bbox_mAP_l") is None, store
            top = await store("nulls", "bbox_mAP")
            assert top is not None and top["epoch"] == 3
    finally:
        await client.close()
