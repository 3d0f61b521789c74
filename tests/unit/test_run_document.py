"""The runs document is written and read through one model in shared/, its history entries too."""

from pathlib import Path

from services.api.models import StatusChange
from services.api.run_creation import run_document
from shared.run_document import HistoryEntry, RunDocument
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
