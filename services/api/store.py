"""The gateway's collections: it writes datasets and new runs, and reads the rest."""

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from shared.store import CONFUSION_MATRICES, DATASETS, EPOCHS, RUNS, TRAINERS, Document


class ApiStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.runs = db[RUNS]
        self.datasets = db[DATASETS]
        self.epochs = db[EPOCHS]
        self.confusion_matrices = db[CONFUSION_MATRICES]
        self.trainers = db[TRAINERS]

    async def ensure_indexes(self) -> None:
        await self.runs.create_index([("created_at", DESCENDING), ("_id", DESCENDING)], name="created_desc")
        await self.datasets.create_index([("created_at", DESCENDING)], name="created_desc")

    async def insert_dataset(self, doc: Document) -> None:
        await self.datasets.insert_one(doc)

    async def dataset(self, dataset_id: str) -> Document | None:
        return await self.datasets.find_one({"_id": dataset_id})

    async def list_datasets(self, limit: int) -> list[Document]:
        return await self.datasets.find().sort("created_at", DESCENDING).limit(limit).to_list()

    async def insert_run(self, doc: Document) -> None:
        await self.runs.insert_one(doc)

    async def run(self, run_id: str) -> Document | None:
        return await self.runs.find_one({"_id": run_id})

    async def list_runs(self, status: str | None, limit: int) -> list[Document]:
        query: dict[str, Any] = {"status": status} if status else {}
        newest_first = [("created_at", DESCENDING), ("_id", DESCENDING)]
        return await self.runs.find(query).sort(newest_first).limit(limit).to_list()

    async def epochs_of(self, run_id: str) -> list[Document]:
        return await self.epochs.find({"run_id": run_id}, {"_id": 0}).sort("epoch", ASCENDING).to_list()

    async def latest_epoch(self, run_id: str) -> Document | None:
        return await self.epochs.find_one({"run_id": run_id}, {"_id": 0}, sort=[("epoch", DESCENDING)])

    async def confusion_matrix(self, run_id: str, epoch: int | None) -> Document | None:
        query: dict[str, Any] = {"run_id": run_id}
        if epoch is not None:
            query["epoch"] = epoch
        return await self.confusion_matrices.find_one(query, {"_id": 0}, sort=[("epoch", DESCENDING)])

    async def queue_position(self, run: Document) -> int:
        """1 + the queued runs asking for the same accelerators that go before this one (aging aside)."""
        priority = int(run["spec"].get("priority", 0))
        ahead = await self.runs.count_documents({
            "status": "pending", "trainer_id": None, "_id": {"$ne": run["_id"]},
            "spec.accelerator.name": run["spec"]["accelerator"]["name"],
            "spec.accelerator.count": run["spec"]["accelerator"]["count"],
            "$or": [{"spec.priority": {"$gt": priority}},
                    {"spec.priority": priority, "created_at": {"$lt": run["created_at"]}}],
        })
        return ahead + 1

    async def list_trainers(self) -> list[Document]:
        return await self.trainers.find().sort("_id", ASCENDING).to_list()

    async def runs_on_trainers(self) -> list[Document]:
        query = {"status": {"$in": ["pending", "in_progress"]}, "trainer_id": {"$ne": None}}
        return await self.runs.find(query, {"_id": 1, "trainer_id": 1, "status": 1, "attempt": 1}).to_list()
