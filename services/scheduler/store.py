"""The scheduler's reads and writes: runs' lifecycle fields and the trainer registry.

Every change of state is one atomic update guarded by the statuses it may
come from (and, for an attempt's events, by the attempt number: the fencing
token), so a redelivered, late or reordered event cannot move a run backwards
and two scheduler replicas cannot both assign one run or one accelerator.
"""

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Literal

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.placement import QueuedRun
from services.scheduler.state import sources_of
from shared.bus import Refused
from shared.events import CheckpointSaved, Event, TrainerHeartbeat, utcnow
from shared.run_document import HistoryEntry, RunDocument
from shared.specs import AcceleratorRequest
from shared.status import RunStatus
from shared.store import REPORT_HOLDER_FIELDS, RUNS, TRAINERS, Document, report_refusal

# What a heartbeat tells: the same trainer process as before, a new or returning
# trainer, or a trainer that restarted (a new process under the same id).
HeartbeatNews = Literal["known", "joined", "restarted"]
UNASSIGNED_PENDING = {"status": str(RunStatus.PENDING), "trainer_id": None}
QUEUED_RUN_FIELDS = {"project": 1, "created_at": 1, "spec.priority": 1, "spec.accelerator": 1, "pending_reason": 1,
                     "attempt": 1, "sweep.id": 1, "sweep.max_concurrent": 1, "trace_context": 1}


# Writes off the placement path (a run's accepted/started/completed moves, outbox pulls, the
# trainers' last_seen, pending reasons) in flight at once. The local server stores a collection's
# writes one after another, ~10 ms each under load: 16 handlers per consumer, all writing, queued
# a claim behind dozens of them (0.1-0.5 s). This many keep the server as busy (it serialises them
# anyway) while a claim, a release or a queueing, which pass by, wait behind at most these.
BACKGROUND_WRITES = 2


def outbox_entry(event: Event) -> Document:
    """An event waiting for the stream's ack, as the run document keeps it until then."""
    return {"event_id": event.event_id, "at": utcnow(), "event": event.model_dump_json()}


def history_entry(status: RunStatus, message: str | None, attempt: int | None) -> Document:
    return HistoryEntry(status=status, message=message, attempt=attempt).document()


def queued_run_of(doc: Document) -> QueuedRun:
    sweep = doc.get("sweep") or {}
    return QueuedRun(
        run_id=doc["_id"],
        project=doc.get("project", "default"),
        priority=int(doc["spec"].get("priority", 0)),
        created_at=doc["created_at"],
        accelerator=AcceleratorRequest.model_validate(doc["spec"]["accelerator"]),
        pending_reason=doc.get("pending_reason"),
        attempt=int(doc.get("attempt", 0)),
        sweep_id=sweep.get("id"),
        sweep_max_concurrent=int(sweep.get("max_concurrent", 0)),
        trace_context=doc.get("trace_context"),
    )


class SchedulerStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.runs = db[RUNS]
        self.trainers = db[TRAINERS]
        self.background = asyncio.Semaphore(BACKGROUND_WRITES)
        # How many accelerators this process's claims took, by (trainer, run, attempt): the release
        # of one of them needs no read first. The stored assignment stays what the release is guarded by.
        self._claimed_counts: dict[tuple[str, str, int], int] = {}

    async def ensure_indexes(self) -> None:
        await self.runs.create_index([("status", ASCENDING), ("created_at", ASCENDING)], name="status_created")
        await self.runs.create_index(
            [("status", ASCENDING), ("spec.priority", DESCENDING), ("created_at", ASCENDING)], name="queue_order"
        )
        await self.trainers.create_index([("last_seen", ASCENDING)], name="last_seen")
        # Only runs with an unannounced change have entries: the outbox pass reads this index alone.
        await self.runs.create_index([("status_outbox.at", ASCENDING)], name="status_outbox_at")

    # -- runs --------------------------------------------------------------

    async def transition(
        self,
        run_id: str,
        target: RunStatus,
        *,
        guard: Document | None = None,
        fields: Document | None = None,
        message: str | None = None,
        inc: Document | None = None,
        announcement: Event | None = None,
        urgent: bool = False,
    ) -> bool:
        """Move a run to `target` if it may; whether it moved. An `announcement` is stored in the
        run's outbox by the same write, so a change is never stored without its event. An `urgent`
        move (one placement waits for) passes the background writes (BACKGROUND_WRITES)."""
        push: Document = {"history": history_entry(target, message, (guard or {}).get("attempt"))}
        if announcement is not None:
            push["status_outbox"] = outbox_entry(announcement)
        update: Document = {
            "$set": {"status": str(target), "updated_at": utcnow(), **(fields or {})},
            "$push": push,
        }
        if inc:
            update["$inc"] = inc
        query = {"_id": run_id, "status": {"$in": sources_of(target)}, **(guard or {})}
        # update_one, not find_one_and_update: several times cheaper on the local server.
        if urgent:
            result = await self.runs.update_one(query, update)
        else:
            async with self.background:
                result = await self.runs.update_one(query, update)
        return result.modified_count == 1

    async def announced(self, run_id: str, event_id: str) -> None:
        """The event left the outbox: the stream acknowledged it."""
        await self.runs.update_one({"_id": run_id}, {"$pull": {"status_outbox": {"event_id": event_id}}})

    async def announced_many(self, events: list[tuple[str, str]]) -> None:
        """These (run, event) pairs left the outbox, in one multi-document update: the database
        commits it as one transaction (one fsync), where an update per event cost one each."""
        if not events:
            return
        async with self.background:
            await self.runs.update_many(
                {"_id": {"$in": sorted({run_id for run_id, _ in events})}},
                {"$pull": {"status_outbox": {"event_id": {"$in": [event_id for _, event_id in events]}}}},
            )

    async def unannounced(self, stored_before: datetime) -> list[tuple[str, list[Document]]]:
        """Runs with outbox entries stored before `stored_before`, each with its entries in the
        order they were stored (the order of the run's changes)."""
        cursor = self.runs.find({"status_outbox.at": {"$lt": stored_before}}, {"status_outbox": 1})
        return [(doc["_id"], list(doc.get("status_outbox") or [])) async for doc in cursor]

    async def run(self, run_id: str) -> RunDocument | None:
        doc = await self.runs.find_one({"_id": run_id})
        return RunDocument.model_validate(doc) if doc is not None else None

    async def runs_by_id(self, run_ids: list[str]) -> dict[str, Document]:
        fields = {"trainer_id": 1, "attempt": 1, "status": 1}
        return {doc["_id"]: doc async for doc in self.runs.find({"_id": {"$in": run_ids}}, fields)}

    async def record_kill_request(self, run_id: str, requested_at: datetime) -> None:
        await self.runs.update_one({"_id": run_id}, {"$max": {"kill_requested_at": requested_at}})

    async def rerun_before(self, moment: datetime) -> list[str]:
        cursor = self.runs.find({"status": str(RunStatus.RERUN), "updated_at": {"$lt": moment}}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def created_before(self, moment: datetime) -> list[str]:
        cursor = self.runs.find({"status": str(RunStatus.CREATED), "created_at": {"$lt": moment}}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def queued_runs(self) -> list[QueuedRun]:
        return [queued_run_of(doc) async for doc in self.runs.find(UNASSIGNED_PENDING, QUEUED_RUN_FIELDS)]

    async def queued_run(self, run_id: str) -> QueuedRun | None:
        """The run as the queue index holds it, if it waits for a trainer."""
        doc = await self.runs.find_one({**UNASSIGNED_PENDING, "_id": run_id}, QUEUED_RUN_FIELDS)
        return queued_run_of(doc) if doc is not None else None

    async def active_runs_per_project(self) -> dict[str, int]:
        pipeline: list[Document] = [
            {"$match": {"status": {"$in": [str(RunStatus.PENDING), str(RunStatus.IN_PROGRESS)]},
                        "trainer_id": {"$ne": None}}},
            {"$group": {"_id": "$project", "n": {"$sum": 1}}},
        ]
        return {doc["_id"]: int(doc["n"]) async for doc in await self.runs.aggregate(pipeline)}

    async def active_trials_per_sweep(self) -> dict[str, int]:
        pipeline: list[Document] = [
            {"$match": {"status": {"$in": [str(RunStatus.PENDING), str(RunStatus.IN_PROGRESS)]},
                        "trainer_id": {"$ne": None}, "sweep.id": {"$exists": True}}},
            {"$group": {"_id": "$sweep.id", "n": {"$sum": 1}}},
        ]
        return {doc["_id"]: int(doc["n"]) async for doc in await self.runs.aggregate(pipeline)}

    async def set_pending_reasons(self, reasons: dict[str, str]) -> None:
        """Store why each run still waits, in one bulk write (only runs still waiting take it)."""
        if not reasons:
            return
        now = utcnow()
        async with self.background:
            await self.runs.bulk_write(
                [UpdateOne({**UNASSIGNED_PENDING, "_id": run_id, "pending_reason": {"$ne": reason}},
                           {"$set": {"pending_reason": reason, "updated_at": now}})
                 for run_id, reason in reasons.items()],
                ordered=False,
            )

    async def claim_run(self, run_id: str, attempt: int, trainer_id: str) -> bool:
        """Give attempt `attempt` of a queued run to a trainer; False if another replica did."""
        now = utcnow()
        result = await self.runs.update_one(
            {**UNASSIGNED_PENDING, "_id": run_id, "attempt": attempt - 1},
            {"$set": {"trainer_id": trainer_id, "attempt": attempt, "assigned_at": now, "accepted_at": None,
                      "trainer_instance": None, "updated_at": now,
                      "pending_reason": f"assigned to trainer {trainer_id}; waiting for it to accept"}},
        )
        return result.modified_count == 1

    async def assignment_of(self, run_id: str) -> Document | None:
        return await self.runs.find_one({"_id": run_id}, {"spec": 1, "dataset": 1, "base_model": 1, "attempt": 1,
                                                          "queued_at": 1, "created_at": 1, "checkpoint": 1,
                                                          "sweep.rung_epochs": 1})

    async def unclaim_run(self, run_id: str, trainer_id: str, reason: str) -> None:
        """Undo a claim whose assignment was never sent (the attempt number stays used)."""
        await self.runs.update_one(
            {"_id": run_id, "status": str(RunStatus.PENDING), "trainer_id": trainer_id},
            {"$set": {"trainer_id": None, "pending_reason": reason, "updated_at": utcnow()}},
        )

    async def check_report_holder(self, run_id: str, attempt: int, trainer_id: str, epoch: int) -> None:
        """Raise Refused (the report is dead-lettered) unless `trainer_id` holds the run's current
        attempt and `epoch` is one of the run's epochs."""
        run = await self.runs.find_one({"_id": run_id}, REPORT_HOLDER_FIELDS)
        refusal = report_refusal(run, run_id, attempt, trainer_id, [epoch])
        if refusal:
            raise Refused(refusal)

    async def record_checkpoint(self, event: CheckpointSaved) -> bool:
        """Record the newest stored checkpoint of the run's current attempt (the next attempt
        resumes from it); a superseded attempt's, or an older epoch's, changes nothing."""
        stored = event.checkpoint
        current = {"_id": event.run_id, "attempt": event.attempt, "trainer_id": event.trainer_id,
                   "status": {"$in": [str(RunStatus.PENDING), str(RunStatus.IN_PROGRESS)]}}
        # One guard at a time, the common one first (this attempt's earlier epoch), not one `$or`:
        # the local server answers a filter with an `$or` by reading the whole collection, even
        # with `_id` beside it (780 ms an update at 40,000 runs, against 1.5 ms).
        for newer_than_stored in ({"checkpoint.attempt": event.attempt, "checkpoint.epoch": {"$lt": stored.epoch}},
                                  {"checkpoint": None}, {"checkpoint.attempt": {"$lt": event.attempt}}):
            result = await self.runs.update_one({**current, **newer_than_stored},
                                                {"$set": {"checkpoint": stored.model_dump()}})
            if result.modified_count == 1:
                return True
        return False

    async def mark_accepted(self, run_id: str, attempt: int, trainer_id: str, instance: str) -> bool:
        async with self.background:
            result = await self.runs.update_one(
                {"_id": run_id, "attempt": attempt, "trainer_id": trainer_id, "accepted_at": None},
                # The accepting process: if the trainer comes back as another, this attempt is gone.
                {"$set": {"accepted_at": utcnow(), "trainer_instance": instance or None,
                          "pending_reason": f"accepted by trainer {trainer_id}; starting"}},
            )
        return result.modified_count == 1

    async def unaccepted_assignments(self, assigned_before: datetime) -> list[RunDocument]:
        query = {"status": str(RunStatus.PENDING), "trainer_id": {"$ne": None}, "accepted_at": None,
                 "assigned_at": {"$lt": assigned_before}}
        return [RunDocument.model_validate(doc) for doc in await self.runs.find(query).to_list()]

    async def runs_on_trainer(self, trainer_id: str) -> list[RunDocument]:
        query = {"trainer_id": trainer_id,
                 "status": {"$in": [str(RunStatus.PENDING), str(RunStatus.IN_PROGRESS)]}}
        return [RunDocument.model_validate(doc) for doc in await self.runs.find(query).to_list()]

    async def runs_started_before(self, moment: datetime) -> AsyncIterator[RunDocument]:
        async for doc in self.runs.find({"status": str(RunStatus.IN_PROGRESS), "started_at": {"$lt": moment}}):
            yield RunDocument.model_validate(doc)

    # -- trainers ----------------------------------------------------------

    async def record_heartbeat(self, beat: TrainerHeartbeat, now: datetime) -> HeartbeatNews:
        """Record a heartbeat; say whether the trainer is new or back from being presumed lost
        ("joined"), is the same process as before ("known"), or restarted as a new process."""
        capacity = beat.accelerators[0].count if beat.accelerators else 0
        fields = {
            "host": beat.host,
            "accelerators": [a.model_dump() for a in beat.accelerators],
            "accelerator_name": beat.accelerators[0].name if beat.accelerators else "CPU",
            "capacity": capacity,
            "reported_running": [r.model_dump() for r in beat.running],
            "version": beat.version,
            "draining": beat.draining,
            "instance": beat.instance,
            "last_seen": now,
        }
        # The common case, one cheap write: a known trainer process that was not lost.
        known = await self.trainers.update_one({"_id": beat.trainer_id, "lost": False, "instance": beat.instance},
                                               {"$set": fields})
        if known.matched_count:
            return "known"
        restarted = await self.trainers.update_one({"_id": beat.trainer_id, "lost": False}, {"$set": fields})
        if restarted.matched_count:
            return "restarted"
        # New, or back from being presumed lost: a clean slate. Its old runs moved
        # on (and it is told to stop them when it reports them).
        self._forget_claims_on(beat.trainer_id)
        await self.trainers.update_one(
            {"_id": beat.trainer_id},
            {"$set": {**fields, "lost": False, "assignments": {}, "free": capacity},
             "$setOnInsert": {"first_seen": now}},
            upsert=True,
        )
        return "joined"

    async def trainer_docs(self) -> list[Document]:
        """Every registered trainer, lost ones too (liveness decides which are online)."""
        fields = {"accelerator_name": 1, "capacity": 1, "free": 1, "draining": 1, "lost": 1, "last_seen": 1}
        return await self.trainers.find({}, fields).sort("_id", ASCENDING).to_list()

    async def touch_trainers(self, beats: list[tuple[str, str, datetime, list[Document]]]) -> None:
        """Store when each (trainer, process) was last heard from and what it runs, in one bulk write;
        a trainer meanwhile presumed lost or restarted is left alone."""
        if not beats:
            return
        async with self.background:
            await self.trainers.bulk_write(
                [UpdateOne({"_id": trainer_id, "lost": False, "instance": instance},
                           {"$max": {"last_seen": at}, "$set": {"reported_running": running}})
                 for trainer_id, instance, at, running in beats],
                ordered=False,
            )

    async def trainer(self, trainer_id: str) -> Document | None:
        return await self.trainers.find_one({"_id": trainer_id})

    async def mark_trainer_lost(self, trainer_id: str, last_seen: datetime) -> bool:
        """Mark a silent trainer lost and forget its assignments (their runs move on)."""
        result = await self.trainers.update_one(
            {"_id": trainer_id, "last_seen": last_seen, "lost": {"$ne": True}},
            {"$set": {"lost": True, "assignments": {}, "free": 0}},
        )
        if result.modified_count == 1:
            self._forget_claims_on(trainer_id)
            return True
        return False

    def _forget_claims_on(self, trainer_id: str) -> None:
        """The trainer's stored assignments were wiped: nothing of it is released any more."""
        for key in [key for key in self._claimed_counts if key[0] == trainer_id]:
            del self._claimed_counts[key]

    async def claim_trainer(self, trainer_id: str, run_id: str, attempt: int, count: int) -> bool:
        """Take `count` accelerators of a trainer for attempt `attempt` of a run, if still free."""
        now = utcnow()
        result = await self.trainers.update_one(
            {"_id": trainer_id, "free": {"$gte": count}, "draining": {"$ne": True}, "lost": {"$ne": True},
             f"assignments.{run_id}": {"$exists": False}},
            {"$inc": {"free": -count},
             "$set": {f"assignments.{run_id}": {"count": count, "attempt": attempt, "assigned_at": now}}},
        )
        if result.modified_count == 1:
            self._claimed_counts[(trainer_id, run_id, attempt)] = count
            return True
        return False

    async def release_trainer(self, trainer_id: str, run_id: str, attempt: int) -> bool:
        """Give back the accelerators attempt `attempt` of a run holds; False if it holds none (they
        were given back already, or the trainer now holds them for another attempt of the run: a
        late completion or release of an older attempt frees nothing of the current one)."""
        held = assignment_of_attempt(run_id, attempt)
        count = self._claimed_counts.pop((trainer_id, run_id, attempt), None)
        if count is None:
            # Claimed by another process (a replica, this one before a restart): read how many.
            doc = await self.trainers.find_one({"_id": trainer_id, **held}, {f"assignments.{run_id}": 1})
            if doc is None:
                return False
            count = int(doc["assignments"][run_id]["count"])
        result = await self.trainers.update_one(
            {"_id": trainer_id, **held, "lost": {"$ne": True}},
            {"$unset": {f"assignments.{run_id}": ""}, "$inc": {"free": count}},
        )
        return result.modified_count == 1


def assignment_of_attempt(run_id: str, attempt: int) -> Document:
    """The filter matching a trainer that holds accelerators for this attempt of the run. An
    assignment stored before assignments named their attempt matches any: the attempt it was for
    can no longer be told, and leaving it unreleased would leak the trainer's capacity for good."""
    field = f"assignments.{run_id}"
    return {field: {"$exists": True},
            "$or": [{f"{field}.attempt": attempt}, {f"{field}.attempt": {"$exists": False}}]}
