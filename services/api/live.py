"""A run's live events for server-sent events, rebuilt from MongoDB on every poll.

The stream is the run's status history (the `history` array the scheduler
appends to) and its stored epochs. An event's id is the position after it,
`<status changes sent>-<attempt>-<last epoch sent>`, so a client reconnecting
with `Last-Event-ID` resumes exactly there, from any API replica, after restarts.

Epochs go out in epoch order. If one is stored late (its first delivery
failed and is being retried), later ones wait for it for up to EPOCH_GAP_GRACE,
so a stream does not skip an epoch a retry is about to fill. A later attempt
that resumed from an earlier checkpoint logs some epochs again; those replace
the earlier ones in storage and go out again, under the new attempt.
"""

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from services.api.models import EpochLog, StatusChange
from services.api.store import ApiStore
from shared.events import utcnow
from shared.run_document import RunSummary
from shared.status import TERMINAL_STATUSES

EPOCH_GAP_GRACE = timedelta(seconds=45)
# After a run ends, its last epochs may still be on their way to the metrics service.
FINAL_EPOCHS_GRACE = timedelta(seconds=10)
RECONNECT_DELAY_MS = 2000
_POSITION = re.compile(r"^(\d{1,9})-(\d{1,9})-(\d{1,9})$")


def event_stream_content(kinds: list[str]) -> dict[str, object]:
    """The OpenAPI `content` of an SSE response: its schema describes one event, as OpenAPI 3.1 reads it
    for `text/event-stream` (the `retry:` line comes first, on its own; `data` is JSON text)."""
    event = {"type": "object", "required": ["data"], "properties": {
        "event": {"type": "string", "enum": kinds}, "data": {"type": "string"},
        "id": {"type": "string"}, "retry": {"type": "integer"}}}
    return {"text/event-stream": {"schema": event}}


class StatusEvent(StatusChange):
    run_id: str


class EpochEvent(EpochLog):
    run_id: str


class EndEvent(BaseModel):
    run_id: str
    status: str


@dataclass(frozen=True)
class StreamPosition:
    statuses: int = 0
    attempt: int = 0
    epoch: int = 0

    @property
    def token(self) -> str:
        return f"{self.statuses}-{self.attempt}-{self.epoch}"

    @classmethod
    def parse(cls, token: str) -> "StreamPosition":
        match = _POSITION.match(token.strip())
        if match is None:
            raise ValueError(f"{token[:40]!r} is not an event id of this stream "
                             "(expected <status changes>-<attempt>-<epoch>)")
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3)))


@dataclass(frozen=True)
class LiveEvent:
    kind: Literal["status", "epoch", "end"]
    position: StreamPosition
    data: BaseModel

    def encode(self) -> str:
        return f"id: {self.position.token}\nevent: {self.kind}\ndata: {self.data.model_dump_json()}\n\n"


def _terminal(run: RunSummary) -> bool:
    return run.status in TERMINAL_STATUSES


def _epochs_ready(epochs: list[dict[str, Any]], position: "StreamPosition", run: RunSummary,
                  now: datetime) -> list[dict[str, Any]]:
    """Epochs not sent yet, in order, stopping at a gap that a late epoch may still fill."""
    ready: list[dict[str, Any]] = []
    attempt, expected = position.attempt, position.epoch + 1
    for epoch in sorted(epochs, key=lambda e: (e.get("attempt", 0), e["epoch"])):
        epoch_attempt = int(epoch.get("attempt", 0))
        if epoch_attempt < attempt or (epoch_attempt == attempt and epoch["epoch"] < expected):
            continue  # sent already, or an earlier attempt's that a newer attempt has not replaced yet
        if epoch_attempt > attempt:
            # A new attempt starts wherever its checkpoint put it.
            attempt, expected = epoch_attempt, epoch["epoch"]
        gap = epoch["epoch"] != expected
        if gap and not _terminal(run) and now - epoch["logged_at"] < EPOCH_GAP_GRACE:
            break
        ready.append(epoch)
        expected = epoch["epoch"] + 1
    return ready


def next_events(run: RunSummary, unsent_epochs: list[dict[str, Any]], position: StreamPosition,
                now: datetime) -> tuple[list[LiveEvent], StreamPosition]:
    """The events a client at `position` has not seen yet, in time order, and where that leaves it."""
    run_id = run.id
    timeline: list[tuple[datetime, int, str, dict[str, Any]]] = []
    for change in run.history[position.statuses:]:
        timeline.append((change.at, 0, "status", change.document()))
    for epoch in _epochs_ready(unsent_epochs, position, run, now):
        timeline.append((epoch["logged_at"], 1, "epoch", epoch))
    # Stable: each source keeps its own order; the two interleave by time.
    timeline.sort(key=lambda item: item[0])
    events: list[LiveEvent] = []
    for _at, _source, kind, doc in timeline:
        data: BaseModel
        if kind == "status":
            position = StreamPosition(position.statuses + 1, position.attempt, position.epoch)
            data = StatusEvent.model_validate({**doc, "run_id": run_id})
        else:
            position = StreamPosition(position.statuses, int(doc.get("attempt", 0)), int(doc["epoch"]))
            data = EpochEvent.model_validate({**doc, "run_id": run_id})
        events.append(LiveEvent("status" if kind == "status" else "epoch", position, data))
    return events, position


