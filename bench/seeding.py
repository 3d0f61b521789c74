"""Many runs stored fast, in the shape the services store them: what the listing and console benchmarks stand on.

Every index the stack keeps on these collections (the api's, the scheduler's, the metrics
service's) is created first, on empty collections, and the runs go in with `insert_many` in
big batches: the local MongoDB-wire server took over 19 minutes to build the api's indexes
over 100,000 runs already stored, and indexing each batch as it arrives is much cheaper.

Each run is the document `POST /v1/runs` inserts (`services.api.run_creation.run_document`:
its id, search keys and trace context), then moved along a lifecycle as the scheduler
moves runs (status, attempt, trainer, times, one history entry per change), spread over
`days`, most of them ended as in a long-lived project. Runs that trained have their latest
epoch in `latest_epochs` as the metrics service keeps it.
"""

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database

from services.api.run_creation import run_document
from services.api.store import ApiStore
from services.metrics.store import MetricsStore, latest_rank
from services.scheduler.store import SchedulerStore
from shared.events import utcnow
from shared.specs import RunSpec
from shared.status import RunStatus
from shared.store import LATEST_EPOCHS, PROJECTS, RUNS

WORDS = ("detector", "shapes", "baseline", "tiny", "sweep", "augment", "long", "cosine", "frozen", "fp16")
# Most runs have ended, as in a long-lived project.
STATUS_WEIGHTS = {RunStatus.SUCCESS: 70, RunStatus.FAILED: 10, RunStatus.ABORTED: 4, RunStatus.TERMINATED: 10,
                  RunStatus.PENDING: 4, RunStatus.IN_PROGRESS: 2}
DATASET = {"layout": {"root": "/data/shapes",
                      "train": {"images": "/data/shapes/images/train", "annotations": "/data/shapes/a/train.json"},
                      "val": {"images": "/data/shapes/images/val", "annotations": "/data/shapes/a/val.json"},
                      "classes": ["square", "circle", "triangle"]}}
EPOCHS = 12
BATCH = 1000
# The database server's cache for a stack holding the seeded runs: 100,000 runs and their indexes
# are over 300 MB, and inserting past the local stack's default 256 MB slowed to a crawl.
SEEDED_CACHE = "2G"
TRAINERS = [f"trainer-{n}" for n in range(8)]


@dataclass(frozen=True)
class Seeded:
    runs: int
    indexes_s: float
    insert_s: float

    def line(self) -> str:
        rate = self.runs / self.insert_s if self.insert_s > 0 else float("inf")
        return (f"seeded {self.runs:,} runs: indexes created first in {self.indexes_s:.1f} s, documents "
                f"inserted in {self.insert_s:.1f} s ({rate:,.0f} runs/s, insert_many of {BATCH:,})")


async def create_indexes(mongo_url: str, database: str) -> None:
    """The indexes every service creates at start, on the still empty collections."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url, tz_aware=True)
    try:
        db = client[database]
        await ApiStore(db).ensure_indexes()
        await SchedulerStore(db).ensure_indexes()
        metrics = MetricsStore(db)
        await metrics.ensure_indexes()
        await metrics.backfill_latest_epochs()  # nothing to fill: sets its marker, as a fresh stack does
    finally:
        await client.close()


def lifecycle(doc: dict[str, Any], status: RunStatus, created: datetime, rng: random.Random) -> dict[str, Any] | None:
    """Move a new run's document to `status` as the scheduler would; its latest epoch, if it trained."""
    queued = created + timedelta(seconds=rng.uniform(0.05, 2))
    history = [{"status": "created", "at": created, "message": None, "attempt": None},
               {"status": "pending", "at": queued, "message": None, "attempt": None}]
    doc.update(status=str(status), updated_at=queued, history=history)
    if status == RunStatus.PENDING:
        doc["pending_reason"] = "waiting for a free cpu (2 runs ahead)"
        doc["queue_key"] = created
        return None
    started = queued + timedelta(seconds=rng.uniform(0.5, 30))
    trainer = rng.choice(TRAINERS)
    history.append({"status": "in_progress", "at": started, "message": None, "attempt": 1})
    doc.update(attempt=1, trainer_id=trainer, started_at=started, device="cpu", updated_at=started)
    epoch = EPOCHS if status == RunStatus.SUCCESS else rng.randint(1, EPOCHS - 1)
    if status != RunStatus.IN_PROGRESS:
        ended = started + timedelta(seconds=epoch * rng.uniform(20, 90))
        message = {RunStatus.FAILED: "CUDA out of memory", RunStatus.ABORTED: "no attempts left",
                   RunStatus.TERMINATED: "killed by the user"}.get(status)
        history.append({"status": str(status), "at": ended, "message": message, "attempt": 1})
        doc.update(completed_at=ended, updated_at=ended, message=message, epochs_completed=epoch)
    mAP = round(rng.uniform(0.2, 0.6) * epoch / EPOCHS, 4)
    return {"_id": doc["_id"], "epoch": epoch, "attempt": 1, "total_epochs": EPOCHS, "rank": latest_rank(epoch, 1),
            "metrics": {"bbox_mAP": mAP, "bbox_mAP_50": min(1.0, mAP * 1.6)}, "logged_at": doc["updated_at"]}


