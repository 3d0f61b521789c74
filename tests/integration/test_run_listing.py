"""Listing runs through the gateway: keyset pages that stay correct while runs are added,
status filter, search by name or id, sorts, opaque cursors."""

import asyncio
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient, monitoring

from services.api.listing import STATUS_ORDER, page_of_runs
from services.api.store import ApiStore
from services.scheduler.store import SchedulerStore
from shared.status import RunStatus
from tests.helpers import http, private_stack, problem_of
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco


@dataclass
class Listing:
    stack: LocalStack
    api: httpx.Client
    dataset_id: str


@pytest.fixture(scope="module")
def listing(servers: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listing]:
    root = tmp_path_factory.mktemp("listing")
    stack = private_stack(servers, root / "stack")
    stack.start_service("api")
    data = write_synthetic_coco(root / "shapes", train_images=2, val_images=1, size=64).root
    api = http(stack, stack.admin_key)
    dataset = api.post("/v1/datasets", json={"name": "shapes", "path": str(data)})
    assert dataset.status_code == 201, dataset.text
    yield Listing(stack, api, dataset.json()["id"])
    api.close()
    stack.stop()


@pytest.fixture
def runs_db(listing: Listing) -> Iterator[Any]:
    """The runs collection, emptied after each test so tests do not see each other's runs."""
    assert listing.stack.mongo_url
    client: MongoClient[dict[str, Any]] = MongoClient(listing.stack.mongo_url, tz_aware=True)
    yield client[listing.stack.mongo_db]["runs"]
    client[listing.stack.mongo_db]["runs"].delete_many({})
    client.close()


def start(listing: Listing, name: str, client: httpx.Client | None = None) -> str:
    response = (client or listing.api).post("/v1/runs", json={"name": name, "dataset_id": listing.dataset_id,
                                                              "architecture": "rtmdet-tiny", "epochs": 3})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


