"""The metrics service's collections: epoch logs and confusion matrices, one per (run, epoch)."""

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.events import EpochLogged
from shared.store import CONFUSION_MATRICES, EPOCHS, Document


class MetricsStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.epochs = db[EPOCHS]
        self.confusion_matrices = db[CONFUSION_MATRICES]

    async def ensure_indexes(self) -> None:
        key = [("run_id", ASCENDING), ("epoch", ASCENDING)]
        await self.epochs.create_index(key, unique=True, name="run_epoch_unique")
        await self.confusion_matrices.create_index(key, unique=True, name="run_epoch_unique")

    async def record_epoch(self, event: EpochLogged) -> bool:
        """Store an epoch once; True when it was new. A redelivery changes nothing."""
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
            matrix_doc = {**key, **event.confusion_matrix.model_dump(), "logged_at": event.occurred_at}
            await self._insert_once(self.confusion_matrices, key, matrix_doc)
        return inserted

    @staticmethod
    async def _insert_once(collection: Any, key: Document, doc: Document) -> bool:
        try:
            result = await collection.update_one(key, {"$setOnInsert": doc}, upsert=True)
        except DuplicateKeyError:
            # Two deliveries raced on the unique index: the other one stored it.
            return False
        return result.upserted_id is not None
