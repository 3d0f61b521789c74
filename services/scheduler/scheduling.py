"""Assigning pending runs to trainers: placement decisions turned into claims and events."""

import asyncio
import logging
from dataclasses import replace
from datetime import timedelta

from faststream.nats import NatsBroker
from prometheus_client import Counter, Histogram

from services.scheduler.placement import NotPlaced, place
from services.scheduler.store import SchedulerStore
from shared.bus import publish_event
from shared.events import RunAssigned, utcnow
from shared.settings import SchedulerSettings
from shared.specs import AcceleratorRequest, DatasetLayout, RunSpec
from shared.subjects import Subjects

log = logging.getLogger(__name__)

ASSIGNMENTS = Counter("trainyard_assignments_total", "Runs assigned to trainers")
SCHEDULING_LATENCY = Histogram(
    "trainyard_scheduling_latency_seconds", "From run creation to assignment",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
# A run.created lost between the API's insert and its publish is picked up after this.
UNANNOUNCED_RUN_GRACE = timedelta(seconds=10)


class Scheduler:
    def __init__(self, store: SchedulerStore, broker: NatsBroker, subjects: Subjects,
                 settings: SchedulerSettings) -> None:
        self.store = store
        self.broker = broker
        self.subjects = subjects
        self.settings = settings
        # One placement pass at a time per replica; replicas are kept apart by atomic claims.
        self._lock = asyncio.Lock()

    async def queue_run(self, run_id: str) -> None:
        await self.store.queue(run_id, "waiting for placement")

    async def assign_pending_runs(self) -> int:
        async with self._lock:
            now = utcnow()
            for run_id in await self.store.created_before(now - UNANNOUNCED_RUN_GRACE):
                await self.queue_run(run_id)
            online = await self.store.online_trainers(now - timedelta(seconds=self.settings.trainer_timeout_s))
            assigned = 0
            async for run in self.store.unassigned_pending():
                request = AcceleratorRequest.model_validate(run["spec"]["accelerator"])
                decision = place(request, online)
                if isinstance(decision, NotPlaced):
                    await self.store.set_pending_reason(run["_id"], decision.reason)
                    continue
                if await self._assign(run, decision.trainer_id):
                    assigned += 1
                    created_at = run["created_at"]
                    SCHEDULING_LATENCY.observe(max(0.0, (utcnow() - created_at).total_seconds()))
                online = [replace(t, busy=True) if t.trainer_id == decision.trainer_id else t for t in online]
            return assigned

    async def _assign(self, run: dict, trainer_id: str) -> bool:  # type: ignore[type-arg]
        run_id = run["_id"]
        if not await self.store.claim_trainer(trainer_id, run_id):
            return False
        claimed = await self.store.claim_run(run_id, trainer_id)
        if claimed is None:
            await self.store.release_trainer(trainer_id, run_id)
            return False
        event = RunAssigned(
            run_id=run_id,
            attempt=claimed["attempt"],
            trainer_id=trainer_id,
            spec=RunSpec.model_validate(claimed["spec"]),
            dataset=DatasetLayout.model_validate(claimed["dataset"]),
        )
        try:
            await publish_event(self.broker, self.subjects, self.subjects.run_assigned(trainer_id), event,
                                dedup_key=f"{run_id}:assigned:{event.attempt}")
        except Exception:
            log.exception("publishing the assignment of run %s failed; it stays pending", run_id)
            await self.store.unclaim_run(run_id, trainer_id, "assignment could not be sent; will retry")
            await self.store.release_trainer(trainer_id, run_id)
            return False
        ASSIGNMENTS.inc()
        log.info("assigned run %s attempt %d to trainer %s", run_id, event.attempt, trainer_id)
        return True

    async def place_periodically(self) -> None:
        while True:
            try:
                await self.assign_pending_runs()
            except Exception:
                # The loop must outlive a storage outage; the next pass retries.
                log.exception("placement pass failed")
            await asyncio.sleep(self.settings.placement_interval_s)
