"""Bus handlers of the scheduler: decode an event, call the state machine or placement."""

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from faststream.exceptions import NackMessage
from faststream.middlewares import AckPolicy
from faststream.nats import NatsBroker, NatsMessage, NatsRouter
from pydantic import BaseModel
from pymongo.errors import PyMongoError

from services.scheduler.scheduling import Scheduler
from shared.bus import decode_event, durable, event_stream, pull
from shared.events import RunCompleted, RunCreated, RunStarted, TrainerHeartbeat, utcnow
from shared.subjects import Subjects

log = logging.getLogger(__name__)
EventT = TypeVar("EventT", bound=BaseModel)


def build_router(broker: NatsBroker, scheduler: Scheduler, subjects: Subjects) -> NatsRouter:
    router = NatsRouter()
    stream = event_stream(subjects)
    store = scheduler.store

    async def handle(message: NatsMessage, model: type[EventT], consumer: str,
                     action: Callable[[EventT], Awaitable[None]]) -> None:
        event = await decode_event(message, model, broker=broker, subjects=subjects, consumer=consumer)
        if event is None:
            return
        try:
            await action(event)
        except PyMongoError as error:
            log.warning("%s: storage failed, message will be redelivered: %s", consumer, error)
            raise NackMessage(delay=2.0) from error

    def durable_subscriber(subject: str, consumer: str):  # type: ignore[no-untyped-def]
        return router.subscriber(
            subject, stream=stream, durable=consumer, config=durable(consumer), pull_sub=pull(),
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )

    async def queue_and_place(event: RunCreated) -> None:
        await scheduler.queue_run(event.run_id)
        await scheduler.assign_pending_runs()

    async def start(event: RunStarted) -> None:
        if not await store.mark_started(event):
            log.info("ignoring run.started of run %s attempt %d: not its current attempt or state",
                     event.run_id, event.attempt)

    async def complete(event: RunCompleted) -> None:
        if not await store.mark_completed(event):
            log.info("ignoring run.completed of run %s attempt %d: not its current attempt or state",
                     event.run_id, event.attempt)
        await store.release_trainer(event.trainer_id, event.run_id)
        await scheduler.assign_pending_runs()

    async def heartbeat(beat: TrainerHeartbeat) -> None:
        await store.record_heartbeat(beat, utcnow())
        if not beat.running_run_ids and not beat.draining:
            await scheduler.assign_pending_runs()

    @durable_subscriber(subjects.run_created, "scheduler-run-created")
    async def on_run_created(message: NatsMessage) -> None:
        await handle(message, RunCreated, "scheduler-run-created", queue_and_place)

    @durable_subscriber(subjects.run_started, "scheduler-run-started")
    async def on_run_started(message: NatsMessage) -> None:
        await handle(message, RunStarted, "scheduler-run-started", start)

    @durable_subscriber(subjects.run_completed, "scheduler-run-completed")
    async def on_run_completed(message: NatsMessage) -> None:
        await handle(message, RunCompleted, "scheduler-run-completed", complete)

    @router.subscriber(subjects.trainer_heartbeat)
    async def on_trainer_heartbeat(message: NatsMessage) -> None:
        await handle(message, TrainerHeartbeat, "scheduler-heartbeats", heartbeat)

    return router
