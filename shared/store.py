"""MongoDB access shared by every service: one client factory, the collection names."""

from collections.abc import Iterable
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
# metrics: per run its latest epoch (number, attempt, metrics), so a page of runs reads them all with one query
LATEST_EPOCHS = "latest_epochs"
MODELS = "models"  # metrics registers them; the api toggles `published`
API_KEYS = "api_keys"  # api (/v1/keys) and the operator's `trainyard keys bootstrap`
REMOVED_RUNS = "removed_runs"  # metrics: a tombstone per removed run, so its late events are dropped
MIGRATIONS = "migrations"  # api: one-off data changes done at start-up, so they run once
SWEEPS = "sweeps"  # api inserts a sweep (and its trial runs); the scheduler owns it from then on
PROJECTS = "projects"  # api (per-project facts its listings use, e.g. the first run's time)
CONSOLE_SESSIONS = "console_sessions"  # api: web console sign-ins (hashed session tokens)
CONSOLE_SIGNIN_TOKENS = "console_signin_tokens"  # the local stack issues one-time links; the api consumes them


def mongo_client(settings: CommonSettings) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(settings.mongo_url, tz_aware=True, connect=False)


def database(client: AsyncMongoClient[Document], settings: CommonSettings) -> AsyncDatabase[Document]:
    return client[settings.mongo_db]


# What a report check reads of a run.
REPORT_HOLDER_FIELDS = {"attempt": 1, "trainer_id": 1, "spec.epochs": 1}


def report_refusal(run: Document | None, run_id: str, attempt: int, trainer_id: str,
                   epochs: Iterable[int]) -> str | None:
    """Why a trainer's report of a run must not be acted on, or None when `trainer_id` holds the
    run's current attempt and every epoch is one of the run's (1..spec.epochs). `run` is the run's
    document (REPORT_HOLDER_FIELDS at least), None when there is none."""
    if run is None:
        return f"no run {run_id}"
    current, holder = int(run.get("attempt", 0)), run.get("trainer_id")
    if attempt != current:
        return f"attempt {attempt} of run {run_id} is not its current attempt ({current})"
    if trainer_id != holder:
        return f"attempt {attempt} of run {run_id} is held by trainer {holder}, not {trainer_id}"
    total = int((run.get("spec") or {}).get("epochs", 0))
    outside = [epoch for epoch in epochs if not 1 <= epoch <= total]
    if outside:
        return f"epoch {outside[0]} is outside run {run_id}'s epochs 1..{total}"
    return None
