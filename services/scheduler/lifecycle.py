"""Run lifecycle: each change of a run's state, stored atomically and announced.

Every transition is published as `run.status_changed`, so the API's live
streams and integrators see the same history the runs collection records.
"""

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from faststream.exceptions import IncorrectState
from faststream.nats import NatsBroker
from prometheus_client import Counter

from services.scheduler.announcer import Announcer
from services.scheduler.placement import QueuedRun, queue_key
from services.scheduler.state import ACTIVE_STATUSES
from services.scheduler.store import SchedulerStore
from shared.bus import publish_event
from shared.events import (
    CheckpointSaved,
    RunCompleted,
    RunReleased,
    RunStarted,
    RunStatusChanged,
    RunStopRequested,
    utcnow,
)
from shared.run_document import RunDocument
from shared.status import RunStatus
from shared.store import Document
from shared.subjects import Subjects

log = logging.getLogger(__name__)

RESETS = Counter("trainyard_run_resets_total", "Attempts that ended without an outcome", ["cause"])


# A kill re-reads the run this often when it moves meanwhile, before leaving it to redelivery.
KILL_TRIES = 5


class RunChangedMeanwhile(RuntimeError):
    """A run moved on every try of an operation; the event is redelivered."""


class RunLifecycle:
    def __init__(self, store: SchedulerStore, broker: NatsBroker, subjects: Subjects, aging_s: float) -> None:
        self.store = store
        self.broker = broker
        self.subjects = subjects
        self.aging_s = aging_s
        # Told of every run that enters the queue (the scheduler's in-memory queue index).
        # With the run as queued when the caller already read it, else None (the index reads it).
        self.on_queued: Callable[[str, QueuedRun | None], Awaitable[None]] | None = None
        # Told when a completed attempt gave its trainer's accelerators back (a placement pass is due).
        self.on_freed: Callable[[], None] | None = None
        # Announcements leave the path that stored them (services/scheduler/announcer.py).
        self.announcer = Announcer(store, self._publish_change)

    async def _move(self, run_id: str, target: RunStatus, message: str | None, *, previous: str | None,
                    guard: Document | None = None, fields: Document | None = None,
                    trainer_id: str | None = None, attempt: int | None = None,
                    queued: QueuedRun | None = None) -> bool:
        """Store a transition with its event in the run's outbox and hand the event to the announcer;
        False if the run was not in a state to make it. An event the bus did not take stays in the
        outbox and the periodic pass publishes it (announce_unannounced): the change itself is stored."""
        guard = guard or {}
        event = RunStatusChanged(
            run_id=run_id,
            status=target,
            previous_status=RunStatus(previous) if previous else None,
            attempt=attempt if attempt is not None else int(guard.get("attempt", 0)),
            message=message,
            trainer_id=trainer_id if trainer_id is not None else guard.get("trainer_id"),
        )
        # Into the queue is on the placement path (a new, requeued or reset run waits for it);
        # the other moves are not (a completed attempt's trainer is already given back).
        if not await self.store.transition(run_id, target, guard=guard, fields=fields, message=message,
                                           announcement=event, urgent=target == RunStatus.PENDING):
            return False
        if target == RunStatus.PENDING and self.on_queued is not None:
            await self.on_queued(run_id, queued)
        if not self.broker_connected():
            # A publish now would wait out its timeout in the reconnect buffer: leave it to the pass.
            log.warning("NATS is not connected: the change of run %s to %s stays in its outbox", run_id, target)
            return True
        # Published and pulled from the outbox in the background, in the order stored: a JetStream
        # round trip and an fsync'd update fewer on the path of every transition.
        self.announcer.announce(event)
        return True

    def broker_connected(self) -> bool:
        try:
            return bool(self.broker.connection.is_connected)
        except IncorrectState:  # never connected (or stopped): FastStream raises rather than answer None
            return False

    async def _publish_change(self, event: RunStatusChanged) -> None:
        # The Msg-Id is the event's own id: publishing an entry again (the pass, a retry) is dropped
        # by the stream inside its duplicate window, and consumers can dedupe on event_id after it.
        await publish_event(self.broker, self.subjects, self.subjects.run_status_changed, event)

    async def _announce(self, event: RunStatusChanged) -> None:
        await self._publish_change(event)
        await self.store.announced(event.run_id, event.event_id)

    async def announce_unannounced(self, stored_before: datetime) -> int:
        """Publish what the outbox holds from before `stored_before`, each run's changes in the
        order they were stored; how many were announced. Stops at the first failure (the bus is
        away): the rest stay for the next pass."""
        if not self.broker_connected():
            return 0
        announced = 0
        try:
            for run_id, entries in await self.store.unannounced(stored_before):
                for entry in entries:
                    await self._announce(RunStatusChanged.model_validate_json(entry["event"]))
                    announced += 1
                log.info("announced %d stored change(s) of run %s from its outbox", len(entries), run_id)
        except Exception:
            log.warning("announcing from the outbox failed after %d event(s); the next pass goes on", announced,
                        exc_info=True)
        return announced

    async def queue(self, run_id: str) -> None:
        """created -> pending: the scheduler has the run and looks for a trainer."""
        run = await self.store.run(run_id)
        if run is None or run.status != RunStatus.CREATED:
            return
        sweep = run.sweep or {}
        # The index takes the run as read here (the move is guarded by `created`, so nothing else
        # changed it meanwhile): one read fewer between a run's creation and its assignment.
        queued = QueuedRun(run_id=run.id, project=run.project, priority=run.spec.priority, created_at=run.created_at,
                           accelerator=run.spec.accelerator, pending_reason="waiting for placement",
                           attempt=run.attempt, sweep_id=sweep.get("id"),
                           sweep_max_concurrent=int(sweep.get("max_concurrent", 0)),
                           trace_context=run.trace_context or None)
        await self._move(run_id, RunStatus.PENDING, "waiting for placement", previous=RunStatus.CREATED,
                         guard={"status": str(RunStatus.CREATED)}, queued=queued,
                         fields={"pending_reason": "waiting for placement", "trainer_id": None,
                                 "attempt_limit": None, "queued_at": utcnow(),
                                 "queue_key": queue_key(run.created_at, run.spec.priority, self.aging_s)})

    async def started(self, event: RunStarted) -> bool:
        return await self._move(
            event.run_id, RunStatus.IN_PROGRESS, f"training on {event.trainer_id} ({event.device})",
            previous=RunStatus.PENDING, guard={"attempt": event.attempt, "trainer_id": event.trainer_id},
            fields={"started_at": event.occurred_at, "device": event.device, "pending_reason": None,
                    **({"config": event.config} if event.config is not None else {})},
        )

    async def completed(self, event: RunCompleted) -> bool:
        """An attempt's outcome; the trainer's accelerators are free again either way."""
        # The trainer is done whatever the run's record becomes: its accelerators go back first and a
        # placement pass is asked for at once, so its next run does not wait for this run's own moves
        # (each an fsync'd update). A redelivered completion gives back nothing twice (the release is
        # guarded by the assignment), a late one of an older attempt gives back nothing of the current
        # attempt (the assignment names its attempt), and the moves below are fenced by attempt as before.
        freed = await self.store.release_trainer(event.trainer_id, event.run_id, event.attempt)
        if freed and self.on_freed is not None:
            self.on_freed()
        message = event.message
        if event.status == RunStatus.SUCCESS:
            run = await self.store.run(event.run_id)
            if run is not None and run.status == RunStatus.PENDING:
                # run.started and run.completed reach separate consumers: a short run's
                # completion can be handled first. Success implies it started. (Only then: an
                # update that matches nothing still costs the database a round trip in its queue.)
                await self._move(event.run_id, RunStatus.IN_PROGRESS, f"training on {event.trainer_id}",
                                 previous=RunStatus.PENDING,
                                 guard={"attempt": event.attempt, "trainer_id": event.trainer_id,
                                        "status": str(RunStatus.PENDING)},
                                 fields={"started_at": event.occurred_at, "pending_reason": None})
            if message is None and run is not None:
                # A sweep trial that ASHA stopped at a rung says so (the decision was stored with it).
                message = (run.sweep or {}).get("stop_message")
        moved = await self._move(
            event.run_id, RunStatus(event.status), message, previous=None,
            guard={"attempt": event.attempt, "trainer_id": event.trainer_id},
            fields={"completed_at": event.occurred_at, "message": message, "pending_reason": None,
                    "epochs_completed": event.epochs_completed},
        )
        return moved

    async def kill(self, run_id: str, requested_at: datetime | None = None) -> str:
        """Stop a run at a user's request: at once if it holds no trainer, else through its trainer.

        The run may move while this decides (queued, assigned, accepted by another
        handler): then it looks again, so a kill is never lost to a race."""
        if requested_at is not None:
            # Kept even when the run has already ended: a rerun asked for before this kill, and
            # handled after it (another consumer), must not bring the run back.
            await self.store.record_kill_request(run_id, requested_at)
        for _ in range(KILL_TRIES):
            run = await self.store.run(run_id)
            if run is None:
                return "unknown run"
            message = "killed by user"
            status = run.status
            holds_no_trainer = status == RunStatus.PENDING and not run.trainer_id
            if status in (RunStatus.CREATED, RunStatus.RERUN) or holds_no_trainer:
                if await self._move(run_id, RunStatus.TERMINATED, message, previous=status,
                                    guard={"status": str(status), "trainer_id": run.trainer_id},
                                    fields={"completed_at": utcnow(), "message": message, "pending_reason": None}):
                    return "terminated"
            elif status in (RunStatus.PENDING, RunStatus.IN_PROGRESS):
                if await self.stop_attempt(run, RunStatus.TERMINATED, message):
                    return "stopping"
            else:
                return f"already {status}"
        # Still moving under us: the event is redelivered and tried again.
        raise RunChangedMeanwhile(f"run {run_id} kept changing while being killed")

    async def stop_attempt(self, run: RunDocument, status: RunStatus, message: str) -> bool:
        """End a running attempt now and tell its trainer to stop it (it frees the accelerator when done);
        False if the attempt was no longer the run's current one."""
        trainer_id, attempt = run.trainer_id, run.attempt
        if trainer_id is None:
            return False  # holds no trainer: not a running attempt (the callers read it holding one)
        if not await self._move(run.id, status, message, previous=run.status,
                                guard={"attempt": attempt, "trainer_id": trainer_id},
                                fields={"completed_at": utcnow(), "message": message, "pending_reason": None}):
            return False
        stop = RunStopRequested(run_id=run.id, attempt=attempt, trainer_id=trainer_id,
                                status=status, message=message)
        await publish_event(self.broker, self.subjects, self.subjects.run_stop_requested(trainer_id), stop,
                            dedup_key=f"{run.id}:{attempt}:stop")
        return True

    async def rerun(self, run_id: str, max_attempts: int | None = None, requested_at: datetime | None = None) -> bool:
        """A person restarts a run that did not succeed; it resumes from its latest checkpoint."""
        run = await self.store.run(run_id)
        if run is None:
            return False
        killed_at = run.kill_requested_at
        if requested_at is not None and killed_at is not None and killed_at >= requested_at:
            log.info("rerun of run %s asked at %s is older than its kill at %s: ignored", run_id, requested_at,
                     killed_at)
            return False
        budget = max_attempts or run.spec.max_attempts
        if not await self._move(run_id, RunStatus.RERUN, "rerun requested", previous=run.status,
                                guard={"status": str(run.status), "attempt": run.attempt},
                                fields={"attempt_limit": run.attempt + budget, "message": None,
                                        "completed_at": None, "trainer_id": None}):
            return False
        await self._requeue(run_id, "rerun requested: waiting for placement")
        return True

    async def requeue(self, run_id: str, reason: str) -> None:
        """A run found in `rerun` goes back to the queue (the periodic pass)."""
        await self._requeue(run_id, reason)

    async def _requeue(self, run_id: str, reason: str) -> None:
        await self._move(run_id, RunStatus.PENDING, reason, previous=RunStatus.RERUN,
                         guard={"status": str(RunStatus.RERUN)},
                         fields={"pending_reason": reason, "trainer_id": None, "accepted_at": None,
                                 "queued_at": utcnow()})

    async def reset_attempt(self, run: RunDocument, cause: str, reason: str) -> None:
        """An attempt ended without an outcome (trainer lost, never accepted, handed back):
        retry it from the latest checkpoint while attempts remain, else end the run."""
        run_id, attempt, trainer_id = run.id, run.attempt, run.trainer_id
        if run.status not in ACTIVE_STATUSES:
            # Ended already (killed, say, and its trainer then handed it back): only the trainer is
            # freed. A terminal status may move to rerun, so without this the hand-back would
            # start a killed run again.
            log.info("run %s is %s: its attempt %d ended (%s) frees its trainer only", run_id, run.status,
                     attempt, reason)
            if trainer_id:
                await self.store.release_trainer(trainer_id, run_id, attempt)
            return
        RESETS.labels(cause=cause).inc()
        limit = run.attempt_limit or run.spec.max_attempts
        # The status too: a kill may end the attempt between the read and these moves.
        active = {"$in": sorted(str(status) for status in ACTIVE_STATUSES)}
        guard = {"attempt": attempt, "trainer_id": trainer_id, "status": active}
        if run.spec.on_reset == "fail" and cause != "released":
            message = f"{reason}; on_reset is 'fail'"
            await self._move(run_id, RunStatus.FAILED, message, previous=run.status, guard=guard,
                             fields={"completed_at": utcnow(), "message": message, "pending_reason": None})
        elif attempt >= limit:
            attempts = "; ".join(
                f"#{h.attempt} {h.status}: {h.message or ''}".strip() for h in run.history if h.attempt
            )
            message = f"{reason}; out of attempts ({attempt} of {limit}). Attempts: {attempts}"
            await self._move(run_id, RunStatus.ABORTED, message, previous=run.status, guard=guard,
                             fields={"completed_at": utcnow(), "message": message, "pending_reason": None})
        elif run.status == RunStatus.PENDING:
            # Never started: straight back to the queue under a new attempt number.
            await self._move(run_id, RunStatus.PENDING, reason, previous=RunStatus.PENDING,
                             guard={**guard, "status": str(RunStatus.PENDING)},
                             fields={"pending_reason": f"{reason}; waiting for placement", "trainer_id": None,
                                     "accepted_at": None, "queued_at": utcnow()})
        else:
            if await self._move(run_id, RunStatus.RERUN, reason, previous=run.status,
                                guard={**guard, "status": str(RunStatus.IN_PROGRESS)},
                                fields={"trainer_id": None, "accepted_at": None}):
                await self._requeue(run_id, f"{reason}; resuming from the latest checkpoint")
        if trainer_id:
            await self.store.release_trainer(trainer_id, run_id, attempt)

    async def released(self, event: RunReleased) -> None:
        run = await self.store.run(event.run_id)
        if run is None or run.attempt != event.attempt or run.trainer_id != event.trainer_id:
            await self.store.release_trainer(event.trainer_id, event.run_id, event.attempt)
            return
        if event.checkpoint is not None:
            # Its checkpoint.saved may not have been handled yet: the retry resumes from it all the same.
            await self.store.record_checkpoint(CheckpointSaved(run_id=event.run_id, attempt=event.attempt,
                                                               trainer_id=event.trainer_id,
                                                               checkpoint=event.checkpoint))
        if event.cause == "child_killed":
            # A fault like a lost trainer: on_reset applies.
            await self.reset_attempt(run, "child_killed", event.reason)
            return
        await self.reset_attempt(run, "released", f"trainer {event.trainer_id} handed the run back ({event.reason})")
