"""The scheduler's passes: place queued runs, and watch over assigned ones."""

import asyncio
import contextlib
import logging
import math
from dataclasses import replace
from datetime import timedelta
from typing import Literal

from faststream.nats import NatsBroker
from prometheus_client import Counter, Gauge, Histogram

from services.scheduler.lifecycle import RunLifecycle
from services.scheduler.liveness import Liveness
from services.scheduler.placement import NotPlaced, Placement, QueuedRun, place
from services.scheduler.queue_index import QueueIndex
from services.scheduler.store import HeartbeatNews, SchedulerStore
from services.scheduler.sweeps import SweepKeeper
from services.scheduler.telemetry import traced_assignment
from shared.bus import publish_event
from shared.events import BaseModelRef, RunAssigned, RunStopRequested, StoredCheckpoint, TrainerHeartbeat, utcnow
from shared.settings import SchedulerSettings
from shared.specs import DatasetLayout, RunSpec
from shared.status import RunStatus
from shared.subjects import Subjects

log = logging.getLogger(__name__)

ASSIGNMENTS = Counter("trainyard_assignments_total", "Runs assigned to trainers")
ASSIGNMENT_RETRIES = Counter("trainyard_assignment_retries_total", "Assignments retried elsewhere", ["cause"])
SCHEDULING_LATENCY = Histogram(
    "trainyard_scheduling_latency_seconds", "From entering the queue to assignment",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
QUEUE_DEPTH = Gauge("trainyard_queue_depth", "Runs waiting for a trainer", ["accelerator"])
TRAINERS_LOST = Counter("trainyard_trainers_lost_total", "Trainers presumed lost after missed heartbeats")
# A run.created lost between the API's insert and its publish is picked up after this.
UNANNOUNCED_RUN_GRACE = timedelta(seconds=10)
# A run moves rerun -> pending at once; one still in `rerun` after this was stranded.
RERUN_GRACE = timedelta(seconds=5)
# A transition publishes its own event at once; an outbox entry older than this was not taken.
OUTBOX_GRACE = timedelta(seconds=5)
# The smallest execution timeout a spec may set: older runs are the only candidates.
MIN_EXECUTION_TIMEOUT_S = RunSpec.model_fields["execution_timeout_s"].metadata[0].ge
# Pending reasons stored per periodic pass at most (see Scheduler._store_reasons).
MAX_REASON_WRITES_PER_PASS = 50
# What became of one claim: the trainer was taken meanwhile (the run stays queued), the run was no
# longer queued (claimed elsewhere, killed), or its assignment could not be published.
AssignOutcome = Literal["assigned", "trainer_taken", "run_gone", "unsent"]


class Scheduler:
    def __init__(self, store: SchedulerStore, lifecycle: RunLifecycle, broker: NatsBroker, subjects: Subjects,
                 settings: SchedulerSettings, sweeps: SweepKeeper | None = None) -> None:
        self.store = store
        self.sweeps = sweeps
        self.lifecycle = lifecycle
        self.broker = broker
        self.subjects = subjects
        self.settings = settings
        # One placement pass at a time per replica; replicas are kept apart by atomic claims.
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._accelerators_seen: set[str] = set()
        # Claims started by a pass and not ended yet: their runs, and the accelerators they hold.
        self._claiming: dict[str, QueuedRun] = {}
        self._reserved: dict[str, int] = {}
        self._claims: set[asyncio.Task[AssignOutcome]] = set()
        self._reasons_task: asyncio.Task[None] | None = None
        # A trainer's silence counts from the later of its last heartbeat and this process's start:
        # heartbeats sent while this scheduler was down were never seen, not missed.
        self.started_at = utcnow()
        self.liveness = Liveness(store, self.started_at, timedelta(seconds=settings.trainer_timeout_s))
        self.queue = QueueIndex()
        # Runs entering the queue (created, requeued, reset) join the index at once.
        lifecycle.on_queued = self.note_queued
        # A completed attempt's accelerators are free: place at once, before its own moves are stored.
        lifecycle.on_freed = self.request_placement

    def request_placement(self) -> None:
        """Ask for a placement pass soon; many requests while one runs coalesce into one more."""
        self._wanted.set()

    async def note_queued(self, run_id: str, queued: QueuedRun | None = None) -> None:
        run = queued if queued is not None else await self.store.queued_run(run_id)
        if run is not None:
            self.queue.add(run)

    async def heartbeat(self, beat: TrainerHeartbeat) -> HeartbeatNews:
        return await self.liveness.heartbeat(beat, utcnow())

    async def _rebuild_queue(self) -> None:
        """Re-read the queue from the database: what events missed (another replica's requeue, a
        lost event, a restart) heals here, and runs claimed or killed elsewhere drop out."""
        self.queue.begin_rebuild()
        try:
            snapshot = await self.store.queued_runs()
        except BaseException:
            self.queue.finish_rebuild(list(self.queue.everything(utcnow(), self.settings.aging_s)))
            raise
        self.queue.finish_rebuild(snapshot)

    async def assign_pending_runs(self, refresh_reasons: bool = True) -> int:
        """One placement pass over the in-memory queue: decide every placement, then start the claim
        of each (how many were started). The claims run on their own, outside the pass: a pass
        never waits for the database's writes of the one before it, and each assignment is
        published as soon as its own two writes are stored. `refresh_reasons` (the periodic pass)
        also rebuilds the queue from the database and stores why runs wait."""
        async with self._lock:
            self._wanted.clear()
            if refresh_reasons:
                await self._rebuild_queue()
            now = utcnow()
            # Claims in flight hold their accelerators here until they end (a trainer whose claim is
            # already stored is counted twice meanwhile: placed later, never twice over).
            online = [replace(t, free=t.free - self._reserved.get(t.trainer_id, 0))
                      for t in self.liveness.online_views(await self.store.trainer_docs(), now)]
            room = {t.accelerator_name for t in online if t.free > 0 and not t.draining}
            if not refresh_reasons and not room:
                return 0  # nothing can be placed; the periodic pass keeps reasons current
            names = self.queue.accelerators() if refresh_reasons else [n for n in self.queue.accelerators()
                                                                       if n in room]
            candidates = [run for name in names for run in self.queue.ordered(name, now, self.settings.aging_s)
                          if run.run_id not in self._claiming]
            limit = self.settings.project_max_active_runs
            # Counted only when something can hold them back: each is a scan of the active runs.
            active = await self.store.active_runs_per_project() if limit and candidates else {}
            active_trials = await self.store.active_trials_per_sweep() \
                if any(run.sweep_id for run in candidates) else {}
            for claiming in self._claiming.values():  # not stored yet: counted as active all the same
                active[claiming.project] = active.get(claiming.project, 0) + 1
                if claiming.sweep_id:
                    active_trials[claiming.sweep_id] = active_trials.get(claiming.sweep_id, 0) + 1
            batch: list[tuple[QueuedRun, str]] = []
            reasons: dict[str, str] = {}
            depth: dict[str, int] = {}
            advertised = {t.accelerator_name for t in online}
            for run in candidates:
                if limit and active.get(run.project, 0) >= limit:
                    decision: Placement | NotPlaced = NotPlaced(
                        f"project {run.project} is at its limit of {limit} active runs")
                elif run.sweep_id and active_trials.get(run.sweep_id, 0) >= run.sweep_max_concurrent:
                    decision = NotPlaced(f"sweep {run.sweep_id} has {run.sweep_max_concurrent} trials training "
                                         f"(its max_concurrent)")
                else:
                    decision = place(run.accelerator, online)
                if isinstance(decision, NotPlaced):
                    # No head-of-line blocking: a run that cannot fit waits, the rest go on.
                    if decision.reason != run.pending_reason:
                        reasons[run.run_id] = decision.reason
                    # Label values stay bounded: a name no trainer advertises is user
                    # input, counted as "other".
                    label = run.accelerator.name if run.accelerator.name in advertised else "other"
                    depth[label] = depth.get(label, 0) + 1
                    continue
                batch.append((run, decision.trainer_id))
                active[run.project] = active.get(run.project, 0) + 1
                if run.sweep_id:
                    active_trials[run.sweep_id] = active_trials.get(run.sweep_id, 0) + 1
                online = [replace(t, free=t.free - run.accelerator.count) if t.trainer_id == decision.trainer_id
                          else t for t in online]
            # The claims of one pass go to the database together, not one after another, and the
            # next pass does not wait for them.
            for run, trainer_id in batch:
                self._claiming[run.run_id] = run
                self._reserved[trainer_id] = self._reserved.get(trainer_id, 0) + run.accelerator.count
                task = asyncio.create_task(self._claim(run, trainer_id))
                self._claims.add(task)
                task.add_done_callback(self._claims.discard)
            if refresh_reasons:
                self._store_reasons(reasons)
                # Names seen before are set too, so an emptied queue reads 0, not its last depth.
                self._accelerators_seen |= set(depth)
                for name in self._accelerators_seen:
                    QUEUE_DEPTH.labels(accelerator=name).set(depth.get(name, 0))
            return len(batch)

    async def _claim(self, run: QueuedRun, trainer_id: str) -> AssignOutcome:
        outcome: AssignOutcome = "trainer_taken"
        try:
            outcome = await self._assign(run, trainer_id)
        except Exception:
            # The database went away mid-claim: the run stays queued (a claim stored without its
            # assignment is retried by the acceptance timeout, as before).
            log.exception("claiming run %s for trainer %s failed", run.run_id, trainer_id)
        finally:
            self._claiming.pop(run.run_id, None)
            left = self._reserved.get(trainer_id, 0) - run.accelerator.count
            if left > 0:
                self._reserved[trainer_id] = left
            else:
                self._reserved.pop(trainer_id, None)
        if outcome != "trainer_taken":
            self.queue.discard(run.run_id)  # assigned, or no longer queued here
        if outcome != "assigned":
            self.request_placement()  # the run, or the trainer, may go elsewhere now
        return outcome

    def _store_reasons(self, reasons: dict[str, str]) -> None:
        """Store why runs wait, off the placement path and a bounded number per pass (head of the
        queue first): each is an fsync'd write, and a deep queue changing reason at once (a fleet
        filling up) would otherwise hold the database for seconds. The rest follow in later passes."""
        if not reasons or (self._reasons_task is not None and not self._reasons_task.done()):
            return
        head = dict(list(reasons.items())[:MAX_REASON_WRITES_PER_PASS])

        async def store() -> None:
            try:
                await self.store.set_pending_reasons(head)
            except Exception:
                log.exception("storing pending reasons failed; the next pass retries")

        self._reasons_task = asyncio.create_task(store())

    @traced_assignment
    async def _assign(self, run: QueuedRun, trainer_id: str) -> AssignOutcome:
        run_id, count = run.run_id, run.accelerator.count
        attempt = run.attempt + 1
        if not await self.store.claim_trainer(trainer_id, run_id, attempt, count):
            return "trainer_taken"
        claimed = await self.store.claim_run(run_id, attempt, trainer_id) and await self.store.assignment_of(run_id)
        if not claimed:
            await self.store.release_trainer(trainer_id, run_id, attempt)
            return "run_gone"
        event = RunAssigned(
            run_id=run_id,
            attempt=attempt,
            trainer_id=trainer_id,
            spec=RunSpec.model_validate(claimed["spec"]),
            dataset=DatasetLayout.model_validate(claimed["dataset"]),
            base_model=BaseModelRef.model_validate(claimed["base_model"]) if claimed.get("base_model") else None,
            resume_from=StoredCheckpoint.model_validate(claimed["checkpoint"]) if claimed.get("checkpoint") else None,
            decision_epochs=list((claimed.get("sweep") or {}).get("rung_epochs", [])),
        )
        try:
            await publish_event(self.broker, self.subjects, self.subjects.run_assigned(trainer_id), event,
                                dedup_key=f"{run_id}:assigned:{attempt}")
        except Exception:
            log.exception("publishing the assignment of run %s failed; it stays queued", run_id)
            await self.store.unclaim_run(run_id, trainer_id, "assignment could not be sent; will retry")
            await self.store.release_trainer(trainer_id, run_id, attempt)
            return "unsent"
        ASSIGNMENTS.inc()
        queued_since = claimed.get("queued_at") or claimed["created_at"]
        SCHEDULING_LATENCY.observe(max(0.0, (utcnow() - queued_since).total_seconds()))
        log.info("assigned run %s attempt %d to trainer %s", run_id, attempt, trainer_id)
        return "assigned"

    async def watch_over_runs(self) -> None:
        """Recover what events alone cannot: lost announcements, silent trainers,
        unaccepted assignments, runs over their time limit."""
        now = utcnow()
        await self.liveness.flush(now)
        for run_id in await self.store.created_before(now - UNANNOUNCED_RUN_GRACE):
            await self.lifecycle.queue(run_id)
            self.request_placement()
        timeout = timedelta(seconds=self.settings.trainer_timeout_s)
        silent = [doc for doc in await self.store.trainer_docs()
                  if not doc.get("lost") and self.liveness.last_alive(doc) < now - timeout]
        for trainer in silent:
            if await self.store.mark_trainer_lost(trainer["_id"], trainer["last_seen"]):
                self.liveness.forget(trainer["_id"])
                TRAINERS_LOST.inc()
                log.warning("trainer %s missed its heartbeats since %s: presumed lost", trainer["_id"],
                            self.liveness.last_alive(trainer))
                for run in await self.store.runs_on_trainer(trainer["_id"]):
                    await self.lifecycle.reset_attempt(run, "trainer_lost", f"trainer {trainer['_id']} was lost")
                self.request_placement()
        # A run left in `rerun` (its requeue could not be stored or announced: NATS or the database was
        # down) is requeued; every non-terminal status has an owner of its next step here.
        for run_id in await self.store.rerun_before(now - RERUN_GRACE):
            await self.lifecycle.requeue(run_id, "resuming from the latest checkpoint")
            self.request_placement()
        ack_timeout = timedelta(seconds=self.settings.assignment_ack_timeout_s)
        for run in await self.store.unaccepted_assignments(now - ack_timeout):
            ASSIGNMENT_RETRIES.labels(cause="not_accepted").inc()
            await self.lifecycle.reset_attempt(
                run, "not_accepted", f"trainer {run.trainer_id} did not accept the assignment in time")
            self.request_placement()
        if self.sweeps is not None:
            await self.sweeps.watch(now)
        async for run in self.store.runs_started_before(now - timedelta(seconds=MIN_EXECUTION_TIMEOUT_S)):
            limit_s = run.spec.execution_timeout_s
            if run.started_at is not None and (now - run.started_at).total_seconds() > limit_s:
                await self.lifecycle.stop_attempt(run, RunStatus.ABORTED,
                                                  f"exceeded its execution timeout of {limit_s} s")
        # Stored changes whose run.status_changed the bus did not take (NATS away, or this process
        # killed between the write and the publish) are announced now, never forgotten.
        await self.lifecycle.announce_unannounced(now - OUTBOX_GRACE)

    async def reset_attempts_of_previous_process(self, beat: TrainerHeartbeat) -> None:
        """A trainer came back as a new process before it was missed: the attempts its
        previous process accepted died with it, so they resume elsewhere (or here) now
        rather than after the heartbeat timeout. Attempts not yet accepted are left to the
        acceptance timeout: the new process may be the one accepting them."""
        held = {r.run_id for r in beat.running}
        for run in await self.store.runs_on_trainer(beat.trainer_id):
            previous = run.trainer_instance
            if previous and previous != beat.instance and run.id not in held:
                log.warning("trainer %s restarted: attempt %d of run %s ended with its previous process",
                            beat.trainer_id, run.attempt, run.id)
                await self.lifecycle.reset_attempt(
                    run, "trainer_restarted",
                    f"trainer {beat.trainer_id} restarted; attempt {run.attempt} ended with its previous process")

    async def reconcile_heartbeat(self, beat: TrainerHeartbeat) -> None:
        """Stop attempts a trainer runs that are no longer its to run (it was presumed lost)."""
        runs = await self.store.runs_by_id([r.run_id for r in beat.running]) if beat.running else {}
        for running in beat.running:
            run = runs.get(running.run_id)
            current = run is not None and run.get("trainer_id") == beat.trainer_id \
                and run.get("attempt") == running.attempt \
                and run.get("status") in (str(RunStatus.PENDING), str(RunStatus.IN_PROGRESS))
            if not current:
                log.info("trainer %s still runs superseded attempt %d of run %s: stopping it",
                         beat.trainer_id, running.attempt, running.run_id)
                stop = RunStopRequested(run_id=running.run_id, attempt=running.attempt, trainer_id=beat.trainer_id,
                                        status=RunStatus.ABORTED, message="superseded by a newer attempt")
                await publish_event(self.broker, self.subjects, self.subjects.run_stop_requested(beat.trainer_id),
                                    stop, dedup_key=f"{running.run_id}:{running.attempt}:stop")

    async def run_forever(self) -> None:
        last_periodic = -math.inf
        loop = asyncio.get_running_loop()
        while True:
            # Periodic by the clock, not by a quiet moment: under steady load (events all the time)
            # lost trainers must still be found and the queue index rebuilt.
            periodic = loop.time() - last_periodic >= self.settings.placement_interval_s
            try:
                if periodic:
                    last_periodic = loop.time()
                    await self.watch_over_runs()
                # Passes asked for by events only matter when something can be placed.
                await self.assign_pending_runs(refresh_reasons=periodic)
            except Exception:
                # The loop must outlive a storage outage; the next pass retries.
                log.exception("scheduling pass failed")
            wait_s = max(0.0, last_periodic + self.settings.placement_interval_s - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), timeout=wait_s)

