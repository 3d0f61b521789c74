"""The metrics service's collections: epoch logs and confusion matrices, one per (run, epoch)."""

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.metrics.telemetry import traced_ingest
from shared.events import EpochLogged
from shared.store import CONFUSION_MATRICES, EPOCHS, RUNS, Document


class MetricsStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.epochs = db[EPOCHS]
        self.confusion_matrices = db[CONFUSION_MATRICES]
        self.runs = db[RUNS]

    async def is_superseded(self, run_id: str, attempt: int) -> bool:
        """True when the run has moved on to a newer attempt: the attempt number is a fencing
        token, and a trainer presumed lost that comes back must not overwrite its successor."""
        run = await self.runs.find_one({"_id": run_id}, {"attempt": 1})
        return run is not None and int(run.get("attempt", 0)) > attempt

    async def ensure_indexes(self) -> None:
        key = [("run_id", ASCENDING), ("epoch", ASCENDING)]
        await self.epochs.create_index(key, unique=True, name="run_epoch_unique")
        await self.confusion_matrices.create_index(key, unique=True, name="run_epoch_unique")

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
            "logged_at": event.occurred_at,
            "event_id": event.event_id,
        }
        inserted = await self._insert_once(self.epochs, key, epoch_doc)
        if event.confusion_matrix is not None:
            matrix_doc = {**key, **event.confusion_matrix.model_dump(), "attempt": event.attempt,
                          "logged_at": event.occurred_at}
            await self._insert_once(self.confusion_matrices, key, matrix_doc)
        return inserted

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
