"""MongoDB access shared by every service: one client factory, the collection names."""

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from shared.settings import CommonSettings

Document = dict[str, Any]

# Each collection has one writer; the API gateway reads the others.
RUNS = "runs"  # the api inserts a run and removes it once finished; the scheduler owns every status change between
DATASETS = "datasets"  # api
TRAINERS = "trainers"  # scheduler
EPOCHS = "epochs"  # metrics
CONFUSION_MATRICES = "confusion_matrices"  # metrics
ITERATIONS = "iterations"  # metrics: one document per logged (run, step)
MODELS = "models"  # metrics registers them; the api toggles `published`
API_KEYS = "api_keys"  # api (/v1/keys) and the operator's `trainyard keys bootstrap`
REMOVED_RUNS = "removed_runs"  # metrics: a tombstone per removed run, so its late events are dropped
MIGRATIONS = "migrations"  # api: one-off data changes done at start-up, so they run once
SWEEPS = "sweeps"  # api inserts a sweep (and its trial runs); the scheduler owns it from then on
PROJECTS = "projects"  # api (per-project facts its listings use, e.g. the first run's time)


def mongo_client(settings: CommonSettings) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(settings.mongo_url, tz_aware=True, connect=False)


def database(client: AsyncMongoClient[Document], settings: CommonSettings) -> AsyncDatabase[Document]:
    return client[settings.mongo_db]
