"""The in-memory queue index across a rebuild: claims no longer wait for the periodic pass's read."""

from datetime import UTC, datetime

from services.scheduler.placement import QueuedRun
from services.scheduler.queue_index import QueueIndex
from shared.specs import AcceleratorRequest

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def queued(run_id: str) -> QueuedRun:
    return QueuedRun(run_id, "p", 0, NOW, AcceleratorRequest())


def test_a_run_claimed_while_the_rebuild_read_is_not_brought_back_by_its_snapshot() -> None:
    index = QueueIndex()
    index.add(queued("a"))
    index.add(queued("b"))
    index.begin_rebuild()
    # The snapshot was read before the claim of "a" was stored; the claim ended during the read.
    index.discard("a")
    index.finish_rebuild([queued("a"), queued("b")])
    assert "a" not in index
    assert "b" in index
    assert len(index) == 1


def test_a_run_requeued_after_its_claim_during_the_rebuild_stays() -> None:
    index = QueueIndex()
    index.begin_rebuild()
    index.discard("a")  # claimed, then reset and queued again while the rebuild read
    index.add(queued("a"))
    index.finish_rebuild([])
    assert "a" in index


def test_a_rebuild_keeps_what_was_added_while_it_read_and_drops_what_left_before() -> None:
    index = QueueIndex()
    index.add(queued("gone"))
    index.begin_rebuild()
    index.add(queued("new"))
    index.finish_rebuild([queued("old")])
    assert sorted(run.run_id for run in index.everything(NOW, 300.0)) == ["new", "old"]
    # Dropped-during-rebuild bookkeeping ends with the rebuild: a later snapshot may bring a run back.
    index.begin_rebuild()
    index.finish_rebuild([queued("gone")])
    assert "gone" in index
