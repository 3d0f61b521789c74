"""Live: a run's status changes and epochs as server-sent events."""

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from services.api.auth import RunsReader
from services.api.deps import Settings, Store
from services.api.errors import Unprocessable, problem_responses
from services.api.live import StreamPosition, event_stream_content, live_events
from services.api.routes.runs import RunId, existing_run

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=problem_responses(403, 404))

EVENT_STREAM_DOC = """Server-sent events, until the run has ended and everything is sent:

- `status`: a status change (`status`, `at`, `message`, `attempt`), the whole history first
- `epoch`: an epoch log, as in `/logs`
- `end`: the run is over (`status`); the stream closes
- `revoked`: the key that opened the stream was revoked; the stream closes

Every event's `id` is the position after it: reconnect with `Last-Event-ID`
(or `?last_event_id=`) to resume exactly after the last event you saw."""


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: {"description": EVENT_STREAM_DOC,
                     "content": event_stream_content(["status", "epoch", "end", "revoked"])}},
)
async def stream_run_events(
    run_id: RunId,
    caller: RunsReader,
    store: Store,
    settings: Settings,
    last_event_id: Annotated[str | None, Header(max_length=40, description="resume after this event")] = None,
    resume_from: Annotated[str | None, Query(alias="last_event_id", max_length=40,
                                             description="the same, for clients that cannot set headers")] = None,
) -> StreamingResponse:
    """A run's status changes and epochs, live, resumable with Last-Event-ID."""
    await existing_run(store, caller.project, run_id)
    token = last_event_id or resume_from
    try:
        start = StreamPosition.parse(token) if token else StreamPosition()
    except ValueError as error:
        field = "header.last-event-id" if last_event_id else "query.last_event_id"
        raise Unprocessable(f"{field}: {error}", [{"field": field, "message": str(error)}]) from error
    events = live_events(store, caller.project, run_id, start, poll_interval_s=settings.sse_poll_interval_s,
                         keepalive_s=settings.sse_keepalive_s, key_id=caller.key_id,
                         key_recheck_s=settings.sse_key_recheck_s)
    # no-cache and no proxy buffering: events must reach the client as they happen.
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
