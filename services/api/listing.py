"""Pages of runs and datasets: sort orders, filters and cursors on top of the store's windowed scans."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from services.api.pagination import INITIAL_WINDOW, After, Cursor, Direction, InvalidCursor, query_fingerprint
from services.api.search import ID_PREFIX
from services.api.store import ApiStore
from shared.status import RunStatus
from shared.store import Document

RunSort = Literal["-created_at", "created_at", "status", "-status"]

# Sorting by status follows the lifecycle, not the alphabet; within a status, newest first.
STATUS_ORDER: tuple[RunStatus, ...] = (
    RunStatus.CREATED, RunStatus.PENDING, RunStatus.IN_PROGRESS, RunStatus.RERUN,
    RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.ABORTED, RunStatus.TERMINATED,
)


MAX_ID_MATCHES = 200
MIN_WINDOW = timedelta(seconds=1)


@dataclass
class Page:
    items: list[Document]
    next_cursor: str | None


def _lanes(sort: RunSort, status: RunStatus | None) -> tuple[list[RunStatus | None], Direction]:
    """The groups a listing walks one after the other (status sorts: one per status), and their direction."""
    if sort in ("status", "-status"):
        order = list(STATUS_ORDER) if sort == "status" else list(reversed(STATUS_ORDER))
        return [s for s in order if status is None or s == status], "newest"
    return [status], "newest" if sort == "-created_at" else "oldest"


def _resume(cursor: str | None, fingerprint: str, lanes: int) -> tuple[int, After | None, timedelta]:
    if cursor is None:
        return 0, None, INITIAL_WINDOW
    decoded = Cursor.decode(cursor)
    if decoded.query != fingerprint or decoded.lane >= lanes:
        raise InvalidCursor("this cursor belongs to a listing with other filters or another sort")
    return decoded.lane, After(decoded.at, decoded.id), timedelta(seconds=decoded.window_s)


async def page_of_runs(store: ApiStore, project: str, *, status: RunStatus | None, search: str | None,
                       sort: RunSort, limit: int, cursor: str | None, now: datetime) -> Page:
    if search is not None and ID_PREFIX.match(search.lower()):
        return await _runs_by_id_prefix(store, project, search.lower(), status, sort, limit, cursor)
    lanes, direction = _lanes(sort, status)
    fingerprint = query_fingerprint(kind="runs", status=status, search=search, sort=sort)
    first_lane, after, window = _resume(cursor, fingerprint, len(lanes))
    # A newest-first first page starts from the window that filled it last time (one query, not three).
    remembered = cursor is None and len(lanes) == 1 and direction == "newest"
    if remembered:
        window = store.first_page_windows.get(project, fingerprint)
    items: list[Document] = []
    lane_of: list[int] = []
    for lane in range(first_lane, len(lanes)):
        # One more than a page tells whether another page follows.
        wanted = limit + 1 - len(items)
        lane_status = lanes[lane]
        docs, window = await store.page_of_runs(
            project, status=str(lane_status) if lane_status else None, search=search, direction=direction,
            after=after if lane == first_lane else None, limit=wanted,
            window=window if lane == first_lane else INITIAL_WINDOW, now=now,
        )
        items += docs
        lane_of += [lane] * len(docs)
        if len(items) > limit:
            break
    if remembered:
        # Reaching back to the item after the page, with a margin; the whole project if it fits in one.
        filled = (now - items[limit]["created_at"]) * 1.25 if len(items) > limit else window
        store.first_page_windows.remember(project, fingerprint, max(MIN_WINDOW, filled))
    return Page(items[:limit], _next_cursor(items, lane_of, limit, fingerprint, window))


async def _runs_by_id_prefix(store: ApiStore, project: str, prefix: str, status: RunStatus | None, sort: RunSort,
                             limit: int, cursor: str | None) -> Page:
    """Eight or more hex digits match one run or a handful (1 in 4 billion ids): a single page, in order."""
    if cursor is not None:
        raise InvalidCursor("a search by run id has no further pages")
    found = await store.runs_by_id_prefix(project, prefix, str(status) if status else None, MAX_ID_MATCHES)
    return _one_page(found, sort, limit)


async def runs_of_sweep(store: ApiStore, project: str, sweep_id: str, *, status: RunStatus | None, sort: RunSort,
                        limit: int, cursor: str | None) -> Page:
    """A sweep's trials (at most 200, SweepSpec.trials): a single page, in order."""
    if cursor is not None:
        raise InvalidCursor("a sweep's trials have no further pages")
    query: Document = {"project": project, "sweep.id": sweep_id}
    if status is not None:
        query["status"] = str(status)
    return _one_page(await store.runs.find(query).limit(MAX_ID_MATCHES).to_list(), sort, limit)


def _one_page(found: list[Document], sort: RunSort, limit: int) -> Page:
    if sort in ("status", "-status"):
        order = [str(s) for s in (STATUS_ORDER if sort == "status" else tuple(reversed(STATUS_ORDER)))]
        found.sort(key=lambda d: (order.index(d["status"]) if d["status"] in order else len(order),
                                  -d["created_at"].timestamp(), d["_id"]))
    else:
        found.sort(key=lambda d: (d["created_at"], d["_id"]), reverse=sort == "-created_at")
    return Page(found[:limit], None)


async def page_of_datasets(store: ApiStore, project: str, *, limit: int, cursor: str | None, now: datetime) -> Page:
    fingerprint = query_fingerprint(kind="datasets")
    _lane, after, window = _resume(cursor, fingerprint, 1)
    items, window = await store.page_of_datasets(project, after, limit + 1, window, now)
    return Page(items[:limit], _next_cursor(items, [0] * len(items), limit, fingerprint, window))


def _next_cursor(items: list[Document], lane_of: list[int], limit: int, fingerprint: str,
                 window: timedelta) -> str | None:
    if len(items) <= limit:
        return None
    last = items[limit - 1]
    return Cursor(query=fingerprint, lane=lane_of[limit - 1], at=last["created_at"], id=last["_id"],
                  window_s=_window_hint(items, limit, window).total_seconds()).encode()


def _window_hint(items: list[Document], limit: int, last_window: timedelta) -> timedelta:
    """The window the next page should start with: as wide as this page's items were spread.

    Not simply the last window: after crossing an empty stretch that one is wide, and
    the next page would read a dense stretch behind it in one go.
    """
    times: list[datetime] = [item["created_at"] for item in items]
    spread = abs(max(times) - min(times)) / len(times) * (limit + 1) * 1.25
    return max(MIN_WINDOW, min(spread, last_window))
