"""Windowed keyset pagination and its opaque cursors, over documents held in memory."""

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.api.pagination import (
    INITIAL_WINDOW,
    After,
    Cursor,
    Direction,
    InvalidCursor,
    query_fingerprint,
    scan_by_created,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _matches(value: Any, condition: Any) -> bool:
    if not isinstance(condition, dict):
        return bool(value == condition)
    checks = {"$gt": value.__gt__, "$gte": value.__ge__, "$lt": value.__lt__, "$lte": value.__le__}
    return all(checks[op](bound) for op, bound in condition.items())


class Collection:
    """Just enough of a collection: equality and range conditions, a two-key sort, a limit; counts queries."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self.queries: list[dict[str, Any]] = []
        self.examined = 0

    async def fetch(self, fragment: dict[str, Any], sort: list[tuple[str, int]], limit: int) -> list[dict[str, Any]]:
        self.queries.append(fragment)
        found = [d for d in self.docs if all(_matches(d[k], c) for k, c in fragment.items())]
        self.examined += len(found)  # what a server that materialises its bounds would touch
        (first, order), (second, _) = sort
        found.sort(key=lambda d: (d[first], d[second]), reverse=order < 0)
        return found[:limit]


def runs(moments: list[datetime]) -> list[dict[str, Any]]:
    return [{"_id": f"{i:032x}", "created_at": at} for i, at in enumerate(moments)]


async def page_through(collection: Collection, direction: Direction, size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after: After | None = None
    window = INITIAL_WINDOW
    while True:
        scan = await scan_by_created(collection.fetch, direction=direction, after=after, wanted=size + 1,
                                     window=window, now=NOW)
        page = scan.items[:size]
        pages.append([d["_id"] for d in page])
        if len(scan.items) <= size:
            return pages
        after, window = After(page[-1]["created_at"], page[-1]["_id"]), scan.window


@pytest.mark.parametrize("direction", ["newest", "oldest"])
@pytest.mark.parametrize("size", [1, 3, 50])
async def test_pages_cover_every_document_once_in_order(direction: Direction, size: int) -> None:
    rng = random.Random(size)
    moments = [NOW - timedelta(seconds=rng.choice([0, 1, 7, 3600, 86400 * 400]) * rng.random()) for _ in range(60)]
    moments += [NOW - timedelta(hours=2)] * 7  # ties: the same instant, told apart by id
    moments += [datetime(2019, 6, 1, tzinfo=UTC), NOW + timedelta(minutes=3)]  # before the origin, clock skew
    docs = runs([m.replace(microsecond=m.microsecond // 1000 * 1000) for m in moments])
    pages = await page_through(Collection(docs), direction, size)
    seen = [run_id for page in pages for run_id in page]
    expected = sorted(docs, key=lambda d: (d["created_at"], d["_id"]), reverse=direction == "newest")
    assert seen == [d["_id"] for d in expected]
    assert all(len(page) == size for page in pages[:-1])


async def test_a_page_examines_about_a_page_not_the_whole_collection() -> None:
    docs = runs([NOW - timedelta(seconds=i) for i in range(20_000)])  # dense: one run a second
    collection = Collection(docs)
    scan = await scan_by_created(collection.fetch, direction="newest", after=None, wanted=51,
                                 window=INITIAL_WINDOW, now=NOW)
    assert len(scan.items) == 51 and collection.examined < 200
    deep = After(docs[15_000]["created_at"], docs[15_000]["_id"])
    collection.examined = 0
    scan = await scan_by_created(collection.fetch, direction="newest", after=deep, wanted=51, window=scan.window,
                                 now=NOW)
    assert scan.items[0]["_id"] == docs[15_001]["_id"] and collection.examined < 200


async def test_sparse_history_is_reached_in_few_queries() -> None:
    docs = runs([NOW - timedelta(days=700), NOW - timedelta(days=3)])
    collection = Collection(docs)
    scan = await scan_by_created(collection.fetch, direction="newest", after=None, wanted=10,
                                 window=INITIAL_WINDOW, now=NOW)
    assert [d["_id"] for d in scan.items] == [docs[1]["_id"], docs[0]["_id"]]
    assert len(collection.queries) <= 14


def test_cursor_round_trips_and_rejects_what_it_did_not_issue() -> None:
    cursor = Cursor(query=query_fingerprint(status=None), lane=2, at=NOW, id="ab" * 16, window_s=60.0)
    assert Cursor.decode(cursor.encode()) == cursor
    for token in ("", "%%%", "e30", cursor.encode()[:-4], "eyJ2IjogMn0"):
        with pytest.raises(InvalidCursor):
            Cursor.decode(token)
    assert query_fingerprint(status="pending", sort="status") != query_fingerprint(status=None, sort="status")
