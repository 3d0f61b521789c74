"""A new run's document: what POST /v1/runs and a sweep's trials both store."""

import asyncio
from typing import Any

from services.api.dataset_validation import recheck
from services.api.errors import Unprocessable
from services.api.search import search_keys
from services.api.store import ApiStore
from shared.events import BaseModelRef, new_id, utcnow
from shared.run_document import HistoryEntry, RunDocument
from shared.specs import DatasetLayout, RunSpec
from shared.status import RunStatus
from shared.telemetry import run_trace_context


async def checked_dataset(store: ApiStore, project: str, dataset_id: str) -> dict[str, Any]:
    """The dataset a run trains on, still valid on its storage."""
    dataset = await store.dataset(project, dataset_id)
    if dataset is None:
        raise Unprocessable(f"dataset_id: no dataset with id {dataset_id!r}",
                            [{"field": "dataset_id", "message": "no such dataset", "value": dataset_id}])
    # Files on shared storage can change after registration: a broken dataset is
    # refused here, before the run takes a place in the queue or an accelerator.
    problems = await asyncio.to_thread(recheck, dataset["layout"], dataset.get("fingerprint"))
    if problems:
        first = problems[0]
        raise Unprocessable(f"dataset {dataset_id} changed since it was registered and is no longer valid: "
                            f"{first.file}: {first.message}", [p.as_dict() for p in problems])
    return dataset


async def checked_base_model(store: ApiStore, project: str, spec: RunSpec) -> dict[str, Any] | None:
    """The registered model a run starts from, as its assignment carries it; None without one."""
    if spec.base_model_id is None:
        return None
    model = await store.model(project, spec.base_model_id)
    if model is None:
        raise Unprocessable(f"base_model_id: no model with id {spec.base_model_id!r}",
                            [{"field": "base_model_id", "message": "no such model", "value": spec.base_model_id}])
    if model["architecture"] != spec.architecture:
        raise Unprocessable(
            f"base_model_id: model {spec.base_model_id} is a {model['architecture']}, the run a "
            f"{spec.architecture}", [{"field": "base_model_id", "message": "architecture differs",
                                      "value": spec.base_model_id}])
    return {"id": model["_id"], "checkpoint": model["checkpoint"], "classes": model["classes"]}


def run_document(project: str, spec: RunSpec, dataset: dict[str, Any], base_model: dict[str, Any] | None,
                 created_by: str, sweep: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new run's document as MongoDB stores it."""
    return new_run(project, spec, dataset, base_model, created_by, sweep).document()


def new_run(project: str, spec: RunSpec, dataset: dict[str, Any], base_model: dict[str, Any] | None,
            created_by: str, sweep: dict[str, Any] | None = None) -> RunDocument:
    """A run as the api inserts it (status `created`); the scheduler owns every change after."""
    now = utcnow()
    run_id = new_id()
    return RunDocument(
        id=run_id, project=project, name=spec.name, spec=spec, dataset=DatasetLayout.model_validate(dataset["layout"]),
        base_model=BaseModelRef.model_validate(base_model) if base_model is not None else None,
        status=RunStatus.CREATED, created_at=now, updated_at=now, created_by=created_by,
        history=[HistoryEntry(status=RunStatus.CREATED, at=now)],
        search_keys=search_keys(spec.name, run_id),
        # The scheduler continues this request's trace whenever it handles the run.
        trace_context=run_trace_context(run_id),
        sweep=sweep,
    )