def all_pages(api: httpx.Client, **params: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        response = api.get("/v1/runs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        if (cursor := body["next_cursor"]) is None:
            return pages


def stored_run(run_id: str, name: str, status: str, created_at: datetime) -> dict[str, Any]:
    """A run document as the gateway inserts and the scheduler moves it."""
    return {
        "_id": run_id, "project": "default", "name": name, "status": status, "attempt": 0, "trainer_id": None,
        "spec": {"name": name, "dataset_id": "d" * 32, "architecture": "rtmdet-tiny", "epochs": 3},
        "created_at": created_at, "updated_at": created_at,
        "history": [{"status": "created", "at": created_at, "message": None, "attempt": None}],
    }


def test_paging_newest_first_while_runs_are_added_misses_and_repeats_nothing(
    listing: Listing, runs_db: Any
) -> None:
    existing = [start(listing, f"before-{i}") for i in range(23)]
    added: list[str] = []
    stop = threading.Event()

    def keep_adding() -> None:
        with http(listing.stack, listing.stack.admin_key) as client:
            while not stop.is_set() and len(added) < 40:
                added.append(start(listing, f"during-{len(added)}", client))

    adder = threading.Thread(target=keep_adding)
    adder.start()
    try:
        pages = all_pages(listing.api, limit=4)
    finally:
        stop.set()
        adder.join()
    seen = [run["id"] for page in pages for run in page]
    assert len(seen) == len(set(seen)), "a run appeared twice"
    assert added, "runs were added while paging"
    # Everything that existed when paging began, newest first; a run added meanwhile is newer
    # than every cursor, so it can only show up on the first page (if it was there in time).
    assert [run_id for run_id in seen if run_id in existing] == existing[::-1]
    assert all(run["id"] in existing for page in pages[1:] for run in page)
    assert all(len(page) == 4 for page in pages[:-1])


def test_paging_oldest_first_while_runs_are_added_ends_with_the_new_ones(listing: Listing, runs_db: Any) -> None:
    existing = [start(listing, f"old-{i}") for i in range(9)]
    seen: list[str] = []
    added: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"sort": "created_at", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = listing.api.get("/v1/runs", params=params).json()
        seen += [run["id"] for run in body["items"]]
        if len(added) < 3:
            added.append(start(listing, f"new-{len(added)}"))
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == existing + added


def test_status_filter_and_status_sort_follow_the_lifecycle(listing: Listing, runs_db: Any) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    statuses = ["success", "pending", "failed", "created", "in_progress", "success", "terminated", "pending"]
    docs = [stored_run(f"{i:032x}", f"r{i}", status, base + timedelta(minutes=i)) for i, status in enumerate(statuses)]
    runs_db.insert_many(docs)
    pending = [run["id"] for page in all_pages(listing.api, status="pending", limit=1) for run in page]
    assert pending == [f"{7:032x}", f"{1:032x}"]
    by_status = [run for page in all_pages(listing.api, sort="status", limit=3) for run in page]
    order = [str(s) for s in STATUS_ORDER]
    expected = sorted(docs, key=lambda d: (order.index(d["status"]), -d["created_at"].timestamp()))
    assert [run["id"] for run in by_status] == [d["_id"] for d in expected]
    reverse = [run["id"] for page in all_pages(listing.api, sort="-status", limit=5) for run in page]
    expected_reverse = sorted(docs, key=lambda d: (-order.index(d["status"]), -d["created_at"].timestamp()))
    assert reverse == [d["_id"] for d in expected_reverse]


def test_runs_spread_over_years_and_created_at_the_same_instant_all_list(listing: Listing, runs_db: Any) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    moments = [now - timedelta(days=900), now - timedelta(days=30), now - timedelta(seconds=5)] + [now] * 5
    docs = [stored_run(f"{i:032x}", f"r{i}", "created", at) for i, at in enumerate(moments)]
    runs_db.insert_many(docs)
    newest = [run["id"] for page in all_pages(listing.api, limit=2) for run in page]
    assert newest == [d["_id"] for d in sorted(docs, key=lambda d: (d["created_at"], d["_id"]), reverse=True)]
    oldest = [run["id"] for page in all_pages(listing.api, limit=3, sort="created_at") for run in page]
    assert oldest == newest[::-1]


def test_search_by_name_or_id(listing: Listing, runs_db: Any) -> None:
    """The start of any word of the name, any case; or the start of the id."""
    ids = {name: start(listing, name) for name in ("Cat detector", "dog-detector v2", "birds")}

    def found(search: str) -> list[str]:
        return [run["name"] for run in listing.api.get("/v1/runs", params={"search": search}).json()["items"]]

    assert sorted(found("DETECTOR")) == ["Cat detector", "dog-detector v2"]
    assert found("v2") == ["dog-detector v2"]
    assert found("dog-det") == ["dog-detector v2"]
    assert found("tector") == []  # inside a word
    assert found(ids["birds"]) == ["birds"]
    assert found(ids["birds"][:10]) == ["birds"]  # 8+ hex digits: an id prefix, by index
    assert "birds" in found(ids["birds"][:5])  # shorter: names and id prefixes, by scanning
    assert found("(.*") == []
    assert found("nothing like it") == []


def test_cursor_is_opaque_and_checked(listing: Listing, runs_db: Any) -> None:
    for i in range(3):
        start(listing, f"c{i}")
    first = listing.api.get("/v1/runs", params={"limit": 1}).json()
    cursor = first["next_cursor"]
    assert cursor and first["items"][0]["id"] not in cursor
    for params in ({"cursor": "garbage"}, {"cursor": cursor[:-3]}, {"cursor": cursor, "status": "created"},
                   {"cursor": cursor, "sort": "created_at"}):
        body = problem_of(listing.api.get("/v1/runs", params={"limit": 1, **params}), 422)
        assert body["errors"][0]["field"] == "query.cursor", body
    for params in ({"limit": 0}, {"limit": 201}, {"status": "sleeping"}, {"sort": "name"}, {"search": ""}):
        problem_of(listing.api.get("/v1/runs", params=params), 422)


async def test_runs_stored_before_search_keys_get_them_once(servers: LocalStack) -> None:
    assert servers.mongo_url
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_url, tz_aware=True)
    try:
        db = client["t" + uuid.uuid4().hex[:10]]
        await db.runs.insert_one(stored_run("a" * 32, "Old detector", "success", datetime.now(UTC)))
        store = ApiStore(db)
        assert await store.add_missing_search_keys() == 1
        doc = await db.runs.find_one({"_id": "a" * 32})
        assert doc is not None and {"old", "detec", "aaaa"} <= set(doc["search_keys"])
        await db.runs.insert_one(stored_run("b" * 32, "Later", "success", datetime.now(UTC)))
        assert await store.add_missing_search_keys() == 0  # done once; later runs get keys when created
    finally:
        await client.close()


class RunFinds(monitoring.CommandListener):
    """Counts the `find` commands sent to the runs collection."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == "runs":
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_first_page_starts_from_the_window_that_filled_it_last_time(servers: LocalStack) -> None:
    """300 runs over 5 hours (one a minute): the first first page widens its window from 60 s, query by
    query; the next one is a single query, with the same runs, and still right when runs came meanwhile."""
    assert servers.mongo_url
    finds = RunFinds()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(servers.mongo_url, tz_aware=True,
                                                                event_listeners=[finds])
    try:
        db = client["t" + uuid.uuid4().hex[:10]]
        now = datetime.now(UTC)
        runs = [stored_run(uuid.uuid4().hex, f"run {i}", "success", now - timedelta(minutes=300 - i))
                for i in range(300)]
        await db.runs.insert_many(runs)
        await db.projects.insert_one({"_id": "default", "first_run_at": runs[0]["created_at"]})
        store = ApiStore(db)
        newest = [run["_id"] for run in reversed(runs)]

        async def first_page() -> tuple[list[str], int]:
            before = finds.count
            page = await page_of_runs(store, "default", status=None, search=None, sort="-created_at", limit=50,
                                      cursor=None, now=datetime.now(UTC))
            return [doc["_id"] for doc in page.items], finds.count - before

        listed, queries = await first_page()
        assert listed == newest[:50] and queries >= 3
        listed, queries = await first_page()
        assert listed == newest[:50] and queries == 1
        # Twenty more runs in the last minute: the remembered window now holds more than a page.
        burst = [stored_run(uuid.uuid4().hex, f"burst {i}", "success", datetime.now(UTC) - timedelta(seconds=i))
                 for i in range(20)]
        await db.runs.insert_many(burst)
        listed, _ = await first_page()
        assert listed == [run["_id"] for run in burst] + newest[:30]
        # A filter is its own listing, with its own window.
        before = finds.count
        page = await page_of_runs(store, "default", status=RunStatus.FAILED, search=None, sort="-created_at",
                                  limit=50, cursor=None, now=datetime.now(UTC))
        assert page.items == [] and finds.count - before > 1
    finally:
        await client.close()


def test_paging_newest_first_while_statuses_change_misses_and_repeats_nothing(
    listing: Listing, runs_db: Any
) -> None:
    """Every run that existed before paging began is listed exactly once, in order, while the
    scheduler's kind of writes (status, updated_at, a pushed history entry and outbox entry) move
    runs from one status to the next under the pager's feet."""
    asyncio.run(_scheduler_indexes(listing.stack))
    existing = [start(listing, f"moving-{i}") for i in range(300)]
    lifecycle = ["pending", "in_progress", "success"]
    stop = threading.Event()
    changes = [0]

    def keep_moving() -> None:
        rng = random.Random(12)
        while not stop.is_set():
            run_id = rng.choice(existing)
            now = datetime.now(UTC)
            runs_db.update_one({"_id": run_id}, {
                "$set": {"status": rng.choice(lifecycle), "updated_at": now},
                "$push": {"history": {"status": "pending", "at": now, "message": None, "attempt": 1},
                          "status_outbox": {"event_id": uuid.uuid4().hex, "at": now}}})
            changes[0] += 1

    mover = threading.Thread(target=keep_moving)
    mover.start()
    try:
        passes = [[run["id"] for page in all_pages(listing.api, limit=size) for run in page] for size in (7, 20, 50)]
    finally:
        stop.set()
        mover.join()
    assert changes[0] > 50, "statuses changed while paging"
    for seen in passes:
        assert len(seen) == len(set(seen)), "a run appeared twice"
        missing = set(existing) - set(seen)
        assert not missing, f"{len(missing)} runs missing"
        assert seen == existing[::-1]


async def _scheduler_indexes(stack: LocalStack) -> None:
    """The runs collection's indexes as the whole stack has them (the scheduler adds its own)."""
    assert stack.mongo_url
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url, tz_aware=True)
    try:
        await SchedulerStore(client[stack.mongo_db]).ensure_indexes()
    finally:
        await client.close()
