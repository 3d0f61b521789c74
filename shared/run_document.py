"""The `runs` document the api, the scheduler and the metrics service share, and its history entry.

The api inserts a run (status `created`) through RunDocument; from then on the
scheduler owns every change, each pushing a HistoryEntry onto `history`. Later
writers add fields of their own: those a service reads are declared here, optional
(absent until written); the rest a document read back keeps (`extra="allow"`).

A listing reads runs without their heavy fields (the api's LISTED_RUN projection):
it reads them as RunSummary, the fields every run has that a list item shows;
RunDocument adds what only the whole document carries.
"""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from shared.events import BaseModelRef, StoredCheckpoint, utcnow
from shared.specs import DatasetLayout, RunSpec
from shared.status import RunStatus


class HistoryEntry(BaseModel):
    """One status change of a run, oldest first in its `history`."""

    status: RunStatus
    at: datetime = Field(default_factory=utcnow)
    message: str | None = None
    # The attempt the change belongs to; None before the first one.
    attempt: int | None = None

    @field_serializer("status")
    def _plain_status(self, status: RunStatus) -> str:
        return str(status)

    def document(self) -> dict[str, Any]:
        """As MongoDB stores it: the status a plain string, `at` a datetime."""
        return self.model_dump()


class RunSummary(BaseModel):
    """A run as a listing reads it: every field but the heavy ones the whole document adds."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    id: str = Field(alias="_id")
    project: str
    name: str
    spec: RunSpec
    base_model: BaseModelRef | None = None
    status: RunStatus
    attempt: int = 0
    trainer_id: str | None = None
    pending_reason: str | None = None
    message: str | None = None
    created_at: datetime
    updated_at: datetime
    history: list[HistoryEntry] = Field(default_factory=list)
    # A sweep's trial: its sweep id and the trial's parameters.
    sweep: dict[str, Any] | None = None
    # Written later, by the scheduler (queueing, placement, requests) and the metrics service.
    queue_key: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    device: str | None = None
    epochs_completed: int | None = None
    attempt_limit: int | None = None
    rerun_requested_at: datetime | None = None
    kill_requested_at: datetime | None = None

    @field_serializer("status")
    def _plain_status(self, status: RunStatus) -> str:
        return str(status)


# The fields a writer after the api adds: a new run's document leaves them out rather than store nulls.
LATER_FIELDS = ("sweep", "queue_key", "started_at", "completed_at", "device", "epochs_completed", "attempt_limit",
                "rerun_requested_at", "kill_requested_at", "config", "checkpoint", "trainer_instance")


class RunDocument(RunSummary):
    """A run as the `runs` collection holds it."""

    dataset: DatasetLayout
    created_by: str
    search_keys: list[str] = Field(default_factory=list)
    # The trace of the request that created the run: the scheduler continues it.
    trace_context: dict[str, str] = Field(default_factory=dict)
    # The resolved training config (config.py text) the trainer stored, and the checkpoint a rerun resumes from.
    config: str | None = None
    checkpoint: StoredCheckpoint | None = None
    # The trainer process that accepted the current attempt (a restarted trainer is a new one).
    trainer_instance: str | None = None

    def document(self) -> dict[str, Any]:
        """As MongoDB stores it (`_id`, the spec as JSON values, no later writer's field while it is unset)."""
        doc = self.model_dump(by_alias=True, exclude={"spec", "dataset"})
        doc["spec"] = self.spec.model_dump(mode="json")
        doc["dataset"] = self.dataset.model_dump()  # as the dataset's registration stored its layout
        for name in LATER_FIELDS:
            if doc.get(name) is None:
                doc.pop(name, None)
        return doc
