"""The metrics service against real NATS (JetStream) and the local MongoDB-wire server."""

import asyncio
import time
from typing import Any

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


async def test_each_runs_latest_epoch_is_kept_whatever_order_its_epochs_arrive_in(
    stack: LocalStack, bus: tuple[NatsBroker, Subjects]
) -> None:
    """`latest_epochs` (what a listing shows as progress and metrics, one query per page) holds the
    highest epoch, from the newest attempt that logged it, through reordering, redelivery and resumes."""
    from services.api.store import ApiStore

    stack.start_service("metrics")
    broker, subjects = bus
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(stack.mongo_url)
    db = client[stack.mongo_db]
    api = ApiStore(db)
    await insert_run(stack, "run-1", attempt=1)

    def at(attempt: int, n: int, mAP: float) -> EpochLogged:
        return epoch(n).model_copy(update={"attempt": attempt, "metrics": {"bbox_mAP": mAP}})

    async def latest() -> tuple[object, ...] | None:
        doc = (await api.latest_epochs(["run-1", "unknown"])).get("run-1")
        return (doc["epoch"], doc["attempt"], doc["metrics"]["bbox_mAP"]) if doc else None

    async def becomes(expected: tuple[object, ...]) -> None:
        deadline = time.monotonic() + 20
        while (found := await latest()) != expected:
            assert time.monotonic() < deadline, f"latest epoch {found}, not {expected}"
            await asyncio.sleep(0.1)

    try:
        # Epoch 2 arrives before epoch 1 (two consumers' deliveries): 1 never replaces it.
        await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(1, 2, 0.2))
        await becomes((2, 1, 0.2))
        await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(1, 1, 0.1))
        assert await wait_for_count(stack, "epochs", {"run_id": "run-1"}, 2) == 2
        # A redelivery of epoch 2 with other values changes nothing; epoch 3 moves it on.
        await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(1, 2, 0.9), dedup_key="again")
        await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(1, 3, 0.3))
        await becomes((3, 1, 0.3))
        # Attempt 2 resumed from epoch 1's checkpoint: its epoch 2 is not later than attempt 1's 3 ...
        await db.runs.update_one({"_id": "run-1"}, {"$set": {"attempt": 2}})
        await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(2, 2, 0.25))
        assert await wait_for_count(stack, "epochs", {"run_id": "run-1", "attempt": 2}, 1) == 1
        assert await latest() == (3, 1, 0.3)
        # ... its epoch 3 is (same epoch, newer attempt), and attempt 1's late epoch 4 is refused.
        await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(1, 4, 0.4))
        await publish_event(broker, subjects, subjects.epoch_logged(TRAINER), at(2, 3, 0.35))
        await becomes((3, 2, 0.35))
        await asyncio.sleep(0.3)  # give a wrongly accepted epoch 4 the chance to land
        assert await latest() == (3, 2, 0.35)
        single = await api.latest_epoch("run-1")
        assert single is not None and single["epoch"] == 3
    finally:
        await client.close()


async def test_epochs_stored_before_latest_epochs_existed_fill_it_once(stack: LocalStack) -> None:
    from services.metrics.store import MetricsStore

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
    try:
        db = client[stack.mongo_db]
        store = MetricsStore(db)
        await db.epochs.insert_many(
            [{"run_id": "old", "epoch": n, "attempt": 1, "total_epochs": 3, "metrics": {"bbox_mAP": 0.1 * n}}
             for n in (1, 3, 2)]
            # Epoch 2 logged again by attempt 2, which then died: epoch 3 of attempt 1 is still the latest.
            + [{"run_id": "resumed", "epoch": 2, "attempt": 2, "total_epochs": 3, "metrics": {}},
               {"run_id": "resumed", "epoch": 1, "attempt": 1, "total_epochs": 3, "metrics": {}},
               {"run_id": "resumed", "epoch": 3, "attempt": 1, "total_epochs": 3, "metrics": {}}])
        assert await store.backfill_latest_epochs() == 6
        found = {doc["_id"]: (doc["epoch"], doc["attempt"])
                 for doc in await db.latest_epochs.find({"_id": {"$in": ["old", "resumed"]}}).to_list()}
        assert found == {"old": (3, 1), "resumed": (3, 1)}
        await db.epochs.insert_one({"run_id": "later", "epoch": 1, "attempt": 1, "metrics": {}})
        assert await store.backfill_latest_epochs() == 0  # done once; later epochs come with their events
        assert await db.latest_epochs.count_documents({"_id": "later"}) == 0
    finally:
        await client.close()


