"""The `runs` document the api, the scheduler and the metrics service share, and its history entry.

The api inserts a run (status `created`) through RunDocument; from then on the
scheduler owns every change, each pushing a HistoryEntry onto `history`. Later
writers add fields of their own (the config, sweep verdicts...): a document read
back keeps them (`extra="allow"`).
"""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from shared.events import BaseModelRef, utcnow
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


class RunDocument(BaseModel):
    """A run as the `runs` collection holds it."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    id: str = Field(alias="_id")
    project: str
    name: str
    spec: RunSpec
    dataset: DatasetLayout
    base_model: BaseModelRef | None = None
    status: RunStatus
    attempt: int = 0
    trainer_id: str | None = None
    pending_reason: str | None = None
    message: str | None = None
    created_at: datetime
    updated_at: datetime
    created_by: str
    history: list[HistoryEntry] = Field(default_factory=list)
    search_keys: list[str] = Field(default_factory=list)
    # The trace of the request that created the run: the scheduler continues it.
    trace_context: dict[str, str] = Field(default_factory=dict)
    # A sweep's trial: its sweep id and the trial's parameters.
    sweep: dict[str, Any] | None = None

    @field_serializer("status")
    def _plain_status(self, status: RunStatus) -> str:
        return str(status)

    def document(self) -> dict[str, Any]:
        """As MongoDB stores it (`_id`, the spec as JSON values, no `sweep` key outside a sweep)."""
        doc = self.model_dump(by_alias=True, exclude={"spec", "dataset"})
        doc["spec"] = self.spec.model_dump(mode="json")
        doc["dataset"] = self.dataset.model_dump()  # as the dataset's registration stored its layout
        if self.sweep is None:
            doc.pop("sweep")
        return doc