def insert_runs(mongo_url: str, database: str, count: int, *, days: float = 30, seed: int = 15,
                project: str = "default", progress: Callable[[str], None] | None = None) -> None:
    rng = random.Random(seed)
    now = utcnow()
    statuses, weights = zip(*STATUS_WEIGHTS.items(), strict=True)
    span = timedelta(days=days)
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongo_url, tz_aware=True) as client:
        db: Database[dict[str, Any]] = client[database]
        first = now
        runs: list[dict[str, Any]] = []
        latest: list[dict[str, Any]] = []
        for i in range(count):
            name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)} {i} lr{rng.random():.3f}"
            spec = RunSpec.model_validate({"name": name, "dataset_id": "d" * 32, "architecture": "rtmdet-tiny",
                                           "epochs": EPOCHS})
            doc = run_document(project, spec, DATASET, None, "bench")
            # Oldest first, evenly spread, the last one a moment ago.
            created = now - span * (1 - i / count) - timedelta(seconds=1)
            doc["created_at"] = created
            first = min(first, created)
            if (epoch := lifecycle(doc, rng.choices(statuses, weights)[0], created, rng)) is not None:
                latest.append(epoch)
            runs.append(doc)
            if len(runs) == BATCH:
                _flush(db, runs, latest)
                if progress is not None and (i + 1) % 10_000 == 0:
                    progress(f"inserted {i + 1:,} runs")
        _flush(db, runs, latest)
        # What the api records beside each run it inserts.
        db[PROJECTS].update_one({"_id": project}, {"$min": {"first_run_at": first}}, upsert=True)


def _flush(db: Database[dict[str, Any]], runs: list[dict[str, Any]], latest: list[dict[str, Any]]) -> None:
    if runs:
        db[RUNS].insert_many(runs, ordered=False)
    if latest:
        db[LATEST_EPOCHS].insert_many(latest, ordered=False)
    runs.clear()
    latest.clear()


def seed_runs(mongo_url: str, database: str, count: int, *, days: float = 30, seed: int = 15,
              progress: Callable[[str], None] | None = None) -> Seeded:
    """Store `count` runs of the default project, indexes first; how long each part took."""
    started = time.perf_counter()
    asyncio.run(create_indexes(mongo_url, database))
    indexed = time.perf_counter()
    insert_runs(mongo_url, database, count, days=days, seed=seed, progress=progress)
    return Seeded(runs=count, indexes_s=indexed - started, insert_s=time.perf_counter() - indexed)


def ensure_seeded(mongo_url: str, database: str, count: int, where: str,
                  progress: Callable[[str], None] | None = None) -> str:
    """Seed `count` runs unless the database already holds exactly that many (a data directory kept
    from an earlier benchmark, `--data-dir`); a line saying which it was and how long it took."""
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongo_url) as client:
        held = client[database][RUNS].count_documents({})
    if held == count:
        return f"reusing the {count:,} runs stored in {where}"
    if held:
        raise SystemExit(f"{where} holds {held:,} runs, not {count:,}: pass another --data-dir")
    return seed_runs(mongo_url, database, count, progress=progress).line()