async def test_each_runs_best_map_follows_its_stored_epochs_also_when_stored_side_by_side(stack: LocalStack) -> None:
    """The `best` a listing shows: the highest bbox_mAP among the epochs stored now. It goes down when a
    resumed attempt replaces the best epoch with a lower one, skips undefined values, and two stores
    writing the same run's epochs at once (two metrics replicas) settle on the right one."""
    from services.api.store import ApiStore
    from services.metrics.store import MetricsStore

    clients: list[AsyncMongoClient[dict[str, Any]]] = [AsyncMongoClient(stack.mongo_url) for _ in range(2)]
    try:
        replicas = [MetricsStore(client[stack.mongo_db]) for client in clients]
        await replicas[0].ensure_indexes()  # as the service does at start: one epoch per (run, epoch)
        api = ApiStore(clients[0][stack.mongo_db])

        def at(attempt: int, n: int, mAP: float | None, run_id: str = "run-best") -> EpochLogged:
            return epoch(n).model_copy(update={"run_id": run_id, "attempt": attempt, "metrics": {"bbox_mAP": mAP}})

        async def best(run_id: str = "run-best") -> tuple[object, ...] | None:
            found = (await api.latest_epochs([run_id])).get(run_id, {}).get("best")
            return (found["value"], found["epoch"], found["attempt"]) if found else None

        assert await replicas[0].record_epoch(at(1, 1, None))
        assert await best() is None  # nothing defined yet
        for n, mAP in ((2, 0.3), (3, 0.2)):
            await replicas[0].record_epoch(at(1, n, mAP))
        assert await best() == (0.3, 2, 1)
        # Attempt 2 resumed from epoch 1 and trained epoch 2 again, lower: the best is now epoch 3's.
        await replicas[1].record_epoch(at(2, 2, 0.15))
        assert await best() == (0.2, 3, 1)
        await replicas[1].record_epoch(at(2, 3, 0.25))
        assert await best() == (0.25, 3, 2)

        # Twenty epochs of another run, stored by both replicas at once, in a shuffled order.
        values = [round(0.01 * ((n * 7) % 20), 2) for n in range(1, 21)]
        order = sorted(range(1, 21), key=lambda n: (n * 13) % 20)
        await asyncio.gather(*(replicas[n % 2].record_epoch(at(1, n, values[n - 1], "run-side")) for n in order))
        top = max(values)
        assert await best("run-side") == (top, values.index(top) + 1, 1)
        # A redelivery of attempt 1's epoch 2 (0.3, replaced since by attempt 2's 0.15) changes nothing.
        assert not await replicas[0].record_epoch(at(1, 2, 0.3))
        assert await best() == (0.25, 3, 2)
    finally:
        for client in clients:
            await client.close()


async def test_latest_epochs_stored_before_they_held_a_best_get_one_once(stack: LocalStack) -> None:
    from services.metrics.store import MetricsStore

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
    try:
        db = client[stack.mongo_db]
        store = MetricsStore(db)
        await db.epochs.insert_many([{"run_id": "older", "epoch": n, "attempt": 1, "metrics": {"bbox_mAP": value}}
                                     for n, value in ((1, 0.2), (2, 0.4), (3, 0.3))])
        await db.latest_epochs.insert_one({"_id": "older", "epoch": 3, "attempt": 1, "rank": 3_000_001})
        assert await store.backfill_best_epochs() == 1
        doc = await db.latest_epochs.find_one({"_id": "older"})
        assert doc is not None and doc["best"] == {"metric": "bbox_mAP", "value": 0.4, "epoch": 2, "attempt": 1}
        assert doc["best_version"] == 1
        assert await store.backfill_best_epochs() == 0  # done once
    finally:
        await client.close()