def stream_is_over(run: RunSummary, position: StreamPosition, now: datetime) -> bool:
    """A finished run whose history is all sent, and whose epochs are too (or will not come any more)."""
    if not _terminal(run) or position.statuses < len(run.history):
        return False
    if position.epoch >= (run.epochs_completed or 0):
        return True
    ended = run.completed_at or run.updated_at
    return bool(now - ended > FINAL_EPOCHS_GRACE)


class RevokedEvent(BaseModel):
    run_id: str
    detail: str


async def key_is_valid(store: ApiStore, key_id: str) -> bool:
    doc = await store.api_key(key_id)
    return doc is not None and doc.get("revoked_at") is None


async def live_events(store: ApiStore, project: str, run_id: str, start: StreamPosition, *,
                      poll_interval_s: float, keepalive_s: float, key_id: str | None = None,
                      key_recheck_s: float = 2.0) -> AsyncIterator[str]:
    """The run's events from `start` on, as SSE text, until the run is over and everything is sent.

    The key that opened the stream is looked up again every `key_recheck_s`: once it is
    revoked (or deleted) the stream sends a `revoked` event and closes, so revocation
    ends access within that time, not when the run ends."""
    yield f"retry: {RECONNECT_DELAY_MS}\n\n"
    position = start
    quiet_since = time.monotonic()
    key_checked = time.monotonic()
    while True:
        if key_id is not None and time.monotonic() - key_checked >= key_recheck_s:
            if not await key_is_valid(store, key_id):
                yield (f"event: revoked\ndata: "
                       f"{RevokedEvent(run_id=run_id, detail='invalid or revoked API key').model_dump_json()}\n\n")
                return
            key_checked = time.monotonic()
        run = await store.run(project, run_id)
        if run is None:
            return
        now = utcnow()
        unsent = await store.epochs_unsent(run_id, position.attempt, position.epoch)
        events, position = next_events(run, unsent, position, now)
        for event in events:
            yield event.encode()
            quiet_since = time.monotonic()
        if stream_is_over(run, position, now):
            yield LiveEvent("end", position, EndEvent(run_id=run_id, status=str(run.status))).encode()
            return
        if time.monotonic() - quiet_since >= keepalive_s:
            # A comment line: invisible to EventSource, keeps idle proxies from closing the stream.
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(poll_interval_s)


# --- Snapshot streams: the console's lists (trainers, models, sweeps, datasets) as they change ---
#
# A list has no history to replay, only its current state. Such a stream reads what the matching
# GET answers on every poll and sends it whole when it differs from the last one sent. The event id
# is a digest of what was sent, so a client reconnecting with Last-Event-ID gets nothing until the
# state differs from what it already shows; like the runs' streams, any replica serves any client
# and a restart loses nothing.

_DIGEST = re.compile(r"^[0-9a-f]{1,64}$")


@dataclass(frozen=True)
class Snapshot:
    """What the GET answers now, as its JSON, and whether nothing about it will change any more."""
    body: str
    over: bool = False


def snapshot_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:24]


def parse_digest(token: str) -> str:
    if not _DIGEST.match(token.strip()):
        raise ValueError(f"{token[:40]!r} is not an event id of this stream (expected up to 64 hex digits)")
    return token.strip()


async def snapshot_events(store: ApiStore, kind: str, read: Callable[[], Awaitable[Snapshot | None]],
                          last_digest: str | None, *, poll_interval_s: float, keepalive_s: float,
                          key_id: str | None = None, key_recheck_s: float = 2.0) -> AsyncIterator[str]:
    """`kind` events, each the whole of what `read()` answers whenever it changed, as SSE text.

    `read()` answering None means the thing is gone (a removed sweep): the stream sends `gone`
    and closes; a snapshot that is `over` is sent, followed by `end`. The key is checked again
    every `key_recheck_s`, as for a run's stream."""
    yield f"retry: {RECONNECT_DELAY_MS}\n\n"
    sent = last_digest
    quiet_since = key_checked = time.monotonic()
    while True:
        if key_id is not None and time.monotonic() - key_checked >= key_recheck_s:
            if not await key_is_valid(store, key_id):
                yield f"event: revoked\ndata: {json.dumps({'detail': 'invalid or revoked API key'})}\n\n"
                return
            key_checked = time.monotonic()
        read_started = time.monotonic()
        snapshot = await read()
        read_s = time.monotonic() - read_started
        if snapshot is None:
            yield f"event: gone\ndata: {json.dumps({'detail': f'the {kind} is gone'})}\n\n"
            return
        digest = snapshot_digest(snapshot.body)
        if digest != sent:
            yield f"id: {digest}\nevent: {kind}\ndata: {snapshot.body}\n\n"
            sent = digest
            quiet_since = time.monotonic()
        if snapshot.over:
            yield f"id: {digest}\nevent: end\ndata: {json.dumps({'detail': f'the {kind} will not change'})}\n\n"
            return
        if time.monotonic() - quiet_since >= keepalive_s:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        # A slow list (500 models on a busy database) is read at most a third of the time.
        await asyncio.sleep(max(poll_interval_s, 2 * read_s))
