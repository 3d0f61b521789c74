"""Keyset pagination over `(created_at, _id)` with opaque cursors, in bounded time windows.

A page continues strictly after the last item of the previous page, so
inserts during paging never shift or repeat items (newest-first paging never
sees runs created after it began; oldest-first paging sees them at the end).

Every query is bounded on both sides of `created_at` by a window that grows
until the page is full: the local MongoDB-wire server materialises every
index entry inside a query's bounds before applying `limit`, so an open-ended
`created_at < cursor` would cost the whole project on every page. On MongoDB
the windows cost a few extra index seeks at most.
"""

import base64
import binascii
import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.store import Document

# When a project's first item is not known: nothing is older. The scans stay correct if
# something is (the last window reaches past it with an open bound); they only get slower.
ORIGIN = datetime(2020, 1, 1, tzinfo=UTC)
INITIAL_WINDOW = timedelta(seconds=60)
# A window is widened at least this much after one that was empty...
EMPTY_GROWTH = 4.0
# ...and at most this much after one that held some items.
MAX_GROWTH = 8.0
# Clocks of API replicas may run ahead; oldest-first paging stays open this far past now.
CLOCK_SKEW = timedelta(minutes=5)

Direction = Literal["newest", "oldest"]
# `fetch(filter_fragment, sort, limit)`: the caller adds its own filter (project, status, search).
Fetch = Callable[[dict[str, Any], list[tuple[str, int]], int], Awaitable[list[Document]]]


class InvalidCursor(ValueError):
    pass


class Cursor(BaseModel):
    """Where the previous page ended; opaque to clients (base64url JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    query: str = Field(description="fingerprint of the filters and sort the cursor belongs to")
    lane: int = Field(ge=0, le=64, description="index of the status group (status sorts), else 0")
    at: datetime
    id: str = Field(pattern=r"^[0-9a-f]{1,64}$")
    window_s: float = Field(gt=0, le=1e10)

    def encode(self) -> str:
        raw = self.model_dump_json().encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            cursor = cls.model_validate_json(raw)
        except (binascii.Error, ValueError, ValidationError) as error:
            raise InvalidCursor("not a cursor this API issued") from error
        if cursor.at.tzinfo is None:
            raise InvalidCursor("not a cursor this API issued")
        return cursor


def query_fingerprint(**parts: Any) -> str:
    """A short digest of what a listing asked for: a cursor only continues the same query."""
    canonical = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class After:
    at: datetime
    id: str


@dataclass
class Scan:
    items: list[Document]
    window: timedelta


def _next_window(window: timedelta, found: int, wanted: int) -> timedelta:
    if found == 0:
        return window * EMPTY_GROWTH
    return window * min(MAX_GROWTH, max(1.5, 1.25 * wanted / found))


async def scan_by_created(
    fetch: Fetch, *, direction: Direction, after: After | None, wanted: int, window: timedelta, now: datetime,
    origin: datetime = ORIGIN,
) -> Scan:
    """Up to `wanted` documents strictly after `after` in `direction`, window by window.

    `origin` is when the first document was created (as far as is known): newest-first
    scans stop there, oldest-first scans start there instead of crossing empty years.
    """
    order = -1 if direction == "newest" else 1
    sort = [("created_at", order), ("_id", order)]
    items: list[Document] = []
    if after is not None:
        # Items sharing the last item's timestamp: one exact-time query, tiny by construction.
        ties = {"created_at": after.at, "_id": {"$lt" if order < 0 else "$gt": after.id}}
        items += await fetch(ties, sort, wanted)
    used = window
    if direction == "newest":
        upper = after.at if after is not None else None  # exclusive; None: open towards the future
        while len(items) < wanted:
            lower = (upper or now) - window
            final = lower <= origin
            bounds: dict[str, Any] = {} if final else {"$gte": lower}
            if upper is not None:
                bounds["$lt"] = upper
            need = wanted - len(items)
            found = await fetch({"created_at": bounds} if bounds else {}, sort, need)
            items += found
            used = window
            if final:
                break
            upper, window = lower, _next_window(window, len(found), need)
    else:
        # None: open towards the past (the first window also catches anything before `origin`).
        start: tuple[str, datetime] | None = ("$gt", after.at) if after is not None else None
        while len(items) < wanted:
            upper_at = (start[1] if start is not None else origin) + window
            final = upper_at >= now + CLOCK_SKEW
            bounds = {start[0]: start[1]} if start is not None else {}
            if not final:
                bounds["$lt"] = upper_at
            need = wanted - len(items)
            found = await fetch({"created_at": bounds} if bounds else {}, sort, need)
            items += found
            used = window
            if final:
                break
            start, window = ("$gte", upper_at), _next_window(window, len(found), need)
    return Scan(items=items, window=used)


class FirstPageWindows:
    """The window that would have filled each listing's first page last time, by project and query.

    A first page has no cursor to carry a window hint, so it began with INITIAL_WINDOW and widened:
    at 100,000 runs over 30 days (2 a minute) that was three queries, each a round trip of the
    local server's. Starting from what filled the same listing's last first page makes it one,
    as long as runs keep arriving at about the same rate; a wrong guess only costs a wider or an
    extra window, never an item. Bounded: the least recently listed queries are forgotten.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._windows: OrderedDict[tuple[str, str], timedelta] = OrderedDict()

    def get(self, project: str, fingerprint: str) -> timedelta:
        window = self._windows.get((project, fingerprint))
        if window is None:
            return INITIAL_WINDOW
        self._windows.move_to_end((project, fingerprint))
        return window

    def remember(self, project: str, fingerprint: str, window: timedelta) -> None:
        self._windows[(project, fingerprint)] = window
        self._windows.move_to_end((project, fingerprint))
        while len(self._windows) > self.size:
            self._windows.popitem(last=False)
