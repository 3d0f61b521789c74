"""Bus handlers of the scheduler: decode an event, call the lifecycle or ask for placement."""

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream.nats import NatsBroker, NatsMessage, NatsRouter
from pydantic import BaseModel

from services.scheduler.scheduling import Scheduler
from services.scheduler.sweeps import SweepKeeper
from shared.bus import decode_event, redelivered_on_storage_error
from shared.bus import durable_subscriber as shared_durable_subscriber
from shared.events import (
    CheckpointSaved,
    EpochLogged,
    RunAccepted,
    RunCompleted,
    RunCreated,
    RunKillRequested,
    RunReleased,
    RunRerunRequested,
    RunStarted,
    TrainerHeartbeat,
    utcnow,
)
from shared.subjects import Subjects
from shared.sweeps import SweepKillRequested

log = logging.getLogger(__name__)
EventT = TypeVar("EventT", bound=BaseModel)


def build_router(broker: NatsBroker, scheduler: Scheduler, subjects: Subjects, sweeps: SweepKeeper) -> NatsRouter:
    router = NatsRouter()
    store, lifecycle = scheduler.store, scheduler.lifecycle

    async def handle(message: NatsMessage, model: type[EventT], consumer: str,
                     action: Callable[[EventT], Awaitable[None]]) -> None:
        event = await decode_event(message, model, broker=broker, subjects=subjects, consumer=consumer)
        if event is None:
            return
        with redelivered_on_storage_error(f"{consumer} handling run {getattr(event, 'run_id', '-')}"):
            await action(event)

    def durable_subscriber(subject: str, consumer: str) -> Any:
        return shared_durable_subscriber(router, subjects, subject, consumer)

    async def queue(event: RunCreated) -> None:
        await lifecycle.queue(event.run_id)
        scheduler.request_placement()

    async def accept(event: RunAccepted) -> None:
        if not await store.mark_accepted(event.run_id, event.attempt, event.trainer_id, event.instance):
            log.info("ignoring run.accepted of run %s attempt %d: not its current attempt",
                     event.run_id, event.attempt)

    async def start(event: RunStarted) -> None:
        if not await lifecycle.started(event):
            log.info("ignoring run.started of run %s attempt %d: not its current attempt or state",
                     event.run_id, event.attempt)

    async def complete(event: RunCompleted) -> None:
        if not await lifecycle.completed(event):
            log.info("run.completed of run %s attempt %d changed nothing: superseded or already ended",
                     event.run_id, event.attempt)
        scheduler.request_placement()

    async def release(event: RunReleased) -> None:
        await lifecycle.released(event)
        scheduler.request_placement()

    async def kill(event: RunKillRequested) -> None:
        outcome = await lifecycle.kill(event.run_id)
        log.info("kill of run %s: %s", event.run_id, outcome)

    async def rerun(event: RunRerunRequested) -> None:
        if await lifecycle.rerun(event.run_id):
            scheduler.request_placement()

    async def heartbeat(beat: TrainerHeartbeat) -> None:
        news = await store.record_heartbeat(beat, utcnow())
        if news == "restarted":
            await scheduler.reset_attempts_of_previous_process(beat)
        if beat.running:
            await scheduler.reconcile_heartbeat(beat)
        # Capacity only appears with a new, returning or restarted trainer; freed capacity
        # arrives with run.completed or a reset, which ask for placement themselves.
        if news != "known" and not beat.draining:
            scheduler.request_placement()

    @durable_subscriber(subjects.run_created, "scheduler-run-created")
    async def on_run_created(message: NatsMessage) -> None:
        await handle(message, RunCreated, "scheduler-run-created", queue)

    @durable_subscriber(subjects.run_accepted, "scheduler-run-accepted")
    async def on_run_accepted(message: NatsMessage) -> None:
        await handle(message, RunAccepted, "scheduler-run-accepted", accept)

    @durable_subscriber(subjects.run_started, "scheduler-run-started")
    async def on_run_started(message: NatsMessage) -> None:
        await handle(message, RunStarted, "scheduler-run-started", start)

    @durable_subscriber(subjects.run_completed, "scheduler-run-completed")
    async def on_run_completed(message: NatsMessage) -> None:
        await handle(message, RunCompleted, "scheduler-run-completed", complete)

    @durable_subscriber(subjects.run_released, "scheduler-run-released")
    async def on_run_released(message: NatsMessage) -> None:
        await handle(message, RunReleased, "scheduler-run-released", release)

    @durable_subscriber(subjects.run_kill_requested, "scheduler-run-kill-requested")
    async def on_run_kill_requested(message: NatsMessage) -> None:
        await handle(message, RunKillRequested, "scheduler-run-kill-requested", kill)

    @durable_subscriber(subjects.run_rerun_requested, "scheduler-run-rerun-requested")
    async def on_run_rerun_requested(message: NatsMessage) -> None:
        await handle(message, RunRerunRequested, "scheduler-run-rerun-requested", rerun)

    async def checkpoint(event: CheckpointSaved) -> None:
        if not await store.record_checkpoint(event):
            log.info("not recording checkpoint of epoch %d of run %s attempt %d: not the current attempt",
                     event.checkpoint.epoch, event.run_id, event.attempt)

    @durable_subscriber(subjects.checkpoint_saved, "scheduler-checkpoint-saved")
    async def on_checkpoint_saved(message: NatsMessage) -> None:
        await handle(message, CheckpointSaved, "scheduler-checkpoint-saved", checkpoint)

    async def sweep_epoch(event: EpochLogged) -> None:
        await sweeps.epoch_logged(event)

    async def kill_sweep(event: SweepKillRequested) -> None:
        await sweeps.kill(event.sweep_id)

    # Every trial's metrics (ASHA's rungs, the best trial); epochs of other runs are skipped.
    @durable_subscriber(subjects.epoch_logged, "scheduler-sweep-epochs")
    async def on_epoch_logged(message: NatsMessage) -> None:
        await handle(message, EpochLogged, "scheduler-sweep-epochs", sweep_epoch)

    @durable_subscriber(subjects.sweep_kill_requested, "scheduler-sweep-kill-requested")
    async def on_sweep_kill_requested(message: NatsMessage) -> None:
        await handle(message, SweepKillRequested, "scheduler-sweep-kill-requested", kill_sweep)

    @router.subscriber(subjects.trainer_heartbeat)
    async def on_trainer_heartbeat(message: NatsMessage) -> None:
        await handle(message, TrainerHeartbeat, "scheduler-heartbeats", heartbeat)

    return router
