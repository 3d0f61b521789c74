"""The runs document is written and read through one model in shared/, its history entries too."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.api.models import StatusChange
from services.api.run_creation import run_document
from services.api.store import LISTED_RUN
from shared.run_document import HistoryEntry, RunDocument, RunSummary
from shared.specs import RunSpec
from shared.status import RunStatus
from trainyard.synth import write_synthetic_coco

# Every field the scheduler, the metrics service and the api read from a new run.
FIELDS = {"_id", "project", "name", "spec", "dataset", "base_model", "status", "attempt", "trainer_id",
          "pending_reason", "message", "created_at", "updated_at", "created_by", "history", "search_keys",
          "trace_context"}


def test_a_new_run_is_stored_as_the_model_reads_it(tmp_path: Path) -> None:
    layout = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).layout()
    spec = RunSpec.model_validate({"name": "Plain detector", "dataset_id": "0" * 32, "architecture": "rtmdet-tiny"})
    doc = run_document("p", spec, {"layout": layout.model_dump()}, None, "key-1")
    assert set(doc) == FIELDS  # no `sweep` key outside a sweep
    assert doc["status"] == "created" and type(doc["status"]) is str and doc["attempt"] == 0
    assert doc["spec"] == spec.model_dump(mode="json") and doc["dataset"] == layout.model_dump()
    assert doc["history"] == [{"status": "created", "at": doc["created_at"], "message": None, "attempt": None}]
    # Read back (as any service reads it) and written again, nothing changes.
    assert RunDocument.model_validate(doc).document() == doc
    trial = run_document("p", spec, {"layout": layout.model_dump()}, None, "key-1", sweep={"id": "s", "trial": 1})
    assert set(trial) == FIELDS | {"sweep"}


def test_a_history_entry_is_what_the_api_shows() -> None:
    entry = HistoryEntry(status=RunStatus.FAILED, message="training process exited with code 1", attempt=2)
    stored = entry.document()
    assert type(stored["status"]) is str and stored["attempt"] == 2
    shown = StatusChange.model_validate(stored)
    assert (shown.status, shown.message, shown.attempt) == ("failed", entry.message, 2)


def test_a_listed_run_reads_as_a_summary_and_the_later_writers_fields_read_typed(tmp_path: Path) -> None:
    layout = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).layout()
    spec = RunSpec.model_validate({"name": "Listed", "dataset_id": "0" * 32, "architecture": "rtmdet-tiny"})
    doc = run_document("p", spec, {"layout": layout.model_dump()}, None, "key-1")
    started = doc["created_at"]
    # What the scheduler and the trainer add later, as they store it.
    doc |= {"status": "in_progress", "attempt": 1, "trainer_id": "t-1", "started_at": started, "device": "cpu",
            "queue_key": started, "config": "model = dict()", "trainer_instance": "i-1", "status_outbox": [],
            "checkpoint": {"attempt": 1, "epoch": 2, "name": "runs/r/checkpoints/attempt_1/epoch_2.pth"}}
    run = RunDocument.model_validate(doc)
    assert run.status == RunStatus.IN_PROGRESS and run.started_at == started and run.device == "cpu"
    assert run.checkpoint is not None and run.checkpoint.epoch == 2 and run.config == "model = dict()"
    assert run.model_extra == {"status_outbox": []}  # undeclared fields are kept, not dropped
    # A listing leaves the heavy fields at home: what is left is a summary, not a whole document.
    listed = {name: value for name, value in doc.items() if name not in LISTED_RUN}
    summary = RunSummary.model_validate(listed)
    assert (summary.id, summary.spec, summary.attempt) == (doc["_id"], spec, 1)
    with pytest.raises(ValidationError, match="dataset"):
        RunDocument.model_validate(listed)
