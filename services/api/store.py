"""The gateway's collections: it writes datasets, new runs (and removes finished ones) and API keys,
and reads the rest.

Every read of a project's things filters by project, so another project's id
is indistinguishable from an id that does not exist.
"""

import time
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from services.api.pagination import ORIGIN, After, Direction, Fetch, FirstPageWindows, scan_by_created
from services.api.search import run_matcher, search_key, search_keys
from shared.events import utcnow
from shared.run_document import RunDocument, RunSummary
from shared.status import TERMINAL_STATUSES
from shared.store import (
    API_KEYS,
    CONFUSION_MATRICES,
    DATASETS,
    EPOCHS,
    ITERATIONS,
    LATEST_EPOCHS,
    MIGRATIONS,
    MODELS,
    PROJECTS,
    RUNS,
    SWEEPS,
    TRAINERS,
    Document,
)

SEARCH_KEYS_MIGRATION = "run_search_keys"
FIRST_RUN_AT_TTL_S = 60.0
# A listed run leaves at home what no list item shows: the resolved training config the trainer
# stored (tens of kB), the search keys, the dataset layout, the trace context, the checkpoint.
# What is left reads as a RunSummary.
# What a run's latest epoch shows in a list item or a run's overview.
LATEST_EPOCH_FIELDS = {"epoch": 1, "attempt": 1, "metrics": 1, "best": 1}
LISTED_RUN = {"config": 0, "search_keys": 0, "dataset": 0, "trace_context": 0, "checkpoint": 0}


class ApiStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.runs = db[RUNS]
        self.datasets = db[DATASETS]
        self.epochs = db[EPOCHS]
        self.iterations = db[ITERATIONS]
        self.latest = db[LATEST_EPOCHS]
        self.confusion_matrices = db[CONFUSION_MATRICES]
        self.api_keys = db[API_KEYS]
        self.trainers = db[TRAINERS]
        self.projects = db[PROJECTS]
        self.models = db[MODELS]
        self.migrations = db[MIGRATIONS]
        self.sweeps = db[SWEEPS]
        self.first_page_windows = FirstPageWindows()
        # Each project's first run time, read at most once a minute: it only bounds scans (a stale
        # one, later than the truth, makes the last window open-ended: slower, never short).
        self._first_run_at: dict[str, tuple[datetime, float]] = {}

    async def ensure_indexes(self) -> None:
        newest = [("created_at", DESCENDING), ("_id", DESCENDING)]
        await self.runs.create_index([("project", ASCENDING), *newest], name="project_created")
        await self.runs.create_index([("project", ASCENDING), ("status", ASCENDING), *newest],
                                     name="project_status_created")
        # Id-prefix searches: the local server only uses an index for an _id range through this one.
        await self.runs.create_index([("project", ASCENDING), ("_id", ASCENDING)], name="project_id")
        await self.runs.create_index([("project", ASCENDING), ("search_keys", ASCENDING), *newest],
                                     name="project_search_created")
        await self.add_missing_search_keys()
        await self.datasets.create_index([("project", ASCENDING), *newest], name="project_created")
        await self.sweeps.create_index([("project", ASCENDING), *newest], name="project_created")
        await self.runs.create_index([("project", ASCENDING), ("sweep.id", ASCENDING)], name="project_sweep")
        await self.api_keys.create_index([("project", ASCENDING), ("created_at", ASCENDING)], name="project_created")

    # -- keys --------------------------------------------------------------

    async def api_key(self, key_id: str) -> Document | None:
        return await self.api_keys.find_one({"_id": key_id})

    async def project_key(self, project: str, key_id: str) -> Document | None:
        return await self.api_keys.find_one({"_id": key_id, "project": project})

    async def insert_api_key(self, doc: Document) -> None:
        await self.api_keys.insert_one(doc)

    async def list_api_keys(self, project: str) -> list[Document]:
        return await self.api_keys.find({"project": project}).sort("created_at", ASCENDING).limit(1000).to_list()

    async def revoke_api_key(self, project: str, key_id: str, now: datetime) -> Document | None:
        await self.api_keys.update_one({"_id": key_id, "project": project, "revoked_at": None},
                                       {"$set": {"revoked_at": now}})
        return await self.project_key(project, key_id)

    # -- datasets ----------------------------------------------------------

    async def insert_dataset(self, doc: Document) -> None:
        await self.datasets.insert_one(doc)

    async def dataset(self, project: str, dataset_id: str) -> Document | None:
        return await self.datasets.find_one({"_id": dataset_id, "project": project})

    async def page_of_datasets(self, project: str, after: After | None, limit: int, window: timedelta,
                               now: datetime) -> tuple[list[Document], timedelta]:
        scan = await scan_by_created(self._fetcher(self.datasets, {"project": project}), direction="newest",
                                     after=after, wanted=limit, window=window, now=now)
        return scan.items, scan.window

    # -- runs --------------------------------------------------------------

    async def insert_run(self, doc: Document) -> None:
        # The project's first run time first: if the insert then fails it is merely early,
        # which costs listings a few empty windows and never hides a run.
        await self.projects.update_one({"_id": doc["project"]}, {"$min": {"first_run_at": doc["created_at"]}},
                                       upsert=True)
        await self.runs.insert_one(doc)

    async def first_run_at(self, project: str) -> datetime:
        known = self._first_run_at.get(project)
        if known is not None and time.monotonic() - known[1] < FIRST_RUN_AT_TTL_S:
            return known[0]
        stats = await self.projects.find_one({"_id": project})
        first: datetime = (stats or {}).get("first_run_at") or ORIGIN
        if first is not ORIGIN:
            self._first_run_at[project] = (first, time.monotonic())
        return first

    async def run(self, project: str, run_id: str) -> RunDocument | None:
        doc = await self.runs.find_one({"_id": run_id, "project": project})
        return RunDocument.model_validate(doc) if doc is not None else None

    async def mark_rerun_requested(self, run_id: str, at: datetime) -> None:
        await self.runs.update_one({"_id": run_id}, {"$max": {"rerun_requested_at": at}})

    async def remove_finished_run(self, project: str, run_id: str) -> bool:
        """Delete a run that has ended; False if it is not (or no longer) a finished run of the project.

        Guarded by the terminal statuses in the same atomic operation, so a rerun the
        scheduler moves at the same moment either goes first (nothing is deleted) or
        finds no run to move.
        """
        result = await self.runs.delete_one({"_id": run_id, "project": project,
                                             "status": {"$in": sorted(str(s) for s in TERMINAL_STATUSES)}})
        return result.deleted_count == 1

    async def page_of_runs(
        self, project: str, *, status: str | None, search: str | None, direction: Direction,
        after: After | None, limit: int, window: timedelta, now: datetime,
    ) -> tuple[list[Document], timedelta]:
        """Up to `limit` runs of one status (or all) strictly after `after`; the window to start the next page with."""
        query: dict[str, Any] = {"project": project}
        if status is not None:
            query["status"] = status
        origin = await self.first_run_at(project)
        if search is None:
            scan = await scan_by_created(self._fetcher(self.runs, query, LISTED_RUN), direction=direction, after=after,
                                         wanted=limit, window=window, now=now, origin=origin)
            return scan.items, scan.window
        matches = run_matcher(search)
        key = search_key(search)
        # A term without letters or digits has no key: every name in the windows is read.
        keyed = {**query, "search_keys": key} if key is not None else query

        async def matching(fragment: dict[str, Any], sort: list[tuple[str, int]], wanted: int) -> list[Document]:
            # Names and times only: a common key walks many runs, and their full documents stay home.
            light = await self.runs.find({**keyed, **fragment}, {"name": 1, "created_at": 1}).sort(sort).to_list()
            return [run for run in light if matches(run)][:wanted]

        scan = await scan_by_created(matching, direction=direction, after=after, wanted=limit, window=window,
                                     now=now, origin=origin)
        ids = [run["_id"] for run in scan.items]
        full = await self.runs_by_ids(project, ids, LISTED_RUN)
        return [full[run_id] for run_id in ids if run_id in full], scan.window

    async def runs_by_ids(self, project: str, run_ids: list[str], fields: dict[str, int]) -> dict[str, Document]:
        """The project's runs among `run_ids`, by id, with `fields` (an inclusion or an exclusion).

        By id alone, the project checked here: with `project` in the filter the local server walked
        the project's index instead of seeking the ids (200 ms, not 30, for 50 of 100,000 runs)."""
        if not run_ids:
            return {}
        included = any(fields.values())
        projection = {**fields, "project": 1} if included else fields
        found = await self.runs.find({"_id": {"$in": run_ids}}, projection).to_list()
        return {doc["_id"]: doc for doc in found if doc.get("project") == project}

    async def add_missing_search_keys(self) -> int:
        """Runs stored before search keys existed get them, once: a marker in `migrations` says
        it was done, so later start-ups do not scan every run again."""
        if await self.migrations.find_one({"_id": SEARCH_KEYS_MIGRATION}) is not None:
            return 0
        added = 0
        async for run in self.runs.find({"search_keys": {"$exists": False}}, {"name": 1}):
            await self.runs.update_one({"_id": run["_id"]},
                                       {"$set": {"search_keys": search_keys(str(run.get("name", "")), run["_id"])}})
            added += 1
        await self.migrations.update_one({"_id": SEARCH_KEYS_MIGRATION},
                                         {"$setOnInsert": {"done_at": utcnow(), "runs": added}}, upsert=True)
        return added

    async def runs_by_id_prefix(self, project: str, prefix: str, status: str | None, limit: int) -> list[Document]:
        """Runs whose id starts with `prefix` (a whole id is a prefix of itself)."""
        # Ids are lowercase hex, so every id with this prefix sorts below prefix + "g".
        query: dict[str, Any] = {"project": project, "_id": {"$gte": prefix, "$lt": prefix + "g"}}
        if status is not None:
            query["status"] = status
        return await self.runs.find(query).limit(limit).to_list()

    @staticmethod
    def _fetcher(collection: AsyncCollection[Document], query: dict[str, Any],
                 projection: dict[str, int] | None = None) -> Fetch:
        async def fetch(fragment: dict[str, Any], sort: list[tuple[str, int]], limit: int) -> list[Document]:
            return await collection.find({**query, **fragment}, projection).sort(sort).limit(limit).to_list()

        return fetch

    # -- metrics (written by the metrics service) ---------------------------

    async def epochs_of(self, run_id: str) -> list[Document]:
        return await self.epochs.find({"run_id": run_id}, {"_id": 0}).sort("epoch", ASCENDING).to_list()

    async def epochs_unsent(self, run_id: str, attempt: int, epoch: int) -> list[Document]:
        """Epochs after `epoch`, and every epoch a newer attempt than `attempt` logged (again)."""
        # Two queries, not one `$or`: the local server answers an `$or` by reading the whole collection
        # (2 s a poll at 48,000 epochs, against 2 ms for these), and every open live stream polls twice a second.
        later = await self.epochs.find({"run_id": run_id, "epoch": {"$gt": epoch}}, {"_id": 0}).to_list()
        newer = await self.epochs.find({"run_id": run_id, "attempt": {"$gt": attempt}, "epoch": {"$lte": epoch}},
                                       {"_id": 0}).to_list()
        return sorted(later + newer, key=lambda doc: int(doc["epoch"]))

    async def predictions_of(self, run_id: str) -> dict[int, str]:
        """Epoch -> the object name of its evaluation's predictions, for every epoch that has them."""
        docs = await self.epochs.find({"run_id": run_id}, {"_id": 0, "epoch": 1, "predictions": 1}).to_list()
        return {int(doc["epoch"]): doc["predictions"] for doc in docs if doc.get("predictions")}

    async def previews_of(self, run_id: str, epoch: int | None) -> list[Document]:
        """The epochs (one, or all) that have previews: epoch, attempt, previews, their score threshold."""
        query: dict[str, Any] = {"run_id": run_id}
        if epoch is not None:
            query["epoch"] = epoch
        fields = {"_id": 0, "epoch": 1, "attempt": 1, "previews": 1, "preview_score_threshold": 1}
        docs = await self.epochs.find(query, fields).sort("epoch", ASCENDING).to_list()
        return [doc for doc in docs if doc.get("previews")]

    async def iterations_of(self, run_id: str, limit: int, after_step: int | None = None) -> list[Document]:
        """The first `limit` iteration logs (after `after_step`), by step: run_step_unique serves it."""
        query: dict[str, Any] = {"run_id": run_id}
        if after_step is not None:
            query["step"] = {"$gt": after_step}
        return await self.iterations.find(query, {"_id": 0}).sort("step", ASCENDING).limit(limit).to_list()

    async def latest_epoch(self, run_id: str) -> Document | None:
        """The run's latest epoch (number, attempt, metrics), as the metrics service keeps it."""
        return await self.latest.find_one({"_id": run_id}, LATEST_EPOCH_FIELDS)

    async def latest_epochs(self, run_ids: list[str]) -> dict[str, Document]:
        """The latest epoch of each run, all in one query.

        One document per run that the metrics service keeps up to date beside each epoch: a
        page of 50 runs was 50 `find_one`s on `epochs`, which the local server answers one after
        another (27-42 ms of a page)."""
        if not run_ids:
            return {}
        found = await self.latest.find({"_id": {"$in": run_ids}}, LATEST_EPOCH_FIELDS).to_list()
        return {doc["_id"]: doc for doc in found}

    async def confusion_matrix(self, run_id: str, epoch: int | None) -> Document | None:
        query: dict[str, Any] = {"run_id": run_id}
        if epoch is not None:
            query["epoch"] = epoch
        return await self.confusion_matrices.find_one(query, {"_id": 0}, sort=[("epoch", DESCENDING)])

    async def queue_position(self, run: RunSummary) -> int | None:
        """1 + the queued runs asking for the same accelerators that the scheduler takes first:
        by `queue_key`, which the scheduler stores when it queues a run (priority with aging
        as one instant; services/scheduler/placement.py). None until it has."""
        key = run.queue_key
        if key is None:
            return None
        queued = {"status": "pending", "trainer_id": None, "_id": {"$ne": run.id},
                  "spec.accelerator.name": run.spec.accelerator.name,
                  "spec.accelerator.count": run.spec.accelerator.count}
        # Two counts, not one `$or`: the local server reads the whole collection for an `$or`.
        ahead = await self.runs.count_documents({**queued, "queue_key": {"$lt": key}})
        ahead += await self.runs.count_documents({**queued, "queue_key": key, "created_at": {"$lt": run.created_at}})
        return ahead + 1

    async def models_of(self, project: str, published: bool | None, limit: int) -> list[Document]:
        query: dict[str, Any] = {"project": project}
        if published is not None:
            query["published"] = published
        return await self.models.find(query).sort("created_at", DESCENDING).limit(limit).to_list()

    async def model_of_run(self, run_id: str) -> Document | None:
        return await self.models.find_one({"run_id": run_id}, {"_id": 1})

    async def model(self, project: str, model_id: str) -> Document | None:
        return await self.models.find_one({"_id": model_id, "project": project})

    async def set_published(self, project: str, model_id: str, published: bool) -> Document | None:
        return await self.models.find_one_and_update(
            {"_id": model_id, "project": project}, {"$set": {"published": published}},
            return_document=ReturnDocument.AFTER,
        )

    async def best_epoch_by(self, run_id: str, metric: str) -> Document | None:
        """The epoch with the highest `metric`, the earliest among equals; one where it is undefined
        (null) never wins (a sort would rank null below every number, and pick it when nothing else is)."""
        scored = [doc for doc in await self.epochs_of(run_id)
                  if isinstance(doc.get("metrics", {}).get(metric), int | float)]
        return max(scored, key=lambda doc: doc["metrics"][metric], default=None)

    async def list_trainers(self) -> list[Document]:
        return await self.trainers.find().sort("_id", ASCENDING).to_list()

    async def runs_on_trainers(self, project: str) -> list[Document]:
        """The project's runs holding a trainer (other projects' runs show only as used capacity)."""
        query = {"project": project, "status": {"$in": ["pending", "in_progress"]}, "trainer_id": {"$ne": None}}
        return await self.runs.find(query, {"_id": 1, "trainer_id": 1, "status": 1, "attempt": 1}).to_list()
