"""Live lists for the console's pages: trainers, models, sweeps and datasets as server-sent events.

Each stream sends what the matching GET answers, whole, whenever it changed (services/api/live.py,
`snapshot_events`): the trainers page sees a trainer come online, go silent or lost, drain and take
runs; the models page a model registered, published or unpublished; a sweep's page its trials
advance. Included before the resource routers, so `events` is never read as an id.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter

from services.api.auth import DatasetsReader, ModelsReader, Principal, RunsReader, TrainersReader
from services.api.deps import Settings, Store
from services.api.errors import NotFound, Unprocessable, problem_responses
from services.api.live import Snapshot, event_stream_content, parse_digest, snapshot_events
from services.api.models import TrainerOut
from services.api.routes.datasets import list_datasets
from services.api.routes.models import ModelId, get_model, list_models
from services.api.routes.sweeps import SweepId, get_sweep, list_sweeps
from services.api.routes.trainers import list_trainers
from shared.settings import ApiSettings
from shared.status import TERMINAL_STATUSES

router = APIRouter(responses=problem_responses(403))

_TRAINERS = TypeAdapter(list[TrainerOut])

LastEventId = Annotated[str | None, Header(max_length=64, description="resume: nothing is sent until the "
                                                                      "state differs from this event's")]
ResumeFrom = Annotated[str | None, Query(alias="last_event_id", max_length=64,
                                         description="the same, for clients that cannot set headers")]


def _doc(kind: str, get: str) -> dict[int | str, dict[str, object]]:
    text = (f"Server-sent events: `{kind}`, the whole of what `{get}` answers, at once and then each "
            "time it changes; `revoked` (the key was revoked) closes the stream. The event id is a digest "
            "of the state sent: reconnecting with `Last-Event-ID` sends nothing until the state differs.")
    return {200: {"description": text, "content": event_stream_content([kind, "gone", "end", "revoked"])}}


def _stream(kind: str, read: Callable[[], Awaitable[Snapshot | None]], caller: Principal, store: Store,
            settings: ApiSettings, last_event_id: str | None, resume_from: str | None) -> StreamingResponse:
    token = last_event_id or resume_from
    try:
        start = parse_digest(token) if token else None
    except ValueError as error:
        field = "header.last-event-id" if last_event_id else "query.last_event_id"
        raise Unprocessable(f"{field}: {error}", [{"field": field, "message": str(error)}]) from error
    events = snapshot_events(store, kind, read, start, poll_interval_s=settings.sse_list_poll_interval_s,
                             keepalive_s=settings.sse_keepalive_s, key_id=caller.key_id,
                             key_recheck_s=settings.sse_key_recheck_s)
    # no-cache and no proxy buffering: events must reach the client as they happen.
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/v1/trainers/events", tags=["trainers"], response_class=StreamingResponse,
            responses=_doc("trainers", "GET /v1/trainers"))
async def stream_trainers(caller: TrainersReader, store: Store, settings: Settings,
                          last_event_id: LastEventId = None, resume_from: ResumeFrom = None) -> StreamingResponse:
    """The trainers, live: health, draining, capacity and the project's runs on each."""
    async def read() -> Snapshot:
        return Snapshot(_TRAINERS.dump_json(await list_trainers(caller, store, settings)).decode())
    return _stream("trainers", read, caller, store, settings, last_event_id, resume_from)


@router.get("/v1/models/events", tags=["models"], response_class=StreamingResponse,
            responses=_doc("models", "GET /v1/models"))
async def stream_models(caller: ModelsReader, store: Store, settings: Settings,
                        published: Annotated[bool | None, Query(description="as for GET /v1/models")] = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 100,
                        last_event_id: LastEventId = None, resume_from: ResumeFrom = None) -> StreamingResponse:
    """The model registry, live: models registered, published and unpublished."""
    async def read() -> Snapshot:
        return Snapshot((await list_models(caller, store, published, limit)).model_dump_json())
    return _stream("models", read, caller, store, settings, last_event_id, resume_from)


@router.get("/v1/models/{model_id}/events", tags=["models"], response_class=StreamingResponse,
            responses={**_doc("model", "GET /v1/models/{model_id}"), **problem_responses(404)})
async def stream_model(model_id: ModelId, caller: ModelsReader, store: Store, settings: Settings,
                       last_event_id: LastEventId = None, resume_from: ResumeFrom = None) -> StreamingResponse:
    """One model, live (its publication, its run's status); `gone` once it is removed."""
    await get_model(model_id, caller, store)  # 404 before the stream starts

    async def read() -> Snapshot | None:
        try:
            return Snapshot((await get_model(model_id, caller, store)).model_dump_json())
        except NotFound:
            return None
    return _stream("model", read, caller, store, settings, last_event_id, resume_from)


@router.get("/v1/sweeps/events", tags=["sweeps"], response_class=StreamingResponse,
            responses=_doc("sweeps", "GET /v1/sweeps"))
async def stream_sweeps(caller: RunsReader, store: Store, settings: Settings,
                        last_event_id: LastEventId = None, resume_from: ResumeFrom = None) -> StreamingResponse:
    """The project's sweeps, live: status, trials and best as they advance."""
    async def read() -> Snapshot:
        return Snapshot((await list_sweeps(caller, store)).model_dump_json())
    return _stream("sweeps", read, caller, store, settings, last_event_id, resume_from)


@router.get("/v1/sweeps/{sweep_id}/events", tags=["sweeps"], response_class=StreamingResponse,
            responses={**_doc("sweep", "GET /v1/sweeps/{sweep_id}"), **problem_responses(404)})
async def stream_sweep(sweep_id: SweepId, caller: RunsReader, store: Store, settings: Settings,
                       last_event_id: LastEventId = None, resume_from: ResumeFrom = None) -> StreamingResponse:
    """One sweep, live: its trials advancing; `end` once it and all its trials have ended."""
    await get_sweep(sweep_id, caller, store)  # 404 before the stream starts

    async def read() -> Snapshot | None:
        try:
            sweep = await get_sweep(sweep_id, caller, store)
        except NotFound:
            return None
        over = sweep.status != "running" and all(t.status in TERMINAL_STATUSES for t in sweep.trials)
        return Snapshot(sweep.model_dump_json(), over=over)
    return _stream("sweep", read, caller, store, settings, last_event_id, resume_from)


@router.get("/v1/datasets/events", tags=["datasets"], response_class=StreamingResponse,
            responses=_doc("datasets", "GET /v1/datasets"))
async def stream_datasets(caller: DatasetsReader, store: Store, settings: Settings,
                          limit: Annotated[int, Query(ge=1, le=200)] = 50,
                          last_event_id: LastEventId = None, resume_from: ResumeFrom = None) -> StreamingResponse:
    """The project's newest datasets (the first page of GET /v1/datasets), live: one registered appears."""
    async def read() -> Snapshot:
        return Snapshot((await list_datasets(caller, store, limit, None)).model_dump_json())
    return _stream("datasets", read, caller, store, settings, last_event_id, resume_from)
