"""Bus handlers of the scheduler: decode an event, call the lifecycle or ask for placement."""

import logging
from typing import Any

from faststream.nats import NatsMessage, NatsRouter

from services.scheduler.scheduling import Scheduler
from services.scheduler.sweeps import SweepKeeper
from shared.bus import core_subscriber
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
)
from shared.subjects import Subjects
from shared.sweeps import SweepKillRequested

log = logging.getLogger(__name__)

# Messages of one high-volume consumer handled at once.
EVENT_WORKERS = 16


def build_router(scheduler: Scheduler, subjects: Subjects, sweeps: SweepKeeper) -> NatsRouter:
    router = NatsRouter()
    store, lifecycle = scheduler.store, scheduler.lifecycle

    def durable_subscriber(subject: str, consumer: str, max_workers: int = 1) -> Any:
        return shared_durable_subscriber(router, subjects, subject, consumer, max_workers=max_workers)

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
        outcome = await lifecycle.kill(event.run_id, event.occurred_at)
        log.info("kill of run %s: %s", event.run_id, outcome)

    async def rerun(event: RunRerunRequested) -> None:
        if await lifecycle.rerun(event.run_id, requested_at=event.occurred_at):
            scheduler.request_placement()

    async def heartbeat(beat: TrainerHeartbeat) -> None:
        news = await scheduler.heartbeat(beat)
        if news == "restarted":
            await scheduler.reset_attempts_of_previous_process(beat)
        if beat.running:
            await scheduler.reconcile_heartbeat(beat)
        # Capacity only appears with a new, returning or restarted trainer; freed capacity
        # arrives with run.completed or a reset, which ask for placement themselves.
        if news != "known" and not beat.draining:
            scheduler.request_placement()

    async def checkpoint(event: CheckpointSaved) -> None:
        await store.check_report_holder(event.run_id, event.attempt, event.trainer_id, event.checkpoint.epoch)
        if not await store.record_checkpoint(event):
            log.info("not recording checkpoint of epoch %d of run %s attempt %d: not newer than the recorded one",
                     event.checkpoint.epoch, event.run_id, event.attempt)

    # Decoding, dead-lettering, the trainer-id check of trainer reports and the storage guard
    # are the bus's (shared.bus.DeadLetters); each handler takes its event.
    # The events of a busy fleet (one of each per attempt, every write fenced by the attempt)
    # are handled several at a time: one by one, a burst of completions waited on each other's
    # database round trips before their trainers could be given new runs.
    for subject, consumer, action, workers in (
        (subjects.run_created, "scheduler-run-created", queue, EVENT_WORKERS),
        (subjects.run_accepted(), "scheduler-run-accepted", accept, EVENT_WORKERS),
        (subjects.run_started(), "scheduler-run-started", start, EVENT_WORKERS),
        (subjects.run_completed(), "scheduler-run-completed", complete, EVENT_WORKERS),
        (subjects.run_released(), "scheduler-run-released", release, 1),
        (subjects.run_kill_requested, "scheduler-run-kill-requested", kill, 1),
        (subjects.run_rerun_requested, "scheduler-run-rerun-requested", rerun, 1),
        (subjects.checkpoint_saved(), "scheduler-checkpoint-saved", checkpoint, 1),
    ):
        durable_subscriber(subject, consumer, workers)(action)

    async def sweep_epoch(event: EpochLogged, message: NatsMessage) -> None:
        # ASHA acts on a trial's metrics: only the trainer holding the trial's attempt may report them.
        sender = subjects.reporting_trainer(message.raw_message.subject) or ""
        await store.check_report_holder(event.run_id, event.attempt, sender, event.epoch)
        await sweeps.epoch_logged(event)

    async def kill_sweep(event: SweepKillRequested) -> None:
        await sweeps.kill(event.sweep_id)

    # Every trial's metrics (ASHA's rungs, the best trial); epochs of other runs are skipped.
    durable_subscriber(subjects.epoch_logged(), "scheduler-sweep-epochs")(sweep_epoch)
    durable_subscriber(subjects.sweep_kill_requested, "scheduler-sweep-kill-requested")(kill_sweep)
    core_subscriber(router, subjects.trainer_heartbeat())(heartbeat)

    return router
