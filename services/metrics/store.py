"""The metrics service's collections: epoch logs and confusion matrices, one per (run, epoch)."""

import logging
from collections.abc import Iterable
from typing import Any, Literal

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.metrics.telemetry import traced_ingest
from shared.bus import Refused
from shared.events import EpochLogged, IterationsLogged, ModelRegistered, RunRemoved, utcnow
from shared.status import TERMINAL_STATUSES
from shared.store import (
    CONFUSION_MATRICES,
    EPOCHS,
    ITERATIONS,
    LATEST_EPOCHS,
    MODELS,
    REMOVED_RUNS,
    REPORT_HOLDER_FIELDS,
    RUNS,
    Document,
    report_refusal,
)

log = logging.getLogger(__name__)

# What a run.removed finds: the run's document is gone (remove its data now), still there as
# a finished run (the api has not deleted it yet: wait), or active again (the removal lost a
# race with a rerun and was refused: keep everything).
RemovalState = Literal["removed", "not_yet", "refused"]

# A run's latest epoch is its highest epoch number, logged by the newest attempt where two
# attempts logged it (a resumed attempt trains some epochs again). One number orders both, so
# a single upsert guarded by `rank < new rank` keeps the newest whatever order events arrive in
# (an `$or` of two conditions would make the local server scan the collection on every write).
RANK_ATTEMPTS = 1_000_000
# The marker of the one-off fill of `latest_epochs` from epochs stored before it existed; not a
# run id (those are 32 hex digits), so no listing's `_id: {$in: run ids}` ever reads it.
LATEST_BACKFILL_MARKER = "migration:backfilled"
# The same for `best`, added to `latest_epochs` later (runs stored before get theirs once).
BEST_BACKFILL_MARKER = "migration:best-backfilled"
# What a run's `best` in `latest_epochs` is of: the runs table's Best mAP column.
BEST_METRIC = "bbox_mAP"
# Conditional writes of one run's best tried before leaving it to the next epoch (each lost one
# means another store changed it in between).
BEST_WRITE_TRIES = 5
LATEST_FIELDS = ("epoch", "attempt", "total_epochs", "metrics", "logged_at")


def latest_rank(epoch: int, attempt: int) -> int:
    return epoch * RANK_ATTEMPTS + attempt


class MetricsStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.epochs = db[EPOCHS]
        self.confusion_matrices = db[CONFUSION_MATRICES]
        self.runs = db[RUNS]
        self.models = db[MODELS]
        self.iterations = db[ITERATIONS]
        self.removed_runs = db[REMOVED_RUNS]
        self.latest_epochs = db[LATEST_EPOCHS]

    async def report_standing(self, run_id: str, attempt: int, trainer_id: str,
                              epochs: Iterable[int]) -> Literal["current", "removed"]:
        """Whether a trainer's report of a run may be stored; raises Refused (the report is
        dead-lettered) unless `trainer_id` holds the run's current attempt and every epoch is
        one of the run's.

        The attempt number is a fencing token: a trainer presumed lost that comes back must
        not overwrite its successor, and no trainer may report for a run it was never given.
        A removed run's trainer may still report an epoch while it stops: "removed" (its
        tombstone) says to drop that quietly.
        """
        run = await self.runs.find_one({"_id": run_id}, REPORT_HOLDER_FIELDS)
        if run is None and await self.removed_runs.find_one({"_id": run_id}, {"_id": 1}) is not None:
            return "removed"
        refusal = report_refusal(run, run_id, attempt, trainer_id, epochs)
        if refusal:
            raise Refused(refusal)
        return "current"

    async def removal_state(self, run_id: str) -> RemovalState:
        run = await self.runs.find_one({"_id": run_id}, {"status": 1})
        if run is None:
            return "removed"
        return "not_yet" if run.get("status") in TERMINAL_STATUSES else "refused"

    async def remove_run_data(self, event: RunRemoved) -> dict[str, int]:
        """Delete a removed run's epochs, iterations and confusion matrices (idempotent); how many of each.

        The tombstone goes first, so an epoch arriving while this runs is dropped rather than kept.
        """
        await self.removed_runs.update_one(
            {"_id": event.run_id},
            {"$setOnInsert": {"project": event.project, "removed_at": event.occurred_at,
                              "requested_by": event.requested_by}},
            upsert=True,
        )
        deleted = {}
        for name, collection in (("epochs", self.epochs), ("iterations", self.iterations),
                                 ("confusion_matrices", self.confusion_matrices)):
            deleted[name] = (await collection.delete_many({"run_id": event.run_id})).deleted_count
        deleted["latest_epochs"] = (await self.latest_epochs.delete_one({"_id": event.run_id})).deleted_count
        return deleted

    async def ensure_indexes(self) -> None:
        key = [("run_id", ASCENDING), ("epoch", ASCENDING)]
        await self.epochs.create_index(key, unique=True, name="run_epoch_unique")
        await self.confusion_matrices.create_index(key, unique=True, name="run_epoch_unique")
        await self.models.create_index([("run_id", ASCENDING)], unique=True, name="one_model_per_run")
        await self.iterations.create_index([("run_id", ASCENDING), ("step", ASCENDING)], unique=True,
                                           name="run_step_unique")
        await self.models.create_index([("published", ASCENDING), ("created_at", ASCENDING)], name="published")

    async def backfill_latest_epochs(self) -> int:
        """Runs whose epochs were stored before `latest_epochs` existed get theirs, once (a marker
        says it was done); how many epochs were read. Safe beside live ingest: the rank guard
        keeps whichever is newer."""
        if await self.latest_epochs.find_one({"_id": LATEST_BACKFILL_MARKER}, {"_id": 1}) is not None:
            return 0
        newest: dict[str, Document] = {}
        read = 0
        fields = {"_id": 0, "run_id": 1, **dict.fromkeys(LATEST_FIELDS, 1)}
        async for doc in self.epochs.find({}, fields):
            read += 1
            held = newest.get(doc["run_id"])
            if held is None or _rank_of(doc) > _rank_of(held):
                newest[doc["run_id"]] = doc
        for run_id, doc in newest.items():
            await self.raise_latest_epoch(run_id, {name: doc.get(name) for name in LATEST_FIELDS})
        await self.latest_epochs.update_one({"_id": LATEST_BACKFILL_MARKER},
                                            {"$setOnInsert": {"done_at": utcnow(), "epochs_read": read}},
                                            upsert=True)
        return read

    async def raise_latest_epoch(self, run_id: str, summary: Document) -> bool:
        """Make `summary` (epoch, attempt, metrics, ...) the run's latest epoch unless a later one
        (higher epoch, or the same epoch from a newer attempt) is stored; True when it was."""
        rank = latest_rank(int(summary["epoch"]), int(summary.get("attempt") or 0))
        try:
            result = await self.latest_epochs.update_one(
                {"_id": run_id, "rank": {"$lt": rank}}, {"$set": {**summary, "rank": rank}}, upsert=True)
        except DuplicateKeyError:
            return False  # as late as this, or later, is stored already
        return result.upserted_id is not None or result.modified_count == 1

    @traced_ingest
    async def record_epoch(self, event: EpochLogged) -> bool:
        """Store an epoch once; True when it was stored.

        A redelivery changes nothing. An epoch a later attempt logs again (it
        resumed from an earlier checkpoint) replaces the earlier attempt's.
        """
        key = {"run_id": event.run_id, "epoch": event.epoch}
        epoch_doc: dict[str, Any] = {
            **key,
            "attempt": event.attempt,
            "total_epochs": event.total_epochs,
            "loss": event.loss,
            "losses": event.losses,
            "learning_rate": event.learning_rate,
            "epoch_time_s": event.epoch_time_s,
            "metrics": event.metrics,
            # Names in the artifact store; the api serves the PNGs from there.
            "previews": [preview.model_dump() for preview in event.previews],
            "preview_score_threshold": event.preview_score_threshold,
            "predictions": event.predictions,
            "logged_at": event.occurred_at,
            "event_id": event.event_id,
        }
        stored = await self._store_once(self.epochs, key, epoch_doc)
        inserted = stored is not None
        # Also when the epoch was stored already: a redelivery after a crash between the two
        # writes completes the second; otherwise the guard makes it a no-op.
        await self.raise_latest_epoch(event.run_id, {name: epoch_doc[name] for name in LATEST_FIELDS})
        if stored == "new":
            await self.keep_best_epoch(event.run_id, offered=epoch_doc)
        else:
            # It replaced an earlier attempt's epoch, which may have been the best, or it is a
            # redelivery whose values may be stale: only the stored epochs can tell.
            await self.keep_best_epoch(event.run_id)
        if event.confusion_matrix is not None:
            matrix_doc = {**key, **event.confusion_matrix.model_dump(), "attempt": event.attempt,
                          "logged_at": event.occurred_at}
            await self._insert_once(self.confusion_matrices, key, matrix_doc)
        return inserted

    async def record_iterations(self, event: IterationsLogged) -> int:
        """Store each step once (unique (run_id, step)); returns how many were new or replaced.

        As with epochs, a step a later attempt logs again (it resumed from an
        earlier checkpoint and re-trained it) replaces the earlier attempt's.
        """
        stored = 0
        for log in event.steps:
            key = {"run_id": event.run_id, "step": log.step}
            doc = {**key, "attempt": event.attempt, "epoch": log.epoch, "loss": log.loss, "losses": log.losses,
                   "learning_rate": log.learning_rate, "logged_at": event.occurred_at}
            stored += await self._insert_once(self.iterations, key, doc)
        return stored

    @classmethod
    async def _insert_once(cls, collection: Any, key: Document, doc: Document) -> bool:
        return await cls._store_once(collection, key, doc) is not None

    @staticmethod
    async def _store_once(collection: Any, key: Document, doc: Document) -> Literal["new", "replaced"] | None:
        """Store `doc` under `key` unless this attempt or a newer one stored it: whether it was new,
        replaced an earlier attempt's, or was not stored."""
        try:
            result = await collection.update_one(
                {**key, "attempt": {"$lt": doc["attempt"]}}, {"$set": doc}, upsert=True
            )
        except DuplicateKeyError:
            # This epoch is stored already, from this attempt or a newer one.
            return None
        if result.upserted_id is not None:
            return "new"
        return "replaced" if result.modified_count == 1 else None

    async def keep_best_epoch(self, run_id: str, offered: Document | None = None) -> bool:
        """Keep the run's best bbox_mAP and its epoch (the highest; the earliest among equals; never
        an undefined value) in its `latest_epochs` document, so a page of runs shows it with the one
        query it already makes; True when this call changed it.

        `offered`, a newly stored epoch, is compared with the best kept: one read, and one write
        when it wins. Without one (an epoch that replaced an earlier attempt's, which may have been
        the best, so the best can go down; a redelivery; a document from before `best`) it is
        recomputed from the stored epochs, which reads them all.

        Stores of one run may run side by side (metrics replicas share the consumer): every write
        of `best` is conditional on the `best_version` it read and increments it, so a write
        computed from a best changed meanwhile is refused and done again from the new one."""
        for _ in range(BEST_WRITE_TRIES):
            kept = await self.latest_epochs.find_one({"_id": run_id}, {"best": 1, "best_version": 1})
            if kept is None:
                return False  # no latest epoch: the run was removed meanwhile
            if offered is not None and "best_version" in kept:
                best = _better_best(kept.get("best"), offered)
                if best is None:
                    return False
            else:
                found = await self.best_epoch(run_id, BEST_METRIC)
                best = None if found is None else _best_of(found)
                if "best_version" in kept and best == kept.get("best"):
                    return False
            changed = await self.latest_epochs.update_one(
                {"_id": run_id, "best_version": kept.get("best_version")},
                {"$set": {"best": best}, "$inc": {"best_version": 1}})
            if changed.modified_count == 1:
                return True
        log.warning("run %s: its best epoch kept changing while being stored; the next epoch stores it", run_id)
        return False

    async def backfill_best_epochs(self) -> int:
        """Runs whose latest epoch was stored before it held a best get one, once (a marker says it
        was done); how many."""
        if await self.latest_epochs.find_one({"_id": BEST_BACKFILL_MARKER}, {"_id": 1}) is not None:
            return 0
        missing = [doc["_id"] for doc in await self.latest_epochs.find(
            {"best_version": {"$exists": False}, "rank": {"$exists": True}}, {"_id": 1}).to_list()]
        for run_id in missing:
            await self.keep_best_epoch(run_id)
        await self.latest_epochs.update_one({"_id": BEST_BACKFILL_MARKER},
                                            {"$setOnInsert": {"done_at": utcnow(), "runs": len(missing)}},
                                            upsert=True)
        return len(missing)

    async def epochs_stored(self, run_id: str) -> int:
        return await self.epochs.count_documents({"run_id": run_id})

    async def best_epoch(self, run_id: str, metric: str = "bbox_mAP") -> Document | None:
        """The epoch with the highest `metric` (the earliest among equals); an epoch where it is
        undefined (null) or missing never wins. Chosen here, not by a sort: null sorts below every
        number, so a run with no defined value would name a null epoch best."""
        best: Document | None = None
        async for doc in self.epochs.find({"run_id": run_id}, {"_id": 0, "predictions": 0, "previews": 0}).sort(
                "epoch", ASCENDING):
            value = doc.get("metrics", {}).get(metric)
            if isinstance(value, int | float) and (best is None or value > best["metrics"][metric]):
                best = doc
        return best

    async def register_model(self, event: ModelRegistered) -> bool:
        """Record a trained model once per run, with its best epoch; True when new."""
        run = await self.runs.find_one({"_id": event.run_id}, {"project": 1, "name": 1, "spec": 1})
        best = await self.best_epoch(event.run_id)
        doc: Document = {
            "_id": event.model_id,
            "run_id": event.run_id,
            "run_name": (run or {}).get("name"),
            "project": (run or {}).get("project", "default"),
            "attempt": event.attempt,
            "architecture": event.architecture,
            "classes": event.classes,
            "checkpoint": event.checkpoint,
            "epochs": event.epochs_completed,
            "best_epoch": best["epoch"] if best else None,
            "best_metrics": best["metrics"] if best else {},
            "base_model_id": event.base_model_id,
            "published": False,
            "created_at": utcnow(),
        }
        try:
            await self.models.insert_one(doc)
        except DuplicateKeyError:
            return False  # a redelivery: the run's model is recorded already
        return True


def _rank_of(epoch: Document) -> int:
    return latest_rank(int(epoch["epoch"]), int(epoch.get("attempt") or 0))


def _best_of(epoch: Document) -> Document:
    return {"metric": BEST_METRIC, "value": epoch["metrics"][BEST_METRIC], "epoch": epoch["epoch"],
            "attempt": epoch.get("attempt")}


def _better_best(kept: Document | None, offered: Document) -> Document | None:
    """The offered epoch as the new best if it beats the kept one (higher, or as high and earlier);
    None if it does not, or if its value is undefined."""
    value = offered.get("metrics", {}).get(BEST_METRIC)
    if not isinstance(value, int | float):
        return None
    if kept is not None and (value < kept["value"] or (value == kept["value"] and offered["epoch"] >= kept["epoch"])):
        return None
    return _best_of(offered)
