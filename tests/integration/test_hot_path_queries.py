"""No `$or` on the paths that run per poll, per page, per epoch or per placement.

The local server (SecantusDB) answers any filter with an `$or` by reading the whole collection, even
with `_id` beside it: 2 s a live stream's poll at 48,000 epochs, 780 ms a checkpoint record at 40,000
runs (docs/architecture.md). The results of these paths are tested elsewhere; this test watches the
commands they send to a real server and fails if an `$or` comes back into one of them.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from services.api.listing import page_of_runs
from services.api.store import ApiStore
from services.metrics.store import MetricsStore
from services.scheduler.store import SchedulerStore
from shared.events import CheckpointSaved, EpochLogged, IterationLog, IterationsLogged, StoredCheckpoint
from shared.run_document import RunSummary
from shared.status import RunStatus
from trainyard.localstack import LocalStack

# The collections that grow with use. `trainers` is left out: at most a few hundred documents, and a
# release matches an assignment stored before assignments named their attempt with an `$or`.
GROWING = {"runs", "epochs", "iterations", "latest_epochs", "confusion_matrices"}


def operators_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {key for key in value if key.startswith("$")} | {
            name for item in value.values() for name in operators_in(item)}
    if isinstance(value, list):
        return {name for item in value for name in operators_in(item)}
    return set()


class Filters(monitoring.CommandListener):
    """Every filter sent to a growing collection: finds, counts, updates, deletes, aggregations."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        collection = command.get(event.command_name)
        if not isinstance(collection, str) or collection not in GROWING:
            return
        match event.command_name:
            case "find" | "count" | "distinct":
                filters = [command.get("filter", command.get("query", {}))]
            case "update" | "delete":
                filters = [statement.get("q", {}) for statement in command.get("updates", command.get("deletes", []))]
            case "aggregate":
                filters = [stage["$match"] for stage in command.get("pipeline", []) if "$match" in stage]
            case "findAndModify":
                filters = [command.get("query", {})]
            case _:
                return
        self.sent += [(event.command_name, str(collection), found) for found in filters]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def with_or(self) -> list[tuple[str, str, Any]]:
        return [sent for sent in self.sent if "$or" in operators_in(sent[2])]


@pytest.fixture
async def watched(servers: LocalStack) -> AsyncIterator[tuple[AsyncDatabase[dict[str, Any]], Filters]]:
    assert servers.mongo_url
    filters = Filters()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_url, tz_aware=True,
                                                                event_listeners=[filters])
    try:
        yield client["t" + uuid.uuid4().hex[:10]], filters
    finally:
        await client.close()


def queued_run(run_id: str, created_at: datetime, queue_key: datetime) -> dict[str, Any]:
    return {
        "_id": run_id, "project": "default", "name": f"run {run_id[:6]}", "status": "pending", "attempt": 0,
        "trainer_id": None, "queue_key": queue_key, "search_keys": ["run"],
        "spec": {"name": "r", "dataset_id": "d" * 32, "architecture": "rtmdet-tiny", "epochs": 3,
                 "accelerator": {"name": "CPU", "count": 1}},
        "created_at": created_at, "updated_at": created_at,
        "history": [{"status": "created", "at": created_at, "message": None, "attempt": None}],
    }


async def test_the_hot_paths_send_no_or(watched: tuple[AsyncDatabase[dict[str, Any]], Filters]) -> None:
    db, filters = watched
    api, scheduler, metrics = ApiStore(db), SchedulerStore(db), MetricsStore(db)
    for store in (api, scheduler, metrics):
        await store.ensure_indexes()
    now = datetime.now(UTC)
    runs = [queued_run(uuid.uuid4().hex, now - timedelta(minutes=i), now - timedelta(minutes=i)) for i in range(5)]
    await db.runs.insert_many(runs)
    await db.projects.insert_one({"_id": "default", "first_run_at": runs[-1]["created_at"]})
    training = runs[0]["_id"]
    filters.sent.clear()

    # The scheduler places a run, then records its checkpoints, the common case and the first.
    assert await scheduler.claim_run(training, 1, "trainer-1")
    await db.runs.update_one({"_id": training}, {"$set": {"status": str(RunStatus.IN_PROGRESS)}})
    for epoch in (1, 2):
        assert await scheduler.record_checkpoint(CheckpointSaved(
            run_id=training, attempt=1, trainer_id="trainer-1",
            checkpoint=StoredCheckpoint(attempt=1, epoch=epoch, name=f"epoch_{epoch}.pth")))
    await scheduler.queued_runs()

    # The metrics service stores the epochs and iteration logs its trainer reports.
    for epoch in (1, 2):
        await metrics.report_standing(training, 1, "trainer-1", [epoch])
        assert await metrics.record_epoch(EpochLogged(
            run_id=training, attempt=1, epoch=epoch, total_epochs=3, losses={"loss_cls": 1.0}, loss=1.0,
            learning_rate=0.01, epoch_time_s=1.0, metrics={"bbox_mAP": 0.1 * epoch}))
    await metrics.record_iterations(IterationsLogged(run_id=training, attempt=1, steps=[
        IterationLog(step=step, epoch=1, loss=1.0, losses={"loss_cls": 1.0}, learning_rate=0.01)
        for step in (1, 2)]))

    # A live stream's poll, the run page's iteration follower, a queued run's place, listings.
    assert [doc["epoch"] for doc in await api.epochs_unsent(training, 1, 1)] == [2]
    assert len(await api.iterations_of(training, 100, after_step=1)) == 1
    waiting = await db.runs.find_one({"_id": runs[2]["_id"]})
    assert await api.queue_position(RunSummary.model_validate(waiting)) == 3
    listings: list[dict[str, Any]] = [
        {"status": None, "search": None, "sort": "-created_at"}, {"status": None, "search": None, "sort": "created_at"},
        {"status": RunStatus.PENDING, "search": None, "sort": "-created_at"},
        {"status": None, "search": "run", "sort": "-created_at"},
        {"status": None, "search": training[:8], "sort": "-created_at"},
    ]
    for listing in listings:
        page = await page_of_runs(api, "default", limit=2, cursor=None, now=now, **listing)
        assert page.items, listing
        if page.next_cursor:
            await page_of_runs(api, "default", limit=2, cursor=page.next_cursor, now=now, **listing)
    assert len(await api.runs_by_ids("default", [run["_id"] for run in runs], {"name": 1})) == len(runs)

    assert {collection for _, collection, _ in filters.sent} >= {"runs", "epochs", "iterations", "latest_epochs"}
    assert filters.with_or() == []
