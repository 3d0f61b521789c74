"""The scheduler's reads and writes: runs' lifecycle fields and the trainer registry.

Every change of state is one atomic update guarded by the statuses it may
come from, so a redelivered or reordered event cannot move a run backwards
and two scheduler replicas cannot both assign one run.
"""

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.placement import TrainerView
from services.scheduler.state import sources_of
from shared.events import RunCompleted, RunStarted, TrainerHeartbeat, utcnow
from shared.status import RunStatus
from shared.store import RUNS, TRAINERS, Document


def _history(status: RunStatus, message: str | None, attempt: int | None = None) -> Document:
    return {"status": str(status), "at": utcnow(), "message": message, "attempt": attempt}


class SchedulerStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.runs = db[RUNS]
        self.trainers = db[TRAINERS]

    async def ensure_indexes(self) -> None:
        await self.runs.create_index([("status", ASCENDING), ("created_at", ASCENDING)], name="status_created")
        await self.trainers.create_index([("last_seen", ASCENDING)], name="last_seen")

    # -- runs --------------------------------------------------------------

    async def _move(self, run_id: str, target: RunStatus, extra_filter: Document, fields: Document,
                    message: str | None = None, attempt: int | None = None) -> bool:
        result = await self.runs.update_one(
            {"_id": run_id, "status": {"$in": sources_of(target)}, **extra_filter},
            {
                "$set": {"status": str(target), "updated_at": utcnow(), **fields},
                "$push": {"history": _history(target, message, attempt)},
            },
        )
        return result.modified_count == 1

    async def queue(self, run_id: str, reason: str) -> bool:
        """created -> pending: the scheduler has the run and looks for a trainer."""
        return await self._move(run_id, RunStatus.PENDING, {"status": str(RunStatus.CREATED)},
                                {"pending_reason": reason, "trainer_id": None}, reason)

    async def created_before(self, moment: datetime) -> list[str]:
        cursor = self.runs.find({"status": str(RunStatus.CREATED), "created_at": {"$lt": moment}}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def unassigned_pending(self) -> AsyncIterator[Document]:
        cursor = self.runs.find({"status": str(RunStatus.PENDING), "trainer_id": None}).sort("created_at", ASCENDING)
        async for doc in cursor:
            yield doc

    async def set_pending_reason(self, run_id: str, reason: str) -> None:
        await self.runs.update_one(
            {"_id": run_id, "status": str(RunStatus.PENDING), "trainer_id": None, "pending_reason": {"$ne": reason}},
            {"$set": {"pending_reason": reason, "updated_at": utcnow()}},
        )

    async def claim_run(self, run_id: str, trainer_id: str) -> Document | None:
        """Give the next attempt of a pending run to a trainer; None if someone else did."""
        claimed: Document | None = await self.runs.find_one_and_update(
            {"_id": run_id, "status": str(RunStatus.PENDING), "trainer_id": None},
            {
                "$set": {"trainer_id": trainer_id, "assigned_at": utcnow(), "updated_at": utcnow(),
                         "pending_reason": f"assigned to trainer {trainer_id}; waiting for it to start"},
                "$inc": {"attempt": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return claimed

    async def unclaim_run(self, run_id: str, trainer_id: str, reason: str) -> None:
        await self.runs.update_one(
            {"_id": run_id, "status": str(RunStatus.PENDING), "trainer_id": trainer_id},
            {"$set": {"trainer_id": None, "pending_reason": reason, "updated_at": utcnow()}, "$inc": {"attempt": -1}},
        )

    async def mark_started(self, event: RunStarted) -> bool:
        return await self._move(
            event.run_id, RunStatus.IN_PROGRESS,
            {"attempt": event.attempt, "trainer_id": event.trainer_id},
            {"started_at": event.occurred_at, "device": event.device, "pending_reason": None},
            f"training on {event.trainer_id} ({event.device})", event.attempt,
        )

    async def mark_completed(self, event: RunCompleted) -> bool:
        return await self._move(
            event.run_id, RunStatus(event.status),
            {"attempt": event.attempt, "trainer_id": event.trainer_id},
            {"completed_at": event.occurred_at, "message": event.message, "pending_reason": None,
             "epochs_completed": event.epochs_completed},
            event.message, event.attempt,
        )

    # -- trainers ----------------------------------------------------------

    async def record_heartbeat(self, beat: TrainerHeartbeat, now: datetime) -> None:
        await self.trainers.update_one(
            {"_id": beat.trainer_id},
            {
                "$set": {
                    "host": beat.host,
                    "accelerators": [a.model_dump() for a in beat.accelerators],
                    "running_run_ids": beat.running_run_ids,
                    "version": beat.version,
                    "draining": beat.draining,
                    "last_seen": now,
                },
                "$setOnInsert": {"current_run_id": None, "first_seen": now},
            },
            upsert=True,
        )

    async def online_trainers(self, seen_since: datetime) -> list[TrainerView]:
        views = []
        async for doc in self.trainers.find({"last_seen": {"$gte": seen_since}}).sort("_id", ASCENDING):
            accelerators: list[dict[str, Any]] = doc.get("accelerators") or [{"name": "CPU", "count": 1}]
            first = accelerators[0]
            views.append(TrainerView(
                trainer_id=doc["_id"],
                accelerator_name=first["name"],
                accelerator_count=int(first["count"]),
                busy=doc.get("current_run_id") is not None,
                draining=bool(doc.get("draining")),
            ))
        return views

    async def claim_trainer(self, trainer_id: str, run_id: str) -> bool:
        result = await self.trainers.update_one(
            {"_id": trainer_id, "current_run_id": None}, {"$set": {"current_run_id": run_id}}
        )
        return result.modified_count == 1

    async def release_trainer(self, trainer_id: str, run_id: str) -> None:
        await self.trainers.update_one(
            {"_id": trainer_id, "current_run_id": run_id}, {"$set": {"current_run_id": None}}
        )
