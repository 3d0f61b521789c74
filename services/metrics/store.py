"""The metrics service's collections: epoch logs and confusion matrices, one per (run, epoch)."""

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
        inserted = await self._insert_once(self.epochs, key, epoch_doc)
        # Also when the epoch was stored already: a redelivery after a crash between the two
        # writes completes the second; otherwise the guard makes it a no-op.
        await self.raise_latest_epoch(event.run_id, {name: epoch_doc[name] for name in LATEST_FIELDS})
        await self.refresh_best_epoch(event.run_id)
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

    @staticmethod
    async def _insert_once(collection: Any, key: Document, doc: Document) -> bool:
        try:
            result = await collection.update_one(
                {**key, "attempt": {"$lt": doc["attempt"]}}, {"$set": doc}, upsert=True
            )
        except DuplicateKeyError:
            # This epoch is stored already, from this attempt or a newer one.
            return False
        return result.upserted_id is not None or result.modified_count == 1

    async def refresh_best_epoch(self, run_id: str) -> bool:
        """Keep the run's best bbox_mAP and its epoch, over the epochs stored now, in its
        `latest_epochs` document, so a page of runs shows it with the one query it already makes;
        True when this call wrote it. Recomputed from the stored epochs rather than raised with
        `$max`: an epoch a resumed attempt logs again replaces the earlier attempt's, and its
        value may be lower.

        Stores may run side by side (metrics replicas share the consumer). Each one counts itself
        on the document (`epochs_counted`), then reads the count and the epochs: every epoch
        counted up to that number is stored already, and a best is written only over one
        computed from a lower count, so they settle on the newest, whatever order they end in."""
        counted = await self.latest_epochs.update_one(
            {"_id": run_id}, {"$inc": {"epochs_counted": 1, "best_basis": 0}})  # $inc 0 creates it at 0
        if counted.matched_count == 0:
            return False  # no latest epoch: the run was removed meanwhile
        doc = await self.latest_epochs.find_one({"_id": run_id}, {"epochs_counted": 1})
        if doc is None:
            return False
        basis = int(doc["epochs_counted"])
        best = await self.best_epoch(run_id, BEST_METRIC)
        value = None if best is None else {"metric": BEST_METRIC, "value": best["metrics"][BEST_METRIC],
                                           "epoch": best["epoch"], "attempt": best.get("attempt")}
        result = await self.latest_epochs.update_one({"_id": run_id, "best_basis": {"$lt": basis}},
                                                     {"$set": {"best": value, "best_basis": basis}})
        return result.modified_count == 1

    async def backfill_best_epochs(self) -> int:
        """Runs whose latest epoch was stored before it held a best get one, once (a marker says it
        was done); how many."""
        if await self.latest_epochs.find_one({"_id": BEST_BACKFILL_MARKER}, {"_id": 1}) is not None:
            return 0
        missing = [doc["_id"] for doc in await self.latest_epochs.find(
            {"best_basis": {"$exists": False}, "rank": {"$exists": True}}, {"_id": 1}).to_list()]
        for run_id in missing:
            await self.refresh_best_epoch(run_id)
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
